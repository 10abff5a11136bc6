"""Zero-shot transfer (paper appendix A.6, Figure 12): one trained run, LSPC or baseline, evaluated
on several tasks with its observation and action spaces, each normalized with its own reference returns.

    python scripts/transfer.py RUN_DIR [--tasks T [T ...]] [--eval_episodes 20] [--checkpoint latest]
        [--policies lspc-o lspc-s] [--seed 0] [--device cpu]

Default tasks: the nine MetaDrive tasks, 20 episodes each (as the paper). Each task's results go to
<run>/eval/transfer/<task>/results.json as ``eval_lspc.py --eval_task`` writes them (the run's own
task: its eval/results.json is left alone); then <run>/eval/transfer/transfer.png (normalized
reward bars, cost bars, the thresholds as lines) and transfer.md, the table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from eval_lspc import evaluate, load_run  # noqa: E402
from lspc import LSPCError  # noqa: E402
from lspc.checkpoint import atomic_write_bytes  # noqa: E402
from lspc.envs import SUITES, check_task  # noqa: E402
from lspc.plots import plot_transfer  # noqa: E402


def transfer(run_dir: str, tasks: List[str], eval_episodes: int = 20, checkpoint: str = "latest",
             policies: Optional[List[str]] = None, seed: int = 0, device: str = "cpu") -> List[Dict]:
    """eval_lspc's results of the run on every task, in order; each also written to eval/transfer/<task>/."""
    for task in tasks:
        check_task(task)  # every name before the first episode
    run = load_run(run_dir, checkpoint, device)
    results = []
    try:
        for task in tasks:
            result = evaluate(run, policies, None, eval_episodes, seed, eval_task=task)
            out_dir = os.path.join(run_dir, "eval", "transfer", task)
            os.makedirs(out_dir, exist_ok=True)
            atomic_write_bytes(os.path.join(out_dir, "results.json"),
                               lambda f: f.write(json.dumps(result, indent=2).encode()))
            print(f"{task}: " + ", ".join(
                f"{name} reward {entry['reward']:.1f} cost {entry['cost']:.1f}" for name, entry in result["policies"].items()),
                flush=True)
            results.append(result)
    finally:
        run.close()
    return results


def transfer_table(results: List[Dict]) -> str:
    """Markdown: one row per (task, policy), raw means and the normalized scores at every threshold."""
    thresholds = [f"{kappa:g}" for kappa in results[0]["thresholds"]]
    header = ["task", "policy", "reward", "cost"] + [f"norm. reward / cost @ {k}" for k in thresholds]
    lines = [f"zero-shot transfer of {results[0]['run']} (trained on {results[0]['trained_task']}), checkpoint "
             f"{results[0]['checkpoint']} (step {results[0]['step']}), {results[0]['episodes']} episodes per task", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        for name, entry in result["policies"].items():
            cells = [result["task"] + (" (trained)" if result["task"] == result["trained_task"] else ""), name,
                     f"{entry['reward']:.1f}", f"{entry['cost']:.1f}"]
            cells += [f"{entry['thresholds'][k]['normalized_reward']:.3f} / {entry['thresholds'][k]['normalized_cost']:.3f}"
                      for k in thresholds]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("run_dir", help="a run directory written by train_lspc_iql.py or scripts/train_baseline.py")
    parser.add_argument("--tasks", nargs="+", default=SUITES["metadrive"],
                        help="tasks to evaluate on, the run's own included (default: the nine MetaDrive tasks)")
    parser.add_argument("--eval_episodes", type=int, default=20, help="episodes per policy and task (default: 20)")
    parser.add_argument("--checkpoint", default="latest", help="as eval_lspc.py --checkpoint (default: latest)")
    parser.add_argument("--policies", nargs="+", default=None, help="default: all of the run's")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the episode starts and the policies' noise (default: 0)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = parser.parse_args(argv)
    try:
        results = transfer(args.run_dir, list(dict.fromkeys(args.tasks)), args.eval_episodes, args.checkpoint,
                           args.policies, args.seed, args.device)
    except LSPCError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    out_dir = os.path.join(args.run_dir, "eval", "transfer")
    table = transfer_table(results)
    atomic_write_bytes(os.path.join(out_dir, "transfer.md"), lambda f: f.write(table.encode()))
    plot_transfer(results, results[0]["trained_task"], os.path.join(out_dir, "transfer.png"))
    print(table)
    print(f"wrote {out_dir}/transfer.md, transfer.png")


if __name__ == "__main__":
    main()
