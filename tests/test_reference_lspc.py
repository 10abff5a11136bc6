"""LSPC (train_lspc_iql.py) against a reference written here: one ``train()`` step and the policies.

The reference restates the paper (Koirala et al., ICLR 2025: eq. 10/43 for the cost-advantage
weighted CVAE, eq. 14/44 for the latent safety encoder) and the authors' release
(PrajwalKoirala/LSPC-Safe-Offline-RL) in PyTorch from the agent's parameters only: IQL's reward
V and twin Q (min over heads), the cost Vc and twin Qc (max over heads, targets clamped at 0; Vc
at the lower expectile through u = Vc - Qc), the CVAE with log_std in [-4, 15], its KL averaged
(or summed) over latent dims, the latent safety encoder trained through the updated, frozen
decoder, Polyak targets; LSPC-S z ~ N(0, I) restricted to [-eps_S, eps_S], LSPC-O
z = eps_O tanh(u) from mu_delta(s). Every forward pass, loss and Adam step is recomputed here,
none of train_lspc_iql.py's or lspc/losses.py's helpers is called. The hyperparameters are off
their defaults and eps_S != eps_O, so a crossed wire shows; two configurations cover the switches
(KL reduction, the release's Vc clamp, the safety mask, Converse LSPC-O). About a second.
"""
import copy

import pytest
import torch
from scipy.stats import norm

from conftest import spread_critics
from lspc_iql_configs import TrainConfig
from train_lspc_iql import LSPC, EnsembleMLP

OBS_DIM, ACT_DIM, LATENT, BATCH, MAX_ACTION = 5, 2, 3, 16, 1.5
BASE = dict(hidden_dim=16, latent_dim=LATENT, batch_size=BATCH, learning_rate=0.01, discount=0.9, tau=0.05,
            iql_tau=0.75, beta_reward=1.5, beta_cost=2.5, max_weight=5.0, vae_beta=0.4, vae_clamper=0.3,
            max_latent_action=0.7)
CONFIGS = {
    "release": dict(kl_reduction="mean", clamp_cost_value=False, safe_qc_vc_threshold=999.0, converse=False),
    "switches": dict(kl_reduction="sum", clamp_cost_value=True, safe_qc_vc_threshold=1.0, converse=True),
}
NETWORKS = ("q", "q_target", "value", "cost_q", "cost_q_target", "cost_value", "cvae", "safety_encoder")


def last_layer(sequential):
    return [m for m in sequential if isinstance(m, torch.nn.Linear)][-1]


def make_agent(seed=0, **overrides):
    cfg = TrainConfig(**{**BASE, **overrides})
    torch.manual_seed(seed)
    agent = LSPC(OBS_DIM, ACT_DIM, MAX_ACTION, cfg, torch.device("cpu"))
    # negative cost values included, where the clamps act
    spread_critics(agent, ("q", "value", "cost_q", "cost_value"), 2.5,
                   ((agent.q_target, agent.q), (agent.cost_q_target, agent.cost_q)), 0.4)
    with torch.no_grad():
        # latent dims with log_std past each clamp: below the CVAE encoder's floor (-4) and above its cap (15),
        # above the safety encoder's cap (2) and below its floor (-10)
        last_layer(agent.cvae.encoder).bias[LATENT] = -6.0
        last_layer(agent.cvae.encoder).bias[LATENT + 2] = 18.0
        last_layer(agent.safety_encoder.net).bias[LATENT + 1] = 3.0
        last_layer(agent.safety_encoder.net).bias[LATENT + 2] = -13.0
    return agent


def make_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"observations": torch.randn(BATCH, OBS_DIM, generator=g),
            "actions": (torch.rand(BATCH, ACT_DIM, generator=g) * 2 - 1) * MAX_ACTION * 0.9,
            "rewards": torch.rand(BATCH, generator=g) * 2 - 0.5,
            "costs": (torch.rand(BATCH, generator=g) < 0.4).float(),
            "dones": torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0] * 2),
            "next_observations": torch.randn(BATCH, OBS_DIM, generator=g)}


