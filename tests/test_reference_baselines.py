"""One training step and the acting policy of each osrl-lib baseline, recomputed independently.

For BC-All, BC-Safe, BCQ-Lag, BEAR-Lag, CPQ and COptiDICE, through our adapter (``lspc.methods.baselines``:
the sampler, the agent's ``train`` and ``act``): from a fixed small batch and a deep copy of the
networks before the step, every loss of one ``train()`` call is recomputed here with the formulas
of the papers as osrl-lib 0.1.0 implements them (osrl/algorithms/{bc,bcql,bearl,cpq,coptidice}.py),
written out on the networks' weights: no osrl loss method and none of our helpers compute an
expected value. Each network moves once per step, by one Adam step of its own loss (Adam's first
step moves a weight by lr * g / (|g| + eps)), the targets by Polyak averaging with tau, and the
Lagrange multipliers (PID controller, log alpha, COptiDICE's lambda and tau) by their own rules.
The random draws of the step (VAE noise, sampled latents and actions) are replayed from the same
seed in the order osrl draws them.
"""
import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lspc.methods.baselines import BaselineConfig, default_hparams, make_agent, make_sampler, training_data

STATE_DIM, ACTION_DIM, MAX_ACTION = 3, 2, 2.0
LATENT = 2 * ACTION_DIM  # osrl's VAE latent: twice the action dimension
BATCH, HIDDEN, EPISODE_LEN = 24, 16, 20
COST_LIMIT = 1.0
SEED = 1234
ADAM_EPS = 1e-8


