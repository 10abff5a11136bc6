"""FISOR: Safe Offline RL with Feasibility-Guided Diffusion Model (Zheng et al., ICLR 2024), in PyTorch.

FISOR asks for zero constraint violation and splits the problem into three decoupled parts, in
the order of the paper:
  1. Feasibility. A Hamilton-Jacobi reachability value learned in-sample: h(s) = +cost_scale
     where the step has a cost, else -1; Q_h backs up the discounted worst future h, and V_h is
     a *low* expectile of Q_h over the data's actions (a reversed expectile loss), so
     V_h(s) ~ min_a Q_h(s, a). The largest feasible region is {s : V_h(s) <= 0}.
  2. Reward. IQL critics (expectile 0.9) on rewards normalized by the task's reference range of
     episode returns (dsrl's, as the authors' code does).
  3. Policy. The optimal policy of the feasibility-dependent objective (maximize reward inside
     the feasible region, minimize V_h outside it) is behaviour cloning with per-sample weights;
     it is extracted with a weighted DDPM (noise prediction with an LN-ResNet). At test time
     the EMA diffusion policy proposes candidates and the one with the lowest Q_h is taken.
The module gives the project's shared training loop (lspc/training.py, through
lspc/methods/baselines.py) ``default_hparams``, ``default_schedule``, ``make_sampler`` and the agent
``FISOR`` (one ``train`` iteration, batched seeded ``act``, a complete ``state_dict``).

The facts follow the authors' JAX code (ZhengYinan-AIR/FISOR: jaxrl5/agents/fisor/fisor.py,
configs/train_config.py; MetaDrive's weight clip from branch metadrive_imitation). Differences:
  - Rewards are scaled by episode_len / (max - min episode return), the range being dsrl's reference
    one of the task (``dsrl.infos.MAX_EPISODE_REWARD`` - ``MIN_EPISODE_REWARD``, the JAX code's
    ``env.max_episode_reward - env.min_episode_reward``, times the env's time limit, as in its
    launcher/examples/train_offline.py). Where dsrl has no range for the task the data's own episode
    returns give it instead, and the run's log says so.
  - Denoising steps and dataset actions are clipped to the env's action box; the JAX code
    rescales every env to [-1, 1] and clips there (and clips data actions to 1 - 1e-5).
  - All training noise (diffusion times, noise, dropout) comes from one torch.Generator kept in
    the checkpoint, all acting noise from the caller's generator: runs are seeded and resumable.
  - The V and V_h updates (and then the Q and Q_h updates) share one backward pass; each loss
    reaches only its own network, so this is the same update as the JAX code's four steps.
Equation numbers of the paper are not cited; the comments name the part of the method instead.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lspc import LSPCError
from lspc.checkpoint import derived_seed, generator_state, restore_generator
from lspc.data.dataset import TransitionBuffer, trajectory_bounds
from lspc.envs import check_task, dsrl_infos, dsrl_key
from lspc.evaluation import BatchPolicy
from lspc.losses import expectile_loss  # on diff = Q - V: V tracks an upper expectile of Q

# ---------------------------------------------------------------------------------------------
# 0. Defaults (configs/train_config.py, agent "fisor")
# ---------------------------------------------------------------------------------------------
_HPARAMS: Dict[str, Any] = {
    "gamma": 0.99,
    "tau": 0.005,  # target critics
    "c_hidden_sizes": [256, 256],  # Q, V, Q_h, V_h: ReLU MLPs
    "critic_lr": 3e-4,
    "value_lr": 3e-4,
    "critic_batch_size": 256,  # the critics train on the first rows of each batch
    # 1. feasibility
    "cost_scale": 25.0,  # h = +cost_scale where cost > 0, else -1
    "reach_expectile": 0.9,
    # 2. reward
    "reward_expectile": 0.9,
    # 3. policy weights
    "cost_temperature": 5.0,
    "cost_max_weight": 150.0,
    "cost_min_weight": 0.0,  # MetaDrive: 1 (branch metadrive_imitation)
    "reward_temperature": 3.0,
    "reward_max_weight": 100.0,
    # the diffusion actor
    "diffusion_steps": 5,
    "beta_min": 0.1,
    "beta_max": 10.0,
    "time_dim": 64,  # learnable Fourier features of the diffusion step
    "time_hidden_sizes": [128, 128],  # their mish MLP
    "actor_hidden_dim": 256,  # the LN-ResNet's width (its blocks expand 4x)
    "actor_num_blocks": 3,
    "actor_dropout": 0.1,
    "actor_lr": 3e-4,
    "actor_lr_decay_steps": 3_000_000,  # cosine decay to 0, counted in actor updates (two per iteration)
    "ema_rate": 0.001,  # the EMA actor that acts
    "num_candidates": 16,
}
_METADRIVE_COST_MIN_WEIGHT = 1.0


def default_hparams(task: str) -> Dict[str, Any]:
    """FISOR's hyperparameters for ``task`` (plain YAML values)."""
    hparams = copy.deepcopy(_HPARAMS)
    if check_task(task) == "metadrive":
        hparams["cost_min_weight"] = _METADRIVE_COST_MIN_WEIGHT
    return hparams