# ---------------------------------------------------------------------------------------------
# The reference
# ---------------------------------------------------------------------------------------------
def mlp(sequential, x):
    """osrl's mlp: Linear layers with ReLU between them."""
    linears = [m for m in sequential if isinstance(m, torch.nn.Linear)]
    for i, layer in enumerate(linears):
        x = x @ layer.weight.T + layer.bias
        if i < len(linears) - 1:
            x = torch.relu(x)
    return x


def twin(module, s, a):
    """Both heads of a twin critic, [2, batch]."""
    ensemble = module.heads
    x = torch.cat([s, a], dim=-1)
    heads = []
    for member in range(2):
        h = x
        for i, (w, b) in enumerate(zip(ensemble.weights, ensemble.biases)):
            h = h @ w[member] + b[member, 0]
            if i < len(ensemble.weights) - 1:
                h = torch.relu(h)
        heads.append(h[:, 0])
    return torch.stack(heads)


def value(module, s):
    return mlp(module.v, s)[:, 0]


def decode(cvae, s, z):
    return MAX_ACTION * torch.tanh(mlp(cvae.decoder, torch.cat([s, z], dim=-1)))


def asymmetric_l2(u, xi):
    """IQL's expectile loss: |xi - 1[u < 0]| u^2."""
    return (torch.where(u < 0, 1 - xi, xi) * u ** 2).mean()