class BoxEnv(gym.Env):
    """Only the spaces, which is all the agents read; actions in [-2, 2] so a dropped max_action shows."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)
    action_space = gym.spaces.Box(-MAX_ACTION, MAX_ACTION, (ACTION_DIM,), np.float32)


def reference_data(episodes=12, length=4, seed=0):
    """Short episodes in the DSRL layout, half ending in a terminal and half at the time limit, with
    distinct observations (a batch row is found in the data by its observation)."""
    rng = np.random.default_rng(seed)
    n = episodes * length
    ends = np.arange(length - 1, n, length)
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    terminals[ends[::2]] = True
    timeouts[ends[1::2]] = True
    return {"observations": rng.normal(size=(n, STATE_DIM)).astype(np.float32),
            "next_observations": rng.normal(size=(n, STATE_DIM)).astype(np.float32),
            "actions": rng.uniform(-0.9 * MAX_ACTION, 0.9 * MAX_ACTION, (n, ACTION_DIM)).astype(np.float32),
            "rewards": rng.uniform(0, 3, n).astype(np.float32),
            "costs": (rng.uniform(size=n) < 0.4).astype(np.float32),
            "terminals": terminals, "timeouts": timeouts}


def config(algo, **hparams):
    h = default_hparams(algo, "OfflineBallRun-v0")
    for key in ("a_hidden_sizes", "c_hidden_sizes"):
        if key in h:
            h[key] = [HIDDEN, HIDDEN]
    if "vae_hidden_sizes" in h:
        h["vae_hidden_sizes"] = HIDDEN
    h.update(hparams)
    return BaselineConfig(algo=algo, task="OfflineBallRun-v0", episode_len=EPISODE_LEN, cost_limit=COST_LIMIT,
                          batch_size=BATCH, hparams=h)


def setup(algo, **hparams):
    """(agent, sampled batch, the batch as the raw data says it should be, data, cfg)."""
    cfg = config(algo, **hparams)
    data = reference_data()
    trained_on = training_data(cfg, data)
    torch.manual_seed(0)
    agent = make_agent(cfg, BoxEnv(), torch.device("cpu"), trained_on)
    batch = make_sampler(cfg, trained_on, torch.device("cpu")).sample(BATCH)
    return agent, batch, expected_batch(batch, data, cfg.hparams.get("reward_scale", 1.0)), data, cfg


def expected_batch(batch, data, reward_scale):
    """The transitions of ``batch`` read from the raw data: rewards times reward_scale, done = terminal
    or timeout (osrl's TransitionDataset), is_init = the first step of an episode."""
    obs = torch.as_tensor(data["observations"])
    idx = torch.cdist(batch["observations"], obs).argmin(1)
    assert torch.equal(obs[idx], batch["observations"])
    done = data["terminals"] | data["timeouts"]
    start = np.r_[True, done[:-1]]
    raw = {"observations": data["observations"], "actions": data["actions"], "costs": data["costs"],
           "next_observations": data["next_observations"], "rewards": data["rewards"] * reward_scale,
           "dones": done.astype(np.float32), "is_init": start.astype(np.float32)}
    out = {key: torch.as_tensor(value, dtype=torch.float32)[idx] for key, value in raw.items()}
    out["index"] = idx
    return out


# ---------------------------------------------------------------------------------------------------
# the networks, written out on their weights
# ---------------------------------------------------------------------------------------------------
def linear_layers(module):
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def mlp(layers, x, hidden_act, out_act=lambda v: v):
    for i, layer in enumerate(layers):
        x = x @ layer.weight.T + layer.bias
        x = hidden_act(x) if i < len(layers) - 1 else out_act(x)
    return x


def q_values(nets, obs, act):
    """Each Q network of an osrl ensemble: ReLU MLP on [s, a], one output."""
    x = obs if act is None else torch.cat([obs, act], -1)
    return [mlp(linear_layers(net), x, torch.relu)[:, 0] for net in nets]


def vae_encode(vae, obs, act, eps):
    h = torch.relu(torch.relu(torch.cat([obs, act], 1) @ vae.e1.weight.T + vae.e1.bias) @ vae.e2.weight.T
                   + vae.e2.bias)
    mean = h @ vae.mean.weight.T + vae.mean.bias
    std = torch.exp((h @ vae.log_std.weight.T + vae.log_std.bias).clamp(-4, 15))
    return mean, std, mean + std * eps


def vae_decode_raw(vae, obs, z):
    h = torch.relu(torch.cat([obs, z], -1) @ vae.d1.weight.T + vae.d1.bias)
    h = torch.relu(h @ vae.d2.weight.T + vae.d2.bias)
    return h @ vae.d3.weight.T + vae.d3.bias


def vae_loss(vae, obs, act, eps, beta):
    """BCQ's VAE: reconstruction MSE + beta * KL(N(mean, std) || N(0, 1)), both averaged over elements."""
    mean, std, z = vae_encode(vae, obs, act, eps)
    recon = MAX_ACTION * torch.tanh(vae_decode_raw(vae, obs, z))
    kl = -0.5 * (1 + torch.log(std ** 2) - mean ** 2 - std ** 2).mean()
    return ((recon - act) ** 2).mean() + beta * kl


def gaussian_head(actor, obs):
    """SquashedGaussianMLPActor: ReLU trunk (its last hidden layer activated too), mean and log-std heads."""
    h = obs
    for layer in linear_layers(actor.net):
        h = torch.relu(h @ layer.weight.T + layer.bias)
    mu = h @ actor.mu_layer.weight.T + actor.mu_layer.bias
    log_std = (h @ actor.log_std_layer.weight.T + actor.log_std_layer.bias).clamp(-20, 2)
    return mu, torch.exp(log_std)


def perturbation(actor, obs, act, phi):
    """BCQ's perturbation actor: a + phi * max_action * tanh-MLP([s, a]), clamped to the action box."""
    xi = mlp(linear_layers(actor.pi), torch.cat([obs, act], 1), torch.tanh, torch.tanh)
    return (phi * MAX_ACTION * xi + act).clamp(-MAX_ACTION, MAX_ACTION)


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def grads(loss, module):
    return torch.autograd.grad(loss, list(module.parameters()), allow_unused=True)


def assert_adam_first_step(before, module_after, gradients, lr, what):
    """Adam's first step: each weight moves by lr * g / (|g| + eps), against its gradient."""
    moved = 0
    for p0, p1, g in zip(before, module_after.parameters(), gradients):
        g = torch.zeros_like(p0) if g is None else g
        expected = p0 - lr * g / (g.abs() + ADAM_EPS)
        clear = g.abs() > 1e-5  # where the sign of g cannot flip between two ways of summing it
        torch.testing.assert_close(p1.detach()[clear], expected[clear], rtol=0, atol=lr * 1e-3, msg=what)
        assert ((p1.detach() - p0).abs() <= lr * (1 + 1e-3) + 1e-7).all(), what
        moved += int(clear.sum())
    assert moved > 0, f"{what}: nothing moved"


def assert_polyak(target_before, target_after, online_after, tau, what):
    for t0, t1, p in zip(target_before, target_after.parameters(), online_after.parameters()):
        torch.testing.assert_close(t1.detach(), tau * p.detach() + (1 - tau) * t0, rtol=0, atol=1e-6, msg=what)
    assert any(not torch.equal(t0, t1.detach()) for t0, t1 in zip(target_before, target_after.parameters())), what


def assert_stats(stats, expected):
    assert set(expected) <= set(stats), sorted(stats)
    for key, value in expected.items():
        assert float(stats[key]) == pytest.approx(float(torch.as_tensor(value).detach()), rel=1e-4, abs=1e-5), key


def pid_multiplier(controller_before, qc, thres, kp, ki, kd):
    """PID-Lagrangian (Stooke et al. 2020) as osrl's LagrangianPIDController: the error is the batch
    mean of Q_c - threshold; integral clipped at 0; derivative of the rise only."""
    error = (qc - thres).mean()
    integral = torch.relu(controller_before["integral"] + error)
    derivative = torch.relu(error - controller_before["old"])
    return torch.relu(kp * torch.relu(error) + ki * integral + kd * derivative), error, integral


def raise_cost_critic(model, value):
    """Move the cost critics' outputs to about ``value`` so the cost terms are active at this step."""
    with torch.no_grad():
        for critic in (model.cost_critic, model.cost_critic_old):
            for layer in linear_layers(critic):
                if layer.out_features == 1:
                    layer.bias.fill_(value)


# ---------------------------------------------------------------------------------------------------
# BC-All and BC-Safe
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["bc-all", "bc-safe"])
def test_bc_one_step(algo):
    agent, batch, ref, data, cfg = setup(algo)
    h = cfg.hparams
    if algo == "bc-safe":  # only trajectories whose cost return is within the limit (gamma 1: plain sums)
        done = data["terminals"] | data["timeouts"]
        episode = np.cumsum(np.r_[0, done[:-1]])
        cost_return = np.bincount(episode, weights=data["costs"])
        safe = cost_return[episode] <= COST_LIMIT
        assert 0 < safe.sum() < len(safe)
        assert safe[ref["index"].numpy()].all()
    actor = copy.deepcopy(agent.model.actor)
    before = params(actor)
    stats = agent.train(batch)
    # BC: MSE between max_action * tanh-MLP(s) and the data's action
    prediction = MAX_ACTION * mlp(linear_layers(actor), ref["observations"], torch.relu, torch.tanh)
    loss = ((prediction - ref["actions"]) ** 2).mean()
    assert_stats(stats, {"actor_loss": loss})
    assert_adam_first_step(before, agent.model.actor, grads(loss, actor), h["actor_lr"], "bc actor")


