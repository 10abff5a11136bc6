"""tools/gpu_node/gpu_check.sh, the GPU day's one command, run as a dry run on the CPU with the simulator, so that
it cannot rot (`make gpu-rehearsal` runs it without one, the GPU node's way, through gpu_bundle/run.sh)."""
import json
import os
import subprocess

from conftest import ROOT


def test_gpu_check_dry_run_on_the_cpu_writes_a_complete_report(tmp_path):
    out = tmp_path / "report"
    result = subprocess.run([os.path.join(ROOT, "tools", "gpu_node", "gpu_check.sh"), "--cpu", "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    steps = report["steps"]
    assert list(steps) == ["collect", "cuda_tests", "bench_train", "bench_methods", "determinism", "lspc_run"]
    assert report["skipped"] == {}  # the simulator is here: nothing is left out
    assert all(step["ok"] for step in steps.values()), steps
    assert "deselected" in steps["cuda_tests"]["summary"]  # no GPU here: the CUDA-marked tests are left out
    assert steps["bench_train"]["runs"]["eager"]["ours_it_per_s"] > 0
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
    assert "| fisor | 64 |" in table and "LSPC run: killed at step" in table
