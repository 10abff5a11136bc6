"""LSPC: Latent Safety-Constrained Policy for safe offline RL (Koirala et al., ICLR 2025).

One file, top to bottom like the paper:
  1. networks: IQL reward critics (twin Q, V), cost critics (twin Qc, Vc), the CVAE
     q_alpha(z|s,a) / p_beta(a|s,z), and the latent safety encoder mu_delta(z|s);
  2. losses (paper equations in comments);
  3. the trainer: ``LSPC.train(batch) -> metrics``, one gradient step and nothing else;
  4. the two policies that come out of one run: LSPC-S (restricted latent prior) and
     LSPC-O (reward-optimized latent encoder), plus the unrestricted CVAE policy;
  5. many seeds trained as one stacked model (``--seeds``);
  6. what the shared training loop (``lspc/training.py``: run directory, evaluation schedule,
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
from torch.overrides import TorchFunctionMode

from lspc import LSPCError, training
from lspc.data.dataset import TransitionBuffer, load_dataset
from lspc.envs import action_bound
from lspc.losses import expectile_loss
from lspc.training import Method
from lspc_iql_configs import TrainConfig, config_dict, load_config, seed_configs

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
    # the extra activation buffer measured about 7% faster steps (tools/bench/bench_train.py)
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

    def forward(self, state: torch.Tensor, action: torch.Tensor, noise: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, log_std = self.encode(state, action)
        z = mean + log_std.exp() * noise  # reparameterization, noise ~ N(0, I)
        return self.decode(state, z), mean, log_std


class LatentSafetyEncoder(nn.Module):
    """mu_delta(z | s): a Gaussian over the CVAE's latent space, squashed to (-eps_O, eps_O)."""

    def __init__(self, state_dim: int, latent_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = _mlp(state_dim, 2 * latent_dim, hidden)

    def forward(self, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(state).chunk(2, dim=-1)
        return mean, log_std.clamp(*SAFETY_ENCODER_LOG_STD)

    def sample(self, state: torch.Tensor, eps_o: float, noise: Optional[torch.Tensor]) -> torch.Tensor:
        """z = eps_O * tanh(u), u = mean + std * noise with noise ~ N(0, I) (reparameterized), or u = mean
        when noise is None (deterministic)."""
        mean, log_std = self(state)
        if noise is None:
            return eps_o * torch.tanh(mean)
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


def compiled(loss, cfg: TrainConfig, device: torch.device):
    """``loss`` under torch.compile with --compile (else itself). On CUDA, "reduce-overhead" replays each
    graph (forward and backward) as a CUDA graph."""
    if not cfg.compile:
        return loss
    return torch.compile(loss, mode="reduce-overhead" if device.type == "cuda" else "default")


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
        self._losses = compiled(self.critic_and_cvae_losses, cfg, device)
        self._safety_encoder_loss = compiled(self.safety_encoder_loss, cfg, device)

    @classmethod
    def for_env(cls, env, cfg: TrainConfig, device: torch.device) -> "LSPC":
        """Sized for ``env``'s observation and action spaces (max_action from the action bound)."""
        return cls(env.observation_space.shape[0], env.action_space.shape[0], action_bound(env, "LSPC"), cfg, device)

    def step_noise(self, batch_size: int, generator: Optional[torch.Generator] = None
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The step's two N(0, I) draws: the CVAE's reparameterization noise of (5), then the latent
        safety encoder's of (6), in the order the step uses them (from the global generator by default)."""
        shape = (batch_size, self.cfg.latent_dim)
        return tuple(torch.randn(shape, generator=generator, device=self.device) for _ in range(2))

    def critic_and_cvae_losses(self, batch: Dict[str, torch.Tensor], cvae_noise: torch.Tensor
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
        reconstruction, mean, log_std = self.cvae(s, a, cvae_noise)
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

    def safety_encoder_loss(self, batch: Dict[str, torch.Tensor], weights: torch.Tensor, noise: torch.Tensor
                            ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """(6) latent safety encoder: AWR in latent space through the decoder (eq. 14 / 44), with the
        reward-advantage weights (the cost-advantage ones in Converse LSPC-O)."""
        s, a = batch["observations"], batch["actions"]
        z = self.safety_encoder.sample(s, self.cfg.max_latent_action, noise)
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
        cvae_noise, encoder_noise = self.step_noise(batch["observations"].shape[0])
        total, encoder_weights, metrics = self._losses(batch, cvae_noise)
        self._step("critics_cvae", total)
        # the safety encoder learns through the just-updated decoder, frozen: only delta moves
        with frozen(self.cvae):
            loss, encoder_metrics = self._safety_encoder_loss(batch, encoder_weights, encoder_noise)
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
        noise = None if self.cfg.lspc_o_sampling == "deterministic" else \
            torch.randn((obs.shape[0], self.cfg.latent_dim), generator=generator, device=obs.device)
        z = self.safety_encoder.sample(obs, self.cfg.max_latent_action, noise)
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
# 5. Many seeds as one model (--seeds): the step above, vmapped over stacked parameters
# ---------------------------------------------------------------------------------------------
class _MatmulPlusBias(TorchFunctionMode):
    """Linear layers under vmap as a batched matmul plus the bias. vmap's own rule for addmm and baddbmm
    (what ``nn.Linear`` and ``EnsembleMLP`` call) scales the product and the bias by alpha and beta even
    when they are 1: a kernel more per layer forward and one more backward. nn.Linear's product is taken
    as (W x^T)^T so that the weight's gradient comes out in the weight's layout, with no copy."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.linear and not kwargs:
            x, weight, bias = args
            return torch.matmul(weight, x.mT).mT + bias
        if func is torch.baddbmm and not kwargs:  # EnsembleMLP's baddbmm(bias, input, weight)
            bias, x, weight = args
            return torch.matmul(x, weight) + bias
        return func(*args, **(kwargs or {}))


class _Networks(nn.ModuleDict):
    """LSPC's networks as one module, so that torch.func.functional_call can swap in one seed's
    parameters while ``fn`` (a loss of LSPC) runs."""

    def forward(self, fn, *args):
        return fn(*args)


class StackedLSPC:
    """``len(members)`` seeds of LSPC trained as one model. Every parameter and Adam moment gets a
    leading seed dimension, and the single-seed losses above run once per step under
    ``torch.func.vmap``, so each layer is one batched matmul over all seeds (a GPU launches the kernels
    of one seed's step, not N times as many). Nothing mixes seeds: each seed's loss is the sum's term
    of its own parameters, Adam is elementwise, and each seed draws its batches and its noise from its
    own generators, in the order its single-seed run draws them from the global one. So seed k follows
    ``--seed k`` up to the rounding of batched kernels. ``--compile`` compiles the two vmapped losses as
    it compiles LSPC's.

    ``members[k]`` is seed k's ``LSPC``, its parameters views of row k: its policies score that seed,
    and ``state_dicts()[k]`` is a single-seed LSPC's ``state_dict``, optimizers included."""

    def __init__(self, members: List[LSPC], noise_generators: List[torch.Generator]) -> None:
        self.members, self.noise_generators = members, noise_generators
        template = members[0]
        self.cfg, self.device = template.cfg, template.device
        self.networks = _Networks({name: getattr(template, name) for name in _MODULES})
        member_networks = [_Networks({name: getattr(member, name) for name in _MODULES}) for member in members]
        names = [name for name, _ in self.networks.named_parameters()]
        with torch.no_grad():  # Parameters: a compiled step's CUDA graphs read them in place, not copied in
            self.params = {name: nn.Parameter(torch.stack([networks.get_parameter(name)
                                                           for networks in member_networks]))
                           for name in names}
        for name, stacked in self.params.items():
            stacked.requires_grad_(name.split(".")[0] not in ("q_target", "cost_q_target"))
            module_name, _, leaf = name.rpartition(".")
            for networks, row in zip(member_networks, stacked.detach()):
                setattr(networks.get_submodule(module_name), leaf, nn.Parameter(row, requires_grad=False))
        for member in members:
            member.optimizers = None  # the stacked optimizers below train every member
        self.optimizer_params = {group: [name for name in names if name.split(".")[0] in modules]
                                 for group, modules in _OPTIMIZER_GROUPS.items()}
        self.optimizers = {group: torch.optim.Adam([self.params[name] for name in group_params],
                                                   lr=self.cfg.learning_rate, fused=True)
                           for group, group_params in self.optimizer_params.items()}
        self.targets = [(self.params[name], self.params[name.replace("_target", "", 1)])
                        for name in names if name.startswith(("q_target.", "cost_q_target."))]

        def one_seed(loss):
            def call(params, *args):
                return torch.func.functional_call(self.networks, params, (loss, *args))

            def stacked(*args):
                with _MatmulPlusBias():
                    return torch.func.vmap(call)(*args)
            return stacked

        self._losses = compiled(one_seed(template.critic_and_cvae_losses), self.cfg, self.device)
        self._safety_encoder_loss = compiled(one_seed(template.safety_encoder_loss), self.cfg, self.device)

    _step = LSPC._step  # one optimizer group's update, over every seed's parameters at once

    def train(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """One gradient step of every seed (a batch of [seeds, batch, ...]); metrics of shape [seeds], valid
        until the next call when compiled on CUDA (as LSPC.train's)."""
        if self.cfg.compile and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        noises = [member.step_noise(batch["observations"].shape[1], generator)
                  for member, generator in zip(self.members, self.noise_generators)]
        cvae_noise, encoder_noise = (torch.stack(draws) for draws in zip(*noises))
        total, encoder_weights, metrics = self._losses(self.params, batch, cvae_noise)
        self._step("critics_cvae", total.sum())  # seed k's parameters get seed k's gradient only
        # the safety encoder learns through the just-updated decoder, frozen (detached): only delta moves
        params = {name: p.detach() if name.startswith("cvae.") else p for name, p in self.params.items()}
        loss, encoder_metrics = self._safety_encoder_loss(params, batch, encoder_weights, encoder_noise)
        self._step("safety_encoder", loss.sum())
        with torch.no_grad():  # (7) target critics
            torch._foreach_lerp_([t for t, _ in self.targets], [p for _, p in self.targets], self.cfg.tau)
        metrics.update(encoder_metrics)
        return {name: metrics[name].detach() for name in METRIC_NAMES}

    def state_dicts(self) -> List[Dict[str, dict]]:
        """Each seed's state in the layout of ``LSPC.state_dict`` (a single-seed run loads it)."""
        optimizer_states = {group: optimizer.state_dict() for group, optimizer in self.optimizers.items()}
        states = []
        for k, member in enumerate(self.members):
            state = {name: {key: value.clone() for key, value in getattr(member, name).state_dict().items()}
                     for name in _MODULES}
            for group, full in optimizer_states.items():
                state[f"{group}_optimizer"] = {
                    "state": {i: {key: value if key == "step" else value[k].clone() for key, value in moments.items()}
                              for i, moments in full["state"].items()},
                    "param_groups": full["param_groups"]}
            states.append(state)
        return states

    def load_state_dicts(self, states: List[Dict[str, dict]]) -> None:
        with torch.no_grad():
            for member, state in zip(self.members, states):
                for name in _MODULES:
                    getattr(member, name).load_state_dict(state[name])  # copies into the row views
        for group, optimizer in self.optimizers.items():
            saved = [state[f"{group}_optimizer"] for state in states]
            optimizer.load_state_dict({
                "state": {i: {key: value if key == "step" else torch.stack([s["state"][i][key] for s in saved])
                              for key, value in moments.items()}
                          for i, moments in saved[0]["state"].items()},
                "param_groups": saved[0]["param_groups"]})


# ---------------------------------------------------------------------------------------------
# 6. Training: what the shared loop (lspc/training.py) needs from LSPC
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
        return TransitionBuffer(data, device, cfg.seed if cfg.seeds is None else cfg.seeds,
                                reward_scale=cfg.reward_scale, bootstrap_on_timeout=cfg.bootstrap_on_timeout)

    def make_agent(self, env, device: torch.device, data: Optional[Dict[str, Any]] = None) -> "LSPC":
        return LSPC.for_env(env, self.cfg, device)

    def seed_methods(self) -> List["LSPCMethod"]:
        return [self] if self.cfg.seeds is None else [LSPCMethod(cfg) for cfg in seed_configs(self.cfg)]

    def stack(self, agents: List[LSPC], noise_generators: List[torch.Generator]) -> StackedLSPC:
        return StackedLSPC(agents, noise_generators)


def train(cfg: TrainConfig) -> str:
    """Train LSPC as configured; returns the run directory."""
    return training.train(LSPCMethod(cfg))


def main(argv: Optional[List[str]] = None) -> None:
    training.run_training_cli(load_config, LSPCMethod, argv)


if __name__ == "__main__":
    main()
