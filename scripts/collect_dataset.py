"""Collect a DSRL-layout dataset from the real simulator (only OfflineBallRun-v0 for now).

    python scripts/collect_dataset.py --task OfflineBallRun-v0 --episodes 200 --out data.hdf5 --seed 0
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lspc import LSPCError  # noqa: E402
from lspc.collect import collect, episode_returns, write_dsrl_hdf5  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="OfflineBallRun-v0")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--out", required=True, help="output .hdf5 file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        if args.episodes <= 0:
            raise LSPCError(f"--episodes must be positive, got {args.episodes}")
        data = collect(args.task, args.episodes, args.seed)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        write_dsrl_hdf5(args.out, data, {"task": args.task, "seed": args.seed, "behaviour": "ball_run_controller"})
    except LSPCError as err:
        sys.exit(f"error: {err}")
    returns = episode_returns(data)
    print(json.dumps({
        "out": args.out,
        "episodes": len(returns["reward"]),
        "transitions": len(data["rewards"]),
        "reward_range": [round(float(returns["reward"].min()), 1), round(float(returns["reward"].max()), 1)],
        "cost_range": [float(returns["cost"].min()), float(returns["cost"].max())],
        "fraction_cost_le_10": round(float((returns["cost"] <= 10).mean()), 3),
    }))


if __name__ == "__main__":
    main()
