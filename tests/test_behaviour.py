"""FSRL behaviour agents and their collections: agent cache, DSRL layout, dsrl loading, reproducibility,
replay from the recorded start seeds, resumable chunks, the CLI, and DSRL's grid filter."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

pytest.importorskip("tianshou", reason="the collect requirements are missing: make install-collect")
pytest.importorskip("numba", reason="the collect requirements are missing: make install-collect")

from conftest import ROOT, load_script  # noqa: E402
from lspc import LSPCError  # noqa: E402
from lspc.data.behaviour import (AgentConfig, checkpoint_returns, collect_dataset, load_agent_file,  # noqa: E402
                            train_agent)
from lspc.data.collect import default_cost_cap, episode_returns, grid_filter, write_dsrl_hdf5  # noqa: E402
from lspc.data.dataset import DSRL_KEYS  # noqa: E402
from lspc.envs import make_env, reset_seeded  # noqa: E402

TASK = "OfflineBallRun-v0"
TINY = AgentConfig(steps=2000, epoch_steps=1000, episode_per_collect=4, hidden_sizes=(32, 32))
TINY_FLAGS = ["--agent_steps", "2000", "--agent_epoch_steps", "1000", "--agent_episodes_per_collect", "4",
              "--agent_hidden_sizes", "32", "32", "--cost_limits", "10"]


def _mtimes(directory):
    return {name: os.stat(os.path.join(directory, name)).st_mtime_ns for name in os.listdir(directory)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("agents"))


@pytest.fixture(scope="module")
def agent(cache):
    """A tiny PPO-Lagrangian agent: two epochs of about 1,000 BallRun steps each."""
    return train_agent(TASK, 10.0, TINY, cache, log=lambda _: None)


def _collect(agent, chunk_dir, **overrides):
    kwargs = dict(episodes=10, seed=3, chunk_dir=str(chunk_dir), cost_cap=default_cost_cap(TASK), chunk=4)
    kwargs.update(overrides)
    return collect_dataset(TASK, [agent], TINY, **kwargs)


@pytest.fixture(scope="module")
def collected(agent, tmp_path_factory):
    data, attrs = _collect(agent, tmp_path_factory.mktemp("chunks") / "a.chunks")
    path = str(tmp_path_factory.mktemp("data") / "fsrl.hdf5")
    write_dsrl_hdf5(path, data, attrs, ("fast-safe-rl", "tianshou"))
    return data, path


def test_the_agent_has_a_checkpoint_per_epoch_and_is_reused(agent, cache):
    assert len(agent.checkpoints) == 2 and agent.trained_steps == agent.env_steps[-1] >= 2000
    assert agent.env_steps[0] < agent.env_steps[1] and all(os.path.exists(p) for p in agent.checkpoints)
    before = _mtimes(agent.directory)
    again = train_agent(TASK, 10.0, TINY, cache, log=lambda _: None)
    assert again.trained_steps == 0 and again.checkpoints == agent.checkpoints and _mtimes(agent.directory) == before


def test_a_larger_budget_resumes_from_the_last_epoch(agent, tmp_path):
    # as an interrupted training does: from resume.pt, keeping the finished epochs
    shutil.copytree(agent.directory, tmp_path / TASK / os.path.basename(agent.directory))
    resumed = train_agent(TASK, 10.0, dataclasses.replace(TINY, steps=3000), str(tmp_path), log=lambda _: None)
    assert len(resumed.checkpoints) == 3 and resumed.env_steps[:2] == agent.env_steps
    assert 0 < resumed.trained_steps == resumed.env_steps[2] - agent.env_steps[1]
    assert resumed.training_seconds > agent.training_seconds  # accumulated over both runs


def test_a_resume_file_of_the_earlier_format_still_resumes(agent, tmp_path):
    import torch

    from lspc.data.behaviour import _make_agent, _restore

    state = load_agent_file(os.path.join(agent.directory, "resume.pt"))
    old = {k: v for k, v in state.items() if k != "optimisers"} | {"optim": state["optimisers"]["policy"]}
    policy = _make_agent(make_env(TASK), 10.0, TINY, seed=1).policy
    _restore(policy, old)
    restored = policy.optim.state_dict()["state"]
    assert restored and all(torch.equal(restored[k]["exp_avg"], v["exp_avg"])
                            for k, v in old["optim"]["state"].items())


# two epochs of 500 steps: one SAC update per environment step makes its steps the dearest of the tests
SAC = dataclasses.replace(TINY, algorithm="sacl", steps=1000, epoch_steps=500, episode_per_collect=2)


def test_a_sac_lagrangian_agent_resumes_with_its_optimisers_temperature_and_replay_buffer(tmp_path):
    import torch

    from lspc.data.behaviour import _make_agent, _optimisers, _restore

    first = train_agent(TASK, 10.0, dataclasses.replace(SAC, steps=500), str(tmp_path), log=lambda _: None)
    assert os.path.basename(first.directory) == "sacl-cost10-seed0" and len(first.checkpoints) == 1
    state = load_agent_file(os.path.join(first.directory, "resume.pt"))
    buffer = torch.load(os.path.join(first.directory, "buffer.pt"), weights_only=False)
    assert len(buffer) == first.env_steps[0] and set(state["optimisers"]) == {"actor", "critics", "alpha"}
    assert state["log_alpha"].item() != 0.0  # trained away from its initial log(1)

    fresh = _make_agent(make_env(TASK), 10.0, SAC, seed=1).policy
    _restore(fresh, state)
    assert fresh._log_alpha.item() == state["log_alpha"].item() and fresh._alpha.item() > 0
    for name, optimiser in _optimisers(fresh).items():
        restored, saved = optimiser.state_dict()["state"], state["optimisers"][name]["state"]
        assert restored.keys() == saved.keys() and restored
        assert all(torch.equal(restored[k]["exp_avg"], saved[k]["exp_avg"]) for k in saved), name
    for key, value in state["policy"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(fresh.state_dict()[key], value), key

    resumed = train_agent(TASK, 10.0, SAC, str(tmp_path), log=lambda _: None)
    assert resumed.env_steps[0] == first.env_steps[0] and resumed.trained_steps == resumed.env_steps[1] - first.env_steps[0]
    grown = torch.load(os.path.join(first.directory, "buffer.pt"), weights_only=False)
    assert len(grown) == resumed.env_steps[1]  # the first epoch's transitions were kept, not collected again
    kept = np.flatnonzero(buffer.done)[:1]
    assert np.array_equal(grown.obs[: len(buffer.obs)][kept], buffer.obs[kept])
    # its rollouts use the mean action: the same returns twice
    weights = load_agent_file(resumed.checkpoints[-1])["policy"]
    assert checkpoint_returns(TASK, weights, SAC, range(1)) == checkpoint_returns(TASK, weights, SAC, range(1))


def test_other_settings_in_the_same_cache_are_refused(agent, cache):
    with pytest.raises(LSPCError, match="other settings.*hidden_sizes"):
        train_agent(TASK, 10.0, dataclasses.replace(TINY, hidden_sizes=(16,)), cache)


def test_layout_dtypes_and_provenance(collected):
    data, path = collected
    n = len(data["observations"])
    assert n == 100 * len(data["episode_indices"]) and 0 < len(data["episode_indices"]) <= 10
    for key in ("observations", "next_observations"):
        assert data[key].shape == (n, 7) and data[key].dtype == np.float32
    assert data["actions"].shape == (n, 2) and data["actions"].dtype == np.float32
    assert np.abs(data["actions"]).max() <= 1.0
    for key in ("rewards", "costs"):
        assert data[key].shape == (n,) and data[key].dtype == np.float32
    for key in ("terminals", "timeouts"):
        assert data[key].dtype == bool
    assert np.flatnonzero(data["timeouts"]).tolist() == list(range(99, n, 100))
    with h5py.File(path) as f:
        assert f.attrs["behaviour"] == "fsrl" and list(f.attrs["agent_cost_limits"]) == [10.0]
        agents = json.loads(f.attrs["agents"])
        assert agents[0]["agent"] == "fsrl.agent.PPOLagAgent" and agents[0]["training_steps"] >= 2000
        assert "tianshou==0.5.0" in f.attrs["versions"] and "fast-safe-rl==0.1.0" in f.attrs["behaviour_versions"]
        assert set(f.attrs["episode_checkpoint_steps"]) <= set(agents[0]["checkpoint_steps"])
        assert list(f.attrs["episode_start_seeds"]) == list(data["episode_start_seeds"])


def test_per_episode_provenance_of_many_episodes_fits_in_the_file(collected, tmp_path):
    data, _ = collected
    many = {**data, "episode_start_seeds": np.arange(20_000)}  # 160 KB: over HDF5's compact attribute limit
    write_dsrl_hdf5(str(tmp_path / "many.hdf5"), many, {"task": TASK})
    with h5py.File(tmp_path / "many.hdf5") as f:
        assert f.attrs["episode_start_seeds"].tolist() == list(range(20_000))


def test_dsrl_loads_the_file(collected):
    data, path = collected
    loaded = make_env(TASK).unwrapped.get_dataset(h5path=path)
    for key in DSRL_KEYS:
        assert np.array_equal(loaded[key], data[key]), key


def test_same_seed_same_data_other_seed_other_data(agent, collected, tmp_path):
    data, _ = collected
    again, _ = _collect(agent, tmp_path / "again.chunks")
    other, _ = _collect(agent, tmp_path / "other.chunks", seed=4)
    for key in (*DSRL_KEYS, "episode_start_seeds", "episode_checkpoint_steps", "episode_action_noise"):
        assert np.array_equal(again[key], data[key]), key
    assert not np.array_equal(other["actions"][:100], data["actions"][:100])


def test_recorded_steps_equal_a_replay_from_the_recorded_start(collected):
    data, _ = collected
    episode = len(data["episode_indices"]) - 1  # the last: later episodes must not depend on earlier ones
    steps = slice(100 * episode, 100 * episode + 100)
    env = make_env(TASK)
    obs = reset_seeded(env, int(data["episode_start_seeds"][episode]))
    assert np.array_equal(obs.astype(np.float32), data["observations"][steps.start])
    for action, reward, cost, next_obs in zip(data["actions"][steps], data["rewards"][steps],
                                              data["costs"][steps], data["next_observations"][steps]):
        replayed_obs, replayed_reward, _, _, info = env.step(action)
        assert np.float32(replayed_reward) == reward and info["cost"] == cost
        assert np.allclose(replayed_obs, next_obs, atol=1e-6)


def test_an_interrupted_collection_continues_from_its_chunks(agent, collected, tmp_path):
    data, _ = collected
    chunk_dir = tmp_path / "resumed.chunks"
    _collect(agent, chunk_dir, episodes=6)  # interrupted after six episodes: chunks 0 (4) and 4 (2 of 4)
    os.remove(chunk_dir / "chunk-0000004.npz")
    kept = os.stat(chunk_dir / "chunk-0000000.npz").st_mtime_ns
    resumed, _ = _collect(agent, chunk_dir)
    assert os.stat(chunk_dir / "chunk-0000000.npz").st_mtime_ns == kept  # not rolled out again
    for key in DSRL_KEYS:
        assert np.array_equal(resumed[key], data[key]), key
    with pytest.raises(LSPCError, match="another collection.*seed"):
        _collect(agent, chunk_dir, seed=4)


def test_the_script_reuses_the_cached_agent_and_writes_the_card(agent, cache, tmp_path):
    before = _mtimes(agent.directory)
    out = tmp_path / "ballrun-fsrl.hdf5"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "collect_dataset.py"), "--task", TASK,
                          "--behaviour", "fsrl", "--episodes", "6", "--seed", "3", "--workers", "1", "--chunk", "4",
                          "--out", str(out), "--agent_cache", cache, *TINY_FLAGS],
                         # this run only rolls out: numba's compile of FSRL's return computations (~10 s) is not needed
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "NUMBA_DISABLE_JIT": "1"})
    assert run.returncode == 0, run.stderr
    assert _mtimes(agent.directory) == before and "epoch" not in run.stdout  # nothing trained
    card = json.loads((tmp_path / "ballrun-fsrl.card.json").read_text())
    assert card["behaviour"] == "fsrl" and card["agents_trained_steps"] == 0 and card["episodes_attempted"] == 6
    assert card["agent_training_seconds"] == round(agent.training_seconds, 1) > 0  # the cached agents' price
    assert card["agents"][0]["cost_limit"] == 10.0 and os.path.getsize(tmp_path / "ballrun-fsrl.card.png") > 10_000
    assert not (tmp_path / "ballrun-fsrl.chunks").exists()  # the chunks are removed once the file is written
    with h5py.File(out) as f:
        assert len(f.attrs["episode_indices"]) == card["episodes"]


def test_the_script_gives_each_agent_its_own_step_budget(agent, tmp_path):
    """--agent_steps with one budget per cost limit: each agent's checkpoints stop at its own budget
    (here two cached agents: the tiny one, and its copy standing in for a cost-20 agent)."""
    cache = tmp_path / "agents"
    shutil.copytree(agent.directory, cache / TASK / "ppol-cost10-seed0")
    shutil.copytree(agent.directory, cache / TASK / "ppol-cost20-seed0")
    identity = cache / TASK / "ppol-cost20-seed0" / "agent.json"
    identity.write_text(json.dumps({**json.loads(identity.read_text()), "cost_limit": 20.0}))
    flags = [token for token in TINY_FLAGS if token not in ("--cost_limits", "10")]

    def run(*more):
        return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "collect_dataset.py"), "--task", TASK,
                               "--behaviour", "fsrl", "--episodes", "4", "--workers", "1", "--out",
                               str(tmp_path / "d.hdf5"), "--agent_cache", str(cache), *flags, "--cost_limits", "10",
                               "20", *more], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "NUMBA_DISABLE_JIT": "1"})

    wrong = run("--agent_steps", "1000", "2000", "3000")
    assert wrong.returncode == 2 and wrong.stderr.strip().splitlines()[-1] == (
        "error: --agent_steps takes one positive budget for every agent or one per cost limit (2: 10 20), "
        "got 1000 2000 3000")
    done = run("--agent_steps", "1000", "2000")
    assert done.returncode == 0, done.stderr
    card = json.loads((tmp_path / "d.card.json").read_text())
    assert card["agents_trained_steps"] == 0
    assert [(a["cost_limit"], a["checkpoint_steps"]) for a in card["agents"]] == [
        (10.0, list(agent.env_steps[:1])), (20.0, list(agent.env_steps))]
    assert [a["training_steps"] for a in card["agents"]] == [agent.env_steps[0], agent.env_steps[1]]


def test_agent_returns_rolls_out_each_checkpoints_mean_action(agent, cache, capsys):
    script = load_script("agent_returns")
    script.main(["--task", TASK, "--cost_limit", "10", "--agent_cache", cache, "--episodes", "2"])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line[:3].strip("| ").isdigit()]
    assert [int(row[0]) for row in rows] == [1, 2]  # by default spread over training, the last included
    weights = load_agent_file(agent.checkpoints[1])["policy"]
    returns = checkpoint_returns(TASK, weights, TINY, range(2))
    assert checkpoint_returns(TASK, weights, TINY, range(2)) == returns  # no noise
    assert [length for _, _, length in returns] == [100, 100]
    assert float(rows[1][4]) == pytest.approx(np.mean([r for r, _, _ in returns]), abs=0.05)
    best = max(returns)  # the episode of the highest reward, and its cost
    assert [float(v) for v in rows[1][7:9]] == pytest.approx(best[:2], abs=0.05)
    assert int(rows[1][1]) == agent.env_steps[1]
    for flags, message in ((["--cost_limit", "99"], "no trained agent in"),
                           (["--cost_limit", "10", "--epochs", "7"], "has no checkpoint of epoch 7 (it has epochs 1 to 2)")):
        with pytest.raises(SystemExit) as stopped:
            script.main(["--task", TASK, "--agent_cache", cache, *flags])
        assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_the_script_rejects_a_controller_for_a_task_without_one(tmp_path):
    run = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "collect_dataset.py"), "--task",
                          "OfflineDroneRun-v0", "--behaviour", "controller", "--out", str(tmp_path / "d.hdf5")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.strip().splitlines()[-1].startswith("error: no behaviour controller")


def test_grid_filter_against_hand_computed_survivors():
    cost = np.array([0, 1, 2, 3, 6, 10, 10, 12])
    reward = np.array([0, 0, 0, 9, 5, 10, 10, 40])
    # cost extent [0, min(12, cap 10)], step 5; reward extent [0, 40] (episode 7 counts for the extent
    # before it is dropped by the cap), step 20. Cells: (0, 0) = {0, 1, 2, 3}, (1, 0) = {4},
    # (2, 0) = {5, 6} (the maximum cost gets a cell of its own, as in DSRL), 7 is above the cap.
    kept = grid_filter(cost, reward, np.random.default_rng(0), cost_bins=2, reward_bins=2, max_per_bin=2,
                       cost_range=(-np.inf, 10))
    assert set(kept) - {0, 1, 2, 3} == {4, 5, 6} and len(set(kept) & {0, 1, 2, 3}) == 2 and len(kept) == 5
    assert kept.tolist() == sorted(kept.tolist())
    same = grid_filter(cost, reward, np.random.default_rng(0), 2, 2, 2, cost_range=(-np.inf, 10))
    assert same.tolist() == kept.tolist()
    everyone = grid_filter(cost, reward, np.random.default_rng(0), 2, 2, 4, cost_range=(-np.inf, 10))
    assert everyone.tolist() == [0, 1, 2, 3, 4, 5, 6]
    # a reward range narrows the reward extent too: [0, 9] in steps of 4.5; episodes 5, 6 and 7 drop out
    narrow = grid_filter(cost, reward, np.random.default_rng(0), 2, 2, 1, reward_range=(0, 9))
    # cost extent [0, 12], step 6: cells (0, 0) = {0, 1, 2}, (0, 2) = {3}, (1, 1) = {4}
    assert set(narrow) - {0, 1, 2} == {3, 4} and len(narrow) == 3
    # a zero-width extent is one cell
    assert len(grid_filter(np.ones(3), np.zeros(3), np.random.default_rng(0), max_per_bin=1)) == 1


def test_grid_filter_matches_dsrl_where_nothing_is_drawn():
    from dsrl.offline_env import grid_filter as dsrl_grid_filter

    rng = np.random.default_rng(1)
    cost, reward = rng.uniform(0, 100, 300).round(), rng.uniform(-50, 500, 300)
    ours = grid_filter(cost, reward, rng, cost_bins=7, reward_bins=5, max_per_bin=10**6, cost_range=(0, 80),
                       reward_range=(0, 400))
    theirs = dsrl_grid_filter(cost, reward, 0, 80, 0, 400, xbins=7, ybins=5, max_num_per_bin=10**6, min_num_per_bin=0)
    assert ours.tolist() == sorted(theirs)
    capped = grid_filter(cost, reward, rng, cost_bins=7, reward_bins=5, max_per_bin=3)
    cells = {}
    for i in capped:
        cell = ((cost[i] - cost.min()) // (np.ptp(cost) / 7), (reward[i] - reward.min()) // (np.ptp(reward) / 5))
        cells.setdefault(cell, []).append(i)
    assert max(len(v) for v in cells.values()) <= 3 and len(capped) < 300


def test_bad_grid_filter_input():
    with pytest.raises(LSPCError, match="positive"):
        grid_filter(np.zeros(2), np.zeros(2), np.random.default_rng(0), max_per_bin=0)
    with pytest.raises(LSPCError, match="equal-length"):
        grid_filter(np.zeros(2), np.zeros(3), np.random.default_rng(0))


def test_episode_returns_of_the_collection(collected):
    data, _ = collected
    returns = episode_returns(data)
    assert (returns["cost"] <= default_cost_cap(TASK)).all() and (returns["length"] == 100).all()


def test_collection_settings_default_per_task_and_a_given_flag_wins(monkeypatch):
    script = load_script("collect_dataset")

    def parsed(*flags):
        monkeypatch.setattr(sys, "argv", ["collect_dataset.py", "--out", "x.hdf5", *flags])
        return script.parse_args()

    # the generic default's value given on the command line still beats the task's entry
    cheetah = parsed("--task", "OfflineHalfCheetahVelocityGymnasium-v1", "--agent_steps", "200000")
    assert (cheetah.agent_steps, cheetah.agent_epoch_steps, cheetah.agent_episodes_per_collect) == ([200_000], 50_000, 4)
    assert cheetah.cost_limits == (10, 160) and cheetah.episodes == 500
    car = parsed("--task", "OfflineCarRun-v0", "--episodes", "42", "--cost_limits", "1", "2")  # no entry
    assert (car.episodes, car.cost_limits, car.agent_steps, car.agent_episodes_per_collect,
            car.agent_algorithm) == (42, [1.0, 2.0], [200_000], 20, "ppol")
    assert parsed("--task", "OfflineBallRun-v0").episodes == 600
    assert parsed("--task", "OfflineDroneCircle-v0").agent_steps == [1_420_000, 1_780_000]  # one per agent
    metadrive = parsed("--task", "OfflineMetadrive-easysparse-v0")
    assert (metadrive.agent_algorithm, metadrive.agent_steps) == ("sacl", [50_000, 60_000])
    assert parsed("--task", "OfflineMetadrive-easysparse-v0", "--agent_algorithm", "ppol").agent_algorithm == "ppol"
    assert parsed("--task", "OfflineDroneCircle-v0", "--agent_steps", "5").agent_steps == [5]
