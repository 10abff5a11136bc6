"""Losses, trainer step and policies of train_lspc_iql.py.

Every expected number is computed by hand in the test; the arithmetic is in the comments.
Networks are tiny (hidden 16, latent 4) so the whole file runs in a few seconds on CPU.
"""
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lspc import LSPCError  # noqa: E402
from lspc.data.dataset import episode_dones  # noqa: E402
from lspc.evaluation import better_than  # noqa: E402
from lspc_iql_configs import TrainConfig  # noqa: E402
from train_lspc_iql import (  # noqa: E402
    LSPC,
    LSPCMethod,
    TwinQ,
    cost_weights,
    exp_weight,
    expectile_loss,
    frozen,
    gaussian_kl,
)

STATE_DIM, ACTION_DIM, MAX_ACTION = 3, 2, 1.0
OPTIMIZED = ("q", "value", "cost_q", "cost_value", "cvae", "safety_encoder")


def make_agent(**overrides) -> LSPC:
    torch.manual_seed(0)
    cfg = TrainConfig(**{"hidden_dim": 16, "latent_dim": 4, "batch_size": 8, **overrides})
    return LSPC(STATE_DIM, ACTION_DIM, MAX_ACTION, cfg, torch.device("cpu"))


def make_batch(batch_size: int = 8, seed: int = 1, rewards=None, costs=None, dones=None):
    g = torch.Generator().manual_seed(seed)

    def vec(value, default):
        if value is None:
            return default
        return torch.as_tensor(value, dtype=torch.float32).expand(batch_size).clone()

    return {
        "observations": torch.randn(batch_size, STATE_DIM, generator=g),
        "actions": torch.rand(batch_size, ACTION_DIM, generator=g) * 2 - 1,
        "rewards": vec(rewards, torch.randn(batch_size, generator=g)),
        "costs": vec(costs, torch.rand(batch_size, generator=g)),
        "next_observations": torch.randn(batch_size, STATE_DIM, generator=g),
        "dones": vec(dones, (torch.rand(batch_size, generator=g) < 0.25).float()),
    }


def set_constant(seq: nn.Sequential, bias) -> None:
    """Make an MLP output a constant: zero the final Linear's weights, set its bias."""
    last = [m for m in seq if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.as_tensor(bias, dtype=torch.float32).expand_as(last.bias))


def set_head_constant(twin: TwinQ, head: int, value: float) -> None:
    """Make one head of a twin critic output a constant: zero its last layer's weights, set its bias."""
    with torch.no_grad():
        twin.heads.weights[-1][head].zero_()
        twin.heads.biases[-1][head].fill_(value)


def approx(x, rel=1e-5, abs=1e-6):
    return pytest.approx(x, rel=rel, abs=abs)


# ---------------------------------------------------------------------------------------------
# 1. expectile loss
# ---------------------------------------------------------------------------------------------
def test_expectile_loss_mixed_signs():
    # u = [2, -1], xi = 0.7: (0.7 * 2^2 + 0.3 * 1^2) / 2 = (2.8 + 0.3) / 2 = 1.55
    assert expectile_loss(torch.tensor([2.0, -1.0]), 0.7).item() == approx(1.55)


def test_expectile_loss_all_positive_and_all_negative():
    # all positive: 0.7 * (1 + 9) / 2 = 3.5
    assert expectile_loss(torch.tensor([1.0, 3.0]), 0.7).item() == approx(3.5)
    # all negative: 0.3 * (4 + 0.25) / 2 = 0.6375
    assert expectile_loss(torch.tensor([-2.0, -0.5]), 0.7).item() == approx(0.6375)
    # u = 0 contributes nothing: 0.7 * 4 / 2 = 1.4
    assert expectile_loss(torch.tensor([0.0, 2.0]), 0.7).item() == approx(1.4)


# ---------------------------------------------------------------------------------------------
# 2. cost V sign convention (u = Vc - max(Qc)_target)
# ---------------------------------------------------------------------------------------------
def test_cost_value_sign_convention_with_expectile_loss():
    vc, qc = torch.tensor([3.0]), torch.tensor([2.0])
    # over-shooting (Vc above Qc): u = 3 - 2 = +1 -> 0.7 * 1 = 0.7
    assert expectile_loss(vc - qc, 0.7).item() == approx(0.7)
    # under-shooting (Vc below Qc): u = 2 - 3 = -1 -> 0.3 * 1 = 0.3
    assert expectile_loss(qc - vc, 0.7).item() == approx(0.3)


