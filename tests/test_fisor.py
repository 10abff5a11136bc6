"""FISOR (lspc/methods/fisor.py): its losses, weights and diffusion schedule against hand-computed numbers,
acting, seeding, checkpoints and a few training steps."""
import io
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from lspc import LSPCError
from lspc.methods import fisor
from lspc.methods.baselines import BaselineConfig

TASK = "OfflineBallRun-v0"
SMALL = {"c_hidden_sizes": [32, 32], "actor_hidden_dim": 16, "time_dim": 8, "time_hidden_sizes": [16, 16],
         "critic_batch_size": 16, "num_candidates": 4}


@pytest.fixture(scope="module")
def env(ballrun_env):
    return ballrun_env


def make_cfg(batch_size=64, seed=0, **hparams):
    return BaselineConfig(algo="fisor", task=TASK, episode_len=100, seed=seed, batch_size=batch_size,
                          hparams={**fisor.default_hparams(TASK), **SMALL, **hparams})


def synthetic_data(env, episodes=4, length=25, seed=0):
    """Random transitions of env's shapes: episodes of ``length`` steps ending in timeouts, a few costs."""
    rng = np.random.default_rng(seed)
    n = episodes * length
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    timeouts = np.zeros(n, dtype=bool)
    timeouts[length - 1::length] = True
    return {"observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
            "next_observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
            "actions": rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
            "rewards": rng.uniform(0, 1, size=n).astype(np.float32),
            "costs": (rng.uniform(size=n) < 0.2).astype(np.float32),
            "terminals": np.zeros(n, dtype=bool), "timeouts": timeouts}


def test_defaults_are_plain_yaml_and_metadrive_clips_the_infeasible_weight():
    hparams = fisor.default_hparams(TASK)
    assert yaml.safe_load(yaml.safe_dump(hparams)) == hparams
    assert hparams["cost_min_weight"] == 0.0
    assert fisor.default_hparams("OfflineMetadrive-easysparse-v0")["cost_min_weight"] == 1.0
    assert hparams["c_hidden_sizes"] == [256, 256] and hparams["actor_hidden_dim"] == 256
    assert fisor.default_schedule(TASK) == {"max_timesteps": 1_000_000, "batch_size": 2048, "eval_every": 250_000,
                                            "eval_episodes": 20}


def test_reachability_signal_and_target():
    h = fisor.reach_signal(torch.tensor([0.0, 0.5, 3.0]), 25.0)
    assert h.tolist() == [-1.0, 25.0, 25.0]
    h = torch.tensor([25.0, -1.0, -1.0, -1.0, 25.0])
    next_vh = torch.tensor([3.0, -0.5, 2.0, 2.0, -4.0])
    dones = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0])
    target = fisor.reach_target(h, next_vh, dones, gamma=0.9)
    # 0.1*25 + 0.9*max(25, 3); 0.1*-1 + 0.9*max(-1, -0.5); 0.1*-1 + 0.9*max(-1, 2); terminals: h
    assert target.tolist() == pytest.approx([25.0, -0.55, 1.7, -1.0, 25.0], abs=1e-6)


def test_reversed_expectile_penalizes_v_h_above_q_h():
    qh = torch.tensor([1.0])
    # V_h = 3 over-estimates Q_h = 1: weight 0.9 * 2^2; V_h = -1 under-estimates it: weight 0.1 * 2^2
    assert fisor.reversed_expectile_loss(qh - torch.tensor([3.0]), 0.9).item() == pytest.approx(3.6)
    assert fisor.reversed_expectile_loss(qh - torch.tensor([-1.0]), 0.9).item() == pytest.approx(0.4)
    # the IQL loss of the reward V is the other way round
    assert fisor.expectile_loss(qh - torch.tensor([3.0]), 0.9).item() == pytest.approx(0.4)
    assert fisor.expectile_loss(qh - torch.tensor([-1.0]), 0.9).item() == pytest.approx(3.6)
    # over Q_h samples {0, 10} the loss 0.9 V^2 + 0.1 (10 - V)^2 (halved by the mean) is minimal at V = 1,
    # a low expectile; IQL's minimum is at V = 9
    for loss, minimum in ((fisor.reversed_expectile_loss, 1.0), (fisor.expectile_loss, 9.0)):
        v = torch.tensor([minimum, minimum], requires_grad=True)
        loss(torch.tensor([0.0, 10.0]) - v, 0.9).backward()
        assert v.grad.sum().item() == pytest.approx(0.0, abs=1e-5)


