"""The miniature sweep of every method, and of the example plugin by its import path, down to the table
(its own file: `make test`'s workers take a file each, and this one test takes about as long as the
rest of tests/test_sweep.py)."""
import csv
import json
import os
import subprocess
import sys

from conftest import ROOT
from test_sweep import TASK, dataset_dir  # noqa: F401  (dataset_dir: a fixture)


def test_miniature_sweep_of_every_method_down_to_the_table(dataset_dir, tmp_path):  # noqa: F811
    """All ten methods and the example plugin (examples/td3bc_lag.py, trained per threshold), one seed,
    20 steps with small networks: every run trains, is evaluated at its thresholds and lands in its
    column of the table, in the paper's order, the plugin's after them."""
    plugin = "examples.td3bc_lag:TD3BCLag"
    methods = ["lspc", "bc-all", "bc-safe", "cdt", "bcq-lag", "bear-lag", "cpq", "coptidice", "fisor", "trac", plugin]
    small = "--hidden_dim 32 --batch_size 64 --wandb_mode disabled --device cpu"
    own = {"lspc": " --latent_dim 8", "cdt": " --hparam augment_percent=0", "fisor": " --hparam critic_batch_size=32",
           # the tiny file has no unsafe segment at 40: the bottom of the safe ones are the undesirable ones
           "trac": " --hparam bc_steps=10 --hparam warmup_steps=5 --hparam safe_bottom_perc=0.5"}
    extra = [token for m in methods for token in ("--method_extra", f"{m}={small}" + own.get(m, ""))]
    logdir = tmp_path / "sweep"
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "sweep.py"), "--executor", "local", "--tasks", TASK,
           "--seeds", "0", "--methods", *methods, "--logdir", str(logdir), "--dataset_dir", str(dataset_dir),
           "--jobs", "2", "--max_timesteps", "20", "--eval_every", "20", "--eval_episodes", "2",
           "--eval_extra=--no_figures", *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "25 runs, 0 already done (skipped), 25 to run" in result.stdout  # 4 + 7 per-threshold methods x 3
    with open(os.path.join(logdir, "table.csv")) as f:
        (row,) = list(csv.DictReader(f))
    assert row["runs"] == "25" and row["thresholds"] == "10 20 40" and row["td3bc-lag_cells"] == "3/3"
    policies = ("bc-all", "bc-safe", "cdt", "bcq-lag", "bear-lag", "cpq", "coptidice", "fisor", "trac", "lspc-s",
                "lspc-o", "cvae", "td3bc-lag")
    for policy in policies:
        for what in ("reward", "cost"):
            float(row[f"{policy}_normalized_{what}"])  # every column filled
    table = open(os.path.join(logdir, "table.md")).read()
    header = table.splitlines()[0]
    order = ["BC-All", "BC-Safe", "CDT", "BCQ-Lag", "BEAR-Lag", "CPQ", "COptiDICE", "FISOR", "TraC", "LSPC-S",
             "LSPC-O", "CVAE", "TD3BC-LAG"]
    positions = [header.index(f"| {name} reward") for name in order]
    assert positions == sorted(positions)
    assert "COptiDICE, TraC, TD3BC-LAG: trained once per threshold and scored at that κ only" in table
    # CDT: one model, scored at every threshold with that threshold's prompt
    with open(os.path.join(logdir, f"{TASK}-cost-10", "cdt-seed0", "eval", "results.json")) as f:
        cdt = json.load(f)["policies"]["cdt"]["thresholds"]
    assert {k: v["prompt"] for k, v in cdt.items()} == {"10": [500, 10], "20": [500, 20], "40": [700, 40]}
