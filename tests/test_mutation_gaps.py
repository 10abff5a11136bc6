"""Checks that the mutation run (scripts/mutation.py, results/mutation/) found missing: each test here
kills mutants of lspc/data/dataset.py or lspc/evaluation.py that every other fast test let live."""
from types import SimpleNamespace

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch

from lspc import LSPCError
from lspc.data.collect import write_dsrl_hdf5
from lspc.data.dataset import (TransitionBuffer, check_dataset, check_file_keys, load_dataset, subsample_trajectories,
                       trajectory_bounds)
from lspc.envs import make_env
from lspc.evaluation import Evaluator, SeededEpisodeEnv, better_than, choose_vector, episode_seeds, summarize

N = 6  # transitions of the hand-made dataset


def numbered_data():
    """Row i: observation (i, -i), action (i / 10), reward i, cost 10 + i, next observation (i + 1, -i - 1)."""
    i = np.arange(N, dtype=np.float32)
    return {
        "observations": np.stack([i, -i], axis=1), "next_observations": np.stack([i + 1, -i - 1], axis=1),
        "actions": (i / 10)[:, None], "rewards": i, "costs": 10 + i,
        "terminals": np.array([0, 1, 0, 0, 0, 0]), "timeouts": np.array([0, 0, 0, 1, 0, 1]),
    }


def test_transition_buffer_scales_rewards_only_and_keeps_rows_together():
    data = numbered_data()
    buffer = TransitionBuffer(data, torch.device("cpu"), seed=3, reward_scale=0.5)
    assert buffer.size == N
    assert buffer.rewards.tolist() == (0.5 * data["rewards"]).tolist()
    assert buffer.costs.tolist() == data["costs"].tolist()  # costs are never scaled
    assert buffer.dones.tolist() == [0, 1, 0, 1, 0, 1]  # terminal or timeout
    timeout_bootstrapped = TransitionBuffer(data, torch.device("cpu"), seed=3, bootstrap_on_timeout=True)
    assert timeout_bootstrapped.dones.tolist() == [0, 1, 0, 0, 0, 0]
    assert timeout_bootstrapped.rewards.tolist() == data["rewards"].tolist()  # scale 1 by default

    batch = buffer.sample(400)
    assert all(value.shape[0] == 400 and value.dtype == torch.float32 for value in batch.values())
    row = batch["observations"][:, 0].long()
    assert sorted(set(row.tolist())) == list(range(N))  # every row can be drawn, the last one too
    assert torch.equal(batch["observations"][:, 1], -row.float())
    assert torch.equal(batch["actions"][:, 0], torch.as_tensor(data["actions"][:, 0])[row])
    assert torch.equal(batch["rewards"], 0.5 * row.float())
    assert torch.equal(batch["costs"], 10 + row.float())
    assert torch.equal(batch["next_observations"][:, 0], row.float() + 1)
    assert torch.equal(batch["dones"], buffer.dones[row])
    again = TransitionBuffer(data, torch.device("cpu"), seed=3, reward_scale=0.5).sample(400)
    other = TransitionBuffer(data, torch.device("cpu"), seed=4, reward_scale=0.5).sample(400)
    assert torch.equal(again["observations"], batch["observations"])  # its own seeded generator
    assert not torch.equal(other["observations"], batch["observations"])


def test_trajectory_bounds_without_an_unfinished_tail():
    data = numbered_data()  # ends at 1 (terminal), 3 and 5 (timeouts): the last row ends the last trajectory
    assert trajectory_bounds(data) == [(0, 2), (2, 4), (4, 6)]
    no_end = {**data, "terminals": np.zeros(N), "timeouts": np.zeros(N)}
    assert trajectory_bounds(no_end) == [(0, N)]


