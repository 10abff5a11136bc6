"""TraC (lspc/methods/trac.py) against a reference written here: ``train()`` through behaviour cloning, the
switch and the classification phase, ``act()``, and the budget guard.

The reference follows the authors' code (zgong11/TraC: research/algs/trac.py ``trac_with_logits``,
``_get_trac_loss``, ``train_step``; research/networks: the deterministic tanh actor with dropout)
and restates it in PyTorch from the agent's parameters only: the actor's forward pass (dropout drawn
from the global generator, as nn.Dropout does), log pi = -||pi(s) - a||^2, the discounted segment
score against the frozen reference (dropout off), the weighted logistic loss, and one Adam per
phase (a fresh one at the switch) with the warm-up learning rate. None of lspc/methods/trac.py's helpers
is called. The hyperparameters are off their defaults and distinct, the batches mix labels,
weights and unequal label counts, so a crossed wire shows. Tiny networks: about a second.
"""
import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lspc import LSPCError
from lspc.methods import trac
from lspc.methods.baselines import BaselineConfig

TASK = "OfflineBallRun-v0"
OBS_DIM, ACT_DIM, SEG_LEN, BATCH = 4, 2, 5, 8
HPARAMS = {"alpha": 0.3, "gamma": 0.8, "eta": 0.6, "bc_steps": 2, "warmup_steps": 3, "bc_lr": 0.01, "trac_lr": 0.02,
           "dropout": 0.25, "a_hidden_sizes": [16, 16], "seg_ratio": 0.05}  # L = int(100 * 0.05) = 5


class BoxEnv:
    """Just the spaces TraC reads; the action box is narrower than tanh's range in one coordinate."""
    observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    action_space = gym.spaces.Box(np.array([-1.0, -0.2], np.float32), np.array([1.0, 0.3], np.float32))


LOW = torch.as_tensor(BoxEnv.action_space.low)
HIGH = torch.as_tensor(BoxEnv.action_space.high)


def make_cfg(**overrides):
    return BaselineConfig(algo="trac", task=TASK, episode_len=100, seed=0, batch_size=BATCH, max_timesteps=50,
                          hparams={**trac.default_hparams(TASK), **HPARAMS, **overrides})


def make_agent(seed=0):
    torch.manual_seed(seed)
    return trac.TraC(make_cfg(), BoxEnv(), torch.device("cpu"))


def make_batch(seed):
    """Segments with 5 desirable and 3 undesirable labels and unequal weights."""
    g = torch.Generator().manual_seed(seed)
    return {"observations": torch.randn(BATCH, SEG_LEN, OBS_DIM, generator=g),
            "actions": torch.rand(BATCH, SEG_LEN, ACT_DIM, generator=g) * 1.8 - 0.9,
            "desirable": torch.tensor([True, False, True, True, False, True, False, True]),
            "weight": torch.rand(BATCH, generator=g) + 0.5}


# ---------------------------------------------------------------------------------------------
# The reference
# ---------------------------------------------------------------------------------------------
def actor_forward(actor, obs, dropout):
    """Linear, Dropout, ReLU per hidden layer, then Linear and tanh; dropout from the global generator."""
    linears = [m for m in actor.modules() if isinstance(m, torch.nn.Linear)]
    h = obs
    for layer in linears[:-1]:
        h = torch.relu(F.dropout(h @ layer.weight.T + layer.bias, HPARAMS["dropout"], training=dropout))
    return torch.tanh(h @ linears[-1].weight.T + linears[-1].bias)


def log_pi(actor, batch, dropout):
    """-||pi(s) - a||^2 per step: a unit-variance Gaussian's log-likelihood up to constants, (B, L)."""
    return -((actor_forward(actor, batch["observations"], dropout) - batch["actions"]) ** 2).sum(-1)


def trac_with_logits(segment_adv, weight, label, eta):
    lambda_u = eta * (label == 1).sum() / (label == 0).sum()
    coef = torch.where(label == 1, torch.ones_like(segment_adv), lambda_u)
    p = torch.sigmoid(segment_adv)
    terms = label * torch.log(torch.clamp(p, min=1e-6)) + (1 - label) * torch.log(torch.clamp(1 - p, min=1e-6))
    loss = -(coef * weight * terms).mean()
    accuracy = ((p > 0.5) == label.round().bool()).float().mean()
    return loss, accuracy