def test_bc_acts_with_its_deterministic_actor():
    agent, _, ref, _, _ = setup("bc-all")
    obs = ref["observations"]
    with torch.no_grad():  # outputs across the whole box [-2, 2]
        linear_layers(agent.model.actor)[-1].weight.mul_(30.0)
    expected = MAX_ACTION * mlp(linear_layers(agent.model.actor), obs, torch.relu, torch.tanh)
    assert (expected.abs() > 1).any()
    torch.testing.assert_close(agent.policy_at(COST_LIMIT)(obs, torch.Generator().manual_seed(0)), expected)


# ---------------------------------------------------------------------------------------------------
# BCQ-Lag
# ---------------------------------------------------------------------------------------------------
def clipped_double_q(critic_nets_q1, critic_nets_q2, obs, act, lmbda):
    """BCQ's soft clipped double Q: lmbda * min + (1 - lmbda) * max of the two heads' ensemble minima."""
    q1 = torch.stack(q_values(critic_nets_q1, obs, act)).min(0).values
    q2 = torch.stack(q_values(critic_nets_q2, obs, act)).min(0).values
    return lmbda * torch.min(q1, q2) + (1 - lmbda) * torch.max(q1, q2)


def double_q_loss(critic, obs, act, backup):
    """osrl's EnsembleDoubleQCritic loss: the sum over every network of both heads of the MSE to the backup."""
    return sum(((q - backup) ** 2).mean() for q in q_values(critic.q1_nets, obs, act) + q_values(critic.q2_nets, obs, act))


def min_min(critic, obs, act):
    q1 = torch.stack(q_values(critic.q1_nets, obs, act)).min(0).values
    q2 = torch.stack(q_values(critic.q2_nets, obs, act)).min(0).values
    return torch.min(q1, q2)