@pytest.mark.parametrize(
    "vc, qc_heads, expected_loss",
    [
        # over-shoot: u = 3 - max(1, 2) = +1 -> 0.7 * 1^2 = 0.7
        (3.0, (1.0, 2.0), 0.7),
        # under-shoot: u = 0.5 - max(2, -1) = -1.5 -> 0.3 * 1.5^2 = 0.675
        (0.5, (2.0, -1.0), 0.675),
    ],
)
def test_train_cost_value_loss_is_vc_minus_qc(vc, qc_heads, expected_loss):
    agent = make_agent()
    set_constant(agent.cost_value.v, vc)
    set_head_constant(agent.cost_q_target, 0, qc_heads[0])
    set_head_constant(agent.cost_q_target, 1, qc_heads[1])
    metrics = agent.train(make_batch())
    assert metrics["cost_value_loss"].item() == approx(expected_loss)


# ---------------------------------------------------------------------------------------------
# 3. exponential weights
# ---------------------------------------------------------------------------------------------
def test_exp_weight_clipping():
    # unclipped: exp(2 * 1) = e^2 = 7.389056
    assert exp_weight(torch.tensor([1.0]), 2.0, 200.0).item() == approx(7.389056)
    # clipped: exp(2 * 10) = 4.85e8 > 200 -> exactly 200
    assert exp_weight(torch.tensor([10.0]), 2.0, 200.0).item() == 200.0
    # negative advantage: exp(2 * -1.5) = exp(-3) = 0.0497871
    assert exp_weight(torch.tensor([-1.5]), 2.0, 200.0).item() == approx(0.0497871)
    # never clipped from below: exp(-2 * 50) = 3.7e-44 > 0 in float64
    assert 0 < exp_weight(torch.tensor([-50.0], dtype=torch.float64), 2.0, 200.0).item() < 1e-40


# ---------------------------------------------------------------------------------------------
# 4. KL to the standard normal
# ---------------------------------------------------------------------------------------------
def test_gaussian_kl_zero_at_standard_normal():
    kl = gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4), "mean")
    assert kl.shape == (3,)
    assert torch.equal(kl, torch.zeros(3))


def test_gaussian_kl_hand_computed_mean_and_sum():
    mean = torch.tensor([[1.0, 0.0]])
    log_std = torch.tensor([[0.0, math.log(2.0)]])
    # dim 1: mu=1, sigma=1: 0.5 * (1 + 1 - 1) - 0 = 0.5
    # dim 2: mu=0, sigma=2: 0.5 * (0 + 4 - 1) - ln 2 = 1.5 - 0.693147 = 0.806853
    # sum = 1.306853, mean = 0.653426
    assert gaussian_kl(mean, log_std, "sum").item() == approx(1.306853)
    assert gaussian_kl(mean, log_std, "mean").item() == approx(0.653426)


# ---------------------------------------------------------------------------------------------
# 5. cost weights and the safety mask
# ---------------------------------------------------------------------------------------------
def test_cost_weights_safety_mask():
    cost_value = torch.tensor([0.5, 2.0, 0.1, 0.0, 1.0])
    cost_q = torch.tensor([0.0, 0.5, 3.0, 0.5, 1.0])
    w = cost_weights(cost_value, cost_q, temperature=2.0, max_weight=200.0, mask_threshold=1.0)
    expected = [
        math.exp(2 * 0.5),  # exp(2 * (0.5 - 0)) = e = 2.718282, both <= 1
        0.0,  # Vc = 2 > 1: masked
        0.0,  # Qc = 3 > 1: masked
        math.exp(-1.0),  # exp(2 * (0 - 0.5)) = 0.367879
        1.0,  # Vc = Qc = 1, exactly at the threshold is not masked: exp(0) = 1
    ]
    assert w.tolist() == approx(expected)


def test_cost_weights_threshold_999_masks_nothing():
    cost_value = torch.tensor([0.5, 2.0, 0.1, 0.0])
    cost_q = torch.tensor([0.0, 0.5, 3.0, 0.5])
    w = cost_weights(cost_value, cost_q, temperature=2.0, max_weight=200.0, mask_threshold=999.0)
    # exp(2*0.5)=2.718282, exp(2*1.5)=20.085537, exp(2*-2.9)=0.0030276, exp(2*-0.5)=0.367879
    assert w.tolist() == approx([2.718282, 20.085537, 0.0030276, 0.367879])