class Reference:
    """TraC.train_step on a copy of the actor: BC for bc_steps (Adam at bc_lr); at the end of the last BC
    step the reference takes the actor's weights and a fresh Adam starts, with the lr warmed up linearly
    from trac_lr / warmup_steps on the first classification step to trac_lr."""

    def __init__(self, agent):
        self.actor = copy.deepcopy(agent.actor)
        self.reference = None
        self.optimizer = torch.optim.Adam(self.actor.parameters(), lr=HPARAMS["bc_lr"])
        self.step = 0

    def train(self, batch):
        h = HPARAMS
        lp = log_pi(self.actor, batch, dropout=True)
        bc_loss = -lp.mean()
        if self.step < h["bc_steps"]:
            loss, lr = bc_loss, h["bc_lr"]
            trac_loss = accuracy = torch.tensor(0.0)
        else:
            with torch.no_grad():
                lp_ref = log_pi(self.reference, batch, dropout=False)
            discounts = h["gamma"] ** torch.arange(SEG_LEN, dtype=torch.float32)
            segment_adv = (h["alpha"] * discounts * (lp - lp_ref)).sum(-1)
            trac_loss, accuracy = trac_with_logits(segment_adv, batch["weight"], batch["desirable"].float(), h["eta"])
            loss = trac_loss
            lr = h["trac_lr"] * min(1.0, (self.step - h["bc_steps"] + 1) / h["warmup_steps"])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if self.step == h["bc_steps"] - 1:
            self.reference = copy.deepcopy(self.actor).requires_grad_(False)
            self.optimizer = torch.optim.Adam(self.actor.parameters(), lr=0.0)
        self.step += 1
        return {"bc_loss": bc_loss.detach(), "trac_loss": trac_loss.detach(), "accuracy": accuracy, "lr": lr,
                "trac_phase": float(self.step > h["bc_steps"])}


def test_bc_switch_and_classification_steps_match_the_reference():
    agent = make_agent()
    ref = Reference(agent)
    for step in range(7):  # 2 BC steps, then 5 classification steps across the end of the warm-up
        batch = make_batch(step)
        rng = torch.get_rng_state()
        expected = ref.train(batch)
        torch.set_rng_state(rng)  # the same dropout masks
        before = [p.detach().clone() for p in agent.actor.parameters()]
        got = agent.train(batch)
        for name in ("bc_loss", "trac_loss", "accuracy"):
            torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-7, msg=f"step {step}: {name}")
        assert got["lr"].item() == pytest.approx(expected["lr"], rel=1e-6)
        assert got["trac_phase"].item() == expected["trac_phase"]
        for old, new, want in zip(before, agent.actor.parameters(), ref.actor.parameters()):
            torch.testing.assert_close(new.detach() - old, want.detach() - old, rtol=1e-4, atol=1e-7,
                                       msg=f"step {step}: actor")
        if step >= HPARAMS["bc_steps"] - 1:  # the frozen reference: the actor after the last BC step, never trained
            for mine, want in zip(agent.reference.parameters(), ref.reference.parameters()):
                torch.testing.assert_close(mine, want, rtol=0, atol=0)
            assert all(not p.requires_grad for p in agent.reference.parameters())
        if step >= HPARAMS["bc_steps"]:
            assert 0 < expected["trac_loss"] and 0 < expected["lr"]
    # the check is informative: classification moved the actor away from the reference and some scores are wrong
    assert any(not torch.equal(a, r) for a, r in zip(agent.actor.parameters(), agent.reference.parameters()))


def test_learning_rates_over_both_phases():
    agent = make_agent()
    h = HPARAMS
    expected = [h["bc_lr"]] * h["bc_steps"] + [h["trac_lr"] * min(1.0, k / h["warmup_steps"]) for k in range(1, 6)]
    seen = [agent.train(make_batch(step))["lr"].item() for step in range(len(expected))]
    assert seen == pytest.approx(expected, rel=1e-6)  # (the first test checks that the updates used them)


# ---------------------------------------------------------------------------------------------
# Acting
# ---------------------------------------------------------------------------------------------
def test_act_is_the_deterministic_actor_clamped_to_the_box():
    agent = make_agent()
    for step in range(3):
        agent.train(make_batch(step))  # leaves the actor in training mode (dropout on)
    obs = torch.randn(64, OBS_DIM, generator=torch.Generator().manual_seed(1)) * 3
    state = torch.get_rng_state()
    action = agent.act(obs, torch.Generator().manual_seed(2))
    assert torch.equal(torch.get_rng_state(), state)  # dropout off: nothing drawn
    with torch.no_grad():
        mean = actor_forward(agent.actor, obs, dropout=False)
    torch.testing.assert_close(action, torch.max(torch.min(mean, HIGH), LOW))
    assert ((mean < LOW) | (mean > HIGH)).any()  # informative: the clamp is needed on these states
    assert torch.equal(action, agent.act(obs, None))
    assert agent.policy_at(10.0) == agent.policy_at(40.0) == agent.act  # one policy per threshold: its own


# ---------------------------------------------------------------------------------------------
# The budget guard: max_timesteps <= bc_steps would be plain behaviour cloning
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_timesteps", [1, 2])
def test_a_budget_of_at_most_bc_steps_is_refused(max_timesteps):
    cfg = BaselineConfig(algo="trac", task=TASK, episode_len=100, max_timesteps=max_timesteps,
                         hparams={**trac.default_hparams(TASK), "bc_steps": 2})
    with pytest.raises(LSPCError, match=f"max_timesteps {max_timesteps} <= bc_steps 2 would train behaviour cloning"):
        trac.check_config(cfg)
    trac.check_config(BaselineConfig(algo="trac", task=TASK, episode_len=100, max_timesteps=3,
                                     hparams={**trac.default_hparams(TASK), "bc_steps": 2}))
