"""The dataset collector: DSRL layout, episode boundaries, dsrl loading, reproducibility, replay."""
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from lspc import LSPCError, available_cores
from lspc.data.collect import (CONTROLLERS, collect, default_cost_cap, episode_returns, process_pool, threads_per_worker,
                          write_dsrl_hdf5)
from lspc.data.dataset_card import write_card
from lspc.data.dataset import DSRL_KEYS
from lspc.envs import make_env, reset_seeded


def test_layout_dtypes_and_episode_boundaries(ballrun_data):
    n = len(ballrun_data["observations"])
    assert n == 12 * 100  # BallRun episodes never terminate: 100-step time limit
    for key in ("observations", "next_observations"):
        assert ballrun_data[key].shape == (n, 7) and ballrun_data[key].dtype == np.float32
    assert ballrun_data["actions"].shape == (n, 2) and ballrun_data["actions"].dtype == np.float32
    assert np.abs(ballrun_data["actions"]).max() <= 1.0  # the applied (clipped) action is stored
    for key in ("rewards", "costs"):
        assert ballrun_data[key].shape == (n,) and ballrun_data[key].dtype == np.float32
    assert set(np.unique(ballrun_data["costs"])) <= {0.0, 1.0}
    assert not ballrun_data["terminals"].any()
    assert np.flatnonzero(ballrun_data["timeouts"]).tolist() == list(range(99, n, 100))
    # within an episode, each next observation is the following observation
    inside = ~ballrun_data["timeouts"][:-1]
    assert np.array_equal(ballrun_data["next_observations"][:-1][inside], ballrun_data["observations"][1:][inside])


def test_dsrl_loads_the_file(ballrun_data, ballrun_file):
    env = make_env("OfflineBallRun-v0")
    loaded = env.unwrapped.get_dataset(h5path=ballrun_file)
    for key in DSRL_KEYS:
        assert np.array_equal(loaded[key], ballrun_data[key]), key
    with h5py.File(ballrun_file) as f:
        assert f.attrs["task"] == "OfflineBallRun-v0" and "bullet-safety-gym==1.4.0" in f.attrs["versions"]
        assert list(f.attrs["episode_start_seeds"]) == list(ballrun_data["episode_start_seeds"])


def test_reproducible_and_independent_of_worker_count():
    one = collect("OfflineCarRun-v0", episodes=3, seed=5, workers=1, chunk=2)
    two = collect("OfflineCarRun-v0", episodes=3, seed=5, workers=2, chunk=2)
    other = collect("OfflineCarRun-v0", episodes=3, seed=6, workers=1, chunk=2)
    for key in DSRL_KEYS:
        assert np.array_equal(one[key], two[key]), key
    assert not np.array_equal(one["actions"], other["actions"])