def adam_step(module, loss, lr):
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)  # fresh, as the agent's are in these tests
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def reference_step(agent, batch, eps_cvae, eps_encoder):
    """One LSPC step (losses (1)-(7)) on copies of the agent's networks."""
    cfg = agent.cfg
    nets = {name: copy.deepcopy(getattr(agent, name)) for name in NETWORKS}
    s, a, s_next = batch["observations"], batch["actions"], batch["next_observations"]
    r, c, d = batch["rewards"], batch["costs"], batch["dones"]
    with torch.no_grad():
        q_t = twin(nets["q_target"], s, a).min(0).values
        next_v = value(nets["value"], s_next)
        qc_t = torch.clamp(twin(nets["cost_q_target"], s, a).max(0).values, min=0)
        next_vc = torch.clamp(value(nets["cost_value"], s_next), min=0)
    out = {"q_t": q_t, "qc_t": qc_t}
    # (1)-(5) from the parameters before the step
    v = value(nets["value"], s)
    losses = {"value": asymmetric_l2(q_t - v, cfg.iql_tau)}
    losses["q"] = ((twin(nets["q"], s, a) - (r + cfg.discount * (1 - d) * next_v)) ** 2).mean()
    vc = value(nets["cost_value"], s)
    vc_used = torch.clamp(vc, min=0) if cfg.clamp_cost_value else vc
    losses["cost_value"] = asymmetric_l2(vc_used - qc_t, cfg.iql_tau)
    losses["cost_q"] = ((twin(nets["cost_q"], s, a) - (c + cfg.discount * (1 - d) * next_vc)) ** 2).mean()
    with torch.no_grad():
        w_cost = torch.clamp(torch.exp(cfg.beta_cost * (vc_used - qc_t)), max=cfg.max_weight)
        w_cost = torch.where((vc_used > cfg.safe_qc_vc_threshold) | (qc_t > cfg.safe_qc_vc_threshold), 0.0, w_cost)
        w_reward = torch.clamp(torch.exp(cfg.beta_reward * (q_t - v)), max=cfg.max_weight)
    w_cvae, w_encoder = (w_reward, w_cost) if cfg.converse else (w_cost, w_reward)
    mean, log_std = mlp(nets["cvae"].encoder, torch.cat([s, a], dim=-1)).chunk(2, dim=-1)
    log_std = torch.clamp(log_std, -4.0, 15.0)
    z = mean + torch.exp(log_std) * eps_cvae
    recon = ((decode(nets["cvae"], s, z) - a) ** 2).sum(-1)
    kl_dims = 0.5 * (mean ** 2 + torch.exp(2 * log_std) - 1) - log_std
    kl = kl_dims.mean(-1) if cfg.kl_reduction == "mean" else kl_dims.sum(-1)
    losses["cvae"] = (w_cvae * (recon + cfg.vae_beta * kl)).mean()
    for name in ("value", "q", "cost_value", "cost_q", "cvae"):
        adam_step(nets[name], losses[name], cfg.learning_rate)
    # (6) the latent safety encoder through the updated decoder, which this loss does not train
    enc_mean, enc_log_std = mlp(nets["safety_encoder"].net, s).chunk(2, dim=-1)
    u = enc_mean + torch.exp(torch.clamp(enc_log_std, -10.0, 2.0)) * eps_encoder
    decoded = decode(nets["cvae"], s, cfg.max_latent_action * torch.tanh(u))
    losses["safety_encoder"] = (w_encoder * ((decoded - a) ** 2).sum(-1)).mean()
    adam_step(nets["safety_encoder"], losses["safety_encoder"], cfg.learning_rate)
    # (7) Polyak targets
    with torch.no_grad():
        for target, online in (("q_target", "q"), ("cost_q_target", "cost_q")):
            for pt, p in zip(nets[target].parameters(), nets[online].parameters()):
                pt.copy_((1 - cfg.tau) * pt + cfg.tau * p)
    out.update(losses={k: loss.detach() for k, loss in losses.items()}, w_cost=w_cost, w_reward=w_reward,
               vc=vc.detach(), v=v.detach(), recon=recon.detach(), kl=kl.detach(), nets=nets)
    return out


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_one_step_matches_the_reference(config):
    agent, batch = make_agent(**CONFIGS[config]), make_batch()
    cfg = agent.cfg
    rng = torch.get_rng_state()
    eps_cvae, eps_encoder = torch.randn(BATCH, LATENT), torch.randn(BATCH, LATENT)  # the step's two global draws
    ref = reference_step(agent, batch, eps_cvae, eps_encoder)
    # informative: the clamps, the clip and (in the second config) the mask act on some rows only,
    # and the pessimistic head differs from the optimistic one
    with torch.no_grad():
        cost_heads = twin(agent.cost_q_target, batch["observations"], batch["actions"])
        reward_heads = twin(agent.q_target, batch["observations"], batch["actions"])
    assert not torch.allclose(cost_heads.max(0).values, cost_heads.min(0).values, atol=0.1)
    assert not torch.allclose(reward_heads.max(0).values, reward_heads.min(0).values, atol=0.1)
    assert (ref["vc"] < 0).any() and (ref["vc"] > 0).any() and (cost_heads.max(0).values < 0).any()
    assert (ref["w_reward"] == cfg.max_weight).any() and (ref["w_reward"] < cfg.max_weight).any()
    assert (ref["w_cost"] > 0).any() and (ref["w_cost"] < cfg.max_weight).any()
    if cfg.safe_qc_vc_threshold < 999:
        assert (ref["w_cost"] == 0).any()
    with torch.no_grad():
        cvae_log_std = mlp(agent.cvae.encoder, torch.cat([batch["observations"], batch["actions"]], -1))[:, LATENT:]
        encoder_log_std = mlp(agent.safety_encoder.net, batch["observations"])[:, LATENT:]
    assert (cvae_log_std < -4).any() and (cvae_log_std > 15).any()  # every clamp acts
    assert (encoder_log_std > 2).any() and (encoder_log_std < -10).any()

    before = {name: [p.detach().clone() for p in getattr(agent, name).parameters()] for name in NETWORKS}
    torch.set_rng_state(rng)
    metrics = agent.train(batch)
    names = {"value": "value_loss", "q": "q_loss", "cost_value": "cost_value_loss", "cost_q": "cost_q_loss",
             "cvae": "cvae_loss", "safety_encoder": "safety_encoder_loss"}
    for key, metric in names.items():
        torch.testing.assert_close(metrics[metric], ref["losses"][key], rtol=1e-5, atol=1e-6, msg=metric)
    expected = {"cvae_recon": ref["recon"].mean(), "cvae_kl": ref["kl"].mean(), "q_mean": ref["q_t"].mean(),
                "v_mean": ref["v"].mean(), "cost_q_mean": ref["qc_t"].mean(), "cost_v_mean": ref["vc"].mean(),
                "cost_weight_mean": ref["w_cost"].mean(), "reward_weight_mean": ref["w_reward"].mean(),
                "cost_weight_masked": (ref["w_cost"] == 0).float().mean(),
                "reward_weight_clipped": (ref["w_reward"] >= cfg.max_weight).float().mean(),
                "cost_weight_clipped": (ref["w_cost"] >= cfg.max_weight).float().mean()}
    for metric, value_ in expected.items():
        torch.testing.assert_close(metrics[metric], value_, rtol=1e-5, atol=1e-6, msg=metric)
    for name in NETWORKS:
        for old, new, want in zip(before[name], getattr(agent, name).parameters(), ref["nets"][name].parameters()):
            torch.testing.assert_close(new.detach() - old, want.detach() - old, rtol=1e-4, atol=1e-6, msg=name)
        assert any(not torch.equal(old, new) for old, new in zip(before[name], getattr(agent, name).parameters()))


