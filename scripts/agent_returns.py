"""Noise-free returns of a cached FSRL behaviour agent's checkpoints: how far its training has come.

    python scripts/agent_returns.py --task OfflineDroneCircle-v0 --cost_limit 80 [--epochs 30 40 178] \
        [--episodes 3] [--agent_algorithm ppol] [--agent_seed 0] [--agent_cache ~/.lspc/agents]

One row per checkpoint: its training steps, the mean reward and cost of the training episodes of its
epoch (sampled actions), and the mean reward, cost and length of --episodes episodes of its mean
action from start seeds 0, 1, ... (the same for every checkpoint), and the best of those episodes
with its cost: an agent that sometimes falls has a low mean but episodes near its best, and the
collection's top rewards come from those. Use it to choose an agent's step budget before a
collection (collect_dataset.py --agent_steps).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from lspc import LSPCError  # noqa: E402
from lspc.data.behaviour import ALGORITHMS  # noqa: E402
from lspc.envs import check_task  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, help="the DSRL task the agent was trained on")
    parser.add_argument("--cost_limit", type=float, required=True, help="the cost limit the agent was trained with")
    parser.add_argument("--epochs", type=int, nargs="+", default=None,
                        help="checkpoints to roll out (default: five spread over training, the last included)")
    parser.add_argument("--episodes", type=int, default=3, help="episodes rolled out per checkpoint (default: 3)")
    parser.add_argument("--agent_algorithm", choices=tuple(ALGORITHMS), default=None,
                        help="default: the task's TASK_COLLECTION entry, else ppol")
    parser.add_argument("--agent_seed", type=int, default=0, help="the seed the agent was trained with (default: 0)")
    parser.add_argument("--agent_cache", default=None, help="trained agents (default: ~/.lspc/agents)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        from lspc.data import behaviour

        check_task(args.task)
        if args.episodes <= 0:
            raise LSPCError(f"--episodes must be positive, got {args.episodes}")
        algorithm = args.agent_algorithm or behaviour.collection_setting(args.task, "agent_algorithm")
        config = behaviour.AgentConfig(algorithm=algorithm, seed=args.agent_seed)
        directory = behaviour.agent_dir(args.agent_cache or behaviour.DEFAULT_CACHE, args.task, args.cost_limit, config)
        resume = os.path.join(directory, "resume.pt")  # points at the last epoch on disk; epochs run 1, 2, ...
        if not os.path.exists(resume):
            raise LSPCError(f"no trained agent in {directory}; train one with scripts/collect_dataset.py")
        last = behaviour.load_agent_file(resume)["epoch"]
        epochs = args.epochs or sorted({round(e) for e in np.linspace(1, last, 5)})
        missing = sorted(e for e in epochs if not 1 <= e <= last)
        if missing:
            raise LSPCError(f"{directory} has no checkpoint of epoch {missing[0]} (it has epochs 1 to {last})")
        with open(os.path.join(directory, "agent.json")) as f:
            config = dataclasses.replace(config, hidden_sizes=tuple(json.load(f)["hidden_sizes"]))
    except LSPCError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"{args.task}, cost limit {args.cost_limit:g}: {args.episodes} noise-free episodes per checkpoint\n")
    print("| epoch | steps | training reward | training cost | reward | cost | length | best reward | its cost |")
    print("|---|---|---|---|---|---|---|---|---|")
    for epoch in epochs:
        saved = behaviour.load_agent_file(behaviour.epoch_file(directory, epoch))
        returns = np.array(behaviour.checkpoint_returns(args.task, saved["policy"], config, range(args.episodes)))
        reward, cost, length = returns.mean(axis=0)
        best_reward, best_cost, _ = returns[returns[:, 0].argmax()]
        print(f"| {epoch} | {saved['env_step']} | {saved['train_reward']:.1f} | {saved['train_cost']:.1f} | "
              f"{reward:.1f} | {cost:.1f} | {length:.0f} | {best_reward:.1f} | {best_cost:.1f} |", flush=True)


if __name__ == "__main__":
    main()
