"""Evaluate a trained LSPC run the way DSRL's tables are made (spec section 7).

    python eval_lspc.py --path logs/OfflineBallRun-v0-cost-10/lspc_iql-seed0 [--checkpoint best_o]

Rebuilds the model from the run directory's config.yaml and checkpoint, runs seeded episodes of
each policy once, and scores them at every cost threshold of the task's suite (LSPC ignores the
threshold during training). Writes eval/results.json and eval/results.md into the run directory.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Dict, List, Optional

import torch

from lspc import LSPCError
from lspc.checkpoint import atomic_write_bytes, load_checkpoint
from lspc.envs import cost_limits, make_env
from lspc.evaluation import Evaluator, episode_seeds, normalized_scores
from lspc_iql_configs import load_saved_config
from train_lspc_iql import LSPC

CHECKPOINTS = {"latest": "model.pt", "best_o": "model_best_o.pt", "best_s": "model_best_s.pt"}
POLICIES = {"lspc-o": "act_lspc_o", "lspc-s": "act_lspc_s", "cvae": "act_cvae"}


def evaluate_run(path: str, checkpoint: str = "latest", policies: Optional[List[str]] = None,
                 thresholds: Optional[List[float]] = None, eval_episodes: int = 20, seed: int = 0,
                 device: str = "cpu") -> Dict:
    config_path = os.path.join(path, "config.yaml")
    if not os.path.isfile(config_path):
        raise LSPCError(f"{path} is not a run directory (expected config.yaml and checkpoint/ in it)")
    cfg = dataclasses.replace(load_saved_config(config_path), device=device)
    checkpoint_path = os.path.join(path, "checkpoint", CHECKPOINTS[checkpoint])
    state = load_checkpoint(checkpoint_path, device)
    if state["config"]["task"] != cfg.task:
        raise LSPCError(f"{checkpoint_path} was trained on {state['config']['task']}, but the run is {cfg.task}")
    env = make_env(cfg.task, cfg.episode_len)
    agent = LSPC(env.observation_space.shape[0], env.action_space.shape[0], float(env.action_space.high[0]),
                 cfg, torch.device(device))
    agent.load_state_dict(state["model"])

    thresholds = list(thresholds or cost_limits(cfg.task))
    seeds = episode_seeds(seed, eval_episodes)
    evaluator = Evaluator(cfg.task, cfg.episode_len, eval_episodes)
    results = {"task": cfg.task, "run": os.path.abspath(path), "checkpoint": checkpoint, "step": state["step"],
               "seed": seed, "episodes": eval_episodes, "policies": {}}
    try:
        for name in policies or list(POLICIES):
            episodes = evaluator.run(getattr(agent, POLICIES[name]), seeds, seed, agent.device)
            per_threshold = {}
            for kappa in thresholds:
                norm_r, norm_c = zip(*(normalized_scores(env, r, c, kappa)
                                       for r, c in zip(episodes["reward"], episodes["cost"])))
                per_threshold[f"{kappa:g}"] = {
                    "normalized_reward": float(torch.tensor(norm_r).mean()),
                    "normalized_reward_std": float(torch.tensor(norm_r).std(unbiased=False)),
                    "normalized_cost": float(torch.tensor(norm_c).mean()),
                    "normalized_cost_std": float(torch.tensor(norm_c).std(unbiased=False)),
                }
            results["policies"][name] = {
                "reward": float(episodes["reward"].mean()), "reward_std": float(episodes["reward"].std()),
                "cost": float(episodes["cost"].mean()), "cost_std": float(episodes["cost"].std()),
                "length": float(episodes["length"].mean()), "thresholds": per_threshold,
            }
    finally:
        evaluator.close()
        env.close()
    return results


def markdown_table(results: Dict) -> str:
    thresholds = list(next(iter(results["policies"].values()))["thresholds"])
    header = "| policy | reward | cost | " + " | ".join(f"norm. reward / cost @ {k}" for k in thresholds) + " |"
    lines = [f"{results['task']}, checkpoint {results['checkpoint']} (step {results['step']}), "
             f"{results['episodes']} episodes, seed {results['seed']}", "", header,
             "|" + "---|" * (2 + len(thresholds) + 1)]
    for name, p in results["policies"].items():
        cells = [f"{p['thresholds'][k]['normalized_reward']:.3f} / {p['thresholds'][k]['normalized_cost']:.3f}"
                 for k in thresholds]
        lines.append(f"| {name} | {p['reward']:.1f} ± {p['reward_std']:.1f} | {p['cost']:.1f} ± {p['cost_std']:.1f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", required=True, help="a run directory written by train_lspc_iql.py")
    parser.add_argument("--checkpoint", choices=list(CHECKPOINTS), default="latest")
    parser.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    parser.add_argument("--cost_limits", nargs="+", type=float, default=None,
                        help="thresholds to score at (default: the task suite's three)")
    parser.add_argument("--eval_episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        if args.eval_episodes <= 0:
            raise LSPCError(f"--eval_episodes must be positive, got {args.eval_episodes}")
        results = evaluate_run(args.path, args.checkpoint, args.policies, args.cost_limits, args.eval_episodes,
                               args.seed, args.device)
    except LSPCError as err:
        sys.exit(f"error: {err}")
    out_dir = os.path.join(args.path, "eval")
    os.makedirs(out_dir, exist_ok=True)
    table = markdown_table(results)
    atomic_write_bytes(os.path.join(out_dir, "results.json"), lambda f: f.write(json.dumps(results, indent=2).encode()))
    atomic_write_bytes(os.path.join(out_dir, "results.md"), lambda f: f.write(table.encode()))
    print(table)
    print(f"wrote {out_dir}/results.json and results.md")


if __name__ == "__main__":
    main()
