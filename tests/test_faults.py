"""Faults the shared training loop survives: SIGKILL at random moments (chaos), a run killed before
its first checkpoint, two processes on one run directory, a checkpoint write that fails."""
import errno
import os
import random
import re
import subprocess
import sys
import time

import pytest
import torch

import lspc.checkpoint
import train_lspc_iql
from conftest import ROOT, tiny_args
from lspc.checkpoint import load_checkpoint
from lspc.run_logger import read_metrics
from lspc_iql_configs import load_config
from test_baselines import flags as baseline_flags
from test_training import assert_same_state, run_dir_of

BASELINE_SCRIPT = os.path.join(ROOT, "scripts", "train_baseline.py")


def without_timing(rows):
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


def start(cmd):
    """A training script in the background; returns once it has printed its run directory (training
    starts right after), or when it has ended."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("run_dir: "):
            break
    return proc


def finish(proc, timeout=300):
    proc.stdout.read()
    return proc.wait(timeout=timeout)


def chaos(cmd, run_dir, kills, rng, max_timesteps):
    """Run ``cmd`` to its end, SIGKILLed ``kills`` times at random moments of training and continued
    after every kill: with --resume when the directory holds a run's config, else as first started.
    A kill that lands after the run's last checkpoint (the process was ending) leaves nothing to resume."""
    latest = os.path.join(run_dir, "checkpoint", "model.pt")
    for _ in range(kills + 1):
        if os.path.exists(latest) and load_checkpoint(latest)["step"] == max_timesteps:
            return
        resume = ["--resume", run_dir] if os.path.exists(os.path.join(run_dir, "config.yaml")) else []
        proc = start([*cmd, *resume])
        if _ < kills:
            time.sleep(rng.uniform(0.0, 1.5))
            proc.kill()
            finish(proc)
        else:
            assert finish(proc) == 0


# LSPC, an osrl baseline, and a method plugged in by its import path (examples/td3bc_lag.py)
@pytest.mark.parametrize("script", ["lspc", "bcq-lag", pytest.param("examples.td3bc_lag:TD3BCLag", id="td3bc-lag")])
def test_sigkill_at_random_moments_then_resume_is_bit_exact(script, ballrun_file, tmp_path):
    schedule = dict(max_timesteps=400, eval_every=100, log_every=10, eval_episodes=1, checkpoint_every_minutes=0.0005)
    if script == "lspc":
        def command(logdir):
            return [sys.executable, "train_lspc_iql.py", *tiny_args(ballrun_file, logdir, **schedule)]
        name = "lspc_iql-seed0"
    else:
        def command(logdir):
            return [sys.executable, BASELINE_SCRIPT, *baseline_flags(script, ballrun_file, logdir, **schedule)]
        name = f"{script}-seed0"
    straight, chaotic = run_dir_of(tmp_path / "straight", name), run_dir_of(tmp_path / "chaos", name)
    assert finish(start(command(tmp_path / "straight"))) == 0
    chaos(command(tmp_path / "chaos"), chaotic, kills=4, rng=random.Random(f"chaos-{script}"),
          max_timesteps=schedule["max_timesteps"])
    a, b = (load_checkpoint(os.path.join(d, "checkpoint", "model.pt")) for d in (straight, chaotic))
    assert a["step"] == b["step"] == 400
    for key in ("model", "rng", "window", "best"):
        assert_same_state(a[key], b[key], key)
    assert without_timing(read_metrics(chaotic)) == without_timing(read_metrics(straight))
    for best in ("model_best_o.pt", "model_best_s.pt") if script == "lspc" else ("model_best.pt",):
        assert_same_state(load_checkpoint(os.path.join(straight, "checkpoint", best))["model"],
                          load_checkpoint(os.path.join(chaotic, "checkpoint", best))["model"], best)
    assert not [f for f in os.listdir(os.path.join(chaotic, "checkpoint")) if f.startswith(".tmp-")]


