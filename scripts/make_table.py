"""Collect eval_lspc.py results into the paper's Table 1 format.

    python scripts/make_table.py logs/ [more dirs, run dirs or results.json files] [--out table]

One row per task: per method, the normalized reward and normalized cost averaged over every
threshold and every run (seed) of the task, as in DSRL and the paper; then, for a suite with
several tasks, the average over its tasks. Cells of safe methods (normalized cost <= 1, decided on
the unrounded mean) are bold; the safe method with the highest reward is marked with a star.
Writes <out>.md and <out>.csv (unrounded values) and prints the markdown.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lspc import LSPCError  # noqa: E402
from lspc.checkpoint import atomic_write_bytes  # noqa: E402
from lspc.envs import SUITES, check_task  # noqa: E402

METHOD_ORDER = ("lspc-o", "lspc-s", "cvae")
RESULTS_FILE = os.path.join("eval", "results.json")
BEST = "★"


def find_results(paths: Sequence[str]) -> List[str]:
    """results.json files: given directly, in a run directory's eval/, or anywhere below a directory."""
    found = []
    for path in paths:
        if os.path.isfile(path):
            found.append(path)
        elif os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in ("wandb", "checkpoint"))
                if os.path.basename(root) == "eval" and "results.json" in files:
                    found.append(os.path.join(root, "results.json"))
        else:
            raise LSPCError(f"{path} does not exist")
    if not found:
        raise LSPCError(f"no {RESULTS_FILE} under {', '.join(paths)}; run eval_lspc.py --path <run_dir> first")
    return sorted({os.path.realpath(f) for f in found})


def load_results(path: str) -> Dict:
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
        for entry in results["policies"].values():
            for scores in entry["thresholds"].values():
                float(scores["normalized_reward"]), float(scores["normalized_cost"])
        check_task(results["task"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise LSPCError(f"{path} is not a results.json written by eval_lspc.py ({type(err).__name__}: {err})") from None
    return results


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _order(methods: Iterable[str]) -> List[str]:
    methods = set(methods)
    return [m for m in METHOD_ORDER if m in methods] + sorted(methods - set(METHOD_ORDER))


def _task_row(task: str, runs: Sequence[Dict]) -> Dict:
    threshold_sets = {tuple(sorted(next(iter(r["policies"].values()))["thresholds"], key=float)) for r in runs}
    if len(threshold_sets) > 1:
        raise LSPCError(f"the runs of {task} were scored at different thresholds {sorted(threshold_sets)}; "
                        "score them alike (eval_lspc.py --cost_limits)")
    cells = {}
    for method in _order(m for r in runs for m in r["policies"]):
        scores = [s for r in runs if method in r["policies"] for s in r["policies"][method]["thresholds"].values()]
        cells[method] = (_mean([s["normalized_reward"] for s in scores]), _mean([s["normalized_cost"] for s in scores]))
    return {"task": task, "runs": len(runs), "thresholds": [float(k) for k in threshold_sets.pop()], "cells": cells}


def _average_row(suite: str, rows: Sequence[Dict]) -> Dict:
    """The paper's suite average: the mean over tasks of the task cells (methods present in every task)."""
    methods = [m for m in _order(m for row in rows for m in row["cells"]) if all(m in row["cells"] for row in rows)]
    return {"task": f"average ({suite})", "runs": sum(row["runs"] for row in rows), "thresholds": [],
            "cells": {m: (_mean([row["cells"][m][0] for row in rows]), _mean([row["cells"][m][1] for row in rows]))
                      for m in methods}}


def build_rows(result_files: Sequence[str]) -> List[Dict]:
    """One row per task, suite by suite, each suite with several tasks followed by its average.
    A row's ``cells`` map a method to (normalized reward, normalized cost); ``best`` is the safe
    method with the highest reward, or None."""
    by_task: Dict[str, List[Dict]] = defaultdict(list)
    seen_runs: Dict[str, str] = {}
    for path in result_files:
        results = load_results(path)
        run = results.get("run", path)
        if run in seen_runs:
            raise LSPCError(f"{seen_runs[run]} and {path} are both results of the run {run}; pass one of them")
        seen_runs[run] = path
        by_task[results["task"]].append(results)
    rows = []
    for suite in SUITES:
        suite_rows = [_task_row(task, by_task[task]) for task in sorted(by_task) if check_task(task) == suite]
        rows += suite_rows + ([_average_row(suite, suite_rows)] if len(suite_rows) > 1 else [])
    for row in rows:
        safe = {m: reward for m, (reward, cost) in row["cells"].items() if cost <= 1.0}
        row["best"] = max(safe, key=safe.get) if safe else None
    return rows


def markdown(rows: Sequence[Dict]) -> str:
    methods = _order(m for row in rows for m in row["cells"])
    header = ["task"] + [f"{m.upper()} {what}" for m in methods for what in ("reward ↑", "cost ↓")] + ["runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["task"]]
        for m in methods:
            if m not in row["cells"]:
                cells += ["–", "–"]
                continue
            reward, cost = (f"{v:.2f}" for v in row["cells"][m])
            if row["cells"][m][1] <= 1.0:
                reward, cost = f"**{reward}**", f"**{cost}**"
            cells += [reward + (f" {BEST}" if m == row["best"] else ""), cost]
        lines.append("| " + " | ".join(cells + [str(row["runs"])]) + " |")
    lines += ["", "Normalized reward and cost (DSRL), averaged over the thresholds and runs of each task; "
              f"**bold**: safe (normalized cost <= 1); {BEST}: the safe method with the highest reward."]
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[Dict]) -> str:
    methods = _order(m for row in rows for m in row["cells"])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["task", "runs", "thresholds"]
                    + [f"{m}_normalized_{what}" for m in methods for what in ("reward", "cost")] + ["best_safe"])
    for row in rows:
        values = [v for m in methods for v in row["cells"].get(m, ("", ""))]
        writer.writerow([row["task"], row["runs"], " ".join(f"{k:g}" for k in row["thresholds"])]
                        + values + [row["best"] or ""])
    return out.getvalue()


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("paths", nargs="+", help="directories to search, run directories or results.json files")
    parser.add_argument("--out", default="table", help="output prefix: writes <out>.md and <out>.csv")
    args = parser.parse_args(argv)
    try:
        rows = build_rows(find_results(args.paths))
        table = markdown(rows)
        try:
            for suffix, text in ((".md", table), (".csv", csv_text(rows))):
                atomic_write_bytes(args.out + suffix, lambda f, text=text: f.write(text.encode("utf-8")))
        except OSError as err:
            raise LSPCError(f"cannot write {args.out}.md / .csv ({err.strerror})") from None
    except LSPCError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(table)
    print(f"wrote {args.out}.md and {args.out}.csv")


if __name__ == "__main__":
    main()
