"""tools/gpu_node/gpu_check.sh, the GPU day's one command, run as a dry run on the CPU with the simulator, so that
it cannot rot (`make gpu-rehearsal` runs it without one, the GPU node's way, through gpu_bundle/run.sh)."""
import json
import os
import subprocess
import time

from conftest import ROOT, load_script


def test_gpu_check_dry_run_on_the_cpu_writes_a_complete_report(tmp_path):
    out = tmp_path / "report"
    result = subprocess.run([os.path.join(ROOT, "tools", "gpu_node", "gpu_check.sh"), "--cpu", "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    steps = report["steps"]
    assert list(steps) == ["collect", "cuda_tests", "bench_train", "stacked", "bench_methods", "determinism", "lspc_run"]
    assert report["skipped"] == {}  # the simulator is here: nothing is left out
    assert all(step["ok"] for step in steps.values()), steps
    assert "deselected" in steps["cuda_tests"]["summary"]  # no GPU here: the CUDA-marked tests are left out
    assert steps["bench_train"]["runs"]["eager"]["ours_it_per_s"] > 0
    assert list(steps["stacked"]["runs"]) == ["eager"]  # compiling for the CPU takes minutes: the GPU run does it
    assert [row["seeds"] for row in steps["stacked"]["runs"]["eager"]] == [1, 8, 32]
    assert all(row["per_seed_it_per_s"] > 0 and row["single_it_per_s"] > 0 for row in steps["stacked"]["runs"]["eager"])
    rows = {row["method"]: row for row in steps["bench_methods"]["rows"]}
    assert len(rows) == 10 and all(row["wall_ms_per_step"] > 0 for row in rows.values())
    assert all(rows[m]["syncs_per_step"] == rows[m]["after_resume"] == 0 for m in ("lspc", "fisor", "trac"))
    assert all(row["syncs_per_step"] == row["after_resume"] >= 1 for m, row in rows.items()
               if m not in ("lspc", "fisor", "trac"))
    # the CPU is deterministic: every method repeats itself bit for bit
    assert steps["determinism"]["methods"] == {m: {"default": "yes", "deterministic": "yes"} for m in rows}
    run = steps["lspc_run"]
    assert 0 < run["killed_at_step"] < run["final_step"] == 600
    assert set(run["cpu_eval"]) == {"lspc-o", "lspc-s", "cvae"}
    table = (out / "report.md").read_text()
    assert "| fisor | 64 |" in table and "LSPC run: killed at step" in table and "| eager | 32 | 32 |" in table


def test_the_plan_fits_the_nodes_eight_minutes():
    """Every step the check runs on the GPU has a budget, and with run.sh's own work they total at most 8 minutes."""
    check = load_script("gpu_check", "tools/gpu_node")
    assert set(check.BUDGET_S) == {"cuda_tests", "bench_train", "stacked", "bench_methods", "determinism", "lspc_run"}
    assert sum(check.BUDGET_S.values()) + sum(check.RUN_SH_S.values()) <= 8 * 60


def test_a_step_stopped_at_its_budget_keeps_what_it_had_measured(tmp_path, monkeypatch):
    check = load_script("gpu_check", "tools/gpu_node")
    monkeypatch.setattr(check, "BUDGET_S", {"stacked": 1})
    report, runs = check.Report(str(tmp_path), cpu=False), {}

    def eager_then_stuck():
        runs["eager"] = [{"seeds": 8, "batch_size": 1024, "per_seed_it_per_s": 90.0, "single_it_per_s": 30.0,
                          "speedup_per_seed": 3.0, "peak_gpu_memory_mb": 500.0, "single_peak_gpu_memory_mb": 80.0}]
        time.sleep(5)  # the compiled run, stopped at the budget

    monkeypatch.setattr(check.Report, "write", lambda self: None)  # the report's device name needs a GPU
    report.step("stacked", eager_then_stuck, partial={"runs": runs})
    result = report.steps["stacked"]
    assert not result["ok"] and "budget of 1 s" in result["error"] and result["runs"] == runs
    table = check.markdown({"device": "a GPU", "torch": "2", "python": "3", "steps": report.steps, "skipped": {}})
    assert "| eager | 8 | 1024 | 90.0 | 30.0 | 3.0 | 500.0 | 80.0 |" in table
