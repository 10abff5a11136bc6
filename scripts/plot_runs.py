"""Overlay the training curves of several runs (paper Figure 2): LSPC-O and LSPC-S normalized
reward and episode cost against gradient steps, the task's thresholds dashed.

    python scripts/plot_runs.py logs/ [more dirs or run dirs] [--out runs.png]

Finds the run directories (config.yaml + metrics.jsonl) under the given paths. Runs of one task
whose configs differ only in bookkeeping (seed, name, directories, device, schedule length) are
one group, drawn as the mean with a +-1 std band over runs at the steps all of them evaluated;
runs that differ in anything else (e.g. eps, dataset) are separate groups, one column each,
labelled with the fields that differ. Never averages runs of different configurations.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lspc import LSPCError  # noqa: E402
from lspc.envs import check_task, cost_limits  # noqa: E402
from lspc.plots import Curves, plot_training_curves, read_curves  # noqa: E402

# config fields that do not change what is learned: runs differing only in these are averaged
BOOKKEEPING = {"seed", "name", "group", "logdir", "project", "resume", "device", "wandb_mode", "max_timesteps",
               "log_every", "eval_every", "eval_episodes"}


def find_run_dirs(paths: Sequence[str]) -> List[str]:
    runs = []
    for path in paths:
        if not os.path.isdir(path):
            raise LSPCError(f"{path} is not a directory")
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in ("wandb", "checkpoint", "eval"))
            if "config.yaml" in files and "metrics.jsonl" in files:
                runs.append(root)
    if not runs:
        raise LSPCError(f"no run directory (config.yaml and metrics.jsonl) under {', '.join(paths)}")
    return sorted(set(runs))


def _config(run_dir: str) -> Dict:
    path = os.path.join(run_dir, "config.yaml")
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
        check_task(config["task"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise LSPCError(f"could not read the run config {path} ({type(err).__name__}: {err})") from None
    return config


def _short(value: Optional[str]) -> str:
    """A config value for a figure title: file paths by their base name."""
    return os.path.basename(value.strip("'")) if value and "/" in value else str(value)


def group_runs(run_dirs: Sequence[str]) -> Dict[str, Tuple[str, List[str]]]:
    """Group label -> (task, run directories): one group per task and learning-relevant config."""
    variants: Dict[str, Dict[tuple, List[str]]] = defaultdict(lambda: defaultdict(list))
    for run in run_dirs:
        config = _config(run)
        key = tuple(sorted((k, repr(v)) for k, v in config.items() if k not in BOOKKEEPING))
        variants[config["task"]][key].append(run)
    groups = {}
    for task, by_key in sorted(variants.items()):
        differing = sorted({k for key in by_key for k, _ in key if len({dict(other).get(k) for other in by_key}) > 1})
        for key, runs in by_key.items():
            fields = dict(key)
            groups["\n".join([task] + [f"{k}={_short(fields.get(k))}" for k in differing])] = (task, runs)
    return groups


def read_groups(groups: Dict[str, Tuple[str, List[str]]]) -> Dict[str, List[Curves]]:
    """Each group's curves; a run without evaluations yet (just started) is skipped with a note."""
    curves: Dict[str, List[Curves]] = {}
    for label, (_, runs) in groups.items():
        for run in runs:
            try:
                curves.setdefault(label, []).append(read_curves(run))
            except LSPCError as err:
                print(f"note: skipping {run}: {err}", file=sys.stderr)
    if not curves:
        raise LSPCError("none of the runs has evaluation rows in its metrics.jsonl yet")
    return curves


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("paths", nargs="+", help="run directories or directories holding runs")
    parser.add_argument("--out", default="runs.png", help="the PNG to write")
    args = parser.parse_args(argv)
    try:
        groups = group_runs(find_run_dirs(args.paths))
        curves = read_groups(groups)
        thresholds = {label: cost_limits(groups[label][0]) for label in curves}
        try:
            plot_training_curves(curves, thresholds, args.out)
        except OSError as err:
            raise LSPCError(f"cannot write {args.out} ({err.strerror})") from None
    except LSPCError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    for label, runs in curves.items():
        print(f"{label.replace(chr(10), ', ')}: {len(runs)} run{'s' if len(runs) > 1 else ''}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
