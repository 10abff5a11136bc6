"""CDT around osrl-lib: the seeded sequence sampler against osrl's own windows, and the stateful
policy in the batched evaluator against osrl's own one-episode rollout."""
import contextlib
import dataclasses
import io

import gymnasium as gym
import numpy as np
import pytest
import torch

import lspc.evaluation
from lspc.methods.baselines import osrl
from lspc import LSPCError
from lspc.methods.cdt import (CDT_DEFAULTS, CDTPolicy, SequenceSampler, cdt_defaults, max_reward_warning,
                              parse_prompts, prompt_for)
from lspc.envs import ALL_TASKS, cost_limits
from lspc.evaluation import Evaluator, episode_seeds

STATE_DIM, ACTION_DIM, EPISODE_LEN = 3, 2, 25


def synthetic_dataset(trajectories: int, seed: int = 0, length=(3, 12)):
    """Trajectories of random lengths whose (cost, return) spread over a plane, in the DSRL layout."""
    rng = np.random.default_rng(seed)
    keys = {k: [] for k in ("observations", "next_observations", "actions", "rewards", "costs", "terminals",
                            "timeouts")}
    for i in range(trajectories):
        n = int(rng.integers(*length))
        keys["observations"].append(rng.normal(size=(n, STATE_DIM)))
        keys["next_observations"].append(rng.normal(size=(n, STATE_DIM)))
        keys["actions"].append(rng.uniform(-1, 1, size=(n, ACTION_DIM)))
        keys["rewards"].append(rng.uniform(0, 2 * (1 + i % 7), size=n))
        keys["costs"].append((rng.uniform(size=n) < (i % 5) / 5).astype(float))
        keys["terminals"].append(np.zeros(n, bool))
        keys["timeouts"].append(np.r_[np.zeros(n - 1, bool), True])
    return {k: np.concatenate(v).astype(np.float32 if k not in ("terminals", "timeouts") else bool)
            for k, v in keys.items()}


def sequence_dataset(data, **overrides):
    options = dict(seq_len=4, reward_scale=0.1, cost_scale=1.0, augment_percent=0.0, cost_sample=True,
                   cost_transform=lambda x: 70 - x)
    options.update(overrides)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return osrl().SequenceDataset(dict(data), **options)


def test_every_task_has_prompts_for_its_thresholds():
    for task in ALL_TASKS:
        hparams = cdt_defaults(task, cost_limits(task))
        assert list(hparams["prompts"]) == [f"{k:g}" for k in cost_limits(task)]
        assert all(target > 0 for prompt in hparams["prompts"].values() for target in prompt)
    # OSRL issue 6: medium-dense inherits CarCircle's values there; here it has the medium MetaDrive ones
    assert prompt_for(cdt_defaults("OfflineMetadrive-mediumdense-v0", (10, 20, 40)), 10) == (300.0, 10.0)
    assert prompt_for(cdt_defaults("OfflineBallRun-v0", (10, 20, 40)), 40) == (700.0, 40.0)


@pytest.mark.parametrize("reward_scale, cost_scale", [(0.1, 1.0), (0.5, 2.0)])
def test_sampler_windows_equal_osrls_and_are_seeded(reward_scale, cost_scale):
    dataset = sequence_dataset(synthetic_dataset(40), reward_scale=reward_scale, cost_scale=cost_scale)
    sampler = SequenceSampler(dataset.dataset, dataset.sample_prob, 4, reward_scale, cost_scale, torch.device("cpu"),
                              seed=3)
    # every (trajectory, start) there is, windows past the end included, against osrl's own sample
    pairs = [(t, start) for t, traj in enumerate(dataset.dataset) for start in range(len(traj["rewards"]))]
    traj, start = (torch.tensor(column) for column in zip(*pairs))
    windows = sampler.gather(traj, start)
    prepare = dataset._SequenceDataset__prepare_sample
    names = ("states", "actions", "returns", "costs_return", "time_steps", "mask", "episode_cost", "costs")
    for i, (t, s) in enumerate(pairs):
        for name, expected in zip(names, prepare(t, s)):
            np.testing.assert_allclose(windows[name][i].numpy(), np.asarray(expected, dtype=np.float64), rtol=1e-6,
                                       atol=1e-6, err_msg=f"{name} of trajectory {t} from {s}")
    assert (windows["mask"].sum(1) < 4).any() and (windows["mask"].sum(1) == 4).any()
    batch = sampler.sample(256)
    again, other = (SequenceSampler(dataset.dataset, dataset.sample_prob, 4, reward_scale, cost_scale,
                                    torch.device("cpu"), seed=seed) for seed in (3, 4))
    repeated = again.sample(256)
    assert all(torch.equal(batch[k], repeated[k]) for k in batch)
    assert not torch.equal(batch["states"], other.sample(256)["states"])


