"""LSPC: Latent Safety-Constrained Policy for safe offline RL (Koirala et al., ICLR 2025).

One file, top to bottom like the paper:
  1. networks: IQL reward critics (twin Q, V), cost critics (twin Qc, Vc), the CVAE
     q_alpha(z|s,a) / p_beta(a|s,z), and the latent safety encoder mu_delta(z|s);
  2. losses (paper equations in comments);
  3. the trainer: ``LSPC.train(batch) -> metrics``, one gradient step and nothing else;
  4. the two policies that come out of one run: LSPC-S (restricted latent prior) and
     LSPC-O (reward-optimized latent encoder), plus the unrestricted CVAE policy;
  5. what the shared training loop (``lspc/training.py``: run directory, evaluation schedule,
     checkpoints, resume, faults) needs from LSPC, and ``main``.
docs/differences.md lists where the authors' release and the paper differ and which behaviour we
follow.

    python train_lspc_iql.py --task OfflineBallRun-v0 --dataset_path data.hdf5
"""
from __future__ import annotations

import contextlib
import copy
import functools
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pyrallis
import torch
import torch.nn as nn
import torch.nn.functional as F

from lspc import LSPCError, training
from lspc.data.dataset import TransitionBuffer, load_dataset
from lspc.envs import action_bound
from lspc.losses import expectile_loss
from lspc.training import Method
from lspc_iql_configs import TrainConfig, config_dict, load_config

# osrl prints a notice about an optional package (used by its CDT baseline) on import
with contextlib.redirect_stdout(open(os.devnull, "w")):
    from osrl.common.net import mlp

ENCODER_LOG_STD = (-4.0, 15.0)  # CVAE encoder q_alpha
SAFETY_ENCODER_LOG_STD = (-10.0, 2.0)  # latent safety encoder mu_delta


# ---------------------------------------------------------------------------------------------
# 1. Networks (as in the authors' lspc_iql.py: width 256, ReLU, two hidden layers)
# ---------------------------------------------------------------------------------------------
def _mlp(in_dim: int, out_dim: int, hidden: int) -> nn.Sequential:
    # in-place ReLU: a linear layer's backward does not need its output, and on the CPU skipping
    # the extra activation buffer measured about 7% faster steps (scripts/bench_train.py)
    return mlp([in_dim, hidden, hidden, out_dim], functools.partial(nn.ReLU, inplace=True))