def default_schedule(task: str) -> Dict[str, int]:
    """FISOR's schedule: 1M iterations of batch 2048, 20 evaluation episodes every 250k (every task)."""
    check_task(task)
    return {"max_timesteps": 1_000_000, "batch_size": 2048, "eval_every": 250_000, "eval_episodes": 20}


def check_config(cfg: Any) -> Dict[str, Any]:
    """The run's hyperparameters (defaults for missing ones), or a one-line error for ones that cannot work."""
    unknown = sorted(set(cfg.hparams) - set(_HPARAMS))
    if unknown:
        raise LSPCError(f"fisor takes no hyperparameters {unknown}; it takes {sorted(_HPARAMS)}")
    h = {**default_hparams(cfg.task), **cfg.hparams}
    for key in ("c_hidden_sizes", "time_hidden_sizes"):
        sizes = h[key]
        if not isinstance(sizes, list) or not sizes or not all(isinstance(n, int) and n > 0 for n in sizes):
            raise LSPCError(f"fisor: {key} must be a non-empty list of positive widths, got {sizes!r}")
    for key in ("critic_batch_size", "diffusion_steps", "actor_hidden_dim", "actor_lr_decay_steps", "num_candidates"):
        if not isinstance(h[key], int) or h[key] < 1:
            raise LSPCError(f"fisor: {key} must be a positive integer, got {h[key]!r}")
    if not isinstance(h["actor_num_blocks"], int) or h["actor_num_blocks"] < 0:
        raise LSPCError(f"fisor: actor_num_blocks must be a non-negative integer, got {h['actor_num_blocks']!r}")
    if not isinstance(h["time_dim"], int) or h["time_dim"] < 2 or h["time_dim"] % 2:
        raise LSPCError(f"fisor: time_dim (cosines and sines) must be a positive even integer, got {h['time_dim']!r}")
    for key in ("reach_expectile", "reward_expectile"):
        if not 0 < h[key] < 1:
            raise LSPCError(f"fisor: {key} must be in (0, 1), got {h[key]}")
    for key in ("gamma", "tau", "ema_rate"):
        if not 0 < h[key] <= 1:
            raise LSPCError(f"fisor: {key} must be in (0, 1], got {h[key]}")
    if not 0 <= h["actor_dropout"] < 1:
        raise LSPCError(f"fisor: actor_dropout must be in [0, 1), got {h['actor_dropout']}")
    if not 0 < h["beta_min"] <= h["beta_max"]:
        raise LSPCError(f"fisor: need 0 < beta_min <= beta_max, got {h['beta_min']} and {h['beta_max']}")
    if not 0 <= h["cost_min_weight"] <= h["cost_max_weight"] or h["reward_max_weight"] < 0:
        raise LSPCError("fisor: need 0 <= cost_min_weight <= cost_max_weight and reward_max_weight >= 0")
    if cfg.batch_size < 2 or cfg.batch_size % 2:
        raise LSPCError(f"fisor: batch_size must be even (the actor trains on its two halves), got {cfg.batch_size}")
    if h["critic_batch_size"] > cfg.batch_size:
        raise LSPCError(f"fisor: critic_batch_size {h['critic_batch_size']} is larger than batch_size {cfg.batch_size}")
    return h


