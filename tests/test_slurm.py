"""scripts/sweep.py --executor slurm on a real Slurm cluster (scripts/slurm_cluster.sh starts a
one-node one): the miniature sweep of test_sweep.py (LSPC and BC-All, two seeds), in the middle of
training one LSPC job requeued with `scontrol requeue` and the other sent the signal that precedes a
time limit (which submitit answers by requeueing it); both resume from their checkpoints, and the
table equals that of the same sweep run locally.

Skipped when no cluster answers `sinfo`; `make test-slurm` (LSPC_REQUIRE_SLURM=1) turns the skip into
a failure, and .ci/run starts the cluster and runs it.
"""
import os
import re
import shutil
import subprocess
import time

import pytest

from test_sweep import dataset_dir, run_dir, sweep_cmd  # noqa: F401  (dataset_dir: a fixture)

# long enough that the requeued LSPC run is still training when its first checkpoint appears
# (evaluation every 300 steps writes one), short enough for a few seconds per run
SCHEDULE = ("--max_timesteps", "3000", "--eval_every", "300")


def slurm_reachable() -> str:
    """Why no cluster can be used, or '' when `sinfo` shows a node that takes jobs."""
    if shutil.which("sinfo") is None:
        return "no sinfo on PATH (apt-get install -y slurm-wlm munge)"
    try:
        result = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer in 20 s"
    states = result.stdout.split()
    if result.returncode != 0 or not {"idle", "mix", "alloc"} & set(states):
        said = (result.stderr or result.stdout).strip().splitlines()
        return f"sinfo shows no usable node ({said[-1] if said else 'no output'})"
    return ""


@pytest.fixture(scope="module")
def cluster():
    reason = slurm_reachable()
    if reason:
        message = (f"no Slurm cluster: {reason}; start one with `scripts/slurm_cluster.sh start` and "
                   "`export SLURM_CONF=/tmp/lspc-slurm/slurm.conf`, or run `make test-slurm`")
        if os.environ.get("LSPC_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)


def job_log(submitit_dir, method, seed):
    """(Slurm job id, path) of the submitit log of the job that trains (method, seed), once it has started."""
    script = "train_lspc_iql.py" if method == "lspc" else "train_baseline.py"
    for name in sorted(os.listdir(submitit_dir)):
        match = re.fullmatch(r"(\d+_\d+)_0_log\.out", name)
        if match:
            with open(os.path.join(submitit_dir, name)) as f:
                text = f.read()
            if re.search(rf"^\$ .*{script} .*--seed {seed} ", text, re.MULTILINE):
                return match.group(1), os.path.join(submitit_dir, name)
    return None


def scontrol_show(job_id):
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"(\w+)=(\S+)", out))


def wait_for_checkpoint(sweep, slurm_dir, method, seed):
    """The Slurm job id and submitit log of a run, once its first evaluation has written a checkpoint."""
    checkpoint = os.path.join(run_dir(slurm_dir, method, seed), "checkpoint", "model.pt")
    deadline = time.time() + 300
    while not os.path.isfile(checkpoint):
        assert sweep.poll() is None and time.time() < deadline, f"the {method} seed {seed} job wrote no checkpoint"
        time.sleep(0.05)
    return job_log(slurm_dir / "submitit", method, seed)


def wait_for_state(job_id, states, timeout=120):
    deadline = time.time() + timeout
    while scontrol_show(job_id)["JobState"] not in states:
        assert time.time() < deadline, f"job {job_id} not in {states} after {timeout} s"
        time.sleep(0.05)


def test_sweep_on_slurm_survives_a_requeue(cluster, dataset_dir, tmp_path):  # noqa: F811
    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"
    local = subprocess.run(sweep_cmd(local_dir, dataset_dir, *SCHEDULE), capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stdout + local.stderr

    sweep = subprocess.Popen(sweep_cmd(slurm_dir, dataset_dir, *SCHEDULE, "--executor", "slurm"),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    jobs = {}
    try:
        # seed 0: requeued by hand; seed 1: the signal Slurm sends before a time limit, which submitit
        # answers by requeueing the job itself
        for seed, interrupt in ((0, ["scontrol", "requeue"]), (1, ["scancel", "--signal=USR2"])):
            job_id, log = wait_for_checkpoint(sweep, slurm_dir, "lspc", seed)
            signalled = time.time()
            try:  # scancel retries for minutes once submitit's requeue is under way ("can not be altered now")
                subprocess.run([*interrupt, job_id], timeout=5)
            except subprocess.TimeoutExpired:
                pass
            wait_for_state(job_id, ("PENDING",))  # its processes have exited
            jobs[seed] = (job_id, log, time.time() - signalled)
            # Slurm makes a requeued job eligible again only 120 s later; let it start when a CPU is free
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
        out, _ = sweep.communicate(timeout=600)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0, out
    assert "sweep: 0 skipped, 4 ran, 0 failed" in out and "FAILED" not in out, out

    for seed, (job_id, log, stop_seconds) in jobs.items():
        # Slurm requeued it once; its first start stopped the training by SIGTERM after a checkpoint
        assert int(scontrol_show(job_id)["Restarts"]) == 1, seed
        with open(log) as f:
            stdout = f.read()
        with open(log.replace("_log.out", "_log.err")) as f:
            stderr = f.read()
        stopped = re.findall(r"interrupted by SIGTERM at step (\d+); checkpoint saved", stderr)
        assert len(stopped) == 1, stderr
        step = int(stopped[0])
        assert 300 <= step < 3000, seed  # mid-training, at or after the first checkpoint
        # the second start resumed the run from that checkpoint (not from step 0) and did not start it afresh
        run = run_dir(slurm_dir, "lspc", seed)
        assert re.search(rf"^\$ .*train_lspc_iql\.py .* --resume {re.escape(run)}$", stdout, re.MULTILINE), stdout
        assert stdout.count("$ ") == 3 and "without checkpoint" not in stdout, stdout  # train, resume, evaluate
        assert re.search(rf"\b{step}/3000\b", stderr.split("interrupted by SIGTERM")[1]), stderr  # the bar resumes
        print(f"seed {seed}: stopped at step {step}, {stop_seconds:.1f} s from the signal to the job's end")

    for name in ("table.md", "table.csv"):  # the requeues changed nothing in the results
        with open(local_dir / name) as a, open(slurm_dir / name) as b:
            assert a.read() == b.read(), name