def test_bcq_lag_one_step():
    agent, batch, ref, _, cfg = setup("bcq-lag")
    h, model = cfg.hparams, agent.model
    assert ref["dones"].sum() > 0  # the done mask matters in this batch
    raise_cost_critic(model, 3.0)
    model.controller.error_old, model.controller.error_integral = torch.tensor(0.4), torch.tensor(0.3)
    before = copy.deepcopy(model)
    pid = {"old": torch.tensor(0.4), "integral": torch.tensor(0.3)}
    s, a, r, c, s2, d = (ref[k] for k in ("observations", "actions", "rewards", "costs", "next_observations", "dones"))
    n, gamma, lmbda, tau = h["sample_action_num"], h["gamma"], h["lmbda"], h["tau"]
    torch.manual_seed(SEED)
    eps_vae = torch.randn(BATCH, LATENT)
    z_critic = torch.randn(BATCH * n, LATENT).clamp(-0.5, 0.5)
    z_cost = torch.randn(BATCH * n, LATENT).clamp(-0.5, 0.5)
    z_actor = torch.randn(BATCH, LATENT).clamp(-0.5, 0.5)
    torch.manual_seed(SEED)
    stats = agent.train(batch)

    # 1. the VAE (the behaviour model)
    loss = vae_loss(before.vae, s, a, eps_vae, h["beta"])
    assert_adam_first_step(params(before.vae), model.vae, grads(loss, before.vae), h["vae_lr"], "vae")
    expected = {"loss_vae": loss}
    vae = model.vae  # every later stage uses the updated VAE
    # 2. reward critic: r + gamma (1 - done) max over n perturbed VAE samples of the target critics' soft clipped
    # double Q at s'
    with torch.no_grad():
        s2n = s2.repeat_interleave(n, 0)
        a2 = perturbation(before.actor_old, s2n, MAX_ACTION * torch.tanh(vae_decode_raw(vae, s2n, z_critic)), h["phi"])
        q_next = clipped_double_q(before.critic_old.q1_nets, before.critic_old.q2_nets, s2n, a2, lmbda)
        backup = r + gamma * (1 - d) * q_next.reshape(BATCH, n).max(1).values
    loss = double_q_loss(before.critic, s, a, backup)
    assert_adam_first_step(params(before.critic), model.critic, grads(loss, before.critic), h["critic_lr"], "critic")
    expected["critic_loss"] = loss
    # 3. cost critic: c + gamma max Q_c' (osrl bootstraps the cost through episode ends)
    with torch.no_grad():
        a2 = perturbation(before.actor_old, s2n, MAX_ACTION * torch.tanh(vae_decode_raw(vae, s2n, z_cost)), h["phi"])
        qc_next = clipped_double_q(before.cost_critic_old.q1_nets, before.cost_critic_old.q2_nets, s2n, a2, lmbda)
        backup = c + gamma * qc_next.reshape(BATCH, n).max(1).values
    loss = double_q_loss(before.cost_critic, s, a, backup)
    assert_adam_first_step(params(before.cost_critic), model.cost_critic, grads(loss, before.cost_critic),
                           h["critic_lr"], "cost critic")
    expected["cost_critic_loss"] = loss
    # 4. actor: -Q(s, pi(s)) + multiplier * (Q_c(s, pi(s)) - threshold), on the updated critics
    actor = before.actor
    action = perturbation(actor, s, MAX_ACTION * torch.tanh(vae_decode_raw(vae, s, z_actor)).detach(), h["phi"])
    q, qc = min_min(model.critic, s, action), min_min(model.cost_critic, s, action)
    thres = COST_LIMIT * (1 - gamma ** EPISODE_LEN) / (1 - gamma) / EPISODE_LEN
    multiplier, error, integral = pid_multiplier(pid, qc.detach(), thres, *h["PID"])
    assert multiplier > 0
    penalty = ((qc - thres) * multiplier).mean()
    loss = -q.mean() + penalty
    assert_adam_first_step(params(actor), model.actor, grads(loss, actor), h["actor_lr"], "actor")
    expected.update(actor_loss=loss, qc_penalty=penalty, lagrangian=multiplier)
    assert_stats(stats, expected)
    assert float(model.controller.error_old) == pytest.approx(float(error), rel=1e-5)
    assert float(model.controller.error_integral) == pytest.approx(float(integral), rel=1e-5)
    # 5. targets: Polyak averaging with tau
    for name in ("critic", "cost_critic", "actor"):
        assert_polyak(params(getattr(before, f"{name}_old")), getattr(model, f"{name}_old"), getattr(model, name), tau,
                      f"{name} target")