def test_feasibility_weights_three_cases_and_clips():
    h = fisor.default_hparams(TASK)
    # rows: infeasible (V_h 0.5 > 0, Q_h 0.3), infeasible clipped at 150, infeasible with Q_h > V_h,
    # feasible state and action, feasible clipped at 100, feasible state with infeasible action,
    # boundary V_h = 0 and Q_h = 0 (feasible)
    vh = torch.tensor([0.5, 2.0, 1.0, -1.0, -1.0, -1.0, 0.0])
    qh = torch.tensor([0.3, 0.0, 2.0, -2.0, -2.0, 0.5, 0.0])
    q = torch.tensor([0.0, 0.0, 0.0, 1.0, 5.0, 9.0, 0.2])
    v = torch.tensor([0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0])
    w = fisor.feasibility_weights(q, v, qh, vh, h)
    expected = [math.exp(1.0), 150.0, math.exp(-5.0), math.exp(1.5), 100.0, 0.0, math.exp(0.6)]
    assert w.tolist() == pytest.approx(expected, rel=1e-5)
    metadrive = fisor.feasibility_weights(q, v, qh, vh, fisor.default_hparams("OfflineMetadrive-easysparse-v0"))
    assert metadrive.tolist() == pytest.approx([math.exp(1.0), 150.0, 1.0, *expected[3:]], rel=1e-5)


def test_vp_schedule_for_five_steps():
    # alpha_t = exp(-0.1/5 - 0.5 * 9.9 * (2t - 1) / 25) = exp(-(0.02 + 0.198 (2t - 1)))
    schedule = fisor.Schedule(5, 0.1, 10.0, torch.device("cpu"))
    exponents = [0.218, 0.614, 1.010, 1.406, 1.802]
    assert schedule.alphas.tolist() == pytest.approx([math.exp(-e) for e in exponents], rel=1e-6)
    assert schedule.alphas.tolist() == pytest.approx([0.804125, 0.541182, 0.364219, 0.245122, 0.164969], abs=1e-6)
    assert schedule.betas.tolist() == pytest.approx([0.195875, 0.458818, 0.635781, 0.754878, 0.835031], abs=1e-6)
    # cumulative exponents 0.218, 0.832, 1.842, 3.248, 5.05
    assert schedule.alpha_bars.tolist() == pytest.approx([0.804125, 0.435178, 0.158500, 0.038852, 0.006409], abs=1e-6)


def test_ddpm_sampling_with_the_true_noise_returns_the_action():
    schedule = fisor.Schedule(5, 0.1, 10.0, torch.device("cpu"))
    a0 = torch.tensor([[0.3, -0.7], [0.9, 0.0], [-0.2, 0.5]])
    t = torch.tensor([0, 2, 4])
    noise = torch.tensor([[1.0, -1.0], [0.5, 2.0], [-1.5, 0.1]])
    noisy = fisor.diffuse(a0, t, noise, schedule)
    root = schedule.alpha_bars[t].sqrt().unsqueeze(-1)
    assert torch.allclose(noisy, root * a0 + (1 - root ** 2).sqrt() * noise)

    def true_noise(states, x, steps):  # the eps that carries a0 to x at each row's step
        alpha_bar = schedule.alpha_bars[steps.long().squeeze(-1)].unsqueeze(-1)
        return (x - alpha_bar.sqrt() * a0) / (1 - alpha_bar).sqrt()

    generator = torch.Generator().manual_seed(3)
    sampled = fisor.ddpm_sample(true_noise, torch.zeros(3, 7), 2, schedule, -torch.ones(2), torch.ones(2), generator)
    assert torch.allclose(sampled, a0, atol=1e-5)


