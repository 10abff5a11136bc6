"""Safety-Gymnasium (navigation, velocity) and MetaDrive through lspc.envs.make_env on Python 3.11."""
import dataclasses
import importlib.util
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from conftest import ROOT, tiny_args
from lspc import LSPCError, envs
from lspc.checkpoint import load_checkpoint
from lspc.data.collect import write_dsrl_hdf5
from lspc.run_logger import read_metrics
from lspc.suite_shims import ndarray_dataclass_defaults

SUITE_TASKS = {
    "safety_gymnasium": "OfflineCarGoal1Gymnasium-v0",
    "velocity": "OfflineHalfCheetahVelocityGymnasium-v1",
    "metadrive": "OfflineMetadrive-easysparse-v0",
}
needs_safety_gymnasium = pytest.mark.skipif(importlib.util.find_spec("safety_gymnasium") is None,
                                            reason="Safety-Gymnasium is not installed (make install-suites)")
needs_metadrive = pytest.mark.skipif(importlib.util.find_spec("metadrive") is None,
                                     reason="MetaDrive is not installed (make install-suites)")
SUITE_MARKS = {"safety_gymnasium": needs_safety_gymnasium, "velocity": needs_safety_gymnasium,
               "metadrive": needs_metadrive}
suite_params = [pytest.param(suite, marks=SUITE_MARKS[suite]) for suite in SUITE_TASKS]


def test_ndarray_dataclass_defaults_become_per_instance_copies():
    with ndarray_dataclass_defaults():
        @dataclasses.dataclass
        class Geom:
            color: np.ndarray = np.array([1.0, 0.0, 0.0])
            size: float = 0.1

    a, b = Geom(), Geom()
    a.color[0] = 5.0
    assert b.color.tolist() == [1.0, 0.0, 0.0] and b.size == 0.1
    with pytest.raises(ValueError, match="mutable default"):  # the shim is gone outside the block
        @dataclasses.dataclass
        class Plain:
            color: np.ndarray = np.array([1.0])


def test_missing_suite_names_the_install_command(monkeypatch):
    def not_installed():
        raise ImportError("No module named 'metadrive'")

    monkeypatch.setitem(envs._SUITE_IMPORTS, "metadrive", not_installed)
    envs.import_suite.cache_clear()
    try:
        with pytest.raises(LSPCError, match=r"metadrive tasks need the MetaDrive suite; install it with `make install-suites`"):
            envs.make_env("OfflineMetadrive-easysparse-v0")
        envs.make_env("OfflineBallRun-v0").close()  # the other suites keep working
    finally:
        envs.import_suite.cache_clear()


@pytest.mark.parametrize("suite", suite_params)
def test_make_reset_step(suite):
    task = SUITE_TASKS[suite]
    env = envs.make_env(task)
    try:
        assert isinstance(env.observation_space, gym.spaces.Box) and isinstance(env.action_space, gym.spaces.Box)
        obs = envs.reset_seeded(env, 0)
        assert obs.shape == env.observation_space.shape
        action = np.zeros(env.action_space.shape, dtype=env.action_space.dtype)
        next_obs, reward, terminated, truncated, info = env.step(action)
        assert next_obs.shape == obs.shape and np.isfinite(reward)
        assert isinstance(terminated, (bool, np.bool_)) and isinstance(truncated, (bool, np.bool_))
        assert info["cost"] >= 0
        assert env.spec.max_episode_steps == 1000
        env.unwrapped.set_target_cost(20)
        assert env.unwrapped.get_normalized_score(0.0, 10.0)[1] == 0.5
    finally:
        env.close()