def test_subsample_keeps_what_is_not_per_transition_and_refuses_bad_ratios():
    data = {**numbered_data(), "task": "OfflineBallRun-v0", "episode_returns": np.array([1.0, 2.0, 3.0, 4.0])}
    kept = subsample_trajectories(data, 0.34, seed=0)  # one of the three trajectories
    assert kept["task"] == "OfflineBallRun-v0"
    assert kept["episode_returns"].tolist() == [1.0, 2.0, 3.0, 4.0]  # not of length N: left as it is
    assert len(kept["observations"]) == 2
    for ratio in (0.0, -0.5, 1.01):
        with pytest.raises(LSPCError, match=r"^data_ratio \(the fraction of trajectories kept\) must be in "
                                            rf"\(0, 1\], got {ratio}$"):
            subsample_trajectories(data, ratio, seed=0)


def box_env(obs_dim=2, act_dim=1):
    return SimpleNamespace(observation_space=gym.spaces.Box(-1, 1, (obs_dim,)),
                           action_space=gym.spaces.Box(-1, 1, (act_dim,)), spec=SimpleNamespace(id="Box-v0"))


def test_check_dataset_errors():
    data = numbered_data()
    check_dataset(data, box_env())  # valid: nothing raised
    with pytest.raises(LSPCError, match="^the dataset is empty$"):
        check_dataset({key: value[:0] for key, value in data.items()}, box_env())
    for key in ("next_observations", "actions", "rewards", "costs", "terminals", "timeouts"):  # n: observations'
        short = {**data, key: data[key][:-1]}
        with pytest.raises(LSPCError, match=rf"^dataset key '{key}' has shape \({N - 1},"):
            check_dataset(short, box_env())
    with pytest.raises(LSPCError, match=r"needs \(6, 3\)$"):
        check_dataset(data, box_env(obs_dim=3))
    for key in ("observations", "next_observations", "actions", "rewards", "costs"):
        broken = {**data, key: data[key].copy()}
        rows = broken[key].reshape(N, -1)  # a view: one value in each of two rows
        rows[4, -1], rows[2, 0] = np.inf, np.nan
        with pytest.raises(LSPCError, match=rf"^dataset key '{key}' has 2 NaN/inf values \(first at transition 2\)$"):
            check_dataset(broken, box_env())
    negative = {**data, "costs": np.where(np.arange(N) == 5, -0.1, data["costs"])}
    with pytest.raises(LSPCError, match=r"^dataset costs must be non-negative"):
        check_dataset(negative, box_env())
    check_dataset({**data, "costs": np.zeros(N)}, box_env())  # zero costs are fine


def test_check_file_keys_errors(tmp_path):
    not_hdf5 = tmp_path / "notes.hdf5"
    not_hdf5.write_text("not an hdf5 file")
    with pytest.raises(LSPCError, match=r"is not a readable hdf5 file"):
        check_file_keys(str(not_hdf5))
    complete = tmp_path / "complete.hdf5"
    with h5py.File(complete, "w") as f:
        for key, value in numbered_data().items():
            f.create_dataset(key, data=value)
    check_file_keys(str(complete))  # nothing missing: nothing raised


def test_summarize_is_the_mean_episode_normalized_by_dsrl():
    env = make_env("OfflineCarCircle-v0")
    reference = make_env("OfflineCarCircle-v0").unwrapped  # dsrl's OfflineEnv, called directly
    episodes = {"reward": np.array([100.0, 300.0, 440.0]), "cost": np.array([0.0, 12.0, 33.0]),
                "length": np.array([300, 300, 90])}
    try:
        for kappa in (10.0, 20.0):
            summary = summarize(env, episodes, kappa)
            reference.set_target_cost(kappa)
            norm_reward, norm_cost = reference.get_normalized_score(280.0, 15.0)
            population_std = {key: np.sqrt(np.mean((values - values.mean()) ** 2)) for key, values in episodes.items()}
            assert summary == pytest.approx({
                "reward": 280.0, "cost": 15.0, "length": 230.0, "reward_std": population_std["reward"],
                "cost_std": population_std["cost"], "length_std": population_std["length"],
                "normalized_reward": norm_reward, "normalized_cost": 15.0 / kappa})
            assert summary["normalized_reward"] == pytest.approx(norm_reward, rel=1e-12)
    finally:
        env.close()
        reference.close()