def test_safest_candidate_and_act_pick_the_lowest_q_h(env):
    candidates = torch.tensor([[[0.1], [0.2], [0.3]], [[0.4], [0.5], [0.6]]])
    qh = torch.tensor([[1.0, -2.0, 0.0], [-1.0, 3.0, -5.0]])
    assert torch.equal(fisor.safest_candidate(candidates, qh), candidates[[0, 1], [1, 2]])

    agent = fisor.FISOR(make_cfg(), env, torch.device("cpu"))

    class OppositeHeads(torch.nn.Module):  # heads a_0 and -a_0: their max is |a_0|, their min -|a_0|
        def forward(self, states, actions):
            return torch.stack([actions[:, 0], -actions[:, 0]])

    agent.reach_q_target = OppositeHeads()
    obs = torch.randn(3, env.observation_space.shape[0])
    action = agent.act(obs, torch.Generator().manual_seed(5))
    k = agent.hparams["num_candidates"]
    states = obs.repeat_interleave(k, dim=0)
    candidates = fisor.ddpm_sample(agent.actor_ema, states, 2, agent.schedule, agent.low, agent.high,
                                   torch.Generator().manual_seed(5)).view(3, k, 2)
    best = candidates[:, :, 0].abs().argmin(dim=1)
    assert torch.equal(action, candidates[torch.arange(3), best])


def test_act_draws_only_from_its_generator(env):
    # a seeded initialization: an untrained denoiser can push every candidate onto the box's corners,
    # where two noise seeds give the same actions (5 of 200 initializations do)
    torch.manual_seed(0)
    agent = fisor.FISOR(make_cfg(), env, torch.device("cpu"))
    obs = torch.randn(5, env.observation_space.shape[0])
    global_state = torch.get_rng_state()
    first = agent.act(obs, torch.Generator().manual_seed(11))
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(first, agent.act(obs, torch.Generator().manual_seed(11)))
    assert not torch.equal(first, agent.act(obs, torch.Generator().manual_seed(12)))
    assert first.shape == (5, 2) and first.abs().max() <= 1.0


def test_training_is_finite_moves_every_network_and_resumes_bit_exactly(env):
    cfg = make_cfg()
    data = synthetic_data(env)
    device = torch.device("cpu")
    torch.manual_seed(0)
    agent = fisor.FISOR(cfg, env, device, data)
    sampler = fisor.make_sampler(cfg, data, device)
    before = {name: [p.detach().clone() for p in getattr(agent, name).parameters()] for name in fisor._NETWORKS}
    global_state = torch.get_rng_state()
    for _ in range(3):
        metrics = agent.train(sampler.sample(cfg.batch_size))
    assert torch.equal(torch.get_rng_state(), global_state)  # dropout and diffusion noise from the agent's generator
    assert tuple(metrics) == fisor.METRIC_NAMES
    assert all(value.dim() == 0 and torch.isfinite(value) for value in metrics.values())
    for name, params in before.items():
        assert any(not torch.equal(p, q) for p, q in zip(params, getattr(agent, name).parameters())), name
    assert agent.actor_updates == 6

    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    buffer.seek(0)
    restored = fisor.FISOR(cfg, env, device)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    obs = torch.randn(4, env.observation_space.shape[0])
    actions = [model.act(obs, torch.Generator().manual_seed(1)) for model in (agent, restored)]
    assert torch.equal(*actions)
    batch = sampler.sample(cfg.batch_size)
    expected, got = agent.train(batch), restored.train(batch)
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    for name in fisor._NETWORKS:
        for p, q in zip(getattr(agent, name).parameters(), getattr(restored, name).parameters()):
            assert torch.equal(p, q), name