def test_bcq_lag_acts_with_a_clamped_latent_from_the_evaluation_generator():
    agent, _, ref, _, cfg = setup("bcq-lag")
    obs, model = ref["observations"], agent.model
    z = torch.randn(BATCH, LATENT, generator=torch.Generator().manual_seed(5)).clamp(-0.5, 0.5)
    assert (z.abs() == 0.5).any()  # the clamp matters for these draws
    expected = perturbation(model.actor, obs, MAX_ACTION * torch.tanh(vae_decode_raw(model.vae, obs, z)),
                            cfg.hparams["phi"])
    torch.testing.assert_close(agent.policy_at(COST_LIMIT)(obs, torch.Generator().manual_seed(5)), expected)


# ---------------------------------------------------------------------------------------------------
# BEAR-Lag
# ---------------------------------------------------------------------------------------------------
def gaussian_mmd(x, y, sigma):
    """BEAR's MMD with a Gaussian kernel exp(-||x - y||^2 / (2 sigma)), per state, over the sample sets."""
    def kernel(u, v):
        return torch.exp(-((u[:, :, None] - v[:, None]) ** 2).sum(-1) / (2 * sigma)).mean((1, 2))
    return (kernel(x, x) + kernel(y, y) - 2 * kernel(x, y) + 1e-6).sqrt()


def test_bear_lag_one_step():
    agent, batch, ref, _, cfg = setup("bear-lag")
    h, model = cfg.hparams, agent.model
    raise_cost_critic(model, 3.0)
    model.controller.error_old, model.controller.error_integral = torch.tensor(0.4), torch.tensor(0.3)
    with torch.no_grad():
        model.log_alpha.fill_(0.3)
    before = copy.deepcopy(model)
    pid = {"old": torch.tensor(0.4), "integral": torch.tensor(0.3)}
    s, a, r, c, s2, d = (ref[k] for k in ("observations", "actions", "rewards", "costs", "next_observations", "dones"))
    n, m, gamma, lmbda, tau = h["sample_action_num"], h["num_samples_mmd_match"], h["gamma"], h["lmbda"], h["tau"]
    torch.manual_seed(SEED)
    eps_vae = torch.randn(BATCH, LATENT)
    eps_critic = torch.randn(BATCH * n, ACTION_DIM)
    eps_cost = torch.randn(BATCH * n, ACTION_DIM)
    z_mmd = torch.randn(BATCH, m, LATENT).clamp(-0.5, 0.5)
    eps_actor = torch.randn(BATCH * m, ACTION_DIM)
    torch.manual_seed(SEED)
    stats = agent.train(batch)

    loss = vae_loss(before.vae, s, a, eps_vae, h["beta"])
    assert_adam_first_step(params(before.vae), model.vae, grads(loss, before.vae), h["vae_lr"], "vae")
    expected = {"loss_vae": loss}
    s2n = s2.repeat_interleave(n, 0)
    with torch.no_grad():  # the target actor's squashed samples (osrl does not scale them by max_action here)
        mu, std = gaussian_head(before.actor_old, s2n)
        q_next = clipped_double_q(before.critic_old.q1_nets, before.critic_old.q2_nets, s2n,
                                  torch.tanh(mu + std * eps_critic), lmbda)
        backup = r + gamma * (1 - d) * q_next.reshape(BATCH, n).max(1).values
    loss = double_q_loss(before.critic, s, a, backup)
    assert_adam_first_step(params(before.critic), model.critic, grads(loss, before.critic), h["critic_lr"], "critic")
    expected["critic_loss"] = loss
    with torch.no_grad():
        qc_next = clipped_double_q(before.cost_critic_old.q1_nets, before.cost_critic_old.q2_nets, s2n,
                                   torch.tanh(mu + std * eps_cost), lmbda)
        backup = c + gamma * qc_next.reshape(BATCH, n).max(1).values
    loss = double_q_loss(before.cost_critic, s, a, backup)
    assert_adam_first_step(params(before.cost_critic), model.cost_critic, grads(loss, before.cost_critic),
                           h["critic_lr"], "cost critic")
    expected["cost_critic_loss"] = loss
    # actor: MMD between the VAE's and the policy's pre-tanh samples, the Lagrangian-weighted cost, -Q
    actor = before.actor
    with torch.no_grad():
        behaviour = vae_decode_raw(model.vae, s[:, None].expand(-1, m, -1), z_mmd)
    mu, std = gaussian_head(actor, s.repeat_interleave(m, 0))
    raw = mu + std * eps_actor
    mmd = gaussian_mmd(behaviour, raw.reshape(BATCH, m, ACTION_DIM), h["mmd_sigma"])
    first = torch.tanh(raw).reshape(BATCH, m, ACTION_DIM)[:, 0]
    q, qc = min_min(model.critic, s, first), min_min(model.cost_critic, s, first)
    thres = COST_LIMIT * (1 - gamma ** EPISODE_LEN) / (1 - gamma) / EPISODE_LEN
    multiplier, error, integral = pid_multiplier(pid, qc.detach(), thres, *h["PID"])
    assert multiplier > 0
    penalty = ((qc - thres) * multiplier).mean()
    alpha = math.exp(0.3)
    loss = (-q + alpha * (mmd - h["target_mmd_thresh"])).mean() + penalty
    assert_adam_first_step(params(actor), model.actor, grads(loss, actor), h["actor_lr"], "actor")
    log_alpha = min(max(0.3 + h["alpha_lr"] * alpha * float((mmd - h["target_mmd_thresh"]).mean().detach()), -5.0), 5.0)
    expected.update(actor_loss=loss, mmd_loss=mmd.mean(), qc_penalty=penalty, lagrangian=multiplier,
                    alpha_value=math.exp(log_alpha))
    assert_stats(stats, expected)
    assert float(model.log_alpha) == pytest.approx(log_alpha, rel=1e-6)
    assert float(model.controller.error_integral) == pytest.approx(float(integral), rel=1e-5)
    assert model.n_train_steps == 1
    for name in ("critic", "cost_critic", "actor"):
        assert_polyak(params(getattr(before, f"{name}_old")), getattr(model, f"{name}_old"), getattr(model, name), tau,
                      f"{name} target")