def test_unknown_vector_mode_is_refused():
    with pytest.raises(LSPCError, match=r"^vector must be one of \['lockstep', 'sync', 'async'\], got 'threads'$"):
        choose_vector("OfflineBallRun-v0", "threads", 2)
    assert choose_vector("OfflineBallRun-v0", "sync", 2) == "sync"  # a valid one passes through


def test_load_dataset_without_options_returns_the_file_unchanged(tmp_path):
    # dsrl's pre_process_data rebuilds the data from its finished trajectories, so running it with no
    # option set would drop an unfinished last one (here rows 4 and 5: no terminal or timeout at the end)
    data = {**numbered_data(), "observations": np.zeros((N, 7), np.float32),
            "next_observations": np.ones((N, 7), np.float32), "actions": np.zeros((N, 2), np.float32),
            "timeouts": np.array([0, 0, 0, 1, 0, 0])}
    path = str(tmp_path / "unfinished.hdf5")
    write_dsrl_hdf5(path, data, {"task": "OfflineBallRun-v0"})
    env = make_env("OfflineBallRun-v0")
    try:
        loaded = load_dataset(env, path)
    finally:
        env.close()
    for key, value in data.items():
        assert np.array_equal(loaded[key], value), key


class CostlessEnv(gym.Env):
    """Reports no cost on its steps, or an int one: the evaluator still reads a float cost."""
    observation_space, action_space = gym.spaces.Box(-1, 1, (1,)), gym.spaces.Box(-1, 1, (1,))

    def __init__(self, cost=None):
        self.cost = cost

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 1.0, False, False, {} if self.cost is None else {"cost": self.cost}


def test_seeded_env_reports_a_float_cost_on_every_step():
    for cost, expected in ((None, 0.0), (2, 2.0)):
        env = SeededEpisodeEnv(lambda: CostlessEnv(cost))
        env.reset(seed=0)
        info = env.step(np.zeros(1))[-1]
        assert info["cost"] == expected and type(info["cost"]) is float


@pytest.mark.parametrize("vector", ["lockstep", "sync"])
def test_evaluator_grows_to_more_episodes_than_it_was_made_for(vector):
    seeds = episode_seeds(0, 3)

    def policy(obs, generator):  # deterministic: the two evaluators must give the same episodes
        return (obs[:, :2] - 0.1).clamp(-1.0, 1.0)

    small, sized = Evaluator("OfflineBallRun-v0", 15, 1, vector), Evaluator("OfflineBallRun-v0", 15, 3, vector)
    try:
        grown = small.run(policy, seeds, 0, torch.device("cpu"))
        expected = sized.run(policy, seeds, 0, torch.device("cpu"))
    finally:
        small.close()
        sized.close()
    assert grown["length"].tolist() == [15, 15, 15]
    for key in ("reward", "cost", "length"):
        assert grown[key].tolist() == expected[key].tolist(), key


def test_one_env_per_process_suites_need_async_from_two_episodes_on():
    metadrive = "OfflineMetadrive-easysparse-v0"
    with pytest.raises(LSPCError, match="allows one environment per process: run its 2 episodes with --vector async"):
        choose_vector(metadrive, "lockstep", 2)
    assert choose_vector(metadrive, "async", 2) == "async"


@pytest.mark.parametrize("vector, kind", [("sync", gym.vector.SyncVectorEnv), ("async", gym.vector.AsyncVectorEnv)])
def test_async_runs_the_episodes_in_subprocesses(vector, kind):
    # the modes give the same returns (tests/test_eval.py), so only the kind of vector env tells them apart
    evaluator = Evaluator("OfflineBallRun-v0", 15, 2, vector)
    try:
        assert type(evaluator.envs.vector_env) is kind
    finally:
        evaluator.close()


def test_a_feasible_evaluation_beats_an_infeasible_one_whatever_their_rewards():
    """Feasibility first: a feasible score with a very negative reward still beats an infeasible one,
    however small its cost excess (a tie on the first key would let the second decide)."""
    feasible = {"normalized_reward": -3.0, "normalized_cost": 0.5}
    infeasible = {"normalized_reward": 2.0, "normalized_cost": 1.2}
    assert better_than(feasible, infeasible) and not better_than(infeasible, feasible)
