"""The training script end to end: run directory, metrics, checkpoints, resume, faults."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import train_lspc_iql
from conftest import ROOT, tiny_args
from lspc.checkpoint import load_checkpoint
from lspc.run_logger import read_metrics
from lspc_iql_configs import load_config

# the names of the authors' release (tests/test_logging_keys.py checks them in detail)
EVAL_KEYS = [key for prefix in ("eval", "eval_star")
             for key in [f"{prefix}/{m}{std}" for m in ("Reward", "Cost", "Length") for std in ("", "_std")]
             + [f"normalized_{prefix}/Normalized_{m}" for m in ("Reward", "Cost")]]


def run_dir_of(logdir, name="lspc_iql-seed0"):
    return os.path.join(str(logdir), "OfflineBallRun-v0-cost-10", name)


def assert_same_state(a, b, path="state"):
    """Bit-exact equality of nested state dicts (tensors compared with torch.equal)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same_state(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    else:
        assert a == b, path


def test_script_end_to_end_with_real_env_and_wandb_offline(ballrun_file, tmp_path):
    args = tiny_args(ballrun_file, tmp_path, wandb_mode="offline")
    proc = subprocess.run([sys.executable, "train_lspc_iql.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = run_dir_of(tmp_path)
    assert proc.stdout.count("run_dir: ") == 1 and f"run_dir: {run_dir}" in proc.stdout
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoint"))) == ["model.pt", "model_best_o.pt", "model_best_s.pt"]
    assert os.path.isdir(os.path.join(run_dir, "wandb")), "offline wandb run expected in the run directory"
    rows = read_metrics(run_dir)
    eval_rows = [row for row in rows if "eval/Reward" in row]
    assert [row["step"] for row in eval_rows] == [10, 20]
    for row in eval_rows:
        assert set(EVAL_KEYS) <= set(row)
        assert row["eval/Length"] == 100.0  # BallRun never terminates early: the 100-step time limit
        assert row["normalized_eval/Normalized_Cost"] == pytest.approx(row["eval/Cost"] / 10.0)
    train_rows = [row for row in rows if "train/q_loss" in row]
    assert [row["step"] for row in train_rows] == [5, 10, 15, 20]  # every log_every steps, not every step
    checkpoint = load_checkpoint(os.path.join(run_dir, "checkpoint", "model.pt"))
    assert checkpoint["step"] == 20
    assert checkpoint["config"]["task"] == "OfflineBallRun-v0"
    expected_parts = {"q", "q_target", "value", "cost_q", "cost_q_target", "cost_value", "cvae", "safety_encoder"}
    expected_parts |= {"critics_cvae_optimizer", "safety_encoder_optimizer"}
    assert set(checkpoint["model"]) == expected_parts
    assert {"python", "numpy", "torch", "sampler"} <= set(checkpoint["rng"])


def test_eval_script_scores_every_threshold(ballrun_file, tmp_path):
    run_dir = train_lspc_iql.train(load_config(tiny_args(ballrun_file, tmp_path, max_timesteps=10)))
    import eval_lspc

    first = eval_lspc.evaluate_run(run_dir, "best_o", ["lspc-o", "lspc-s"], eval_episodes=3, seed=1)
    again = eval_lspc.evaluate_run(run_dir, "best_o", ["lspc-o", "lspc-s"], eval_episodes=3, seed=1)
    assert first == again  # seeded: same numbers twice
    assert first["step"] == 10 and set(first["policies"]) == {"lspc-o", "lspc-s"}
    for policy in first["policies"].values():
        assert set(policy["thresholds"]) == {"10", "20", "40"}
        for kappa, scores in policy["thresholds"].items():
            assert scores["normalized_cost"] == pytest.approx(policy["cost"] / float(kappa))


def test_resume_is_bit_exact(ballrun_file, tmp_path):
    straight = train_lspc_iql.train(load_config(tiny_args(ballrun_file, tmp_path / "a", max_timesteps=20)))
    half = train_lspc_iql.train(load_config(tiny_args(ballrun_file, tmp_path / "b", max_timesteps=10)))
    resumed = train_lspc_iql.train(load_config(["--resume", half, "--max_timesteps", "20"]))
    assert resumed == half
    a = load_checkpoint(os.path.join(straight, "checkpoint", "model.pt"))
    b = load_checkpoint(os.path.join(resumed, "checkpoint", "model.pt"))
    assert a["step"] == b["step"] == 20
    assert_same_state(a["model"], b["model"])
    assert_same_state(a["rng"], b["rng"])
    # the resumed run's metrics continue the first half's without duplicates
    assert [row["step"] for row in read_metrics(resumed)] == [row["step"] for row in read_metrics(straight)]
    def without_timing(row: dict) -> dict:
        return {key: value for key, value in row.items() if not key.startswith("time/")}

    assert without_timing(read_metrics(resumed)[-1]) == without_timing(read_metrics(straight)[-1])
    assert {"time/train_steps_per_s", "time/eval_s", "time/eval_share"} <= set(read_metrics(resumed)[-1])
    assert 0 < read_metrics(resumed)[-1]["time/eval_share"] < 1


def interrupt_after_first_log(cmd, run_dir: str, **popen_kwargs) -> str:
    """Start a training script, send SIGINT once its metrics.jsonl has a row, check that it stopped
    with status 130 and no traceback, and return its stderr."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_kwargs)
    metrics = os.path.join(run_dir, "metrics.jsonl")
    deadline = time.time() + 120
    while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
        assert proc.poll() is None and time.time() < deadline, "training did not start logging"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, stderr
    assert "Traceback" not in stderr
    return stderr


def test_sigint_saves_a_checkpoint_and_resume_continues(ballrun_file, tmp_path):
    args = tiny_args(ballrun_file, tmp_path, max_timesteps=100000, eval_every=100000, log_every=2)
    stderr = interrupt_after_first_log([sys.executable, "train_lspc_iql.py", *args], run_dir_of(tmp_path), cwd=ROOT)
    assert "--resume" in stderr
    step = load_checkpoint(os.path.join(run_dir_of(tmp_path), "checkpoint", "model.pt"))["step"]
    assert step >= 2
    run_dir = train_lspc_iql.train(load_config(["--resume", run_dir_of(tmp_path), "--max_timesteps", str(step + 4),
                                                "--eval_every", "4"]))
    assert load_checkpoint(os.path.join(run_dir, "checkpoint", "model.pt"))["step"] == step + 4


def test_a_signal_landing_while_the_loop_reads_the_clock_still_saves(ballrun_file, tmp_path, monkeypatch):
    """SIGINT delivered right after the loop's checkpoint-time check (the moment its old code read the
    stop flag twice and stopped without saving): the run stops at a step whose checkpoint is on disk."""
    import types

    import lspc.training
    calls = {"n": 0}

    def monotonic():
        calls["n"] += 1
        if calls["n"] == 6:  # the 5th step's check; Python runs the handler right after this returns
            os.kill(os.getpid(), signal.SIGINT)
        return time.monotonic()

    monkeypatch.setattr(lspc.training, "time", types.SimpleNamespace(monotonic=monotonic,
                                                                      perf_counter=time.perf_counter))
    args = tiny_args(ballrun_file, tmp_path, max_timesteps=1000, eval_every=1000, log_every=1000)
    with pytest.raises(lspc.training.Interrupted) as stopped:
        train_lspc_iql.train(load_config(args))
    assert stopped.value.step == 6
    assert load_checkpoint(os.path.join(run_dir_of(tmp_path), "checkpoint", "model.pt"))["step"] == 6


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(ballrun_file, tmp_path, monkeypatch, capsys):
    original = train_lspc_iql.expectile_loss
    calls = {"n": 0}

    def poisoned(diff, expectile):
        calls["n"] += 1  # two expectile losses per step; poison the reward-V loss from step 13 on
        loss = original(diff, expectile)
        return loss * float("nan") if calls["n"] > 24 else loss

    monkeypatch.setattr(train_lspc_iql, "expectile_loss", poisoned)
    with pytest.raises(SystemExit) as exit_info:
        train_lspc_iql.main(tiny_args(ballrun_file, tmp_path, max_timesteps=40))
    assert exit_info.value.code == 1
    message = capsys.readouterr().err
    assert "value_loss" in message and "step 13" in message
    checkpoint = load_checkpoint(os.path.join(run_dir_of(tmp_path), "checkpoint", "model.pt"))
    assert checkpoint["step"] == 10
    assert all(torch.isfinite(p).all() for p in checkpoint["model"]["value"].values())


def test_flag_equal_to_default_reaches_the_run_config(ballrun_file, tmp_path):
    # the task's override is 0.6; an explicit --vae_clamper 0.25 (the base default) must win
    run_dir = train_lspc_iql.train(load_config(tiny_args(ballrun_file, tmp_path, max_timesteps=10, vae_clamper=0.25)))
    with open(os.path.join(run_dir, "config.yaml")) as f:
        assert "vae_clamper: 0.25" in f.read()
    assert load_checkpoint(os.path.join(run_dir, "checkpoint", "model.pt"))["config"]["vae_clamper"] == 0.25
