"""Collect eval_lspc.py results into the paper's Table 1 format.

    python scripts/make_table.py logs/ [more dirs, run dirs or results.json files] [--out table]

One row per task: per method, the normalized reward and normalized cost averaged over every
threshold and every seed of the task, as in DSRL and the paper; then, for a suite with several
tasks, the average over its tasks. Methods side by side in the paper's order: BC-All, BC-Safe, CDT,
BCQ-Lag, BEAR-Lag, CPQ, COptiDICE, FISOR, TraC, LSPC-S, LSPC-O, then the CVAE and any other (your own
methods, by their name). LSPC, BC-All, CDT and FISOR runs are scored at every threshold; BC-Safe,
BCQ-Lag, BEAR-Lag, CPQ, COptiDICE and TraC runs (one per threshold) only at their own, and so is a
method of yours whose results.json says ``per_threshold``. Every method is expected at every (seed,
threshold) that any method ran at for the task: an incomplete sweep is shown as such, never ranked
silently. A method's cell averages the cells that ran, marked (ran/expected) when some did not; a
method with none is "missing"; the missing (method, seed, threshold) cells are listed under the
table. Cells of safe methods (normalized cost <= 1, decided on the unrounded mean) are bold; the
safe method with the highest reward is marked with a star, only in rows where every method covers
the same cells. Writes <out>.md, <out>.csv (unrounded values, each method's cells count and the
missing cells) and <out>.png (the table drawn as the papers show it: safe cells bold, unsafe grey,
the best safe method highlighted, incomplete rows named so) and prints the markdown.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lspc import LSPCError  # noqa: E402
from lspc.methods.baselines import ALGOS, PER_THRESHOLD  # noqa: E402
from lspc.checkpoint import atomic_write_bytes  # noqa: E402
from lspc.envs import SUITES, check_task  # noqa: E402
from lspc.plots import plot_results_table  # noqa: E402

METHOD_ORDER = (*ALGOS, "lspc-s", "lspc-o", "cvae")  # the paper's column order, LSPC's ablation last
LABELS = {"lspc-o": "LSPC-O", "lspc-s": "LSPC-S", "bc-all": "BC-All", "bc-safe": "BC-Safe", "cdt": "CDT",
          "cpq": "CPQ", "bcq-lag": "BCQ-Lag", "bear-lag": "BEAR-Lag", "coptidice": "COptiDICE", "fisor": "FISOR", "trac": "TraC",
          "cvae": "CVAE"}
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


def _kappas(kappas: Iterable[float]) -> str:
    return ", ".join(f"{k:g}" for k in sorted(kappas))


def _coverage(task: str, runs: Sequence[Dict]) -> Dict[str, Dict[str, Dict[float, Dict]]]:
    """method -> seed label -> threshold -> its scores, refusing a (method, seed, threshold) scored
    by two runs (two sweeps or configurations mixed)."""
    coverage: Dict[str, Dict[str, Dict[float, Dict]]] = defaultdict(lambda: defaultdict(dict))
    source: Dict[Tuple[str, str, float], str] = {}
    for r in runs:
        # results of eval_lspc.py name the training seed; without it each run counts as its own seed
        seed = f"seed {r['train_seed']}" if "train_seed" in r else f"run {r['run']}"
        for method, entry in r["policies"].items():
            for kappa, scores in entry["thresholds"].items():
                key = (method, seed, float(kappa))
                if key in source:
                    raise LSPCError(f"{method} of {task}, {seed}, was scored at {float(kappa):g} by two runs, "
                                    f"{source[key]} and {r['run']}; pass one of them")
                source[key] = r["run"]
                coverage[method][seed][float(kappa)] = scores
    return coverage


def _task_row(task: str, runs: Sequence[Dict], methods: Sequence[str]) -> Dict:
    """The task's cells over every (seed, threshold) that ran. Every method of the table is expected at
    every seed and threshold any method of the task ran at; what it lacks is listed in ``missing``, and
    its cell (if any ran) is the mean over what did."""
    coverage = _coverage(task, runs)
    seeds_all = sorted({seed for by_seed in coverage.values() for seed in by_seed})
    thresholds = sorted({kappa for by_seed in coverage.values() for kappas in by_seed.values() for kappa in kappas})
    cells, seeds, cell_counts, missing = {}, {}, {}, {}
    for method in methods:
        by_seed = coverage.get(method, {})
        scores = [s for by_kappa in by_seed.values() for s in by_kappa.values()]
        lacking = [(seed, kappa) for seed in seeds_all for kappa in thresholds if kappa not in by_seed.get(seed, {})]
        cell_counts[method] = (len(scores), len(seeds_all) * len(thresholds))
        if lacking:
            missing[method] = lacking
        if scores:
            cells[method] = (_mean([s["normalized_reward"] for s in scores]),
                             _mean([s["normalized_cost"] for s in scores]))
            seeds[method] = len(by_seed)
    # methods trained per threshold: ours by name, a plugin's as its results.json says
    per_threshold = sorted({m for r in runs if r.get("per_threshold") for m in r["policies"]})
    return {"task": task, "suite": check_task(task), "runs": len(runs), "seeds": seeds, "seed_count": len(seeds_all),
            "thresholds": thresholds, "cells": cells, "cell_counts": cell_counts, "missing": missing,
            "per_threshold": per_threshold}


def _average_row(suite: str, rows: Sequence[Dict], methods: Sequence[str]) -> Dict:
    """The paper's suite average: per method, the mean over the tasks it has cells in; a method
    missing cells in any task of the suite is incomplete here too."""
    cells, cell_counts, missing = {}, {}, {}
    for m in methods:
        present = [row for row in rows if m in row["cells"]]
        if present:
            cells[m] = (_mean([row["cells"][m][0] for row in present]), _mean([row["cells"][m][1] for row in present]))
        cell_counts[m] = tuple(sum(row["cell_counts"][m][i] for row in rows) for i in (0, 1))
        lacking = [(row["task"], seed, kappa) for row in rows for seed, kappa in row["missing"].get(m, [])]
        if lacking:
            missing[m] = lacking
    return {"task": f"average ({suite})", "suite": suite, "runs": sum(row["runs"] for row in rows), "seeds": {},
            "seed_count": None, "thresholds": [], "cells": cells, "cell_counts": cell_counts, "missing": missing,
            "average": True}


def build_rows(result_files: Sequence[str]) -> List[Dict]:
    """One row per task, suite by suite, each suite with several tasks followed by its average.
    A row's ``cells`` map a method to (normalized reward, normalized cost) over the (seed, threshold)
    cells that ran, ``cell_counts`` to (cells that ran, cells expected), ``missing`` to what did not
    run; ``best`` is the safe method with the highest reward, or None: also when the methods do not
    cover the same cells, since their means would then average different runs."""
    by_task: Dict[str, List[Dict]] = defaultdict(list)
    seen_runs: Dict[str, str] = {}
    for path in result_files:
        results = load_results(path)
        run = results.get("run", path)
        if run in seen_runs:
            raise LSPCError(f"{seen_runs[run]} and {path} are both results of the run {run}; pass one of them")
        seen_runs[run] = path
        by_task[results["task"]].append(results)
    methods = _order(m for runs in by_task.values() for r in runs for m in r["policies"])
    rows = []
    for suite in SUITES:
        suite_rows = [_task_row(task, by_task[task], methods) for task in sorted(by_task) if check_task(task) == suite]
        rows += suite_rows + ([_average_row(suite, suite_rows, methods)] if len(suite_rows) > 1 else [])
    for row in rows:
        safe = {m: reward for m, (reward, cost) in row["cells"].items() if cost <= 1.0}
        row["best"] = max(safe, key=safe.get) if safe and not row["missing"] else None
    return rows


def _label(method: str) -> str:
    return LABELS.get(method, method.upper())


def protocol_note(rows: Sequence[Dict]) -> str:
    """How the cells were made: which methods are per threshold, how many seeds and thresholds."""
    methods = _order(m for row in rows for m in row["cells"])
    trained_per_kappa = set(PER_THRESHOLD).union(*(row.get("per_threshold", ()) for row in rows))
    per_kappa = [_label(m) for m in methods if m in trained_per_kappa]
    per_seed = [_label(m) for m in methods if m not in trained_per_kappa]
    counts = sorted({row["seed_count"] for row in rows if row["seed_count"] is not None})
    seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    kappas = {}
    for row in rows:
        if row["thresholds"]:
            kappas.setdefault(row["suite"], set()).update(row["thresholds"])
    note = (f"Each cell: mean over {seeds} seed{'s' if counts != [1] else ''} × the thresholds κ "
            f"({'; '.join(f'{suite}: {_kappas(k)}' for suite, k in kappas.items())}).")
    if per_seed:
        note += (f" {', '.join(per_seed)}: one model per seed, scored at every threshold"
                 + (" (CDT prompted with each threshold's target return and cost)." if "cdt" in methods else "."))
    if per_kappa:
        note += (f" {', '.join(per_kappa)}: trained once per threshold and scored at that κ only"
                 " (BC-Safe on the trajectories with cost return <= κ; the others with κ as their cost limit).")
    return note


def _cells_note(row: Dict, method: str) -> str:
    """" (4/6)" after a cell that averages fewer (seed, threshold) cells than expected, else ""."""
    ran, expected = row["cell_counts"][method]
    return f" ({ran}/{expected})" if ran < expected else ""


def missing_lines(rows: Sequence[Dict]) -> List[str]:
    """Per task and method, the (seed, threshold) cells that did not run."""
    lines = []
    for row in rows:
        if row.get("average"):
            continue
        for method, lacking in row["missing"].items():
            by_seed: Dict[str, List[float]] = defaultdict(list)
            for seed, kappa in lacking:
                by_seed[seed].append(kappa)
            cells = "; ".join(f"{seed} at κ {_kappas(kappas)}" for seed, kappas in sorted(by_seed.items()))
            lines.append(f"- {row['task']}, {_label(method)}: missing {cells}")
    return lines


def markdown(rows: Sequence[Dict]) -> str:
    methods = _order(m for row in rows for m in row["cell_counts"])
    header = ["task"] + [f"{_label(m)} {what}" for m in methods for what in ("reward ↑", "cost ↓")] + ["runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["task"]]
        for m in methods:
            if m not in row["cells"]:
                cells += ["missing", "missing"]
                continue
            reward, cost = (f"{v:.2f}" for v in row["cells"][m])
            if row["cells"][m][1] <= 1.0:
                reward, cost = f"**{reward}**", f"**{cost}**"
            cells += [reward + (f" {BEST}" if m == row["best"] else "") + _cells_note(row, m), cost]
        lines.append("| " + " | ".join(cells + [str(row["runs"])]) + " |")
    lines += ["", "Normalized reward and cost (DSRL), averaged over the thresholds and seeds of each task; "
              f"**bold**: safe (normalized cost <= 1); {BEST}: the safe method with the highest reward."]
    missing = missing_lines(rows)
    if missing:
        lines += ["", "Incomplete: every method is expected at every seed and threshold that any method ran at for "
                  "the task. A cell marked (ran/expected) averages only the cells that ran, and no "
                  f"{BEST} is given in a row whose methods do not cover the same cells.", *missing]
    lines += ["", protocol_note(rows)]
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[Dict]) -> str:
    methods = _order(m for row in rows for m in row["cell_counts"])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["task", "runs", "seeds", "thresholds"]
                    + [f"{m}_{what}" for m in methods for what in ("normalized_reward", "normalized_cost", "cells")]
                    + ["best_safe", "missing"])
    for row in rows:
        values = [v for m in methods for v in (*row["cells"].get(m, ("", "")), "{}/{}".format(*row["cell_counts"][m]))]
        missing = "; ".join(" ".join([m, *map(str, cell[:-1]), f"κ={cell[-1]:g}"])
                            for m, lacking in row["missing"].items() for cell in lacking)
        writer.writerow([row["task"], row["runs"], row["seed_count"] if row["seed_count"] is not None else "",
                         " ".join(f"{k:g}" for k in row["thresholds"])]
                        + values + [row["best"] or "", missing])
    return out.getvalue()


def write_table(paths: Sequence[str], out: str) -> str:
    """Build the table of every results.json under ``paths``, write <out>.md, <out>.csv and the
    figure <out>.png; returns the markdown. Raises LSPCError on bad or inconsistent results."""
    rows = build_rows(find_results(paths))
    table = markdown(rows)
    methods = _order(m for row in rows for m in row["cell_counts"])
    try:
        for suffix, text in ((".md", table), (".csv", csv_text(rows))):
            atomic_write_bytes(out + suffix, lambda f, text=text: f.write(text.encode("utf-8")))
        plot_results_table([row["task"] + (" (incomplete)" if row["missing"] else "") for row in rows],
                           [_label(m) for m in methods],
                           [{_label(m): cell for m, cell in row["cells"].items()} for row in rows],
                           [_label(row["best"]) if row["best"] else None for row in rows], out + ".png")
    except OSError as err:
        raise LSPCError(f"cannot write {out}.md / .csv / .png ({err.strerror})") from None
    return table


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("paths", nargs="+", help="directories to search, run directories or results.json files")
    parser.add_argument("--out", default="table", help="output prefix: writes <out>.md and <out>.csv")
    args = parser.parse_args(argv)
    try:
        table = write_table(args.paths, args.out)
    except LSPCError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(table)
    print(f"wrote {args.out}.md, {args.out}.csv and {args.out}.png")


if __name__ == "__main__":
    main()