def test_a_state_with_v_h_exactly_zero_is_feasible_and_act_builds_no_graph(env):
    """FISOR's feasible set is V_h(s) <= 0: with the last layer of V_h zeroed every state sits on its edge."""
    cfg, device = make_cfg(), torch.device("cpu")
    data = synthetic_data(env)
    agent = fisor.FISOR(cfg, env, device, data)
    sampler = fisor.make_sampler(cfg, data, device)
    for v_h, feasible in ((0.0, 1.0), (0.5, 0.0)):
        with torch.no_grad():
            agent.reach_value.net.weights[-1].zero_()
            agent.reach_value.net.biases[-1].fill_(v_h)
        metrics = agent.train(sampler.sample(cfg.batch_size))
        assert metrics["feasible_fraction"].item() == feasible and metrics["vh_mean"].item() == v_h
    action = agent.act(torch.zeros(3, env.observation_space.shape[0]), torch.Generator().manual_seed(0))
    assert action.shape == (3, env.action_space.shape[0]) and not action.requires_grad


def test_actor_learning_rate_decays_like_optax_cosine(env):
    agent = fisor.FISOR(make_cfg(actor_lr_decay_steps=100), env, torch.device("cpu"))
    for updates, lr in ((0, 3e-4), (50, 1.5e-4), (100, 0.0), (150, 0.0)):
        agent.actor_updates = updates
        assert agent._actor_lr() == pytest.approx(lr, abs=1e-12)


def test_make_sampler_normalizes_rewards_by_the_spread_of_episode_returns(env, monkeypatch):
    monkeypatch.setattr(fisor, "reference_reward_range", lambda task: None)  # dsrl's range: test_reference_fisor.py
    data = synthetic_data(env, episodes=3, length=4)
    data["rewards"] = np.array([1, 2, 0, 0, 0, 1, 0, 0, 0.5, 0.5, 0.5, 0.5], dtype=np.float32)  # returns 3, 1, 2
    sampler = fisor.make_sampler(make_cfg(batch_size=8), data, torch.device("cpu"))
    assert torch.allclose(sampler.rewards, torch.as_tensor(data["rewards"]) * 100 / (3 - 1))
    assert sampler.dones.tolist() == [0, 0, 0, 1] * 3
    again = fisor.make_sampler(make_cfg(batch_size=8), data, torch.device("cpu"))
    assert all(torch.equal(x, y) for x, y in zip(sampler.sample(8).values(), again.sample(8).values()))
    data["rewards"] = np.full(12, 0.25, dtype=np.float32)
    with pytest.raises(LSPCError, match="spread"):
        fisor.make_sampler(make_cfg(batch_size=8), data, torch.device("cpu"))


@pytest.mark.parametrize("batch_size, hparams, message", [
    (64, {"no_such_hparam": 1}, "no hyperparameters"),
    (63, {}, "even"),
    (8, {"critic_batch_size": 16}, "larger than batch_size"),
    (64, {"reach_expectile": 1.0}, "reach_expectile"),
    (64, {"c_hidden_sizes": []}, "c_hidden_sizes"),
])
def test_hyperparameters_that_cannot_work_are_refused(env, batch_size, hparams, message):
    with pytest.raises(LSPCError, match=message):
        fisor.FISOR(make_cfg(batch_size=batch_size, **hparams), env, torch.device("cpu"))


# Each check of check_config at its boundary: the edge value is accepted, the first value past it (or the
# wrong type) refused with a message naming the setting.
ACCEPTED = [("c_hidden_sizes", [1]), ("time_hidden_sizes", [1, 1]), ("critic_batch_size", 1), ("diffusion_steps", 1),
            ("actor_hidden_dim", 1), ("actor_lr_decay_steps", 1), ("num_candidates", 1), ("actor_num_blocks", 0),
            ("time_dim", 2), ("reach_expectile", 1e-6), ("reward_expectile", 1 - 1e-6), ("gamma", 1.0), ("tau", 1.0),
            ("ema_rate", 1.0), ("actor_dropout", 0.0), ("beta_min", 10.0), ("cost_min_weight", 150.0),
            ("reward_max_weight", 0.0)]
