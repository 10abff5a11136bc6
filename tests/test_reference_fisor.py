"""FISOR (lspc/methods/fisor.py) against a reference written here: one ``train()`` iteration and ``act()``.

The reference follows the authors' JAX code (ZhengYinan-AIR/FISOR: jaxrl5/agents/fisor/fisor.py
``update``, ``update_actor``, ``update_v``, ``update_q``, ``update_vc``, ``update_qc`` and
``eval_actions``; jaxrl5/networks/diffusion.py ``ddpm_sampler``, ``vp_beta_schedule``, ``DDPM``,
``FourierFeatures``; jaxrl5/networks/resnet.py; configs/train_config.py), restated in PyTorch from
the agent's parameters only: every forward pass, loss, optimizer step, target and EMA update is
recomputed here, none of lspc/methods/fisor.py's helpers is called. The hyperparameters are off their
defaults and distinct from each other (the two expectiles, tau and the EMA rate, the learning
rates), so a wire crossed between two of them shows; the batch is checked to reach every branch
of the weights and of the reachability target. Tiny networks: each test takes well under a second.
"""
import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import spread_critics
from lspc import LSPCError
from lspc.methods import fisor
from lspc.methods.baselines import BaselineConfig

TASK = "OfflineBallRun-v0"
OBS_DIM, ACT_DIM = 5, 2
BATCH, CRITIC_ROWS = 16, 8
# off the defaults and pairwise distinct: a swapped or hard-coded value changes the numbers
HPARAMS = {
    "gamma": 0.9, "tau": 0.05, "ema_rate": 0.02, "critic_lr": 0.01, "value_lr": 0.02, "actor_lr": 0.05,
    "reward_expectile": 0.8, "reach_expectile": 0.9, "cost_scale": 7.0,
    "cost_temperature": 2.0, "cost_max_weight": 4.0, "cost_min_weight": 0.5,
    "reward_temperature": 1.5, "reward_max_weight": 3.0,
    "c_hidden_sizes": [16, 16], "actor_hidden_dim": 12, "actor_num_blocks": 2, "actor_dropout": 0.3,
    "time_dim": 6, "time_hidden_sizes": [10, 10], "critic_batch_size": CRITIC_ROWS, "num_candidates": 6,
    "diffusion_steps": 4, "beta_min": 0.2, "beta_max": 8.0, "actor_lr_decay_steps": 10,
}
NETWORKS = ("actor", "actor_ema", "q", "q_target", "value", "reach_q", "reach_q_target", "reach_value")


class BoxEnv:
    """Just the spaces FISOR reads; an action box that is not [-1, 1] in the second coordinate."""
    observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    action_space = gym.spaces.Box(np.array([-1.0, -0.4], np.float32), np.array([1.0, 0.6], np.float32))


LOW = torch.as_tensor(BoxEnv.action_space.low)
HIGH = torch.as_tensor(BoxEnv.action_space.high)


def make_agent(seed=3, **overrides):
    cfg = BaselineConfig(algo="fisor", task=TASK, episode_len=100, seed=seed, batch_size=BATCH,
                         hparams={**fisor.default_hparams(TASK), **HPARAMS, **overrides})
    torch.manual_seed(seed)
    agent = fisor.FISOR(cfg, BoxEnv(), torch.device("cpu"))
    spread_critics(agent, ("q", "reach_q", "value", "reach_value"), 3.0,
                   ((agent.q_target, agent.q), (agent.reach_q_target, agent.reach_q)), 0.5)
    with torch.no_grad():  # the EMA actor off the online one too
        for p in agent.actor_ema.parameters():
            p.add_(0.3 * torch.randn_like(p))
    agent.actor_updates = 3  # the cosine schedule is part way: its value is checked, not just its start
    return agent