def test_sampled_windows_start_anywhere_in_their_trajectory():
    dataset = sequence_dataset(synthetic_dataset(5, length=(2, 5)))
    sampler = SequenceSampler(dataset.dataset, None, 4, 0.1, 1.0, torch.device("cpu"), seed=0)
    drawn = []
    sampler.gather = lambda traj, start: drawn.append((traj, start))
    sampler.sample(20_000)
    (traj, start), = drawn
    for t, trajectory in enumerate(dataset.dataset):  # uniform over trajectories (no probabilities), then starts
        starts = start[traj == t].numpy()
        n = len(trajectory["rewards"])
        assert len(starts) == pytest.approx(4_000, rel=0.1)
        assert np.bincount(starts, minlength=n).tolist() == pytest.approx([len(starts) / n] * n, rel=0.15)


def test_sampler_draws_trajectories_by_osrls_cost_weights():
    dataset = sequence_dataset(synthetic_dataset(30))
    sampler = SequenceSampler(dataset.dataset, dataset.sample_prob, 4, 0.1, 1.0, torch.device("cpu"), seed=0)
    draws = 60_000
    cost = sampler.sample(draws)["episode_cost"].numpy()
    # osrl's weights: max(70 - trajectory cost, 0), normalized; compare the expected episode cost
    returns = np.array([t["cost_returns"][0] for t in dataset.dataset])
    expected = float((dataset.sample_prob * returns).sum())
    assert np.std(returns) > 0 and cost.mean() == pytest.approx(expected, rel=0.02)
    assert not np.allclose(dataset.sample_prob, dataset.sample_prob[0])


def test_pareto_augmentation_adds_relabelled_trajectories_the_sampler_draws():
    data = synthetic_dataset(400, length=(10, 11))
    # a frontier: trajectory i costs i % 11 and earns about 10 per unit of cost
    cost_return = np.repeat(np.arange(400) % 11, 10)
    step = np.tile(np.arange(10), 400)
    data["costs"] = (step < cost_return).astype(np.float32)
    data["rewards"] = (cost_return + np.random.default_rng(1).uniform(0, 1, 4000)).astype(np.float32)
    np.random.seed(0)
    dataset = sequence_dataset(data, augment_percent=0.2, deg=1, max_reward=150.0, min_reward=1.0,
                               max_rew_decrease=10.0)
    original = len(dataset.original_data)
    assert len(dataset.dataset) > original  # 20% of the filtered trajectories, relabelled
    augmented = dataset.dataset[original:]
    returns = np.array([t["returns"][0] for t in dataset.original_data])
    # relabelled returns lie above the data's frontier, so above what their source trajectory had
    assert max(t["returns"][0] for t in augmented) > returns.max() * 0.9
    sampler = SequenceSampler(dataset.dataset, dataset.sample_prob, 4, 0.1, 1.0, torch.device("cpu"), seed=0)
    assert len(sampler.lengths) == len(dataset.dataset)


class ToyEnv(gym.Env):
    """A 3-D linear system with a cost region, that terminates at a seeded random step (or at the
    time limit), and records the actions it was given."""

    observation_space = gym.spaces.Box(-10, 10, (STATE_DIM,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (ACTION_DIM,), np.float32)

    def __init__(self) -> None:
        self.forced_seed = None
        self.actions = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=self.forced_seed if seed is None else seed)
        self.state = self.np_random.normal(size=STATE_DIM).astype(np.float32)
        self.end = int(self.np_random.integers(5, EPISODE_LEN + 10))  # some episodes end early, some at the limit
        self.t, self.actions = 0, []
        return self.state.copy(), {}

    def step(self, action):
        action = np.asarray(action, dtype=np.float32)
        self.actions.append(action.copy())
        self.state = 0.8 * self.state + np.r_[action, action.sum()].astype(np.float32)
        self.t += 1
        reward = float(1.0 - np.square(self.state).mean())
        cost = float(abs(self.state[0]) > 0.5)
        return self.state.copy(), reward, self.t >= self.end, self.t >= EPISODE_LEN, {"cost": cost}