REFUSED = [("c_hidden_sizes", [0], "c_hidden_sizes"), ("c_hidden_sizes", [8.0], "c_hidden_sizes"),
           ("time_hidden_sizes", [4, -1], "time_hidden_sizes"), ("time_hidden_sizes", (4,), "time_hidden_sizes"),
           *[(key, bad, key) for key in ("critic_batch_size", "diffusion_steps", "actor_hidden_dim",
                                         "actor_lr_decay_steps", "num_candidates") for bad in (0, 1.0)],
           ("actor_num_blocks", -1, "actor_num_blocks"), ("actor_num_blocks", 1.0, "actor_num_blocks"),
           ("time_dim", 0, "time_dim"), ("time_dim", 3, "time_dim"), ("time_dim", 4.0, "time_dim"),
           *[(key, bad, key) for key in ("reach_expectile", "reward_expectile") for bad in (0.0, 1.0)],
           *[(key, bad, key) for key in ("gamma", "tau", "ema_rate") for bad in (0.0, 1.001)],
           ("actor_dropout", 1.0, "actor_dropout"), ("actor_dropout", -0.1, "actor_dropout"),
           ("beta_min", 0.0, "beta_min"), ("beta_min", 10.001, "beta_min <= beta_max"),
           ("cost_min_weight", -0.1, "cost_min_weight"), ("cost_min_weight", 150.001, "cost_min_weight <= cost_max"),
           ("reward_max_weight", -0.1, "reward_max_weight")]


@pytest.mark.parametrize("key, value", ACCEPTED)
def test_check_config_accepts_each_edge_value(key, value):
    assert fisor.check_config(make_cfg(**{key: value}))[key] == value


@pytest.mark.parametrize("key, value, message", REFUSED)
def test_check_config_refuses_past_each_edge(key, value, message):
    with pytest.raises(LSPCError, match=message):
        fisor.check_config(make_cfg(**{key: value}))


def test_batch_sizes_at_their_edges():
    assert fisor.check_config(make_cfg(batch_size=2, critic_batch_size=2))["critic_batch_size"] == 2
    for batch_size in (0, 3):
        with pytest.raises(LSPCError, match="batch_size must be even"):
            fisor.check_config(make_cfg(batch_size=batch_size, critic_batch_size=1))
    with pytest.raises(LSPCError, match="critic_batch_size 5 is larger than batch_size 4"):
        fisor.check_config(make_cfg(batch_size=4, critic_batch_size=5))


def test_defaults_are_a_fresh_copy_each_call():
    first = fisor.default_hparams(TASK)
    first["c_hidden_sizes"].append(7)
    first["time_hidden_sizes"].clear()
    assert fisor.default_hparams(TASK)["c_hidden_sizes"] == [256, 256]
    assert fisor.default_hparams(TASK)["time_hidden_sizes"] == [128, 128]


def test_initializations_are_the_flax_modules():
    torch.manual_seed(0)
    xavier = fisor._dense(400, 600)
    bound = math.sqrt(6 / (400 + 600))  # Xavier-uniform: U(-bound, bound), std bound / sqrt(3)
    assert 0.99 * bound < xavier.weight.abs().max() <= bound
    assert xavier.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    lecun = fisor._dense(400, 600, init="lecun")  # flax's lecun_normal: variance 1 / fan_in after truncating at 2 std
    assert lecun.weight.std().item() == pytest.approx(400 ** -0.5, rel=0.02)
    assert lecun.weight.abs().max() <= 2 * 400 ** -0.5 / 0.87962566103423978
    assert not xavier.bias.any() and not lecun.bias.any()
    ensemble = fisor.EnsembleMLP(2, 300, [500])
    for fan_in, fan_out, weight, bias in zip((300, 500), (500, 1), ensemble.weights, ensemble.biases):
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert 0.99 * bound < weight.abs().max() <= bound and not bias.any()