def test_encoders_clamp_log_std_at_the_authors_bounds():
    """lspc_iql.py: the CVAE encoder's log_std.clamp(-4, 15), the latent safety encoder's (log_std_min -10,
    log_std_max 2)."""
    agent = make_agent()
    s, a = torch.randn(4, OBS_DIM), torch.rand(4, ACT_DIM) * 2 - 1
    with torch.no_grad():
        _, cvae_log_std = agent.cvae.encode(s, a)
        _, encoder_log_std = agent.safety_encoder(s)
    assert (cvae_log_std[:, 0] == -4.0).all() and (cvae_log_std[:, 2] == 15.0).all()
    assert (encoder_log_std[:, 1] == 2.0).all() and (encoder_log_std[:, 2] == -10.0).all()


def test_ensemble_members_start_as_nn_linear_does():
    """Each member's weights and biases: U(-1 / sqrt(fan_in), 1 / sqrt(fan_in)), like the Linear layers of _mlp."""
    torch.manual_seed(0)
    ensemble = EnsembleMLP(2, 400, 1, 300)
    for fan_in, weight, bias in zip((400, 300, 300), ensemble.weights, ensemble.biases):
        bound = fan_in ** -0.5
        for values in (weight, bias):
            assert values.abs().max() <= bound
            if values.numel() > 100:  # the last layer's two biases are too few to span the interval
                assert values.min() < -0.9 * bound and values.max() > 0.9 * bound
        assert not torch.equal(weight[0], weight[1])  # independent members


def test_targets_move_by_tau_and_the_decoder_only_by_its_own_loss():
    """Without the reference's optimizer: Polyak targets at rate tau, and the safety encoder's step leaves
    the decoder exactly where the CVAE step put it."""
    agent, batch = make_agent(), make_batch()
    targets0 = {name: [p.detach().clone() for p in getattr(agent, name).parameters()]
                for name in ("q_target", "cost_q_target")}
    decoder_after_cvae = []
    original_step = agent.optimizers["critics_cvae"].step

    def record(*args, **kwargs):
        result = original_step(*args, **kwargs)
        decoder_after_cvae.extend(p.detach().clone() for p in agent.cvae.decoder.parameters())
        return result

    agent.optimizers["critics_cvae"].step = record
    agent.train(batch)
    assert decoder_after_cvae and all(torch.equal(p, q) for p, q in zip(decoder_after_cvae, agent.cvae.decoder.parameters()))
    assert all(p.requires_grad for p in agent.cvae.parameters())  # unfrozen after the encoder's step
    tau = agent.cfg.tau
    for name, online in (("q_target", agent.q), ("cost_q_target", agent.cost_q)):
        for t0, p, t1 in zip(targets0[name], online.parameters(), getattr(agent, name).parameters()):
            torch.testing.assert_close(t1.detach(), t0 + tau * (p.detach() - t0))


