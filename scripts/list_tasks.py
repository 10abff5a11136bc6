"""List the 38 DSRL tasks with observation/action sizes, episode length and measured ms per step.

    python scripts/list_tasks.py [--steps 300] [--markdown]

Each task is made with lspc.envs.make_env, reset with a seed and stepped with uniform random
actions; ms/step is the mean wall time of env.step over --steps steps (resets excluded).
A suite that is not installed is reported as such.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from lspc import LSPCError  # noqa: E402
from lspc.envs import SUITES, make_env, reset_seeded  # noqa: E402


def measure(task: str, steps: int) -> dict:
    env = make_env(task)
    try:
        rng = np.random.default_rng(0)
        reset_seeded(env, 0)
        elapsed = 0.0
        for _ in range(steps):
            action = rng.uniform(env.action_space.low, env.action_space.high).astype(env.action_space.dtype)
            start = time.perf_counter()
            _, _, terminated, truncated, info = env.step(action)
            elapsed += time.perf_counter() - start
            assert "cost" in info, f"{task} reports no cost"
            if terminated or truncated:
                reset_seeded(env, 1)
        return {"obs": env.observation_space.shape[0], "act": env.action_space.shape[0],
                "episode_len": env.spec.max_episode_steps, "ms_per_step": round(1000 * elapsed / steps, 2)}
    finally:
        env.close()  # MetaDrive allows one live engine per process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="random-action steps timed per task (default: 300)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table instead of JSON lines")
    args = parser.parse_args()
    rows = []
    for suite, tasks in SUITES.items():
        for task in tasks:
            try:
                row = {"task": task, "suite": suite, **measure(task, args.steps)}
            except LSPCError as err:
                row = {"task": task, "suite": suite, "error": str(err)}
            rows.append(row)
            if not args.markdown:
                print(json.dumps(row), flush=True)
    if args.markdown:
        print("| task | suite | obs | act | episode length | ms/step |\n|---|---|---|---|---|---|")
        for r in rows:
            cells = [r.get("obs", "-"), r.get("act", "-"), r.get("episode_len", "-"), r.get("ms_per_step", r.get("error"))]
            print(f"| {r['task']} | {r['suite']} | " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