def test_critics_have_the_jax_models_parameter_counts():
    state_dim, action_dim, hidden = 7, 2, [256, 256]

    def mlp(in_dim):  # Dense layers in -> 256 -> 256 -> 1, kernels and biases
        sizes = [in_dim, *hidden, 1]
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))

    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(fisor.ValueFunction(state_dim, hidden)) == mlp(state_dim)
    assert count(fisor.TwinQ(state_dim, action_dim, hidden)) == 2 * mlp(state_dim + action_dim)


def test_dropout_at_rate_zero_draws_nothing():
    generator = torch.Generator().manual_seed(3)
    before = generator.get_state()
    x = torch.randn(4, 5)
    assert torch.equal(fisor._dropout(x, 0.0, generator), x)
    assert torch.equal(generator.get_state(), before)
    dropped = fisor._dropout(x, 0.5, generator)
    assert not torch.equal(generator.get_state(), before)
    assert set(torch.unique(dropped / x).tolist()) <= {0.0, 2.0}


def test_fourier_features_start_as_flaxs_normal_0_2():
    torch.manual_seed(0)
    h = {**fisor.default_hparams(TASK), "time_dim": 20_000}
    fourier = fisor.Denoiser(3, 2, h).fourier  # FISOR's FourierFeatures kernel: nn.initializers.normal(0.2)
    assert fourier.shape == (10_000, 1)
    assert fourier.std().item() == pytest.approx(0.2, rel=0.03) and abs(fourier.mean().item()) < 0.01


def test_denoiser_with_time_mlp_widths_that_differ():
    """The ResNet's input is [a_t, s, last time-MLP layer]: widths 12 -> 20 -> 28 tell the layers apart."""
    h = {**fisor.default_hparams(TASK), "time_dim": 12, "time_hidden_sizes": [20, 28], "actor_hidden_dim": 8}
    denoiser = fisor.Denoiser(3, 2, h)
    assert denoiser.inp.in_features == 2 + 3 + 28
    out = denoiser(torch.zeros(5, 3), torch.zeros(5, 2), torch.ones(5, 1))
    assert out.shape == (5, 2)


@pytest.mark.parametrize("max_return, min_return, expected", [(10.5, 10.0, 0.5), (10.0, 10.0, None), (9.0, 10.0, None)])
def test_reference_range_is_dsrls_spread_when_positive(monkeypatch, max_return, min_return, expected):
    key = fisor.dsrl_key(TASK)
    infos = SimpleNamespace(MAX_EPISODE_REWARD={key: max_return}, MIN_EPISODE_REWARD={key: min_return})
    monkeypatch.setattr(fisor, "dsrl_infos", lambda: infos)
    assert fisor.reference_reward_range(TASK) == expected
    monkeypatch.setattr(fisor, "dsrl_infos", lambda: SimpleNamespace(MAX_EPISODE_REWARD={}, MIN_EPISODE_REWARD={}))
    assert fisor.reference_reward_range(TASK) is None


def test_data_range_of_a_small_spread_and_of_a_single_trajectory():
    timeouts = np.array([0, 1, 0, 1], dtype=bool)
    data = {"rewards": np.array([0.25, 0.25, 0.5, 0.5], dtype=np.float32), "terminals": np.zeros(4, bool),
            "timeouts": timeouts, "observations": np.zeros((4, 1), np.float32)}
    assert fisor.data_reward_range(data) == pytest.approx(0.5)  # returns 0.5 and 1.0
    one = {"rewards": np.array([0.25, 0.5], dtype=np.float32), "terminals": np.zeros(2, bool),
           "timeouts": np.array([0, 1], dtype=bool), "observations": np.zeros((2, 1), np.float32)}
    with pytest.raises(LSPCError, match="all 1 trajectories return 0.75$"):
        fisor.data_reward_range(one)