def test_worker_processes_share_the_cores():
    import torch

    cores = available_cores()
    assert [threads_per_worker(w) for w in (1, cores, 4 * cores)] == [cores, 1, 1]
    # conftest sets OMP_NUM_THREADS=1, so one worker reporting every core shows the setting reached it
    for workers in (1, 2):
        with process_pool(workers) as pool:
            assert pool.submit(torch.get_num_threads).result() == max(1, cores // workers)


@pytest.mark.parametrize("task", ["OfflineBallRun-v0", "OfflineCarRun-v0"])
def test_recorded_steps_equal_a_replay_from_the_same_start(task):
    # the third episode: RaceCar's reset keeps state from earlier episodes unless each gets a fresh env
    data = collect(task, episodes=3, seed=0, chunk=3)
    start = int(np.flatnonzero(data["timeouts"] | data["terminals"])[1]) + 1
    env = make_env(task)
    obs = reset_seeded(env, int(data["episode_start_seeds"][2]))
    first = slice(start, start + 30)
    assert np.array_equal(obs.astype(np.float32), data["observations"][start])
    for action, reward, cost, next_obs in zip(data["actions"][first], data["rewards"][first],
                                              data["costs"][first], data["next_observations"][first]):
        replayed_obs, replayed_reward, _, _, info = env.step(action)
        assert np.float32(replayed_reward) == reward and info["cost"] == cost
        assert np.allclose(replayed_obs, next_obs, atol=1e-6)


@pytest.mark.parametrize("task", sorted(CONTROLLERS))
def test_every_controller_respects_the_cost_cap(task):
    data = collect(task, episodes=2, seed=0)
    returns = episode_returns(data)
    assert len(returns["cost"]) == 2 and (returns["cost"] <= default_cost_cap(task)).all()
    assert data["episode_indices"].tolist() == sorted(data["episode_indices"].tolist())


def test_cost_cap_zero_keeps_only_safe_episodes():
    data = collect("OfflineBallRun-v0", episodes=3, seed=0, max_cost=0)
    assert data["costs"].sum() == 0 and data["episodes_attempted"] >= 3


def test_default_cost_cap():
    assert default_cost_cap("OfflineBallRun-v0") == 80  # DSRL's own
    assert default_cost_cap("OfflineCarRun-v0") == 80  # DSRL's 40 raised to 2 x the top threshold


def test_unknown_controller():
    with pytest.raises(LSPCError, match="no behaviour controller"):
        collect("OfflineDroneRun-v0", episodes=1, seed=0)


def test_dataset_card(ballrun_data, tmp_path):
    path = str(tmp_path / "ballrun.hdf5")
    write_dsrl_hdf5(path, ballrun_data, {"task": "OfflineBallRun-v0"})
    stem = write_card(path, "OfflineBallRun-v0", ballrun_data, {"seed": 0})
    with open(f"{stem}.card.json") as f:
        card = json.load(f)
    costs = episode_returns(ballrun_data)["cost"]
    assert card["episodes"] == 12 and card["transitions"] == 1200 and card["seed"] == 0
    assert card["fraction_cost_at_most"] == {k: float((costs <= float(k)).mean()) for k in ("10", "20", "40")}
    assert card["cost_return"]["max"] == float(costs.max())
    assert card["fraction_cost_above"] == {"40": float((costs > 40).mean())}
    rewards = episode_returns(ballrun_data)["reward"]
    covered = min(rewards.max(), 1327.4456) - max(rewards.min(), 26.3398)
    assert card["reward_range_vs_dsrl"] == pytest.approx(covered / (1327.4456 - 26.3398), rel=1e-4)
    assert card["dsrl_reference"]["max_episode_reward"] == pytest.approx(1327.4456)
    assert os.path.getsize(f"{stem}.card.png") > 10_000


def test_dataset_table_reports_what_a_card_lacks(ballrun_data, tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    path = str(tmp_path / "ballrun.hdf5")
    write_dsrl_hdf5(path, ballrun_data, {"task": "OfflineBallRun-v0"})
    stem = write_card(path, "OfflineBallRun-v0", ballrun_data, {"collection_seconds": 90.0})
    card = json.loads(open(f"{stem}.card.json").read())
    # a card that meets the bar: the same statistics with enough trajectories on both sides of the thresholds
    good = {**card, "episodes": 300, "fraction_cost_at_most": {"10": 0.5, "20": 0.6, "40": 0.7},
            "fraction_cost_above": {"40": 0.1}, "reward_range_vs_dsrl": 0.5}
    good_path = tmp_path / "good.card.json"
    good_path.write_text(json.dumps(good))
    table = [sys.executable, os.path.join(ROOT, "scripts", "dataset_table.py")]
    ok = subprocess.run(table + [str(good_path)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[2].endswith("| 2 min | yes |")
    agents = [{"agent": "fsrl.agent.SACLagAgent", "cost_limit": 400.0, "training_steps": 20_500}]
    good_path.write_text(json.dumps({**good, "agents": agents}))
    sac = subprocess.run(table + [str(good_path)], capture_output=True, text=True)
    assert sac.stdout.splitlines()[2].split(" | ")[1] == "SAC-L 400 x 20k"
    costs = episode_returns(ballrun_data)["cost"]
    short = subprocess.run(table + [f"{stem}.card.json", str(good_path)], capture_output=True, text=True)
    assert short.returncode == 1
    lacking = short.stdout.splitlines()[2].rsplit("|", 2)[1]
    assert "12 < 300 trajectories" in lacking
    assert ("with cost > 40" in lacking) == ((costs > 40).mean() < 0.1)
    share = card["reward_range_vs_dsrl"]
    assert (f"reward range covers {share:.0%} of DSRL's" in lacking) == (share < 0.5)
    old = tmp_path / "old.card.json"
    old.write_text(json.dumps({k: v for k, v in card.items() if k != "reward_range_vs_dsrl"}))
    bad = subprocess.run(table + [str(old)], capture_output=True, text=True)
    assert bad.returncode == 2 and "reward_range_vs_dsrl" in bad.stderr and "collect_dataset.py" in bad.stderr
    # --refresh recomputes the card from its dataset file and keeps what the collection recorded
    stale = {k: v for k, v in card.items() if k not in ("reward_range_vs_dsrl", "fraction_cost_above")}
    Path(f"{stem}.card.json").write_text(json.dumps({**stale, "fraction_cost_above_40": 0.5, "episodes": 1}))
    refreshed = subprocess.run(table + ["--refresh", f"{stem}.card.json"], capture_output=True, text=True)
    assert refreshed.returncode == 1 and "12 < 300 trajectories" in refreshed.stdout
    assert json.loads(Path(f"{stem}.card.json").read_text()) == card