@pytest.mark.parametrize("algo", ["bear-lag", "cpq", "coptidice"])
def test_gaussian_policies_act_with_their_mean(algo):
    agent, _, ref, _, _ = setup(algo)
    obs = ref["observations"]
    mu, _ = gaussian_head(agent.model.actor, obs)
    # CPQ's and BEAR-Lag's act scales tanh(mean) to the box (_actor_forward); COptiDICE's act does not
    scale = 1.0 if algo == "coptidice" else MAX_ACTION
    policy = agent.policy_at(COST_LIMIT)
    torch.testing.assert_close(policy(obs, torch.Generator().manual_seed(0)), scale * torch.tanh(mu))
    torch.testing.assert_close(policy(obs, torch.Generator().manual_seed(1)), scale * torch.tanh(mu))


# ---------------------------------------------------------------------------------------------------
# CPQ
# ---------------------------------------------------------------------------------------------------
def ensemble_min(critic, obs, act):
    return torch.stack(q_values(critic.q_nets, obs, act)).min(0).values


def ensemble_loss(critic, obs, act, backup):
    return sum(((q - backup) ** 2).mean() for q in q_values(critic.q_nets, obs, act))


def test_cpq_one_step():
    agent, batch, ref, _, cfg = setup("cpq")
    h, model = cfg.hparams, agent.model
    gamma, tau, n = h["gamma"], h["tau"], h["sample_action_num"]
    q_thres = COST_LIMIT * (1 - gamma ** EPISODE_LEN) / (1 - gamma) / EPISODE_LEN
    qc_thres = h["qc_scalar"] * q_thres
    with torch.no_grad():  # cost critics centred on the threshold: the constraint-penalized backup is mixed
        mu, _ = gaussian_head(model.actor, ref["next_observations"])
        for critic in (model.cost_critic, model.cost_critic_old):
            for layer in linear_layers(critic):
                layer.weight.mul_(3.0)
            shift = q_thres - ensemble_min(critic, ref["next_observations"], MAX_ACTION * torch.tanh(mu)).median()
            for net in critic.q_nets:
                linear_layers(net)[-1].bias.add_(shift)
        model.log_alpha.fill_(0.2)
    before = copy.deepcopy(model)
    s, a, r, c, s2, d = (ref[k] for k in ("observations", "actions", "rewards", "costs", "next_observations", "dones"))
    torch.manual_seed(SEED)
    eps_vae = torch.randn(BATCH, LATENT)
    eps_critic = torch.randn(BATCH, ACTION_DIM)
    eps_cost = torch.randn(BATCH, ACTION_DIM)
    torch.randn(BATCH, ACTION_DIM)  # the policy's own sample, drawn and unused
    eps_ood = torch.randn(n, BATCH, ACTION_DIM)
    eps_kl = torch.randn(n * BATCH, LATENT)
    eps_actor = torch.randn(BATCH, ACTION_DIM)
    torch.manual_seed(SEED)
    stats = agent.train(batch)

    loss = vae_loss(before.vae, s, a, eps_vae, h["beta"])
    assert_adam_first_step(params(before.vae), model.vae, grads(loss, before.vae), h["vae_lr"], "vae")
    expected = {"loss_vae": loss}
    # reward critic: r + gamma (1 - done) 1[Q_c'(s', a') <= threshold] Q'(s', a'), a' from the current policy
    with torch.no_grad():
        mu, std = gaussian_head(before.actor, s2)
        a2 = MAX_ACTION * torch.tanh(mu + std * eps_critic)
        safe = (ensemble_min(before.cost_critic_old, s2, a2) <= q_thres).float()
        assert 0 < safe.mean() < 1
        backup = r + gamma * (1 - d) * safe * ensemble_min(before.critic_old, s2, a2)
    loss = ensemble_loss(before.critic, s, a, backup)
    assert_adam_first_step(params(before.critic), model.critic, grads(loss, before.critic), h["critic_lr"], "critic")
    expected["critic_loss"] = loss
    # cost critic: TD to c + gamma Q_c', minus alpha times (the OOD actions' Q_c - threshold); the OOD actions are
    # the policy's pre-tanh samples whose VAE KL is in the top quarter
    with torch.no_grad():
        a2 = MAX_ACTION * torch.tanh(mu + std * eps_cost)
        backup = c + gamma * ensemble_min(before.cost_critic_old, s2, a2)
        mu_s, std_s = gaussian_head(before.actor, s)
        sampled = (mu_s + std_s * eps_ood).reshape(n * BATCH, ACTION_DIM)
        stacked = s.repeat(n, 1)
        qc_sampled = ensemble_min(before.cost_critic_old, stacked, sampled).reshape(n, BATCH)
        mean, std_z, _ = vae_encode(model.vae, stacked, sampled, eps_kl)
        kl = (-0.5 * (1 + torch.log(std_z ** 2) - mean ** 2 - std_z ** 2).mean(1)).reshape(n, BATCH)
        qc_ood = ((kl >= torch.quantile(kl, 0.75)) * qc_sampled).mean(0)
    alpha = math.exp(0.2)
    loss = ensemble_loss(before.cost_critic, s, a, backup) - alpha * (qc_ood.mean() - qc_thres)
    assert_adam_first_step(params(before.cost_critic), model.cost_critic, grads(loss, before.cost_critic),
                           h["critic_lr"], "cost critic")
    log_alpha = min(max(0.2 + h["alpha_lr"] * alpha * float(qc_thres - qc_ood.mean()), -5.0), 5.0)
    expected.update(cost_critic_loss=loss, alpha_value=math.exp(log_alpha))
    assert float(model.log_alpha) == pytest.approx(log_alpha, rel=1e-6)
    # actor: -mean(1[Q_c(s, pi(s)) <= threshold] Q(s, pi(s))) on the updated critics
    actor = before.actor
    mu, std = gaussian_head(actor, s)
    action = MAX_ACTION * torch.tanh(mu + std * eps_actor)
    safe = (ensemble_min(model.cost_critic, s, action) <= q_thres).float()
    loss = -(safe * ensemble_min(model.critic, s, action)).mean()
    assert_adam_first_step(params(actor), model.actor, grads(loss, actor), h["actor_lr"], "actor")
    expected["actor_loss"] = loss
    assert_stats(stats, expected)
    for name in ("critic", "cost_critic", "actor"):
        assert_polyak(params(getattr(before, f"{name}_old")), getattr(model, f"{name}_old"), getattr(model, name), tau,
                      f"{name} target")


