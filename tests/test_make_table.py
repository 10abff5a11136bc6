"""scripts/make_table.py never ranks an incomplete sweep silently: a missing (method, seed,
threshold) cell is shown as missing, a method's mean covers only what ran, and no best method is
marked in a row whose methods do not cover the same cells."""
import csv
import json
import os

import pytest

from conftest import load_script
from test_sweep import TASK, write_protocol, write_results


def table(tmp_path, capsys):
    make_table = load_script("make_table")
    out = str(tmp_path / "table")
    make_table.main([str(tmp_path), "--out", out])
    capsys.readouterr()
    with open(out + ".csv") as f:
        rows = list(csv.DictReader(f))
    with open(out + ".md") as f:
        return rows, f.read()


def task_line(markdown, task):
    return next(line for line in markdown.splitlines() if line.startswith(f"| {task} "))


def test_a_missing_run_is_shown_and_nothing_is_ranked(tmp_path, capsys):
    write_protocol(tmp_path, skip={("bc-safe", 1, 40)})  # BC-Safe's seed-1 run at κ=40 never ran
    (row,), markdown = table(tmp_path, capsys)
    # the mean over the five cells that ran (seed 0: 0.1, 0.2, 0.4; seed 1: 1.1, 1.2), not over six
    assert float(row["bc-safe_normalized_reward"]) == pytest.approx(3.0 / 5, abs=1e-12)
    assert row["bc-safe_cells"] == "5/6" and row["lspc-o_cells"] == row["cpq_cells"] == "6/6"
    assert row["missing"] == "bc-safe seed 1 κ=40"
    # BC-Safe has the highest safe reward but averages other runs than the rest: no best
    assert row["best_safe"] == ""
    line = task_line(markdown, TASK)
    assert "★" not in line and "**0.60** (5/6)" in line
    assert f"- {TASK}, BC-Safe: missing seed 1 at κ 40" in markdown
    # the complete sweep ranks as before
    write_results(tmp_path, "cost-40/bc-safe-seed{seed}", 1, {"bc-safe": {40: (1.4, 0.5)}})
    (row,), markdown = table(tmp_path, capsys)
    assert (row["best_safe"], row["bc-safe_cells"], row["missing"]) == ("bc-safe", "6/6", "")
    assert "★" in task_line(markdown, TASK) and "Incomplete" not in markdown


def write_task_results(root, run, task, seed, policies):
    """A results.json of ``task`` as eval_lspc.py writes it; policies: name -> {kappa: (reward, cost)}."""
    os.makedirs(os.path.join(root, run, "eval"))
    with open(os.path.join(root, run, "eval", "results.json"), "w") as f:
        json.dump({"task": task, "run": os.path.join(root, run), "train_seed": seed, "policies": {
            name: {"thresholds": {f"{k:g}": {"normalized_reward": r, "normalized_cost": c}
                                  for k, (r, c) in scores.items()}} for name, scores in policies.items()}}, f)


def test_a_method_without_a_seed_or_a_task_is_missing_there(tmp_path, capsys):
    other = "OfflineCarRun-v0"
    for task in (TASK, other):
        for seed in (0, 1):
            write_task_results(tmp_path, f"{task}/lspc_iql-seed{seed}", task, seed,
                               {"lspc-s": {10: (0.3, 0.5), 20: (0.3, 0.25)}})
    # BC-All: seed 0 of BallRun only
    write_task_results(tmp_path, f"{TASK}/bc-all-seed0", TASK, 0, {"bc-all": {10: (0.9, 0.2), 20: (0.9, 0.1)}})
    rows, markdown = table(tmp_path, capsys)
    ball, car, average = rows
    assert (ball["task"], car["task"], average["task"]) == (TASK, other, "average (bullet)")
    assert ball["bc-all_cells"] == "2/4" and float(ball["bc-all_normalized_reward"]) == 0.9
    assert car["bc-all_cells"] == "0/4" and car["bc-all_normalized_reward"] == ""
    assert ball["lspc-s_cells"] == car["lspc-s_cells"] == "4/4"
    assert [r["best_safe"] for r in rows] == ["", "", ""]  # BC-All's 0.9 is never ranked on partial cells
    assert "| missing | missing |" in task_line(markdown, other)
    assert f"- {TASK}, BC-All: missing seed 1 at κ 10, 20" in markdown
    assert f"- {other}, BC-All: missing seed 0 at κ 10, 20; seed 1 at κ 10, 20" in markdown
    assert average["bc-all_cells"] == "2/8" and float(average["bc-all_normalized_reward"]) == 0.9
    # with BC-All's runs complete, every row ranks it
    write_task_results(tmp_path, f"{TASK}/bc-all-seed1", TASK, 1, {"bc-all": {10: (0.9, 0.2), 20: (0.9, 0.1)}})
    for seed in (0, 1):
        write_task_results(tmp_path, f"{other}/bc-all-seed{seed}", other, seed,
                           {"bc-all": {10: (0.8, 0.2), 20: (0.8, 0.1)}})
    rows, _ = table(tmp_path, capsys)
    assert [r["best_safe"] for r in rows] == ["bc-all", "bc-all", "bc-all"]