# ---------------------------------------------------------------------------------------------
# Networks. Initialized as the JAX code's flax modules: Xavier-uniform kernels (lecun-normal in
# the ResNet blocks), zero biases.
# ---------------------------------------------------------------------------------------------
def _dense(fan_in: int, fan_out: int, init: str = "xavier") -> nn.Linear:
    layer = nn.Linear(fan_in, fan_out)
    if init == "xavier":
        nn.init.xavier_uniform_(layer.weight)
    else:  # flax's lecun_normal: truncated at 2 std, rescaled to keep variance 1 / fan_in
        std = fan_in ** -0.5 / 0.87962566103423978
        nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(layer.bias)
    return layer


class EnsembleMLP(nn.Module):
    """``members`` independent ReLU MLPs with a scalar output, evaluated as one batched matmul per
    layer. Output [members, batch]."""

    def __init__(self, members: int, in_dim: int, hidden_sizes: Sequence[int]) -> None:
        super().__init__()
        sizes = [in_dim, *hidden_sizes, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = math.sqrt(6.0 / (fan_in + fan_out))  # Xavier-uniform per member
            self.weights.append(nn.Parameter(torch.empty(members, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.zeros(members, 1, fan_out)))
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.expand(self.members, *x.shape)
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(bias, h, weight)
            if layer < len(self.weights) - 1:
                h = torch.relu(h)
        return h.squeeze(-1)


class TwinQ(nn.Module):
    """Two Q heads; the reward critic combines them with min, the reachability critic with max."""

    def __init__(self, state_dim: int, action_dim: int, hidden_sizes: Sequence[int]) -> None:
        super().__init__()
        self.heads = EnsembleMLP(2, state_dim + action_dim, hidden_sizes)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """[2, batch]."""
        return self.heads(torch.cat([state, action], dim=-1))


class ValueFunction(nn.Module):
    def __init__(self, state_dim: int, hidden_sizes: Sequence[int]) -> None:
        super().__init__()
        self.net = EnsembleMLP(1, state_dim, hidden_sizes)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state)[0]


def _dropout(x: torch.Tensor, rate: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Inverted dropout drawn from ``generator``; none without one (acting, the EMA copy)."""
    if generator is None or rate == 0:
        return x
    keep = torch.empty_like(x).bernoulli_(1.0 - rate, generator=generator)
    return x * keep / (1.0 - rate)


class ResidualBlock(nn.Module):
    """x + Dense(mish(Dense_4w(LayerNorm(dropout(x)))))."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)  # flax's epsilon
        self.expand = _dense(width, 4 * width, init="lecun")
        self.project = _dense(4 * width, width, init="lecun")
        self.dropout = dropout

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        y = self.norm(_dropout(x, self.dropout, generator))
        return x + self.project(F.mish(self.expand(y)))


class Denoiser(nn.Module):
    """eps_theta(a_t, s, t): learnable Fourier features of t -> mish MLP, then an LN-ResNet on
    [a_t, s, time features]: Dense, residual blocks, mish, Dense to the action."""

    def __init__(self, state_dim: int, action_dim: int, h: Dict[str, Any]) -> None:
        super().__init__()
        self.fourier = nn.Parameter(0.2 * torch.randn(h["time_dim"] // 2, 1))
        sizes = [h["time_dim"], *h["time_hidden_sizes"]]
        self.time_mlp = nn.ModuleList(_dense(i, o) for i, o in zip(sizes[:-1], sizes[1:]))
        width = h["actor_hidden_dim"]
        self.inp = _dense(action_dim + state_dim + sizes[-1], width)
        self.blocks = nn.ModuleList(ResidualBlock(width, h["actor_dropout"]) for _ in range(h["actor_num_blocks"]))
        self.out = _dense(width, action_dim)

    def forward(self, state: torch.Tensor, noisy_action: torch.Tensor, t: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``t``: [batch, 1] diffusion steps (float); dropout is on when ``generator`` is given (training)."""
        f = 2 * math.pi * t @ self.fourier.T
        cond = torch.cat([torch.cos(f), torch.sin(f)], dim=-1)
        for layer, dense in enumerate(self.time_mlp):
            cond = dense(cond)
            if layer < len(self.time_mlp) - 1:
                cond = F.mish(cond)
        x = self.inp(torch.cat([noisy_action, state, cond], dim=-1))
        for block in self.blocks:
            x = block(x, generator)
        return self.out(F.mish(x))


def soft_update(targets: Sequence[nn.Module], sources: Sequence[nn.Module], rate: float) -> None:
    """theta_target <- (1 - rate) theta_target + rate theta (targets and the EMA actor)."""
    with torch.no_grad():
        torch._foreach_lerp_([p for m in targets for p in m.parameters()],
                             [p for m in sources for p in m.parameters()], rate)


# ---------------------------------------------------------------------------------------------
# 1. Feasibility: the Hamilton-Jacobi reachability value
# ---------------------------------------------------------------------------------------------
def reach_signal(costs: torch.Tensor, cost_scale: float) -> torch.Tensor:
    """h(s): > 0 where the constraint is violated. +cost_scale for a costly step, -1 otherwise."""
    return torch.where(costs > 0, torch.full_like(costs, cost_scale), torch.full_like(costs, -1.0))


def reach_target(h: torch.Tensor, next_vh: torch.Tensor, dones: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted reachability backup: (1 - gamma) h + gamma max(h, V_h(s')); just h where the
    episode ends (terminal or timeout): the worst violation ahead is the one at hand."""
    backup = (1.0 - gamma) * h + gamma * torch.maximum(h, next_vh)
    return torch.where(dones > 0, h, backup)


def reversed_expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """The reversed loss on diff = Q_h - V_h: a V_h *above* Q_h weighs ``expectile``, so V_h tracks
    a low expectile of Q_h, the in-sample stand-in for min_a Q_h(s, a)."""
    return expectile_loss(-diff, expectile)


# ---------------------------------------------------------------------------------------------
# 2. Reward critics (IQL) and FISOR's reward normalization
# ---------------------------------------------------------------------------------------------
def reference_reward_range(task: str) -> Optional[float]:
    """dsrl's reference max - min episode return of ``task`` (``dsrl.infos``), or None where dsrl has
    no positive range for it."""
    infos, key = dsrl_infos(), dsrl_key(task)
    if key not in infos.MAX_EPISODE_REWARD or key not in infos.MIN_EPISODE_REWARD:
        return None
    spread = float(infos.MAX_EPISODE_REWARD[key]) - float(infos.MIN_EPISODE_REWARD[key])
    return spread if spread > 0 else None


def data_reward_range(data: Dict[str, np.ndarray]) -> float:
    """max - min episode return of the data's trajectories."""
    returns = [float(np.sum(data["rewards"][start:end])) for start, end in trajectory_bounds(data)]
    spread = max(returns) - min(returns)
    if not spread > 0:
        raise LSPCError(f"fisor normalizes rewards by the spread of the episode returns (dsrl has no reference "
                        f"range for this task), but all {len(returns)} trajectories return {returns[0]:g}")
    return spread


def reward_scale(task: str, data: Dict[str, np.ndarray], episode_len: int) -> float:
    """episode_len / (max - min episode return): the rewards' scale FISOR trains on. The range is dsrl's
    reference one of the task, as in the authors' code; the data's own where dsrl has none. Prints which."""
    spread = reference_reward_range(task)
    if spread is not None:
        print(f"data: fisor scales rewards by episode_len {episode_len} / {spread:g}, dsrl's reference range of "
              f"episode returns for {task}", flush=True)
    else:
        spread = data_reward_range(data)
        print(f"data: fisor scales rewards by episode_len {episode_len} / {spread:g}, the data's range of episode "
              f"returns: dsrl has no reference range for {task}", flush=True)
    return episode_len / spread


def make_sampler(cfg: Any, data: Dict[str, np.ndarray], device: torch.device) -> TransitionBuffer:
    """``data`` on the device with FISOR's reward scale, sampled with a generator seeded by ``cfg.seed``;
    dones are terminals or timeouts. Costs stay raw: ``train`` turns them into h."""
    return TransitionBuffer(data, device, cfg.seed, reward_scale=reward_scale(cfg.task, data, cfg.episode_len))


# ---------------------------------------------------------------------------------------------
# 3. Feasibility-dependent policy weights
# ---------------------------------------------------------------------------------------------
def feasibility_weights(q: torch.Tensor, v: torch.Tensor, qh: torch.Tensor, vh: torch.Tensor,
                        h: Dict[str, Any]) -> torch.Tensor:
    """w(s, a) of the weighted behaviour cloning that FISOR's optimal policy reduces to:
    infeasible state (V_h > 0): exp(cost_temperature (V_h - Q_h)), clipped to [cost_min_weight,
    cost_max_weight]: the actions that lower the reachability most; feasible state and action
    (V_h <= 0, Q_h <= 0): min(exp(reward_temperature (Q - V)), reward_max_weight); a feasible
    state's infeasible action: 0."""
    infeasible = (h["cost_temperature"] * (vh - qh)).exp().clamp(h["cost_min_weight"], h["cost_max_weight"])
    feasible = (h["reward_temperature"] * (q - v)).exp().clamp(max=h["reward_max_weight"])
    zero = torch.zeros_like(q)
    return torch.where(vh > 0, infeasible, torch.where(qh <= 0, feasible, zero))


# ---------------------------------------------------------------------------------------------
# 4. The diffusion actor: DDPM with a discrete VP schedule
# ---------------------------------------------------------------------------------------------
def vp_beta_schedule(steps: int, beta_min: float, beta_max: float) -> torch.Tensor:
    """beta_t = 1 - exp(-beta_min / T - (beta_max - beta_min)(2t - 1) / (2 T^2)), t = 1..T: the VP
    SDE's beta(tau) = beta_min + (beta_max - beta_min) tau integrated over each step ((t-1)/T, t/T]."""
    t = torch.arange(1, steps + 1, dtype=torch.float64)
    alphas = torch.exp(-beta_min / steps - 0.5 * (beta_max - beta_min) * (2 * t - 1) / steps ** 2)
    return (1.0 - alphas).float()


class Schedule:
    """betas, alphas = 1 - betas and alpha_bars = cumprod(alphas), indexed by step 0..T-1."""

    def __init__(self, steps: int, beta_min: float, beta_max: float, device: torch.device) -> None:
        self.steps = steps
        self.betas = vp_beta_schedule(steps, beta_min, beta_max).to(device)
        self.alphas = 1.0 - self.betas
        self.alpha_bars = torch.cumprod(self.alphas, dim=0)


def diffuse(actions: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """q(a_t | a_0) = N(sqrt(alpha_bar_t) a_0, (1 - alpha_bar_t) I), sampled with ``noise``."""
    alpha_bar = schedule.alpha_bars[t].unsqueeze(-1)
    return alpha_bar.sqrt() * actions + (1.0 - alpha_bar).sqrt() * noise


EpsModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def ddpm_sample(eps_model: EpsModel, states: torch.Tensor, action_dim: int, schedule: Schedule,
                low: torch.Tensor, high: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Ancestral DDPM sampling from a_T ~ N(0, I): a_{t-1} = (a_t - beta_t / sqrt(1 - alpha_bar_t)
    eps) / sqrt(alpha_t) + sqrt(beta_t) z (no noise at the last step), each step clipped to the
    action box. All noise from ``generator``."""
    n = states.shape[0]
    x = torch.randn((n, action_dim), generator=generator, device=states.device)
    for t in reversed(range(schedule.steps)):
        steps = torch.full((n, 1), float(t), device=states.device)
        eps = eps_model(states, x, steps)
        beta, alpha, alpha_bar = schedule.betas[t], schedule.alphas[t], schedule.alpha_bars[t]
        x = (x - beta / (1.0 - alpha_bar).sqrt() * eps) / alpha.sqrt()
        if t > 0:
            x = x + beta.sqrt() * torch.randn(x.shape, generator=generator, device=x.device)
        x = torch.clamp(x, low, high)
    return x


# ---------------------------------------------------------------------------------------------
# 5. Acting: the safest of the candidates
# ---------------------------------------------------------------------------------------------
def safest_candidate(candidates: torch.Tensor, qh: torch.Tensor) -> torch.Tensor:
    """candidates [n, k, action_dim], their Q_h [n, k] -> the lowest-Q_h candidate of each row [n, action_dim]."""
    best = qh.argmin(dim=1)
    return candidates[torch.arange(candidates.shape[0], device=candidates.device), best]


# ---------------------------------------------------------------------------------------------
# The agent
# ---------------------------------------------------------------------------------------------
METRIC_NAMES = ("actor_loss", "value_loss", "q_loss", "reach_value_loss", "reach_q_loss", "weight_mean",
                "zero_weight_fraction", "feasible_fraction", "q_mean", "v_mean", "qh_mean", "vh_mean")
_NETWORKS = ("actor", "actor_ema", "q", "q_target", "value", "reach_q", "reach_q_target", "reach_value")
_NOISE_SEED_OFFSET = 0x5EED  # the training-noise generator must not replay the sampler's (seeded with cfg.seed)


class FISOR:
    """Reachability critics (Q_h, V_h), IQL reward critics (Q, V) and the weighted diffusion actor."""

    def __init__(self, cfg: Any, env: gym.Env, device: torch.device,
                 data: Optional[Dict[str, np.ndarray]] = None) -> None:
        # ``data`` is not needed: the reward scale lives in the sampler (make_sampler)
        h = check_config(cfg)
        self.cfg, self.hparams, self.device = cfg, h, device
        state_dim, action_dim = env.observation_space.shape[0], env.action_space.shape[0]
        self.action_dim = action_dim
        self.low = torch.as_tensor(env.action_space.low, dtype=torch.float32, device=device)
        self.high = torch.as_tensor(env.action_space.high, dtype=torch.float32, device=device)
        self.actor = Denoiser(state_dim, action_dim, h).to(device)
        self.q = TwinQ(state_dim, action_dim, h["c_hidden_sizes"]).to(device)
        self.value = ValueFunction(state_dim, h["c_hidden_sizes"]).to(device)
        self.reach_q = TwinQ(state_dim, action_dim, h["c_hidden_sizes"]).to(device)
        self.reach_value = ValueFunction(state_dim, h["c_hidden_sizes"]).to(device)
        self.actor_ema = copy.deepcopy(self.actor).requires_grad_(False)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.reach_q_target = copy.deepcopy(self.reach_q).requires_grad_(False)
        lrs = {"q": h["critic_lr"], "reach_q": h["critic_lr"], "value": h["value_lr"], "reach_value": h["value_lr"]}
        # the actor's AdamW has no weight decay (the JAX config's actor_weight_decay=None); its lr follows _actor_lr
        self.optimizers: Dict[str, torch.optim.Optimizer] = {
            "actor": torch.optim.AdamW(self.actor.parameters(), lr=h["actor_lr"], weight_decay=0.0),
            **{name: torch.optim.Adam(getattr(self, name).parameters(), lr=lr) for name, lr in lrs.items()}}
        self.schedule = Schedule(h["diffusion_steps"], h["beta_min"], h["beta_max"], device)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(cfg.seed + _NOISE_SEED_OFFSET)
        self.actor_updates = 0

    # -- training --------------------------------------------------------------------------------
    def _actor_lr(self) -> float:
        """Cosine decay from actor_lr to 0 over actor_lr_decay_steps actor updates (optax's cosine_decay_schedule)."""
        h = self.hparams
        progress = min(self.actor_updates, h["actor_lr_decay_steps"]) / h["actor_lr_decay_steps"]
        return h["actor_lr"] * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _actor_step(self, states: torch.Tensor, actions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """One weighted noise-prediction step: E[w(s, a) ||eps - eps_theta(a_t, s, t)||^2], then the EMA."""
        g, n = self.generator, states.shape[0]
        t = torch.randint(self.schedule.steps, (n,), generator=g, device=self.device)
        noise = torch.randn(actions.shape, generator=g, device=self.device)
        predicted = self.actor(states, diffuse(actions, t, noise, self.schedule), t.unsqueeze(-1).float(), generator=g)
        loss = (weights * (predicted - noise).pow(2).sum(dim=-1)).mean()
        optimizer = self.optimizers["actor"]
        for group in optimizer.param_groups:
            group["lr"] = self._actor_lr()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        self.actor_updates += 1
        soft_update([self.actor_ema], [self.actor], self.hparams["ema_rate"])
        return loss.detach()

    def _step(self, names: Sequence[str], loss: torch.Tensor) -> None:
        for name in names:
            self.optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        for name in names:
            self.optimizers[name].step()

    def train(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """One FISOR iteration in the JAX code's order: two actor updates (the batch's halves), then
        V and V_h, then Q and Q_h on the first critic_batch_size rows, then the target critics."""
        h = self.hparams
        states, next_states = batch["observations"], batch["next_observations"]
        actions = torch.clamp(batch["actions"], self.low, self.high)
        with torch.no_grad():  # the critics as they were before this iteration: they update after the actor
            q = self.q_target(states, actions).min(dim=0).values
            v = self.value(states)
            qh = self.reach_q_target(states, actions).max(dim=0).values  # pessimistic: the worse head
            vh = self.reach_value(states)
            weights = feasibility_weights(q, v, qh, vh, h)
        half = states.shape[0] // 2
        actor_losses = [self._actor_step(states[rows], actions[rows], weights[rows])
                        for rows in (slice(0, half), slice(half, None))]

        m = h["critic_batch_size"]
        s, a, s_next = states[:m], actions[:m], next_states[:m]
        dones, rewards = batch["dones"][:m], batch["rewards"][:m]
        signal = reach_signal(batch["costs"][:m], h["cost_scale"])
        # V: upper expectile of the target Q; V_h: lower expectile of the target Q_h (max over its heads)
        value_loss = expectile_loss(q[:m] - self.value(s), h["reward_expectile"])
        reach_value_loss = reversed_expectile_loss(qh[:m] - self.reach_value(s), h["reach_expectile"])
        self._step(("value", "reach_value"), value_loss + reach_value_loss)
        # Q: r + gamma (1 - done) V(s'); Q_h: the reachability backup, both from the values just updated
        with torch.no_grad():
            q_td = rewards + h["gamma"] * (1.0 - dones) * self.value(s_next)
            qh_td = reach_target(signal, self.reach_value(s_next), dones, h["gamma"])
        q_loss = (self.q(s, a) - q_td).pow(2).mean()
        reach_q_loss = (self.reach_q(s, a) - qh_td).pow(2).mean()
        self._step(("q", "reach_q"), q_loss + reach_q_loss)
        soft_update([self.q_target, self.reach_q_target], [self.q, self.reach_q], h["tau"])

        metrics = {
            "actor_loss": torch.stack(actor_losses).mean(), "value_loss": value_loss, "q_loss": q_loss,
            "reach_value_loss": reach_value_loss, "reach_q_loss": reach_q_loss, "weight_mean": weights.mean(),
            "zero_weight_fraction": (weights == 0).float().mean(), "feasible_fraction": (vh <= 0).float().mean(),
            "q_mean": q.mean(), "v_mean": v.mean(), "qh_mean": qh.mean(), "vh_mean": vh.mean(),
        }
        return {name: metrics[name].detach() for name in METRIC_NAMES}

    # -- acting ----------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """num_candidates actions per state from the EMA diffusion actor, the one with the lowest
        target Q_h (max over its heads) kept; the reward Q plays no part. Noise only from ``generator``."""
        k = self.hparams["num_candidates"]
        states = obs.repeat_interleave(k, dim=0)  # rows i*k .. i*k+k-1 belong to state i
        candidates = ddpm_sample(self.actor_ema, states, self.action_dim, self.schedule, self.low, self.high, generator)
        qh = self.reach_q_target(states, candidates).max(dim=0).values
        return safest_candidate(candidates.view(obs.shape[0], k, -1), qh.view(obs.shape[0], k))

    def policy_at(self, kappa: float) -> BatchPolicy:
        """The same policy at every threshold: FISOR's reachability critic never sees the cost limit."""
        return self.act

    def training_policies(self) -> Dict[str, BatchPolicy]:
        return {"fisor": self.act}

    def evaluation_policies(self, thresholds: Sequence[float]) -> List[Tuple[str, BatchPolicy, List[float], Dict]]:
        return [("fisor", self.act, list(thresholds), {})]

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """Every network (targets and the EMA actor included), every optimizer, the actor-update
        counter (it sets the learning rate) and the training-noise generator."""
        return {"networks": {name: getattr(self, name).state_dict() for name in _NETWORKS},
                "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
                "actor_updates": self.actor_updates,
                "generator": generator_state(self.generator)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        for name in _NETWORKS:
            getattr(self, name).load_state_dict(state["networks"][name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.actor_updates = int(state["actor_updates"])
        if not restore_generator(self.generator, state["generator"]):  # written on another device type
            self.generator.manual_seed(derived_seed(self.cfg.seed + _NOISE_SEED_OFFSET, self.actor_updates))