def test_a_run_killed_before_its_first_checkpoint_is_started_afresh(ballrun_file, tmp_path):
    # no evaluation and no periodic checkpoint for a long while: the kill leaves config.yaml and metrics only
    args = tiny_args(ballrun_file, tmp_path, max_timesteps=100000, eval_every=100000, log_every=2,
                     checkpoint_every_minutes=60)
    proc = start([sys.executable, "train_lspc_iql.py", *args])
    run_dir, metrics = run_dir_of(tmp_path), os.path.join(run_dir_of(tmp_path), "metrics.jsonl")
    while not os.path.getsize(metrics):
        time.sleep(0.1)
    proc.kill()
    finish(proc)
    assert not os.path.exists(os.path.join(run_dir, "checkpoint", "model.pt"))
    short = tiny_args(ballrun_file, tmp_path, max_timesteps=20)
    for argv in (short, ["--resume", run_dir, "--max_timesteps", "20"]):  # the original command, or --resume
        result = subprocess.run([sys.executable, "train_lspc_iql.py", *argv], cwd=ROOT, capture_output=True,
                                text=True, timeout=300)
        if argv is short:
            assert result.returncode == 0, result.stderr
            assert f"note: {run_dir} has no checkpoint" in result.stdout and "starting it afresh" in result.stdout
            os.remove(os.path.join(run_dir, "checkpoint", "model.pt"))  # and once more, through --resume
        else:
            assert result.returncode == 0 and "starting it afresh" in result.stdout, result.stderr
    reference = train_lspc_iql.train(load_config(tiny_args(ballrun_file, tmp_path / "reference", max_timesteps=20)))
    assert without_timing(read_metrics(run_dir)) == without_timing(read_metrics(reference))
    assert_same_state(load_checkpoint(os.path.join(run_dir, "checkpoint", "model.pt"))["model"],
                      load_checkpoint(os.path.join(reference, "checkpoint", "model.pt"))["model"])


def test_a_second_process_on_the_same_run_directory_is_refused(ballrun_file, tmp_path):
    args = tiny_args(ballrun_file, tmp_path, max_timesteps=100000, eval_every=100000, log_every=2,
                     checkpoint_every_minutes=0.001)
    first = start([sys.executable, "train_lspc_iql.py", *args])
    run_dir = run_dir_of(tmp_path)
    while not os.path.exists(os.path.join(run_dir, "checkpoint", "model.pt")):
        assert first.poll() is None
        time.sleep(0.1)
    for argv in (args, ["--resume", run_dir]):
        second = subprocess.run([sys.executable, "train_lspc_iql.py", *argv], cwd=ROOT, capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
        assert second.stderr == (f"error: {run_dir} is being trained by process {first.pid}; wait for it to end or "
                                 f"stop it (kill {first.pid})\n")
    first.kill()  # the lock dies with its process
    finish(first)
    resumed = start([sys.executable, "train_lspc_iql.py", "--resume", run_dir])
    assert resumed.poll() is None  # it took the lock and is training
    resumed.kill()
    finish(resumed)


def test_a_failed_checkpoint_write_stops_training_and_keeps_the_previous_one(ballrun_file, tmp_path, monkeypatch,
                                                                             capsys):
    real_save = torch.save
    writes = {"n": 0}

    def disk_full_after_step_10(payload, f):
        writes["n"] += 1
        if writes["n"] > 3:  # model.pt and both best checkpoints at step 10 go through; then the disk is full
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(payload, f)

    monkeypatch.setattr(lspc.checkpoint.torch, "save", disk_full_after_step_10)
    with pytest.raises(SystemExit) as exit_info:
        train_lspc_iql.main(tiny_args(ballrun_file, tmp_path, max_timesteps=30))
    monkeypatch.undo()
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    checkpoint_dir = os.path.join(run_dir_of(tmp_path), "checkpoint")
    assert exit_info.value.code == 1 and len(errors) == 1, errors  # one line, no traceback
    err = errors[0]
    # the first file of step 20 that failed: a best checkpoint (written before model.pt) or model.pt
    assert err.startswith(f"error: could not write {checkpoint_dir}/model") and re.search(
        r"model(_best_[os])?\.pt at step 20 \(No space left on device\)", err), err
    assert "training stopped, checkpoint/model.pt of step 10 is kept" in err
    assert load_checkpoint(os.path.join(checkpoint_dir, "model.pt"))["step"] == 10
    assert not [f for f in os.listdir(checkpoint_dir) if f.startswith(".tmp-")]  # no partial file left behind