def test_cost_weights_clip():
    # exp(2 * (150 - 0)) overflows to inf in float32 -> clipped to exactly 200
    w = cost_weights(torch.tensor([150.0]), torch.tensor([0.0]), 2.0, 200.0, 999.0)
    assert w.item() == 200.0


# ---------------------------------------------------------------------------------------------
# 6. twin critics (min for reward, max for cost, cost clamped >= 0) and the hand-computed step
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reward_heads", [(3.0, 5.0), (5.0, 3.0)])
@pytest.mark.parametrize("cost_heads", [(2.0, -1.0), (-1.0, 2.0)])
def test_twin_critics_min_for_reward_max_for_cost(reward_heads, cost_heads):
    agent = make_agent()
    set_head_constant(agent.q_target, 0, reward_heads[0])
    set_head_constant(agent.q_target, 1, reward_heads[1])
    set_head_constant(agent.cost_q_target, 0, cost_heads[0])
    set_head_constant(agent.cost_q_target, 1, cost_heads[1])
    metrics = agent.train(make_batch())
    assert metrics["q_mean"].item() == approx(3.0)  # min(3, 5)
    assert metrics["cost_q_mean"].item() == approx(2.0)  # max(2, -1)


def test_cost_target_and_next_cost_value_clamped_at_zero():
    agent = make_agent()
    set_head_constant(agent.cost_q_target, 0, -1.0)
    set_head_constant(agent.cost_q_target, 1, -2.0)
    set_constant(agent.cost_value.v, -0.5)
    set_head_constant(agent.cost_q, 0, 0.5)
    set_head_constant(agent.cost_q, 1, 0.5)
    metrics = agent.train(make_batch(costs=0.5, dones=0.0))
    # max(-1, -2) = -1, clamped to 0
    assert metrics["cost_q_mean"].item() == 0.0
    # the logged Vc is not clamped
    assert metrics["cost_v_mean"].item() == approx(-0.5)
    # u = Vc - Qc_target = -0.5 - 0 = -0.5 -> 0.3 * 0.25 = 0.075
    assert metrics["cost_value_loss"].item() == approx(0.075)
    # target = c + 0.99 * max(Vc(s'), 0) = 0.5 + 0 = 0.5; both heads output 0.5 -> loss 0
    # (without the clamp: 0.5 + 0.99 * -0.5 = 0.005 and the loss would be 0.245)
    assert metrics["cost_q_loss"].item() == approx(0.0)


def test_train_metrics_hand_computed():
    agent = make_agent()
    set_head_constant(agent.q_target, 0, 3.0)
    set_head_constant(agent.q_target, 1, 5.0)
    set_constant(agent.value.v, 1.0)
    set_head_constant(agent.q, 0, 3.0)
    set_head_constant(agent.q, 1, 5.0)
    set_head_constant(agent.cost_q_target, 0, 2.0)
    set_head_constant(agent.cost_q_target, 1, -1.0)
    set_constant(agent.cost_value.v, 0.5)
    set_head_constant(agent.cost_q, 0, 1.0)
    set_head_constant(agent.cost_q, 1, 0.0)
    batch = make_batch(rewards=1.0, costs=0.5)
    batch["dones"] = torch.tensor([0.0, 1.0] * 4)
    m = agent.train(batch)

    # reward V: Q_target = min(3, 5) = 3, V = 1, u = 2 -> 0.7 * 4 = 2.8
    assert m["q_mean"].item() == approx(3.0)
    assert m["v_mean"].item() == approx(1.0)
    assert m["value_loss"].item() == approx(2.8)
    # reward Q: target 1 + 0.99 * 1 = 1.99 (done 0) or 1 (done 1)
    # head 1 (3): ((1.01)^2 + 2^2) / 2 = (1.0201 + 4) / 2 = 2.51005
    # head 2 (5): ((3.01)^2 + 4^2) / 2 = (9.0601 + 16) / 2 = 12.53005
    # q_loss = 0.5 * (2.51005 + 12.53005) = 7.52005
    assert m["q_loss"].item() == approx(7.52005)
    # cost V: Qc_target = max(2, -1) = 2, Vc = 0.5, u = -1.5 -> 0.3 * 2.25 = 0.675
    assert m["cost_q_mean"].item() == approx(2.0)
    assert m["cost_v_mean"].item() == approx(0.5)
    assert m["cost_value_loss"].item() == approx(0.675)
    # cost Q: target 0.5 + 0.99 * 0.5 = 0.995 (done 0) or 0.5 (done 1)
    # head 1 (1): (0.005^2 + 0.5^2) / 2 = (0.000025 + 0.25) / 2 = 0.1250125
    # head 2 (0): (0.995^2 + 0.5^2) / 2 = (0.990025 + 0.25) / 2 = 0.6200125
    # cost_q_loss = 0.5 * (0.1250125 + 0.6200125) = 0.3725125
    assert m["cost_q_loss"].item() == approx(0.3725125)
    # weights: w_c = exp(2 * (0.5 - 2)) = exp(-3) = 0.0497871; w_r = exp(2 * 2) = e^4 = 54.59815
    assert m["cost_weight_mean"].item() == approx(0.0497871)
    assert m["reward_weight_mean"].item() == approx(54.59815)
    assert m["reward_weight_clipped"].item() == 0.0
    assert m["cost_weight_clipped"].item() == 0.0
    assert m["cost_weight_masked"].item() == 0.0


