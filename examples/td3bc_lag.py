"""TD3+BC-Lag: TD3+BC (Fujimoto & Gu, "A Minimalist Approach to Offline Reinforcement Learning",
NeurIPS 2021) with a Lagrangian cost penalty, plugged into this repository from outside it.

    python scripts/train_baseline.py --algo examples.td3bc_lag:TD3BCLag --task OfflineCarRun-v0

TD3+BC is TD3 whose actor is pulled towards the data's actions (the paper's eq. 3):
    pi = argmax_pi E_(s,a)~D [ lambda Q(s, pi(s)) - (pi(s) - a)^2 ],   lambda = alpha / mean |Q(s, pi(s))|.
The safe variant learns a cost critic Q_c beside the reward critics and maximizes the Lagrangian
Q - mu Q_c instead of Q, with a multiplier mu >= 0 that grows while the policy's expected cost
Q_c(s, pi(s)) exceeds the cost limit per step, as OSRL's BCQ-Lag converts it:
    q_c_limit = kappa (1 - gamma^T) / ((1 - gamma) T)   (kappa: the cost limit, T: the episode length).
Trained against the cost limit, so one run per threshold (``per_threshold``). The hyperparameters
are the paper's (its rewards scaled by OSRL's 0.1, as the other critic baselines here).
docs/add-your-method.md walks through this file.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

from lspc.plugin import Agent, Method, RunConfig, load_generator, save_generator

_NOISE_SEED_OFFSET = 0x7D3  # the target-smoothing noise must not replay the sampler's stream (seeded with cfg.seed)


@dataclass
class TD3BCLagConfig:
    a_hidden_sizes: List[int] = field(default_factory=lambda: [256, 256])  # the actor's hidden layers
    c_hidden_sizes: List[int] = field(default_factory=lambda: [256, 256])  # each critic's
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    multiplier_lr: float = 1e-3  # mu's, on log mu
    gamma: float = 0.99
    tau: float = 0.005  # target networks
    alpha: float = 2.5  # the weight of the value term against behaviour cloning
    policy_noise: float = 0.2  # target policy smoothing, in units of the action bound
    noise_clip: float = 0.5
    policy_freq: int = 2  # critic updates per actor update
    reward_scale: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.gamma < 1 or not 0 < self.tau <= 1:
            raise ValueError(f"need 0 < gamma < 1 and 0 < tau <= 1, got {self.gamma} and {self.tau}")
        if not isinstance(self.policy_freq, int) or self.policy_freq < 1:
            raise ValueError(f"policy_freq must be a positive integer, got {self.policy_freq!r}")


def mlp(sizes: List[int], out_activation: Optional[nn.Module] = None) -> nn.Sequential:
    layers: List[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers, *([out_activation] if out_activation else []))


class TwinQ(nn.Module):
    """Two Q heads; the reward critic's target takes their min, the cost critic's their max (pessimism)."""

    def __init__(self, state_dim: int, action_dim: int, hidden: List[int]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(mlp([state_dim + action_dim, *hidden, 1]) for _ in range(2))

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """[2, batch]."""
        x = torch.cat([state, action], dim=-1)
        return torch.stack([head(x).squeeze(-1) for head in self.heads])


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    with torch.no_grad():
        for t, p in zip(target.parameters(), source.parameters()):
            t.lerp_(p, tau)


class TD3BCLagAgent(Agent):
    _NETWORKS = ("actor", "actor_target", "critic", "critic_target", "cost_critic", "cost_critic_target")

    def __init__(self, cfg: RunConfig, h: TD3BCLagConfig, state_dim: int, action_dim: int, max_action: float,
                 device: torch.device) -> None:
        self.cfg, self.h, self.device, self.max_action = cfg, h, device, max_action
        self.actor = mlp([state_dim, *h.a_hidden_sizes, action_dim], nn.Tanh()).to(device)
        self.critic = TwinQ(state_dim, action_dim, h.c_hidden_sizes).to(device)
        self.cost_critic = TwinQ(state_dim, action_dim, h.c_hidden_sizes).to(device)
        for name in ("actor", "critic", "cost_critic"):
            setattr(self, f"{name}_target", copy.deepcopy(getattr(self, name)).requires_grad_(False))
        self.log_mu = torch.zeros((), device=device, requires_grad=True)  # mu = 1 at the start
        self.optimizers = {
            "actor": torch.optim.Adam(self.actor.parameters(), lr=h.actor_lr),
            "critics": torch.optim.Adam([*self.critic.parameters(), *self.cost_critic.parameters()], lr=h.critic_lr),
            "multiplier": torch.optim.Adam([self.log_mu], lr=h.multiplier_lr)}
        # the expected discounted cost per step that an episode at the cost limit has (OSRL's qc_thres)
        T, gamma = cfg.episode_len, h.gamma
        self.q_c_limit = cfg.cost_limit * (1 - gamma ** T) / (1 - gamma) / T
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(cfg.seed + _NOISE_SEED_OFFSET)
        self.updates = 0
        self.last_actor_loss = torch.zeros((), device=device)  # logged every step, updated every policy_freq

    def _step(self, name: str, loss: torch.Tensor) -> None:
        self.optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers[name].step()

    def train(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        h = self.h
        s, a, s_next = batch["observations"], batch["actions"], batch["next_observations"]
        r, c, not_done = batch["rewards"] * h.reward_scale, batch["costs"], 1.0 - batch["dones"]
        with torch.no_grad():  # TD3's target policy smoothing: clipped noise on the target actor's action
            noise = torch.randn(a.shape, generator=self.generator, device=self.device) * h.policy_noise
            a_next = (self.actor_target(s_next) + noise.clamp(-h.noise_clip, h.noise_clip)) * self.max_action
            a_next = a_next.clamp(-self.max_action, self.max_action)
            q_target = r + h.gamma * not_done * self.critic_target(s_next, a_next).min(dim=0).values
            qc_target = c + h.gamma * not_done * self.cost_critic_target(s_next, a_next).max(dim=0).values
        critic_loss = (self.critic(s, a) - q_target).pow(2).mean(dim=1).sum()
        cost_critic_loss = (self.cost_critic(s, a) - qc_target).pow(2).mean(dim=1).sum()
        self._step("critics", critic_loss + cost_critic_loss)  # each loss reaches its own critic only
        self.updates += 1
        if self.updates % h.policy_freq == 0:  # TD3's delayed actor and target updates
            pi = self.actor(s) * self.max_action
            q, q_c = self.critic(s, pi)[0], self.cost_critic(s, pi)[0]
            mu = self.log_mu.exp()
            lagrangian = q - mu.detach() * q_c
            lam = h.alpha / lagrangian.abs().mean().detach()  # eq. 3's normalization, on the Lagrangian
            actor_loss = -lam * lagrangian.mean() + (pi - a).pow(2).mean()
            self._step("actor", actor_loss)
            # dual ascent: mu grows while the policy's expected cost exceeds the limit
            self._step("multiplier", -mu * (q_c.detach().mean() - self.q_c_limit))
            for name in ("actor", "critic", "cost_critic"):
                soft_update(getattr(self, f"{name}_target"), getattr(self, name), h.tau)
            self.last_actor_loss = actor_loss.detach()
        return {"critic_loss": critic_loss.detach(), "cost_critic_loss": cost_critic_loss.detach(),
                "actor_loss": self.last_actor_loss, "multiplier": self.log_mu.detach().exp()}

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The deterministic actor (TD3+BC evaluates without exploration noise)."""
        return self.actor(obs) * self.max_action

    def state_dict(self) -> Dict[str, object]:
        return {"networks": {name: getattr(self, name).state_dict() for name in self._NETWORKS},
                "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
                "log_mu": self.log_mu.detach().clone(), "updates": self.updates,
                "last_actor_loss": self.last_actor_loss, "generator": save_generator(self.generator)}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        for name in self._NETWORKS:
            getattr(self, name).load_state_dict(state["networks"][name])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        with torch.no_grad():
            self.log_mu.copy_(state["log_mu"])  # in place: its optimizer holds it
        self.updates = int(state["updates"])
        self.last_actor_loss = state["last_actor_loss"].to(self.device)
        load_generator(self.generator, state["generator"], self.cfg.seed + _NOISE_SEED_OFFSET, self.updates)


class TD3BCLag(Method):
    name = "td3bc-lag"
    config_cls = TD3BCLagConfig
    per_threshold = True  # the multiplier trains against cfg.cost_limit

    def build_agent(self, env, device: torch.device, data: Optional[Dict[str, np.ndarray]] = None) -> TD3BCLagAgent:
        return TD3BCLagAgent(self.cfg, self.hparams, env.observation_space.shape[0], env.action_space.shape[0],
                             float(env.action_space.high[0]), device)