def make_batch(seed=0):
    """A fixed batch; its first CRITIC_ROWS rows have costs and ends (terminals or timeouts) in every combination."""
    g = torch.Generator().manual_seed(seed)
    costs = torch.tensor([0.0, 1.0, 0.0, 2.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    dones = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    return {"observations": torch.randn(BATCH, OBS_DIM, generator=g),
            "actions": 1.3 * torch.randn(BATCH, ACT_DIM, generator=g),  # some outside the box: clipped
            "rewards": torch.rand(BATCH, generator=g) * 2 - 0.5,
            "costs": costs, "dones": dones,
            "next_observations": torch.randn(BATCH, OBS_DIM, generator=g)}


# ---------------------------------------------------------------------------------------------
# The reference: forward passes from the parameters, written from the JAX modules
# ---------------------------------------------------------------------------------------------
def mish(x):
    return x * torch.tanh(F.softplus(x))


def ensemble(module, x):
    """Members' ReLU MLPs (critic_base_cls: activate_final, then a Dense to a scalar), [members, batch]."""
    weights, biases = list(module.weights), list(module.biases)
    outs = []
    for member in range(weights[0].shape[0]):
        h = x
        for layer, (w, b) in enumerate(zip(weights, biases)):
            h = h @ w[member] + b[member, 0]
            if layer < len(weights) - 1:
                h = torch.relu(h)
        outs.append(h[:, 0])
    return torch.stack(outs)


def twin(module, s, a):
    return ensemble(module.heads, torch.cat([s, a], dim=-1))


def value(module, s):
    return ensemble(module.net, s)[0]


def dense(layer, x):
    return x @ layer.weight.T + layer.bias


def layer_norm(norm, x):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-6) * norm.weight + norm.bias  # flax's epsilon


def denoiser(net, s, x, t, masks=None):
    """DDPM.__call__: learnable Fourier features of t, mish MLP (not activated at its end), then the
    LN-ResNet on [a_t, s, cond]: Dense, blocks x + Dense(mish(Dense_4w(LN(dropout(x))))), mish, Dense."""
    f = 2 * math.pi * t @ net.fourier.T
    cond = torch.cat([torch.cos(f), torch.sin(f)], dim=-1)
    for i, layer in enumerate(net.time_mlp):
        cond = dense(layer, cond)
        if i < len(net.time_mlp) - 1:
            cond = mish(cond)
    h = dense(net.inp, torch.cat([x, s, cond], dim=-1))
    for i, block in enumerate(net.blocks):
        y = h if masks is None else h * masks[i] / (1 - HPARAMS["actor_dropout"])
        h = h + dense(block.project, mish(dense(block.expand, layer_norm(block.norm, y))))
    return dense(net.out, mish(h))


def vp_schedule(steps, beta_min, beta_max):
    """vp_beta_schedule: alpha_t = exp(-b_min / T - (b_max - b_min)(2t - 1) / (2 T^2)), t = 1..T."""
    t = torch.arange(1, steps + 1, dtype=torch.float64)
    alphas = torch.exp(-beta_min / steps - 0.5 * (beta_max - beta_min) * (2 * t - 1) / steps ** 2)
    betas = (1 - alphas).float()
    alphas = 1 - betas
    return betas, alphas, torch.cumprod(alphas, 0)


def expectile(diff, tau):
    """expectile_loss: weight tau where diff > 0, 1 - tau elsewhere (JAX's jnp.where(diff > 0, ...))."""
    return (torch.where(diff > 0, tau, 1 - tau) * diff ** 2).mean()


def safe_expectile(diff, tau):
    """safe_expectile_loss: weight tau where diff < 0 (V_h above Q_h), 1 - tau elsewhere."""
    return (torch.where(diff < 0, tau, 1 - tau) * diff ** 2).mean()


def adam_step(params, loss, lr):
    """One step of a fresh Adam (the agent's optimizers start fresh in these tests)."""
    optimizer = torch.optim.Adam(params, lr=lr)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def lerp_(targets, sources, rate):
    """optax.incremental_update: target <- rate * source + (1 - rate) * target."""
    with torch.no_grad():
        for pt, p in zip(targets.parameters(), sources.parameters()):
            pt.copy_(rate * p + (1 - rate) * pt)


def reference_iteration(agent, batch):
    """FISOR.update of the JAX code on copies of the agent's networks: the expected losses, weights and networks."""
    h = {**fisor.default_hparams(TASK), **HPARAMS}
    nets = {name: copy.deepcopy(getattr(agent, name)) for name in NETWORKS}
    for net in nets.values():
        net.requires_grad_(True)
    g = torch.Generator()
    g.set_state(agent.generator.get_state())  # the draws: t, noise, then one dropout mask per block
    s, s_next = batch["observations"], batch["next_observations"]
    a = torch.max(torch.min(batch["actions"], HIGH), LOW)
    out = {}
    with torch.no_grad():  # update_actor reads the critics as they are before this iteration's critic updates
        q = twin(nets["q_target"], s, a).min(0).values
        v = value(nets["value"], s)
        qh = twin(nets["reach_q_target"], s, a).max(0).values
        vh = value(nets["reach_value"], s)
        unsafe = (vh > 0).float()
        safe = (vh <= 0).float() * (qh <= 0).float()
        cost_w = torch.clamp(torch.exp((vh - qh) * h["cost_temperature"]), h["cost_min_weight"], h["cost_max_weight"])
        reward_w = torch.clamp(torch.exp((q - v) * h["reward_temperature"]), 0, h["reward_max_weight"])
        weights = unsafe * cost_w + safe * reward_w
    out.update(q=q, v=v, qh=qh, vh=vh, weights=weights)

    betas, alphas, alpha_bars = vp_schedule(h["diffusion_steps"], h["beta_min"], h["beta_max"])
    out["alpha_bars"] = alpha_bars
    actor_losses, lrs = [], []
    actor_optimizer = torch.optim.Adam(nets["actor"].parameters(), lr=h["actor_lr"])  # AdamW, no weight decay
    half = BATCH // 2
    for i, rows in enumerate((slice(0, half), slice(half, None))):
        n = half
        t = torch.randint(h["diffusion_steps"], (n,), generator=g)
        noise = torch.randn((n, ACT_DIM), generator=g)
        masks = [torch.empty(n, h["actor_hidden_dim"]).bernoulli_(1 - h["actor_dropout"], generator=g)
                 for _ in range(h["actor_num_blocks"])]
        noisy = alpha_bars[t].sqrt()[:, None] * a[rows] + (1 - alpha_bars[t]).sqrt()[:, None] * noise
        eps = denoiser(nets["actor"], s[rows], noisy, t[:, None].float(), masks)
        loss = (((eps - noise) ** 2).sum(-1) * weights[rows]).mean()
        # optax.cosine_decay_schedule(actor_lr, decay_steps) at the actor's update count
        count = min(agent.actor_updates + i, h["actor_lr_decay_steps"])
        lr = h["actor_lr"] * 0.5 * (1 + math.cos(math.pi * count / h["actor_lr_decay_steps"]))
        for group in actor_optimizer.param_groups:
            group["lr"] = lr
        actor_optimizer.zero_grad()
        loss.backward()
        actor_optimizer.step()
        lerp_(nets["actor_ema"], nets["actor"], h["ema_rate"])
        actor_losses.append(loss.detach())
        lrs.append(lr)
    out["actor_loss"], out["actor_lrs"] = torch.stack(actor_losses).mean(), lrs

    # critic_update: the first 256 (here CRITIC_ROWS) rows; update_v, update_q, update_vc, update_qc
    m = slice(0, CRITIC_ROWS)
    s, a, s_next = s[m], a[m], s_next[m]
    r, d, c = batch["rewards"][m], batch["dones"][m], batch["costs"][m]
    value_loss = expectile(q[m] - value(nets["value"], s), h["reward_expectile"])
    adam_step(nets["value"].parameters(), value_loss, h["value_lr"])
    with torch.no_grad():
        target_q = r + h["gamma"] * (1 - d) * value(nets["value"], s_next)  # masks = 1 - done
    q_loss = ((twin(nets["q"], s, a) - target_q) ** 2).mean()
    adam_step(nets["q"].parameters(), q_loss, h["critic_lr"])
    lerp_(nets["q_target"], nets["q"], h["tau"])

    signal = torch.where(c > 0, h["cost_scale"], -1.0)  # DSRLDataset, critic_type "hj"
    reach_value_loss = safe_expectile(qh[m] - value(nets["reach_value"], s), h["reach_expectile"])
    adam_step(nets["reach_value"].parameters(), reach_value_loss, h["value_lr"])
    with torch.no_grad():
        next_vh = value(nets["reach_value"], s_next)
        nonterminal = (1 - h["gamma"]) * signal + h["gamma"] * torch.maximum(signal, next_vh)
        target_qh = nonterminal * (1 - d) + signal * d
    reach_q_loss = ((twin(nets["reach_q"], s, a) - target_qh) ** 2).mean()
    adam_step(nets["reach_q"].parameters(), reach_q_loss, h["critic_lr"])
    lerp_(nets["reach_q_target"], nets["reach_q"], h["tau"])
    out.update(value_loss=value_loss.detach(), q_loss=q_loss.detach(), reach_value_loss=reach_value_loss.detach(),
               reach_q_loss=reach_q_loss.detach(), target_qh=target_qh, next_vh=next_vh, signal=signal, nets=nets)
    return out


# ---------------------------------------------------------------------------------------------
# One training iteration
# ---------------------------------------------------------------------------------------------
def test_one_iteration_matches_the_reference():
    agent, batch = make_agent(), make_batch()
    before = {name: [p.detach().clone() for p in getattr(agent, name).parameters()] for name in NETWORKS}
    ref = reference_iteration(agent, batch)

    # the batch is informative: every branch of the weights and of the reachability target is taken, and the
    # pessimistic (max) head and the optimistic (min) one rank the actions differently
    vh, qh, weights = ref["vh"], ref["qh"], ref["weights"]
    assert (vh > 0).any() and ((vh <= 0) & (qh <= 0)).any() and ((vh <= 0) & (qh > 0)).any()
    assert ((ref["weights"] == HPARAMS["cost_max_weight"]) | (ref["weights"] == HPARAMS["reward_max_weight"])).any()
    with torch.no_grad():
        qh_min = twin(agent.reach_q_target, batch["observations"],
                      torch.max(torch.min(batch["actions"], HIGH), LOW)).min(0).values
    assert not torch.allclose(qh, qh_min, atol=0.1)
    d = batch["dones"][:CRITIC_ROWS].bool()
    signal, next_vh = ref["signal"], ref["next_vh"]
    assert (d & (signal > 0)).any() and (d & (signal < 0)).any() and (d & (next_vh > signal)).any()
    assert (~d & (next_vh > signal)).any() and (~d & (next_vh < signal)).any()

    metrics = agent.train(batch)
    for name in ("actor_loss", "value_loss", "q_loss", "reach_value_loss", "reach_q_loss"):
        torch.testing.assert_close(metrics[name], ref[name], rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(metrics["weight_mean"], weights.mean())
    torch.testing.assert_close(metrics["zero_weight_fraction"], (weights == 0).float().mean())
    torch.testing.assert_close(metrics["feasible_fraction"], (vh <= 0).float().mean())
    for name in ("q", "v", "qh", "vh"):
        torch.testing.assert_close(metrics[f"{name}_mean"], ref[name].mean(), msg=name)
    assert agent.actor_updates == 5
    assert agent.optimizers["actor"].param_groups[0]["lr"] == pytest.approx(ref["actor_lrs"][1], rel=1e-12)

    # every network as the reference left it; each one moved (Adam steps of about the lr, targets and EMA)
    for name in NETWORKS:
        for old, new, expected in zip(before[name], getattr(agent, name).parameters(), ref["nets"][name].parameters()):
            torch.testing.assert_close(new.detach() - old, expected.detach() - old, rtol=1e-4, atol=1e-6, msg=name)
        assert any(not torch.equal(old, new) for old, new in zip(before[name], getattr(agent, name).parameters()))


def test_ema_and_targets_move_at_their_own_rates():
    """Independent of the reference's optimizer: target <- target + rate (online - target), per copy."""
    agent = make_agent()
    ema0 = [p.detach().clone() for p in agent.actor_ema.parameters()]
    targets0 = {name: [p.detach().clone() for p in getattr(agent, name).parameters()]
                for name in ("q_target", "reach_q_target")}
    actor_mid = []
    original_step = agent.optimizers["actor"].step

    def record_step(*args, **kwargs):  # the online actor after each of the two actor updates
        result = original_step(*args, **kwargs)
        actor_mid.append([p.detach().clone() for p in agent.actor.parameters()])
        return result

    agent.optimizers["actor"].step = record_step
    agent.train(make_batch())
    rate = HPARAMS["ema_rate"]
    for e0, a1, a2, e2 in zip(ema0, actor_mid[0], actor_mid[1], agent.actor_ema.parameters()):
        e1 = e0 + rate * (a1 - e0)
        torch.testing.assert_close(e2.detach(), e1 + rate * (a2 - e1))
    for name, online in (("q_target", agent.q), ("reach_q_target", agent.reach_q)):
        for t0, p, t1 in zip(targets0[name], online.parameters(), getattr(agent, name).parameters()):
            torch.testing.assert_close(t1.detach(), t0 + HPARAMS["tau"] * (p.detach() - t0))
    assert all(not p.requires_grad for name in ("actor_ema", "q_target", "reach_q_target")
               for p in getattr(agent, name).parameters())


def test_actor_learning_rate_follows_the_cosine_schedule_to_zero():
    agent = make_agent()
    seen = []
    original_step = agent.optimizers["actor"].step

    def record_lr(*args, **kwargs):
        seen.append(agent.optimizers["actor"].param_groups[0]["lr"])
        return original_step(*args, **kwargs)

    agent.optimizers["actor"].step = record_lr
    batch = make_batch()
    for _ in range(5):  # actor updates 3 .. 12, past the decay's end at 10
        agent.train(batch)
    decay = HPARAMS["actor_lr_decay_steps"]
    expected = [HPARAMS["actor_lr"] * 0.5 * (1 + math.cos(math.pi * min(u, decay) / decay)) for u in range(3, 13)]
    assert seen == pytest.approx(expected, abs=1e-12)
    assert seen[-1] == 0.0


# ---------------------------------------------------------------------------------------------
# Acting
# ---------------------------------------------------------------------------------------------
def reference_act(agent, obs, generator, actor=None, reach_heads="max"):
    """eval_actions with extract_method minqc: N candidates per state from ddpm_sampler on the EMA
    (target_score_model) parameters, temperature 1, each step clipped to the box; the candidate with the
    lowest target Q_h (max over its heads) is taken."""
    h = {**fisor.default_hparams(TASK), **HPARAMS}
    actor = agent.actor_ema if actor is None else actor
    k, n = h["num_candidates"], obs.shape[0]
    betas, alphas, alpha_bars = vp_schedule(h["diffusion_steps"], h["beta_min"], h["beta_max"])
    states = obs.repeat_interleave(k, dim=0)
    with torch.no_grad():
        x = torch.randn((n * k, ACT_DIM), generator=generator)
        for t in reversed(range(h["diffusion_steps"])):
            eps = denoiser(actor, states, x, torch.full((n * k, 1), float(t)))
            x = (x - betas[t] / (1 - alpha_bars[t]).sqrt() * eps) / alphas[t].sqrt()
            if t > 0:
                x = x + betas[t].sqrt() * torch.randn(x.shape, generator=generator)
            x = torch.max(torch.min(x, HIGH), LOW)
        heads = twin(agent.reach_q_target, states, x)
        qh = (heads.max(0) if reach_heads == "max" else heads.min(0)).values.view(n, k)
    candidates = x.view(n, k, ACT_DIM)
    return candidates[torch.arange(n), qh.argmin(1)], candidates, qh


def test_act_is_the_ema_sampler_and_the_lowest_reachability_candidate():
    agent = make_agent()
    obs = torch.randn(7, OBS_DIM, generator=torch.Generator().manual_seed(4))
    global_state = torch.get_rng_state()
    action = agent.act(obs, torch.Generator().manual_seed(9))
    assert torch.equal(torch.get_rng_state(), global_state)  # all noise from the caller's generator
    expected, candidates, qh = reference_act(agent, obs, torch.Generator().manual_seed(9))
    torch.testing.assert_close(action, expected)

    # the check is informative: other plausible policies act differently on these states
    online, _, _ = reference_act(agent, obs, torch.Generator().manual_seed(9), actor=agent.actor)
    optimistic, _, _ = reference_act(agent, obs, torch.Generator().manual_seed(9), reach_heads="min")
    assert not torch.allclose(online, expected, atol=1e-3)
    assert not torch.allclose(optimistic, expected, atol=1e-3)
    riskiest = candidates[torch.arange(7), qh.argmax(1)]
    assert not torch.allclose(riskiest, expected, atol=1e-3)
    assert ((action >= LOW) & (action <= HIGH)).all()
    assert (candidates.std(dim=1) > 1e-3).any()  # the candidates are not all one action


def test_act_is_the_same_policy_at_every_threshold():
    agent = make_agent()
    assert agent.policy_at(10.0) == agent.policy_at(40.0) == agent.act
    assert agent.training_policies() == {"fisor": agent.act}
    assert agent.evaluation_policies([10.0, 20.0, 40.0]) == [("fisor", agent.act, [10.0, 20.0, 40.0], {})]


# ---------------------------------------------------------------------------------------------
# Reward normalization: dsrl's reference range of the task, as the authors' code (data's range otherwise)
# ---------------------------------------------------------------------------------------------
def episodes_data():
    """Three 4-step episodes returning 3, 1 and 2."""
    rewards = np.array([1, 2, 0, 0, 0, 1, 0, 0, 0.5, 0.5, 0.5, 0.5], dtype=np.float32)
    timeouts = np.zeros(12, bool)
    timeouts[3::4] = True
    rng = np.random.default_rng(0)
    return {"observations": rng.normal(size=(12, OBS_DIM)).astype(np.float32),
            "next_observations": rng.normal(size=(12, OBS_DIM)).astype(np.float32),
            "actions": rng.uniform(-1, 1, size=(12, ACT_DIM)).astype(np.float32),
            "rewards": rewards, "costs": np.zeros(12, np.float32),
            "terminals": np.zeros(12, bool), "timeouts": timeouts}


def sampler_cfg():
    return BaselineConfig(algo="fisor", task=TASK, episode_len=100, seed=0, batch_size=8,
                          hparams={**fisor.default_hparams(TASK), **HPARAMS})


def test_rewards_scaled_by_dsrls_reference_range_of_the_task(capsys):
    from dsrl import infos

    # launcher/examples/train_offline.py: rewards / (env.max_episode_reward - env.min_episode_reward) * max steps,
    # which dsrl's registration takes from dsrl.infos
    spread = infos.MAX_EPISODE_REWARD["BallRun"] - infos.MIN_EPISODE_REWARD["BallRun"]
    data = episodes_data()
    sampler = fisor.make_sampler(sampler_cfg(), data, torch.device("cpu"))
    torch.testing.assert_close(sampler.rewards, torch.as_tensor(data["rewards"]) * (100 / spread))
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "dsrl's reference range" in out[0] and f"{spread:g}" in out[0]
    data["rewards"][:] = 0.25  # equal returns are fine here: the range is not the data's
    fisor.make_sampler(sampler_cfg(), data, torch.device("cpu"))


def test_rewards_scaled_by_the_data_range_where_dsrl_has_none(capsys, monkeypatch):
    from dsrl import infos

    monkeypatch.delitem(infos.MAX_EPISODE_REWARD, "BallRun")
    data = episodes_data()
    sampler = fisor.make_sampler(sampler_cfg(), data, torch.device("cpu"))
    torch.testing.assert_close(sampler.rewards, torch.as_tensor(data["rewards"]) * (100 / (3 - 1)))
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "the data's range" in out[0] and "dsrl has no reference range" in out[0]
    data["rewards"][:] = 0.25
    with pytest.raises(LSPCError, match="spread"):
        fisor.make_sampler(sampler_cfg(), data, torch.device("cpu"))