def test_train_safety_mask_zeroes_cvae_loss():
    agent = make_agent(safe_qc_vc_threshold=1.0)
    set_head_constant(agent.cost_q_target, 0, 2.0)  # Qc = 2 > 1 everywhere
    set_head_constant(agent.cost_q_target, 1, 0.0)
    set_constant(agent.cost_value.v, 0.5)
    m = agent.train(make_batch())
    assert m["cost_weight_masked"].item() == 1.0
    assert m["cost_weight_mean"].item() == 0.0
    assert m["cvae_loss"].item() == 0.0  # every sample weighted 0


def test_train_returns_detached_scalars():
    m = make_agent().train(make_batch())
    assert set(m) >= {"value_loss", "q_loss", "cost_value_loss", "cost_q_loss", "cvae_loss", "safety_encoder_loss"}
    for name, value in m.items():
        assert value.dim() == 0 and not value.requires_grad, name
        assert torch.isfinite(value), name


# ---------------------------------------------------------------------------------------------
# 7. the decoder is frozen in the safety-encoder step, gradients still flow through it
# ---------------------------------------------------------------------------------------------
def test_decoder_frozen_in_safety_encoder_step():
    agent = make_agent()
    decoder_params = list(agent.cvae.decoder.parameters())
    cvae_params = list(agent.cvae.parameters())
    record = {}

    cvae_opt = agent.optimizers["critics_cvae"]
    real_cvae_step = cvae_opt.step

    def cvae_step(*args, **kwargs):
        record["decoder_grad_in_cvae_step"] = all(p.grad is not None for p in decoder_params)
        out = real_cvae_step(*args, **kwargs)
        record["decoder_after_cvae_step"] = [p.detach().clone() for p in decoder_params]
        for p in cvae_params:  # clear them, so that any later gradient would show up
            p.grad = None
        return out

    se_opt = agent.optimizers["safety_encoder"]
    real_se_step = se_opt.step

    def se_step(*args, **kwargs):
        record["decoder_grads"] = [p.grad for p in cvae_params]
        record["se_grads"] = [None if p.grad is None else p.grad.clone() for p in agent.safety_encoder.parameters()]
        return real_se_step(*args, **kwargs)

    cvae_opt.step = cvae_step
    se_opt.step = se_step
    agent.train(make_batch())

    assert record["decoder_grad_in_cvae_step"]  # the CVAE's own step does train the decoder
    assert all(g is None for g in record["decoder_grads"])  # the safety-encoder step gives it nothing
    assert all(g is not None for g in record["se_grads"])  # ... but gradients flow through it to z
    assert any(g.abs().sum() > 0 for g in record["se_grads"])
    # the decoder after train() is exactly the one right after the CVAE-only update
    for p, after_cvae in zip(decoder_params, record["decoder_after_cvae_step"]):
        assert torch.equal(p, after_cvae)
    # requires_grad restored once the frozen block is left
    assert all(p.requires_grad for p in cvae_params)


def test_frozen_restores_requires_grad_and_passes_input_gradients():
    module = nn.Linear(3, 2)
    module.bias.requires_grad_(False)  # a mixed starting state must come back as it was
    x = torch.randn(4, 3, requires_grad=True)
    with frozen(module):
        assert [p.requires_grad for p in module.parameters()] == [False, False]
        module(x).sum().backward()
    assert [p.requires_grad for p in module.parameters()] == [True, False]
    assert module.weight.grad is None and module.bias.grad is None
    # d/dx sum(W x + b) = column sums of W
    assert torch.allclose(x.grad, module.weight.detach().sum(dim=0).expand(4, 3))

    with pytest.raises(RuntimeError):
        with frozen(module):
            raise RuntimeError("boom")
    assert [p.requires_grad for p in module.parameters()] == [True, False]


