"""Training where the task's simulator is not installed (the offline GPU node): ``--eval_every 0`` makes no
environment, reads the spaces from the data and ``lspc.envs.TASK_SPACES``, and trains the same run."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import train_lspc_iql
from conftest import ROOT, load_script, tiny_args
from lspc import LSPCError
from lspc.checkpoint import load_checkpoint
from lspc.envs import dataset_env
from lspc.run_logger import read_metrics

train_baseline = load_script("train_baseline")
NO_SIMULATOR = os.path.join(ROOT, "tests", "no_simulator")  # a sitecustomize that hides every simulator


def run_dir(logdir, name="lspc_iql-seed0"):
    return os.path.join(str(logdir), "OfflineBallRun-v0-cost-10", name)


def latest(logdir, name="lspc_iql-seed0"):
    return load_checkpoint(os.path.join(run_dir(logdir, name), "checkpoint", "model.pt"))


def assert_same_tensors(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_tensors(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        for x, y in zip(a, b):
            assert_same_tensors(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


def test_evaluation_off_trains_the_same_run_without_a_simulator(ballrun_file, tmp_path, capsys, without_simulator,
                                                               monkeypatch):
    train_lspc_iql.main(tiny_args(ballrun_file, tmp_path / "off", max_timesteps=20, eval_every=0))
    out = capsys.readouterr().out
    assert out.count("note: in-training evaluation is off") == 1 and "eval_lspc.py --path" in out
    off = latest(tmp_path / "off")
    assert off["step"] == 20  # the last step is checkpointed, though not evaluated
    assert sorted(os.listdir(os.path.join(run_dir(tmp_path / "off"), "checkpoint"))) == ["model.pt"]
    rows = read_metrics(run_dir(tmp_path / "off"))
    assert [row["step"] for row in rows] == [5, 10, 15, 20]  # the log points carry the throughput instead
    assert all(row["time/train_steps_per_s"] > 0 and not any(k.startswith("eval") for k in row) for row in rows)
    monkeypatch.undo()  # the simulator is back: the same run with evaluations
    train_lspc_iql.main(tiny_args(ballrun_file, tmp_path / "on", max_timesteps=20, eval_every=10))
    assert "in-training evaluation is off" not in capsys.readouterr().out
    assert_same_tensors(off["model"], latest(tmp_path / "on")["model"])  # evaluation draws from no training stream


def test_evaluation_off_resumes_bit_for_bit_without_a_simulator(ballrun_file, tmp_path, without_simulator):
    train_lspc_iql.main(tiny_args(ballrun_file, tmp_path / "straight", max_timesteps=30, eval_every=0))
    train_lspc_iql.main(tiny_args(ballrun_file, tmp_path / "resumed", max_timesteps=12, eval_every=0))
    train_lspc_iql.main(["--resume", run_dir(tmp_path / "resumed"), "--max_timesteps", "30"])
    assert_same_tensors(latest(tmp_path / "straight")["model"], latest(tmp_path / "resumed")["model"])


def test_dataset_env_has_the_data_and_references_but_never_simulates():
    env = dataset_env("OfflineCarCircle-v0")
    assert env.observation_space.shape == (8,) and env.action_space.shape == (2,)
    assert (env.action_space.low == -1).all() and (env.action_space.high == 1).all()
    assert env.spec.id == "OfflineCarCircle-v0" and env.spec.max_episode_steps == 300
    assert env.dataset_url.endswith(".hdf5") and env.unwrapped is env
    env.set_target_cost(20)
    assert env.get_normalized_score(env.max_episode_reward, 20) == (1.0, 1.0)
    with pytest.raises(LSPCError, match="without its simulator"):
        env.reset(seed=0)
    with pytest.raises(LSPCError, match="without its simulator"):
        env.step(np.zeros(2))


def test_a_file_that_does_not_fit_the_task_table_is_refused(ballrun_file, tmp_path, capsys, without_simulator):
    with pytest.raises(SystemExit) as exit_info:  # BallRun's 7-dimensional data as CarCircle's (8)
        train_lspc_iql.main(tiny_args(ballrun_file, tmp_path, task="OfflineCarCircle-v0", eval_every=0))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "Observation shape does not match env: (7,) vs (8,)" in err


def _script(args, **env):
    """A training script in a fresh Python that cannot import any simulator."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": NO_SIMULATOR, **env})


@pytest.mark.parametrize("script", ["train_lspc_iql.py", "scripts/train_baseline.py"])
def test_where_no_simulator_is_installed(script, ballrun_file, tmp_path):
    """The real absence, not a patch: training with evaluation trains nothing and says how in one line;
    with evaluation off the run trains."""
    algo = ["--algo", "bc-all"] if "baseline" in script else []
    args = [script, *algo, *tiny_args(ballrun_file, tmp_path, max_timesteps=6)]
    if algo:
        i = args.index("--latent_dim")
        args = args[:i] + args[i + 2:]
    refused = _script(args)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: bullet tasks need the Bullet Safety Gym suite (pybullet, bullet-safety-gym); install it with "
        "`make install` (No module named 'bullet_safety_gym'); training without it: --eval_every 0, then "
        "eval_lspc.py where it is installed")
    assert not os.path.exists(os.path.join(str(tmp_path), "OfflineBallRun-v0-cost-10"))  # no half-made run
    trained = _script([*args, "--eval_every", "0"])
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "note: in-training evaluation is off" in trained.stdout