def make_model(seed: int = 0, cost_prefix: bool = False):
    torch.manual_seed(seed)
    h = CDT_DEFAULTS
    names = ("num_heads", "action_head_layers", "time_emb", "use_rew", "use_cost", "cost_transform", "stochastic",
             "init_temperature")
    model = osrl().algorithms.CDT(STATE_DIM, ACTION_DIM, 1.0, seq_len=4, episode_len=EPISODE_LEN, embedding_dim=32,
                                  num_layers=2, target_entropy=-ACTION_DIM, cost_prefix=cost_prefix,
                                  **{k: h[k] for k in names})
    with torch.no_grad():  # larger weights than osrl's init (std 0.02), so the actions depend on the history
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.train()  # as after a training step: acting must switch dropout off itself


@pytest.mark.parametrize("cost_scale, cost_prefix", [(1.0, False), (0.5, True)])  # prefix: the episode's cost budget
def test_batched_stateful_policy_equals_osrls_one_episode_rollout(monkeypatch, cost_scale, cost_prefix):
    monkeypatch.setattr(lspc.evaluation, "make_env", lambda task, episode_len=None: ToyEnv())
    model, prompt, seeds = make_model(cost_prefix=cost_prefix), (3.0, 2.0), episode_seeds(0, 6)
    evaluator = Evaluator("OfflineBallRun-v0", EPISODE_LEN, len(seeds), vector="lockstep")
    batched = evaluator.run(CDTPolicy(model, prompt, reward_scale=0.1, cost_scale=cost_scale), seeds, 0,
                            torch.device("cpu"))
    batched_actions = [env.env.actions for env in evaluator.envs.envs]
    evaluator.close()
    assert len(set(batched["length"].tolist())) > 1 and batched["length"].min() < EPISODE_LEN  # early ends
    assert (batched["length"] == EPISODE_LEN).any()  # and time-limit ends
    assert (batched["cost"] > 0).all()  # the cost-to-go the model sees falls during every episode

    # osrl's CDTTrainer.rollout, one episode at a time; rewards scaled as osrl's env wrapper does
    trainer = osrl().algorithms.CDTTrainer(model, None, reward_scale=0.1, cost_scale=cost_scale)
    for i, seed in enumerate(seeds):
        toy = ToyEnv()
        toy.forced_seed = seed
        env = gym.wrappers.TimeLimit(gym.wrappers.TransformReward(toy, lambda r: 0.1 * r), EPISODE_LEN)
        model.eval()
        ret, length, cost = trainer.rollout(model, env, prompt[0] * 0.1, prompt[1] * cost_scale)
        assert length == batched["length"][i]
        np.testing.assert_allclose(np.array(toy.actions), np.array(batched_actions[i]), atol=1e-5)
        assert ret / 0.1 == pytest.approx(batched["reward"][i], rel=1e-4, abs=1e-4)
        assert cost == batched["cost"][i]
    # the prompt matters: another target return gives other actions
    evaluator = Evaluator("OfflineBallRun-v0", EPISODE_LEN, len(seeds), vector="lockstep")
    evaluator.run(CDTPolicy(model, (30.0, 2.0), 0.1, cost_scale), seeds, 0, torch.device("cpu"))
    other_actions = [env.env.actions for env in evaluator.envs.envs]
    evaluator.close()
    assert not np.allclose(np.array(other_actions[0][:3]), np.array(batched_actions[0][:3]))


def test_parse_prompts_keys_by_threshold_and_refuses_malformed_flags():
    assert parse_prompts(["10=500,10", "20.0=600.5,20"]) == {"10": [500.0, 10.0], "20": [600.5, 20.0]}
    assert parse_prompts([]) == {}
    for bad in ("10=500", "10:500,10", "10=500,10,3", "ten=500,10"):
        with pytest.raises(LSPCError, match=f"--prompt '{bad}': expected KAPPA=RETURN,COST"):
            parse_prompts([bad])