# ---------------------------------------------------------------------------------------------
# The policies
# ---------------------------------------------------------------------------------------------
OBS = torch.randn(64, OBS_DIM, generator=torch.Generator().manual_seed(5))


def gen(seed=7):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("sampling", ["clamp", "tanh", "truncated"])
def test_lspc_s_decodes_the_restricted_prior(sampling):
    agent = make_agent(lspc_s_sampling=sampling)
    eps = agent.cfg.vae_clamper
    with torch.no_grad():
        if sampling == "truncated":  # N(0, I) conditioned on the box, by its inverse CDF
            u = torch.rand(64, LATENT, generator=gen()).double().numpy()
            low = norm.cdf(-eps)
            z = torch.as_tensor(norm.ppf(low + (1 - 2 * low) * u), dtype=torch.float32)
        else:
            raw = torch.randn(64, LATENT, generator=gen())
            z = raw.clamp(-eps, eps) if sampling == "clamp" else eps * torch.tanh(raw)
            if sampling == "clamp":
                assert (raw.abs() > eps).any() and (raw.abs() < eps).any()  # informative: some coordinates clamped
        expected = decode(agent.cvae, OBS, z)
    torch.testing.assert_close(agent.act_lspc_s(OBS, gen()), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sampling", ["stochastic", "deterministic"])
def test_lspc_o_decodes_the_squashed_safety_encoder_sample(sampling):
    agent = make_agent(lspc_o_sampling=sampling)
    eps_o = agent.cfg.max_latent_action
    with torch.no_grad():
        mean, log_std = mlp(agent.safety_encoder.net, OBS).chunk(2, dim=-1)
        u = mean if sampling == "deterministic" else (
            mean + torch.exp(torch.clamp(log_std, -10.0, 2.0)) * torch.randn(64, LATENT, generator=gen()))
        expected = decode(agent.cvae, OBS, eps_o * torch.tanh(u))
    state = torch.get_rng_state()
    torch.testing.assert_close(agent.act_lspc_o(OBS, gen()), expected)
    assert torch.equal(torch.get_rng_state(), state)  # noise only from the caller's generator
    if sampling == "deterministic":
        assert torch.equal(agent.act_lspc_o(OBS, gen(1)), agent.act_lspc_o(OBS, gen(2)))


def test_cvae_policy_is_the_unrestricted_prior_and_no_policy_sees_the_threshold():
    agent = make_agent()
    with torch.no_grad():
        expected = decode(agent.cvae, OBS, torch.randn(64, LATENT, generator=gen()))
    torch.testing.assert_close(agent.act_cvae(OBS, gen()), expected)
    assert agent.training_policies() == {"o": agent.act_lspc_o, "s": agent.act_lspc_s}
    assert agent.evaluation_policies([10.0, 20.0, 40.0]) == [
        ("lspc-o", agent.act_lspc_o, [10.0, 20.0, 40.0], {}), ("lspc-s", agent.act_lspc_s, [10.0, 20.0, 40.0], {}),
        ("cvae", agent.act_cvae, [10.0, 20.0, 40.0], {})]
    # eps_S and eps_O are distinct in these tests, so a policy reading the other's restriction shows above
    assert agent.cfg.vae_clamper != agent.cfg.max_latent_action