def tiny_dataset(task: str, path: str, episodes: int = 2, length: int = 30) -> str:
    """Random transitions of the right shapes, in the DSRL layout."""
    env = envs.make_env(task)  # never reset: MetaDrive starts its engine only at reset
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    rng = np.random.default_rng(0)
    n = episodes * length
    ends = np.zeros(n, dtype=bool)
    ends[length - 1::length] = True
    data = {
        "observations": rng.uniform(0, 1, (n, obs_dim)).astype(np.float32),
        "next_observations": rng.uniform(0, 1, (n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "costs": (rng.random(n) < 0.1).astype(np.float32),
        "terminals": np.zeros(n, dtype=bool),
        "timeouts": ends,
    }
    write_dsrl_hdf5(path, data, {"task": task})
    return path


@pytest.mark.parametrize("suite", suite_params)
def test_training_script_with_evaluation(suite, tmp_path):
    task = SUITE_TASKS[suite]
    dataset = tiny_dataset(task, str(tmp_path / "tiny.hdf5"))
    args = tiny_args(dataset, tmp_path, task=task, max_timesteps=10, eval_every=10, batch_size=32,
                     episode_len=15, eval_episodes=2)
    # a subprocess: MetaDrive allows one engine per process
    proc = subprocess.run([sys.executable, "train_lspc_iql.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = os.path.join(str(tmp_path), f"{task}-cost-{envs.cost_limits(task)[0]:g}", "lspc_iql-seed0")  # default κ
    evals = [row for row in read_metrics(run_dir) if "eval/Reward" in row]
    assert [row["step"] for row in evals] == [10]
    assert evals[0]["eval/Length"] <= 15 and evals[0]["eval_star/Length"] <= 15
    assert load_checkpoint(os.path.join(run_dir, "checkpoint", "model.pt"))["step"] == 10


@needs_safety_gymnasium
def test_plain_skybox_changes_no_observation_reward_or_cost(monkeypatch):
    """The reset-time shim (a gradient skybox instead of the HD PNGs) leaves the simulation as it was."""
    import safety_gymnasium.world
    import yaml

    def episode() -> tuple:
        env = envs.make_env("OfflinePointGoal1Gymnasium-v0")
        obs = [envs.reset_seeded(env, 3)]
        xml = env.unwrapped.task.world.xml_string
        rng, rewards, costs = np.random.default_rng(0), [], []
        for _ in range(60):
            o, r, _, _, info = env.step(rng.uniform(-1, 1, 2))
            obs.append(o), rewards.append(r), costs.append(info["cost"])
        env.reset()  # a second reset rebuilds the model again
        env.close()
        return np.array(obs), np.array(rewards), np.array(costs), xml

    shimmed = episode()
    monkeypatch.setattr(safety_gymnasium.world, "yaml", yaml)  # Safety-Gymnasium's own assets
    original = episode()
    assert "star_hd" not in shimmed[3] and "star_hd" in original[3]
    for a, b in zip(shimmed[:3], original[:3]):
        np.testing.assert_array_equal(a, b)
    assert np.abs(np.diff(shimmed[0][:, :3], axis=0)).sum() > 0  # the agent moved: not a trivially equal test


@needs_safety_gymnasium
def test_a_seeded_safety_gymnasium_reset_does_not_depend_on_earlier_episodes():
    """What lets FSRL rollouts (lspc.data.behaviour.rollout_chunk) reuse one Safety-Gymnasium env for many episodes."""
    def episode(env, seed: int) -> np.ndarray:
        rows, rng = [envs.reset_seeded(env, seed)], np.random.default_rng(seed)
        for _ in range(40):
            obs, reward, _, _, info = env.step(rng.uniform(-1, 1, 2))
            rows.append(np.concatenate([obs, [reward, info["cost"]]]))
        return np.concatenate(rows)

    reused = envs.make_env("OfflinePointGoal1Gymnasium-v0")
    first = episode(reused, 5)
    episode(reused, 7)
    again = episode(reused, 5)
    reused.close()
    fresh = envs.make_env("OfflinePointGoal1Gymnasium-v0")
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(episode(fresh, 5), first)
    assert not np.array_equal(episode(fresh, 7)[:100], first[:100])  # another seed, another start
    fresh.close()


def _installed(task: str) -> bool:
    suite = envs.check_task(task)
    return suite == "bullet" or importlib.util.find_spec("metadrive" if suite == "metadrive" else "safety_gymnasium")


@pytest.mark.parametrize("task", [pytest.param(task, marks=pytest.mark.skipif(not _installed(task), reason="suite not installed"))
                                  for task in envs.ALL_TASKS])
def test_the_spaces_table_is_what_each_simulator_makes(task):
    """What training without a simulator reads (lspc.envs.dataset_env) is what the task's env has."""
    real, table = envs.make_env(task), envs.dataset_env(task)  # never reset: MetaDrive starts its engine there
    try:
        assert table.observation_space.shape == real.observation_space.shape
        assert table.action_space.shape == real.action_space.shape
        assert (table.action_space.low == real.action_space.low).all()
        assert (table.action_space.high == real.action_space.high).all()
        assert table.spec.max_episode_steps == real.spec.max_episode_steps
        for name in ("dataset_url", "max_episode_reward", "min_episode_reward", "max_episode_cost"):
            assert getattr(table, name) == getattr(real.unwrapped, name)
    finally:
        real.close()