# ---------------------------------------------------------------------------------------------
# 8. LSPC-S samples inside the box (decoder replaced by the identity on z)
# ---------------------------------------------------------------------------------------------
N_OBS = 2048  # x latent 4 = 8192 latent coordinates


def lspc_s_latents(sampling: str, eps: float = 0.25, seed: int = 0) -> torch.Tensor:
    agent = make_agent(lspc_s_sampling=sampling, vae_clamper=eps)
    agent.cvae.decode = lambda state, z: z
    return agent.act_lspc_s(torch.zeros(N_OBS, STATE_DIM), torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sampling", ["clamp", "tanh", "truncated"])
@pytest.mark.parametrize("eps", [0.25, 0.6])
def test_lspc_s_latents_inside_box_and_reproducible(sampling, eps):
    z = lspc_s_latents(sampling, eps)
    assert z.shape == (N_OBS, 4)
    # eps as float32 (0.6 is 0.60000002 in float32, the dtype the clamp works in)
    assert (z.abs() <= torch.tensor(eps, dtype=torch.float32)).all()
    assert torch.equal(z, lspc_s_latents(sampling, eps, seed=0))  # same seed, same samples
    assert not torch.equal(z, lspc_s_latents(sampling, eps, seed=1))


def test_lspc_s_clamp_is_per_coordinate_clamp():
    z = lspc_s_latents("clamp", 0.25)
    expected = torch.randn((N_OBS, 4), generator=torch.Generator().manual_seed(0)).clamp(-0.25, 0.25)
    assert torch.equal(z, expected)
    # P(|N(0,1)| >= 0.25) = 2 * (1 - Phi(0.25)) = 2 * (1 - 0.598706) = 0.8026
    at_boundary = (z.abs() == 0.25).float().mean().item()
    assert 0.78 < at_boundary < 0.83
    assert (z == 0.25).any() and (z == -0.25).any()


def test_lspc_s_tanh_never_on_boundary():
    z = lspc_s_latents("tanh", 0.25)
    expected = 0.25 * torch.tanh(torch.randn((N_OBS, 4), generator=torch.Generator().manual_seed(0)))
    assert torch.equal(z, expected)
    assert (z.abs() == 0.25).sum().item() == 0
    assert z.abs().max().item() < 0.25


def test_lspc_s_truncated_spread():
    z = lspc_s_latents("truncated", 0.25)
    assert (z.abs() == 0.25).sum().item() == 0
    # N(0,1) truncated to [-a, a], a = 0.25: var = 1 - 2 a phi(a) / (2 Phi(a) - 1)
    #   = 1 - 2 * 0.25 * 0.386668 / 0.197413 = 1 - 0.979345 = 0.020655, std = 0.1437
    # (uniform on the box: 0.25 / sqrt 3 = 0.1443; clamp would give about 0.23)
    assert 0.135 < z.std().item() < 0.152
    assert abs(z.mean().item()) < 0.01
    # nearly uniform: each quarter of the box holds about 1/4 of the samples
    counts = torch.histc(z, bins=4, min=-0.25, max=0.25) / z.numel()
    assert ((counts > 0.22) & (counts < 0.28)).all(), counts


def test_cvae_policy_is_unrestricted():
    agent = make_agent()
    agent.cvae.decode = lambda state, z: z
    z = agent.act_cvae(torch.zeros(N_OBS, STATE_DIM), torch.Generator().manual_seed(0))
    assert torch.equal(z, torch.randn((N_OBS, 4), generator=torch.Generator().manual_seed(0)))
    assert z.abs().max().item() > 1.0


# ---------------------------------------------------------------------------------------------
# 9. LSPC-O
# ---------------------------------------------------------------------------------------------
def lspc_o_agent(sampling: str, constant_head: bool = False) -> LSPC:
    agent = make_agent(lspc_o_sampling=sampling, max_latent_action=0.25)
    agent.cvae.decode = lambda state, z: z
    if constant_head:  # mean = [0.5, -1, 2, 0], log_std = [-1, -1, 0, 0]
        set_constant(agent.safety_encoder.net, [0.5, -1.0, 2.0, 0.0, -1.0, -1.0, 0.0, 0.0])
    return agent


def test_lspc_o_deterministic_hand_computed_and_seed_independent():
    agent = lspc_o_agent("deterministic", constant_head=True)
    obs = torch.randn(5, STATE_DIM)
    a1 = agent.act_lspc_o(obs, torch.Generator().manual_seed(0))
    a2 = agent.act_lspc_o(obs, torch.Generator().manual_seed(123))
    assert torch.equal(a1, a2)
    # z = 0.25 * tanh(mean): 0.25 * [0.462117, -0.761594, 0.964028, 0] = [0.115529, -0.190399, 0.241007, 0]
    assert a1.tolist() == [approx([0.115529, -0.190399, 0.241007, 0.0])] * 5


def test_lspc_o_stochastic_hand_computed_and_seeded():
    agent = lspc_o_agent("stochastic", constant_head=True)
    obs = torch.randn(5, STATE_DIM)
    a0 = agent.act_lspc_o(obs, torch.Generator().manual_seed(0))
    noise = torch.randn((5, 4), generator=torch.Generator().manual_seed(0))
    mean = torch.tensor([0.5, -1.0, 2.0, 0.0])
    std = torch.tensor([math.exp(-1), math.exp(-1), 1.0, 1.0])
    # z = eps_O * tanh(mean + std * noise)
    assert torch.allclose(a0, 0.25 * torch.tanh(mean + std * noise), atol=1e-6)
    assert torch.equal(a0, agent.act_lspc_o(obs, torch.Generator().manual_seed(0)))
    assert not torch.equal(a0, agent.act_lspc_o(obs, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("sampling", ["stochastic", "deterministic"])
def test_lspc_o_latent_strictly_inside(sampling):
    agent = lspc_o_agent(sampling)
    z = agent.act_lspc_o(torch.randn(N_OBS, STATE_DIM), torch.Generator().manual_seed(0))
    assert z.abs().max().item() < 0.25
    assert z.std().item() > 0.01  # not collapsed


# ---------------------------------------------------------------------------------------------
# 10. dones for the Bellman targets
# ---------------------------------------------------------------------------------------------
def test_episode_dones():
    data = {"terminals": np.array([0, 1, 0, 1]), "timeouts": np.array([0, 0, 1, 1])}
    default = episode_dones(data, bootstrap_on_timeout=False)
    assert default.tolist() == [0.0, 1.0, 1.0, 1.0]  # terminal OR timeout, never 1 + 1 = 2
    assert default.dtype == np.float32
    assert episode_dones(data, bootstrap_on_timeout=True).tolist() == [0.0, 1.0, 0.0, 1.0]


# ---------------------------------------------------------------------------------------------
# 11. feasibility-first model selection
# ---------------------------------------------------------------------------------------------
def scores(reward: float, cost: float) -> dict:
    return {"normalized_reward": reward, "normalized_cost": cost}


def test_better_than():
    # feasible beats infeasible regardless of reward
    assert better_than(scores(0.1, 0.9), scores(0.9, 1.5))
    assert not better_than(scores(0.9, 1.5), scores(0.1, 0.9))
    # normalized cost exactly 1 is feasible: it then competes on reward (0.6 > 0.5)
    assert better_than(scores(0.6, 1.0), scores(0.5, 0.2))
    assert not better_than(scores(0.6, 1.0 + 1e-9), scores(0.5, 0.2))
    # among feasible, higher reward wins, whatever the cost
    assert better_than(scores(0.6, 0.9), scores(0.5, 0.1))
    assert not better_than(scores(0.5, 0.1), scores(0.6, 0.9))
    assert not better_than(scores(0.5, 0.1), scores(0.5, 0.2))  # a tie keeps the old best
    # among infeasible, lower cost wins, whatever the reward
    assert better_than(scores(0.0, 1.2), scores(0.9, 1.5))
    assert not better_than(scores(0.9, 1.5), scores(0.0, 1.2))
    # anything beats no evaluation
    assert better_than(scores(0.0, 5.0), None)


# ---------------------------------------------------------------------------------------------
# 12. every optimized network moves; targets follow by Polyak averaging
# ---------------------------------------------------------------------------------------------
def test_train_updates_all_networks_and_polyak_targets():
    tau = 0.1
    agent = make_agent(tau=tau, learning_rate=1e-2)
    before = {name: [p.detach().clone() for p in getattr(agent, name).parameters()]
              for name in (*OPTIMIZED, "q_target", "cost_q_target")}
    # the targets start as exact copies of the online critics
    for online, target in (("q", "q_target"), ("cost_q", "cost_q_target")):
        assert all(torch.equal(a, b) for a, b in zip(before[online], before[target]))

    agent.train(make_batch())

    for name in OPTIMIZED:
        for i, (old, new) in enumerate(zip(before[name], getattr(agent, name).parameters())):
            assert not torch.equal(old, new), f"{name} parameter {i} did not change"
    for online, target in (("q", "q_target"), ("cost_q", "cost_q_target")):
        new_online = list(getattr(agent, online).parameters())
        new_target = list(getattr(agent, target).parameters())
        for old_t, new_o, new_t in zip(before[target], new_online, new_target):
            # target' = (1 - tau) * target + tau * online'
            expected = (1 - tau) * old_t + tau * new_o.detach()
            assert torch.allclose(new_t, expected, rtol=0, atol=1e-6)
            assert (new_t - old_t).abs().max() > 1e-4  # it did move
            assert not new_t.requires_grad


# ---------------------------------------------------------------------------------------------
# 13. clamp_cost_value: the release's V_c(s) >= 0 in loss (3) and in the CVAE weights of (5)
# ---------------------------------------------------------------------------------------------
CHANGED_BY_CLAMP = {"cost_value_loss", "cvae_loss", "cost_weight_mean", "cost_weight_clipped", "cost_weight_masked"}


def negative_cost_value_agent(clamp: bool, qc_target_heads=(0.3, -1.0), **overrides) -> LSPC:
    agent = make_agent(clamp_cost_value=clamp, **overrides)
    set_constant(agent.cost_value.v, -0.5)
    set_head_constant(agent.cost_q_target, 0, qc_target_heads[0])
    set_head_constant(agent.cost_q_target, 1, qc_target_heads[1])
    return agent


@pytest.mark.parametrize("clamp, expected_loss, expected_weight", [
    # off: u = Vc - max(0.3, -1) = -0.5 - 0.3 = -0.8 -> 0.3 * 0.64 = 0.192; w = exp(2 * -0.8) = exp(-1.6)
    (False, 0.192, math.exp(-1.6)),
    # on: u = max(-0.5, 0) - 0.3 = -0.3 -> 0.3 * 0.09 = 0.027; w = exp(2 * -0.3) = exp(-0.6)
    (True, 0.027, math.exp(-0.6)),
])
def test_clamp_cost_value_hand_computed(clamp, expected_loss, expected_weight):
    m = negative_cost_value_agent(clamp).train(make_batch())
    assert m["cost_value_loss"].item() == approx(expected_loss)
    assert m["cost_weight_mean"].item() == approx(expected_weight)
    # one weight for the whole batch: cvae_loss = w * (mean recon + 0.5 * mean KL)
    assert m["cvae_loss"].item() == approx(expected_weight * (m["cvae_recon"].item() + 0.5 * m["cvae_kl"].item()))
    assert m["cost_v_mean"].item() == approx(-0.5)  # the logged V_c is the network's own output either way


def test_clamp_cost_value_mask_uses_clamped_value():
    # threshold 0.2, Qc_target = max(0.1, 0) = 0.1: the clamped V_c = 0 and Qc pass, so nothing is masked
    # and w = exp(2 * (0 - 0.1)) = exp(-0.2). (The mask itself cannot tell the two settings apart: the Qc
    # target is clamped >= 0, so max(V_c, 0) > t adds nothing to Qc > t for t < 0, and equals V_c > t for t >= 0.)
    m = negative_cost_value_agent(True, qc_target_heads=(0.1, 0.0), safe_qc_vc_threshold=0.2).train(make_batch())
    assert m["cost_weight_masked"].item() == 0.0
    assert m["cost_weight_mean"].item() == approx(math.exp(-0.2))
    m = negative_cost_value_agent(True, qc_target_heads=(0.3, 0.0), safe_qc_vc_threshold=0.2).train(make_batch())
    assert m["cost_weight_masked"].item() == 1.0 and m["cvae_loss"].item() == 0.0  # Qc = 0.3 > 0.2


def test_clamp_cost_value_changes_only_loss_3_and_the_cvae_weights():
    """The same parameters and batch, the switch off and on; V_c of mixed signs over the batch."""
    batch = make_batch(batch_size=64)
    off = make_agent(batch_size=64)
    # centre V_c(s) on 0 over this batch, so that about half of it is negative
    vc_raw = off.cost_value(batch["observations"]).detach()
    last = [m for m in off.cost_value.v if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.bias -= vc_raw.median()
    on = make_agent(batch_size=64, clamp_cost_value=True)
    on.load_state_dict(off.state_dict())

    vc = off.cost_value(batch["observations"]).detach()
    assert (vc < 0).sum() >= 16 and (vc > 0).sum() >= 16
    qc = torch.max(*off.cost_q_target.both(batch["observations"], batch["actions"])).detach().clamp(min=0.0)
    outputs = {}
    noise = torch.randn(64, off.cfg.latent_dim, generator=torch.Generator().manual_seed(5))  # the CVAE's
    for name, agent in (("off", off), ("on", on)):
        outputs[name] = agent.critic_and_cvae_losses(batch, noise)
    reconstruction, mean, log_std = off.cvae(batch["observations"], batch["actions"], noise)
    per_sample = ((reconstruction - batch["actions"]).pow(2).sum(-1) + 0.5 * gaussian_kl(mean, log_std, "mean")).detach()

    def expected(v):
        u = (v - qc).numpy().astype(np.float64)
        loss = np.mean(np.where(u < 0, 0.3, 0.7) * u ** 2)
        w = np.minimum(np.exp(2.0 * (v - qc).numpy().astype(np.float64)), 200.0)
        return loss, w

    (total_off, adv_off, m_off), (total_on, adv_on, m_on) = outputs["off"], outputs["on"]
    for name, m, v in (("off", m_off, vc), ("on", m_on, vc.clamp(min=0.0))):
        loss, w = expected(v)
        assert m["cost_value_loss"].item() == approx(loss), name
        assert m["cost_weight_mean"].item() == approx(w.mean()), name
        assert m["cvae_loss"].item() == approx(np.mean(w * per_sample.numpy())), name
    assert m_on["cost_weight_mean"].item() > m_off["cost_weight_mean"].item()  # max(V_c, 0) >= V_c
    for name in set(m_off) - CHANGED_BY_CLAMP:  # every other loss and metric: bit for bit the same
        assert torch.equal(m_off[name], m_on[name]), name
    assert torch.equal(adv_off, adv_on)
    unchanged = sum(m_off[name] for name in ("value_loss", "q_loss", "cost_q_loss"))
    assert total_on.item() == approx((unchanged + m_on["cost_value_loss"] + m_on["cvae_loss"]).item())


@pytest.mark.parametrize("clamp", [False, True])
def test_clamp_cost_value_stops_the_gradient_where_vc_is_negative(clamp):
    agent = negative_cost_value_agent(clamp)  # V_c = -0.5 everywhere
    before = [p.detach().clone() for p in agent.cost_value.parameters()]
    agent.train(make_batch())
    moved = [not torch.equal(old, new) for old, new in zip(before, agent.cost_value.parameters())]
    # clamped: zero gradient everywhere, and Adam's first step with a zero gradient is zero
    assert not any(moved) if clamp else any(moved)


def test_policies_build_no_graph():
    """Acting needs no gradients: every policy's actions are plain tensors (the evaluation turns them into numpy)."""
    agent = LSPC(5, 2, 1.0, TrainConfig(hidden_dim=8), torch.device("cpu"))
    obs, generator = torch.randn(4, 5), torch.Generator().manual_seed(0)
    for name, policy, _, _ in agent.evaluation_policies([10.0]):
        assert not policy(obs, generator).requires_grad, name


def test_lspc_method_loads_samples_and_builds_from_the_config(ballrun_file, ballrun_env):
    cfg = TrainConfig(task="OfflineBallRun-v0", dataset_path=ballrun_file, batch_size=1_200, hidden_dim=8)
    method = LSPCMethod(cfg)
    assert method.label == "OfflineBallRun-v0"
    # each training policy's metrics prefix and best checkpoint (feasibility first, per policy)
    assert LSPCMethod.policies == {"o": ("eval", "model_best_o.pt"), "s": ("eval_star", "model_best_s.pt")}
    data = method.load_data(ballrun_env)  # a batch of the whole dataset is allowed
    assert len(data["observations"]) == 1_200
    with pytest.raises(LSPCError, match=r"batch_size 1201 is larger than the dataset \(1200 transitions\)"):
        LSPCMethod(dataclasses.replace(cfg, batch_size=1_201)).load_data(ballrun_env)
    batch = method.make_sampler(data, torch.device("cpu")).sample(3)
    assert batch["observations"].shape == (3, ballrun_env.observation_space.shape[0])
    agent = method.make_agent(ballrun_env, torch.device("cpu"))
    assert set(agent.training_policies()) == set(LSPCMethod.policies)
    assert agent.cvae.decoder[-2].out_features == ballrun_env.action_space.shape[0]