# ---------------------------------------------------------------------------------------------------
# COptiDICE
# ---------------------------------------------------------------------------------------------------
def soft_chi(x):
    """COptiDICE's soft chi-square f: x log x - x + 1 below 1, (x - 1)^2 / 2 above."""
    return torch.where(x < 1, x * (torch.log(x + 1e-10) - 1) + 1, 0.5 * (x - 1) ** 2)


def soft_chi_prime_inverse(y):
    return torch.where(y < 0, torch.exp(y.clamp(max=0.0)), y + 1)


def test_coptidice_one_step():
    agent, batch, ref, data, cfg = setup("coptidice")
    h, model = cfg.hparams, agent.model
    assert ref["is_init"].sum() > 0 and ref["dones"].sum() > 0
    torch.testing.assert_close(batch["is_init"], ref["is_init"])
    # the data statistics: share of episode starts, per-dimension std of observations and actions
    done = data["terminals"] | data["timeouts"]
    assert model.init_state_propotion == pytest.approx(np.r_[True, done[:-1]].mean())
    torch.testing.assert_close(model.observations_std, torch.as_tensor(data["observations"].std(0, keepdims=True)))
    torch.testing.assert_close(model.actions_std, torch.as_tensor(data["actions"].std(0, keepdims=True)))
    before = copy.deepcopy(model)
    s, a, r, c, s2, d, init = (ref[k] for k in ("observations", "actions", "rewards", "costs", "next_observations",
                                                "dones", "is_init"))
    gamma, alpha, eps = h["gamma"], h["alpha"], h["cost_ub_epsilon"]
    prop = float(np.r_[True, done[:-1]].mean())
    torch.manual_seed(SEED)
    obs_noise, act_noise = torch.randn(BATCH, STATE_DIM), torch.randn(BATCH, ACTION_DIM)
    torch.manual_seed(SEED)
    stats = agent.train(batch)

    lmbda = F.softplus(before.lmbda.detach())
    tau_param = before.tau.detach().clone().requires_grad_(True)
    lmbda_param = before.lmbda.detach().clone().requires_grad_(True)

    def nu_min(net_module, obs):
        return torch.stack(q_values(net_module.q_nets, obs, None)).min(0).values

    def advantage(nu_module):
        """e(s, a, s') = r - lambda c + gamma (1 - done) nu(s') - nu(s), and w* = relu(f'^-1(e / alpha))."""
        e = r - lmbda * c + gamma * (1 - d) * nu_min(nu_module, s2) - nu_min(nu_module, s)
        return e, torch.relu(soft_chi_prime_inverse(e / alpha))

    e, w = advantage(before.nu_network)
    w_fixed = w.detach()
    # the cost upper bound: chi and tau
    tau = F.softplus(tau_param)
    chi_s, chi_s2 = nu_min(before.chi_network, s), nu_min(before.chi_network, s2)
    ell = (1 - gamma) * chi_s * init / prop + w_fixed * (c + gamma * (1 - d) * chi_s2 - chi_s)
    logits = ell / tau.detach()
    weights = torch.softmax(logits, 0) * BATCH
    d_kl = (weights * (torch.log_softmax(logits, 0) + math.log(BATCH)) - weights + 1).mean()
    weighted_cost = (weights * w_fixed * c).mean()
    chi_loss = (weights * ell).mean()
    assert_adam_first_step(params(before.chi_network), model.chi_network, grads(chi_loss, before.chi_network),
                           h["critic_lr"], "chi")
    tau_loss = tau * (eps - d_kl.detach())
    (tau_grad,) = torch.autograd.grad(tau_loss.sum(), tau_param)
    # nu: (1 - gamma) E[nu(s0)] + E[w e - alpha f(w)]
    nu_loss = (1 - gamma) * (nu_min(before.nu_network, s) * init / prop).mean() + (w * e - alpha * soft_chi(w)).mean()
    assert_adam_first_step(params(before.nu_network), model.nu_network, grads(nu_loss, before.nu_network),
                           h["critic_lr"], "nu")
    thres = COST_LIMIT * (1 - gamma ** EPISODE_LEN) / (1 - gamma) / EPISODE_LEN
    lmbda_loss = F.softplus(lmbda_param) * (thres - weighted_cost.detach())
    (lmbda_grad,) = torch.autograd.grad(lmbda_loss.sum(), lmbda_param)
    for name, grad, value in (("tau", tau_grad, before.tau), ("lmbda", lmbda_grad, before.lmbda)):
        expected = value.detach() - h["scalar_lr"] * grad / (grad.abs() + ADAM_EPS)
        torch.testing.assert_close(getattr(model, name).detach(), expected, rtol=0, atol=1e-7, msg=name)
    # policy: weighted likelihood of the (noised) data actions, weights from the updated nu and the old lambda
    with torch.no_grad():
        _, w_new = advantage(model.nu_network)
    mu, std = gaussian_head(before.actor, s + obs_noise * model.observations_std * 0.1)
    x = a + act_noise * model.actions_std * 0.1
    log_prob = (-((x - mu) ** 2) / (2 * std ** 2) - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
    actor_loss = -(w_new * log_prob).mean()
    assert_adam_first_step(params(before.actor), model.actor, grads(actor_loss, before.actor), h["actor_lr"], "actor")
    assert_stats(stats, {"chi_loss": chi_loss, "tau_loss": tau_loss, "D_kl": d_kl, "Df": soft_chi(w_fixed).mean(),
                         "td_error": (e ** 2).mean(), "nu_loss": nu_loss, "lmbda_loss": lmbda_loss,
                         "actor_loss": actor_loss, "tau": tau, "lmbda": lmbda})