class EnsembleMLP(nn.Module):
    """``members`` independent MLPs of the same shape, evaluated together: one batched matmul per
    layer instead of one per member (fewer kernel launches on a GPU, the same FLOPs).
    Each member is initialised like ``nn.Linear``. Output: [members, batch, out_dim]."""

    def __init__(self, members: int, in_dim: int, out_dim: int, hidden: int) -> None:
        super().__init__()
        sizes = [in_dim, hidden, hidden, out_dim]
        self.members = members
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = fan_in ** -0.5
            self.weights.append(nn.Parameter(torch.empty(members, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, fan_out).uniform_(-bound, bound)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.expand(self.members, *x.shape)  # every member reads the same input
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(bias, h, weight)
            if layer < len(self.weights) - 1:
                h = torch.relu_(h)  # in place, as in _mlp
        return h


class TwinQ(nn.Module):
    """Two independent Q heads as one ensemble; reward critics combine them with min, cost critics with max."""

    def __init__(self, state_dim: int, action_dim: int, hidden: int) -> None:
        super().__init__()
        self.heads = EnsembleMLP(2, state_dim + action_dim, 1, hidden)

    def both(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """[2, batch]: Q_1(s, a) and Q_2(s, a)."""
        return self.heads(torch.cat([state, action], dim=-1)).squeeze(-1)


class ValueFunction(nn.Module):
    def __init__(self, state_dim: int, hidden: int) -> None:
        super().__init__()
        self.v = _mlp(state_dim, 1, hidden)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.v(state).squeeze(-1)


class CVAE(nn.Module):
    """Encoder q_alpha(z | s, a) and deterministic decoder p_beta(a | s, z) = max_action * tanh(.)."""

    def __init__(self, state_dim: int, action_dim: int, latent_dim: int, hidden: int, max_action: float) -> None:
        super().__init__()
        self.encoder = _mlp(state_dim + action_dim, 2 * latent_dim, hidden)
        self.decoder = _mlp(state_dim + latent_dim, action_dim, hidden)
        self.max_action = max_action

    def encode(self, state: torch.Tensor, action: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.encoder(torch.cat([state, action], dim=-1)).chunk(2, dim=-1)
        return mean, log_std.clamp(*ENCODER_LOG_STD)

    def decode(self, state: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.max_action * torch.tanh(self.decoder(torch.cat([state, z], dim=-1)))

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, log_std = self.encode(state, action)
        z = mean + log_std.exp() * torch.randn_like(mean)  # reparameterization
        return self.decode(state, z), mean, log_std


class LatentSafetyEncoder(nn.Module):
    """mu_delta(z | s): a Gaussian over the CVAE's latent space, squashed to (-eps_O, eps_O)."""

    def __init__(self, state_dim: int, latent_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = _mlp(state_dim, 2 * latent_dim, hidden)

    def forward(self, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(state).chunk(2, dim=-1)
        return mean, log_std.clamp(*SAFETY_ENCODER_LOG_STD)

    def sample(self, state: torch.Tensor, eps_o: float, generator: Optional[torch.Generator] = None,
               deterministic: bool = False) -> torch.Tensor:
        """z = eps_O * tanh(u), u ~ N(mean, std) (reparameterized), or u = mean when deterministic."""
        mean, log_std = self(state)
        if deterministic:
            return eps_o * torch.tanh(mean)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return eps_o * torch.tanh(mean + log_std.exp() * noise)


# ---------------------------------------------------------------------------------------------
# 2. Losses
# ---------------------------------------------------------------------------------------------
# expectile_loss (lspc/losses.py): IQL's asymmetric L2, mean(|xi - 1[u < 0]| * u^2), used for both value functions


def exp_weight(advantage: torch.Tensor, temperature: float, max_weight: float) -> torch.Tensor:
    """min(exp(temperature * advantage), max_weight): the AWR-style weights of eq. 10 and eq. 14."""
    return torch.exp(temperature * advantage).clamp(max=max_weight)


def gaussian_kl(mean: torch.Tensor, log_std: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-sample KL(N(mean, std^2) || N(0, I)), averaged (release) or summed over latent dims."""
    kl = 0.5 * (mean.pow(2) + (2 * log_std).exp() - 1.0) - log_std
    return kl.mean(dim=-1) if reduction == "mean" else kl.sum(dim=-1)


def cost_weights(cost_value: torch.Tensor, cost_q: torch.Tensor, temperature: float, max_weight: float,
                 mask_threshold: float) -> torch.Tensor:
    """w_c = min(exp(lambda_c * (V_c(s) - Q_c(s, a))), max) (eq. 10), zero where Q_c or V_c > threshold."""
    weights = exp_weight(cost_value - cost_q, temperature, max_weight)
    unsafe = (cost_value > mask_threshold) | (cost_q > mask_threshold)
    return weights.masked_fill(unsafe, 0.0)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Gradients flow through ``module`` to its inputs but its parameters get none."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def soft_update(targets: List[nn.Module], sources: List[nn.Module], tau: float) -> None:
    """theta_target <- (1 - tau) theta_target + tau theta, for all pairs in one foreach kernel."""
    with torch.no_grad():
        target_params = [p for target in targets for p in target.parameters()]
        source_params = [p for source in sources for p in source.parameters()]
        torch._foreach_lerp_(target_params, source_params, tau)


# ---------------------------------------------------------------------------------------------
# 3. The trainer
# ---------------------------------------------------------------------------------------------
METRIC_NAMES = (
    "value_loss", "q_loss", "cost_value_loss", "cost_q_loss", "cvae_loss", "cvae_recon", "cvae_kl",
    "safety_encoder_loss", "reward_weight_mean", "reward_weight_clipped", "cost_weight_mean",
    "cost_weight_clipped", "cost_weight_masked", "q_mean", "v_mean", "cost_q_mean", "cost_v_mean",
)
_MODULES = ("q", "q_target", "value", "cost_q", "cost_q_target", "cost_value", "cvae", "safety_encoder")
# Losses (1)-(5) are all computed from the parameters as they were before the step, and each one's
# gradient reaches only its own network, so one backward pass and one Adam over their union is the
# same update as five separate steps (Adam is elementwise). The safety encoder (6) must wait for the
# updated decoder, so it has its own.
_OPTIMIZER_GROUPS = {"critics_cvae": ("q", "value", "cost_q", "cost_value", "cvae"), "safety_encoder": ("safety_encoder",)}


class LSPC:
    def __init__(self, state_dim: int, action_dim: int, max_action: float, cfg: TrainConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        hidden = cfg.hidden_dim
        self.q = TwinQ(state_dim, action_dim, hidden).to(device)
        self.value = ValueFunction(state_dim, hidden).to(device)
        self.cost_q = TwinQ(state_dim, action_dim, hidden).to(device)
        self.cost_value = ValueFunction(state_dim, hidden).to(device)
        self.cvae = CVAE(state_dim, action_dim, cfg.latent_dim, hidden, max_action).to(device)
        self.safety_encoder = LatentSafetyEncoder(state_dim, cfg.latent_dim, hidden).to(device)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.cost_q_target = copy.deepcopy(self.cost_q).requires_grad_(False)
        # fused: one kernel per optimizer step instead of several per parameter tensor
        self.optimizers = {
            group: torch.optim.Adam([p for name in names for p in getattr(self, name).parameters()],
                                    lr=cfg.learning_rate, fused=True)
            for group, names in _OPTIMIZER_GROUPS.items()
        }
        self._losses = self.critic_and_cvae_losses
        self._safety_encoder_loss = self.safety_encoder_loss
        if cfg.compile:
            # on CUDA, "reduce-overhead" replays each graph (forward and backward) as a CUDA graph
            mode = "reduce-overhead" if device.type == "cuda" else "default"
            self._losses = torch.compile(self._losses, mode=mode)
            self._safety_encoder_loss = torch.compile(self._safety_encoder_loss, mode=mode)

    @classmethod
    def for_env(cls, env, cfg: TrainConfig, device: torch.device) -> "LSPC":
        """Sized for ``env``'s observation and action spaces (max_action from the action bound)."""
        return cls(env.observation_space.shape[0], env.action_space.shape[0], action_bound(env, "LSPC"), cfg, device)

    def critic_and_cvae_losses(self, batch: Dict[str, torch.Tensor]
                               ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        """Losses (1)-(5) summed (see _OPTIMIZER_GROUPS), the (detached) weights
        of loss (6), and the step's metrics."""
        cfg = self.cfg
        s, a, s_next = batch["observations"], batch["actions"], batch["next_observations"]
        r, c, not_done = batch["rewards"], batch["costs"], 1.0 - batch["dones"]

        with torch.no_grad():
            q_target = torch.min(*self.q_target.both(s, a))
            next_v = self.value(s_next)
            # costs are non-negative, so are their value estimates (release behaviour)
            cost_q_target = torch.max(*self.cost_q_target.both(s, a)).clamp(min=0.0)
            next_cost_v = self.cost_value(s_next).clamp(min=0.0)

        # (1) reward V: upper expectile of the target Q over dataset actions (IQL)
        v = self.value(s)
        reward_advantage = q_target - v
        value_loss = expectile_loss(reward_advantage, cfg.iql_tau)

        # (2) reward Q: one-step TD towards r + gamma * V(s'); the mean over both heads is (L_Q1 + L_Q2) / 2
        q = self.q.both(s, a)
        td_target = r + cfg.discount * not_done * next_v
        q_loss = F.mse_loss(q, td_target.expand_as(q))

        # (3) cost V: u = V_c - max(Q_c); over-shooting costs xi, so V_c settles at the lower
        # expectile of Q_c: the cost-to-go of the safest in-distribution actions
        cost_v = self.cost_value(s)
        # the authors' release's clamp (clamp_cost_value, off by default): V_c(s) >= 0 here and in (5),
        # so V_c gets no gradient where it is negative; cost_v_mean logs the network's own output
        cost_v_used = cost_v.clamp(min=0.0) if cfg.clamp_cost_value else cost_v
        cost_value_loss = expectile_loss(cost_v_used - cost_q_target, cfg.iql_tau)

        # (4) cost Q: c + gamma * V_c(s')
        qc = self.cost_q.both(s, a)
        cost_td_target = c + cfg.discount * not_done * next_cost_v
        cost_q_loss = F.mse_loss(qc, cost_td_target.expand_as(qc))

        # (5) CVAE: cost-advantage weighted ELBO (eq. 10 / 43); safer-than-average actions weigh more.
        # Squared error is the log-likelihood of a fixed-variance Gaussian decoder.
        w_cost = cost_weights(cost_v_used.detach(), cost_q_target, cfg.beta_cost, cfg.max_weight, cfg.safe_qc_vc_threshold)
        w_reward = exp_weight(reward_advantage.detach(), cfg.beta_reward, cfg.max_weight)  # weighs (6)
        # Converse LSPC-O (appendix A.3.2): the roles swap. The CVAE models high-reward actions
        # (eq. 10 with w_r of eq. 14) and the latent encoder moves to low-cost actions inside that
        # latent space (eq. 14 with w_c of eq. 10).
        w_cvae, w_encoder = (w_reward, w_cost) if cfg.converse else (w_cost, w_reward)
        reconstruction, mean, log_std = self.cvae(s, a)
        recon = (reconstruction - a).pow(2).sum(dim=-1)
        kl = gaussian_kl(mean, log_std, cfg.kl_reduction)
        cvae_loss = (w_cvae * (recon + cfg.vae_beta * kl)).mean()

        total = value_loss + q_loss + cost_value_loss + cost_q_loss + cvae_loss
        metrics = {
            "value_loss": value_loss, "q_loss": q_loss, "cost_value_loss": cost_value_loss, "cost_q_loss": cost_q_loss,
            "cvae_loss": cvae_loss, "cvae_recon": recon.mean(), "cvae_kl": kl.mean(),
            "cost_weight_mean": w_cost.mean(), "cost_weight_clipped": (w_cost >= cfg.max_weight).float().mean(),
            "cost_weight_masked": (w_cost == 0).float().mean(), "q_mean": q_target.mean(), "v_mean": v.mean(),
            "cost_q_mean": cost_q_target.mean(), "cost_v_mean": cost_v.mean(),
            "reward_weight_mean": w_reward.mean(), "reward_weight_clipped": (w_reward >= cfg.max_weight).float().mean(),
        }
        return total, w_encoder, metrics

    def safety_encoder_loss(self, batch: Dict[str, torch.Tensor], weights: torch.Tensor
                            ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """(6) latent safety encoder: AWR in latent space through the decoder (eq. 14 / 44), with the
        reward-advantage weights (the cost-advantage ones in Converse LSPC-O)."""
        s, a = batch["observations"], batch["actions"]
        z = self.safety_encoder.sample(s, self.cfg.max_latent_action)
        decoded = self.cvae.decode(s, z)
        loss = (weights * (decoded - a).pow(2).sum(dim=-1)).mean()
        return loss, {"safety_encoder_loss": loss}

    def _step(self, group: str, loss: torch.Tensor) -> None:
        optimizer = self.optimizers[group]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def train(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """One gradient step of every network, losses (1)-(7). Returns detached 0-d tensors, valid until
        the next call when the step is compiled on CUDA (CUDA graphs reuse their output memory)."""
        if self.cfg.compile and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs are consumed
        total, encoder_weights, metrics = self._losses(batch)
        self._step("critics_cvae", total)
        # the safety encoder learns through the just-updated decoder, frozen: only delta moves
        with frozen(self.cvae):
            loss, encoder_metrics = self._safety_encoder_loss(batch, encoder_weights)
            self._step("safety_encoder", loss)
        # (7) target critics
        soft_update([self.q_target, self.cost_q_target], [self.q, self.cost_q], self.cfg.tau)
        metrics.update(encoder_metrics)
        return {name: metrics[name].detach() for name in METRIC_NAMES}

    # -----------------------------------------------------------------------------------------
    # 4. The policies. Each maps an observation batch to an action batch and
    #    draws its noise from ``generator`` so that evaluation is reproducible.
    # -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def act_lspc_s(self, obs: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """LSPC-S: z ~ N(0, I) restricted to [-eps_S, eps_S], decoded by p_beta."""
        eps = self.cfg.vae_clamper
        shape = (obs.shape[0], self.cfg.latent_dim)
        if self.cfg.lspc_s_sampling == "truncated":  # inverse CDF of the normal truncated to the box
            low = torch.special.ndtr(torch.tensor(-eps, device=obs.device))
            u = torch.rand(shape, generator=generator, device=obs.device)
            z = torch.special.ndtri(low + (1 - 2 * low) * u).clamp(-eps, eps)  # float32 rounding at the edge
        else:
            z = torch.randn(shape, generator=generator, device=obs.device)
            z = z.clamp(-eps, eps) if self.cfg.lspc_s_sampling == "clamp" else eps * torch.tanh(z)
        return self.cvae.decode(obs, z)

    @torch.no_grad()
    def act_lspc_o(self, obs: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """LSPC-O: z from the latent safety encoder mu_delta(s), squashed to (-eps_O, eps_O)."""
        deterministic = self.cfg.lspc_o_sampling == "deterministic"
        z = self.safety_encoder.sample(obs, self.cfg.max_latent_action, generator, deterministic)
        return self.cvae.decode(obs, z)

    @torch.no_grad()
    def act_cvae(self, obs: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The unrestricted CVAE policy (the paper's ablation): z ~ N(0, I)."""
        z = torch.randn((obs.shape[0], self.cfg.latent_dim), generator=generator, device=obs.device)
        return self.cvae.decode(obs, z)

    def training_policies(self) -> Dict[str, Any]:
        """What every evaluation during training scores: LSPC-O and LSPC-S (keys of LSPCMethod.policies)."""
        return {"o": self.act_lspc_o, "s": self.act_lspc_s}

    def evaluation_policies(self, thresholds: List[float]) -> List[Tuple[str, Any, List[float], Dict]]:
        """What eval_lspc.py scores, (name, policy, thresholds, notes): every policy at every threshold,
        since none of them sees the threshold."""
        policies = (("lspc-o", self.act_lspc_o), ("lspc-s", self.act_lspc_s), ("cvae", self.act_cvae))
        return [(name, policy, list(thresholds), {}) for name, policy in policies]

    def state_dict(self) -> Dict[str, dict]:
        state = {name: getattr(self, name).state_dict() for name in _MODULES}
        state.update({f"{name}_optimizer": opt.state_dict() for name, opt in self.optimizers.items()})
        return state

    def load_state_dict(self, state: Dict[str, dict]) -> None:
        for name in _MODULES:
            getattr(self, name).load_state_dict(state[name])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[f"{name}_optimizer"])


# ---------------------------------------------------------------------------------------------
# 5. Training: what the shared loop (lspc/training.py) needs from LSPC
# ---------------------------------------------------------------------------------------------
class LSPCMethod(Method):
    """LSPC's data, agent and the two policies every evaluation during training scores. One run
    serves every cost threshold: cost_limit only names the run and picks its best checkpoints."""

    policies = {"o": ("eval", "model_best_o.pt"), "s": ("eval_star", "model_best_s.pt")}

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__(cfg)
        self.label = cfg.task

    def config_yaml(self) -> str:
        return pyrallis.dump(self.cfg)

    def config_dict(self) -> Dict[str, Any]:
        return config_dict(self.cfg)

    def load_data(self, env) -> Dict[str, Any]:
        cfg = self.cfg
        data = load_dataset(env, cfg.dataset_path, density=cfg.density, noise_scale=cfg.noise_scale,
                            outliers_percent=cfg.outliers_percent, inpaint_ranges=cfg.inpaint_ranges,
                            cost_limit=cfg.cost_limit, seed=cfg.seed, data_ratio=cfg.data_ratio)
        if cfg.batch_size > len(data["observations"]):
            raise LSPCError(f"batch_size {cfg.batch_size} is larger than the dataset ({len(data['observations'])} transitions)")
        return data

    def make_sampler(self, data: Dict[str, Any], device: torch.device) -> TransitionBuffer:
        cfg = self.cfg
        return TransitionBuffer(data, device, cfg.seed, reward_scale=cfg.reward_scale,
                                bootstrap_on_timeout=cfg.bootstrap_on_timeout)

    def make_agent(self, env, device: torch.device, data: Optional[Dict[str, Any]] = None) -> "LSPC":
        return LSPC.for_env(env, self.cfg, device)


def train(cfg: TrainConfig) -> str:
    """Train LSPC as configured; returns the run directory."""
    return training.train(LSPCMethod(cfg))


def main(argv: Optional[List[str]] = None) -> None:
    training.run_training_cli(load_config, LSPCMethod, argv)


if __name__ == "__main__":
    main()