def test_max_reward_warning_sums_each_finished_episode():
    # episodes [1, 1] and [5, 5]; a trailing unfinished piece [100] is not an episode
    data = {"rewards": np.array([1, 1, 5, 5, 100], np.float32), "terminals": np.array([0, 0, 0, 1, 0], bool),
            "timeouts": np.array([0, 1, 0, 0, 0], bool)}
    assert "largest episode return 10 exceeds max_reward 4" in max_reward_warning(data, 4.0)
    assert max_reward_warning(data, 10.0) is None
    one = {"rewards": np.array([3, 4], np.float32), "terminals": np.zeros(2, bool), "timeouts": np.array([0, 1], bool)}
    assert "largest episode return 7 exceeds max_reward 6," in max_reward_warning(one, 6.0)
    assert max_reward_warning({**one, "timeouts": np.zeros(2, bool)}, 6.0) is None  # no finished episode


def test_the_policy_refuses_to_act_past_its_episode_len():
    policy = CDTPolicy(make_model(), (3.0, 2.0), 0.1, 1.0)
    policy.reset(2)
    for _ in range(EPISODE_LEN):
        assert not policy(torch.zeros(2, STATE_DIM)).requires_grad  # acting builds no graph
        policy.observe(np.zeros(2), np.zeros(2))
    with pytest.raises(LSPCError, match=f"CDT acts for at most its episode_len \\({EPISODE_LEN}\\) steps"):
        policy(torch.zeros(2, STATE_DIM))


def test_sequence_sampler_checks_the_data(capsys):
    """CDT's timestep embedding covers episode_len steps: a longer trajectory is refused before training; so are
    costs other than 0 and 1 (its cost head classifies them); a return above max_reward is warned about when
    the Pareto augmentation would relabel with it."""
    from lspc.methods.baselines import BaselineConfig, default_hparams, sequence_sampler

    data = synthetic_dataset(3, length=(8, 9))  # three trajectories of 8 steps
    data["costs"] = (data["costs"] > 0).astype(np.float32)
    hparams = {**default_hparams("cdt", "OfflineBallRun-v0"), "augment_percent": 0.0, "seq_len": 4}
    cfg = BaselineConfig(algo="cdt", task="OfflineBallRun-v0", episode_len=8, hparams=hparams)
    sampler = sequence_sampler(cfg, data, torch.device("cpu"))
    assert len(sampler.lengths) == 3  # as long as an episode: accepted
    # trajectories drawn by osrl's cost weights: cost_sample_offset 70 minus the trajectory's cost
    expected = sequence_dataset(data, reward_scale=hparams["reward_scale"], cost_scale=hparams["cost_scale"]).sample_prob
    np.testing.assert_allclose(sampler.prob.numpy(), expected)
    assert hparams["cost_sample_offset"] == 70.0 and not np.allclose(expected, expected[0])
    for start in (0, 16):  # the first or the last trajectory one step longer (its first row twice)
        longer = {key: np.insert(value, start, value[start], axis=0) for key, value in data.items()}
        with pytest.raises(LSPCError, match="trajectories of 9 steps, longer than the task's episode length 8"):
            sequence_sampler(cfg, longer, torch.device("cpu"))
    fractional = {**data, "costs": np.r_[np.arange(8, dtype=np.float32) / 2, np.zeros(16, np.float32)]}  # six non-binary
    with pytest.raises(LSPCError, match=r"the dataset has costs \[0.5, 1.5, 2.0, 2.5, 3.0\]$"):
        sequence_sampler(cfg, fractional, torch.device("cpu"))
    # returns above max_reward 1: warned only when the augmentation runs (which three trajectories are too few for)
    capsys.readouterr()
    sequence_sampler(dataclasses.replace(cfg, hparams={**hparams, "max_reward": 1.0}), data, torch.device("cpu"))
    assert "exceeds max_reward" not in capsys.readouterr().out
    augmenting = dataclasses.replace(cfg, hparams={**hparams, "max_reward": 1.0, "augment_percent": 0.2})
    with pytest.raises(LSPCError, match="Pareto augmentation failed"):
        sequence_sampler(augmenting, data, torch.device("cpu"))
    assert "exceeds max_reward 1," in capsys.readouterr().out
