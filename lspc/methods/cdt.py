"""What CDT (osrl-lib's Constrained Decision Transformer) needs around osrl's own model and trainer.

1. Per-task settings from OSRL's ``examples/configs/cdt_configs.py``: the evaluation prompts
   (target return, target cost), one per threshold of the task in order, and the Pareto
   augmentation's parameters, tuned to DSRL's reward scales (OSRL issue 20). OSRL's
   ``CDTMediumDenseConfig`` has no override and inherits CarCircle's values (OSRL issue 6): here it
   takes the other medium MetaDrive tasks'. CarCircle's third prompt targets cost 50 for the
   threshold 40, as in OSRL. ``max_reward_warning`` says so when the data's returns exceed
   ``max_reward`` (data on another reward scale would otherwise silently spoil the augmentation).
2. ``SequenceSampler``: osrl's ``SequenceDataset`` builds the trajectories, the Pareto-frontier
   augmentation and the cost-weighted trajectory probabilities; its ``__iter__`` draws with
   unseeded ``np.random``/``random`` in DataLoader workers, so batches come from here instead: the
   same windows (a trajectory by those probabilities, a uniform start, ``seq_len`` steps, zero
   padding past the end), gathered on the device with a seeded generator.
3. ``CDTPolicy``: the batched form of osrl's ``CDTTrainer.rollout``, a policy with per-episode
   state (history, return-to-go, cost-to-go) for ``lspc.evaluation.Evaluator``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from lspc import LSPCError

# task: ((return, cost) prompts for the task's thresholds in order), deg, max_reward, max_rew_decrease, min_reward
_TASKS: Dict[str, Tuple[Tuple[Tuple[float, float], ...], int, float, float, float]] = {
    "OfflineAntRun-v0": (((700, 10), (750, 20), (800, 40)), 3, 1000, 150, 1),
    "OfflineAntCircle-v0": (((300, 10), (350, 20), (400, 40)), 2, 500, 100, 1),
    "OfflineBallRun-v0": (((500, 10), (500, 20), (700, 40)), 2, 1400, 200, 1),
    "OfflineBallCircle-v0": (((700, 10), (750, 20), (800, 40)), 2, 1000, 200, 1),
    "OfflineCarRun-v0": (((575, 10), (575, 20), (575, 40)), 0, 600, 100, 1),
    "OfflineCarCircle-v0": (((450, 10), (500, 20), (550, 50)), 4, 600, 100, 1),
    "OfflineDroneRun-v0": (((400, 10), (500, 20), (600, 40)), 1, 700, 100, 1),
    "OfflineDroneCircle-v0": (((700, 10), (750, 20), (800, 40)), 1, 1000, 100, 1),
    "OfflineCarButton1Gymnasium-v0": (((35, 20), (35, 40), (35, 80)), 0, 45, 10, 1),
    "OfflineCarButton2Gymnasium-v0": (((40, 20), (40, 40), (40, 80)), 0, 50, 10, 1),
    "OfflineCarCircle1Gymnasium-v0": (((20, 20), (22.5, 40), (25, 80)), 1, 30, 10, 1),
    "OfflineCarCircle2Gymnasium-v0": (((20, 20), (21, 40), (22, 80)), 1, 30, 10, 1),
    "OfflineCarGoal1Gymnasium-v0": (((40, 20), (40, 40), (40, 80)), 1, 50, 5, 1),
    "OfflineCarGoal2Gymnasium-v0": (((30, 20), (30, 40), (30, 80)), 1, 35, 5, 1),
    "OfflineCarPush1Gymnasium-v0": (((15, 20), (15, 40), (15, 80)), 0, 20, 5, 1),
    "OfflineCarPush2Gymnasium-v0": (((12, 20), (12, 40), (12, 80)), 0, 15, 3, 1),
    "OfflinePointButton1Gymnasium-v0": (((40, 20), (40, 40), (40, 80)), 0, 45, 5, 1),
    "OfflinePointButton2Gymnasium-v0": (((40, 20), (40, 40), (40, 80)), 0, 50, 10, 1),
    "OfflinePointCircle1Gymnasium-v0": (((50, 20), (52.5, 40), (55, 80)), 1, 65, 5, 1),
    "OfflinePointCircle2Gymnasium-v0": (((45, 20), (47.5, 40), (50, 80)), 1, 55, 5, 1),
    "OfflinePointGoal1Gymnasium-v0": (((30, 20), (30, 40), (30, 80)), 0, 35, 5, 1),
    "OfflinePointGoal2Gymnasium-v0": (((30, 20), (30, 40), (30, 80)), 1, 35, 5, 1),
    "OfflinePointPush1Gymnasium-v0": (((15, 20), (15, 40), (15, 80)), 0, 20, 5, 1),
    "OfflinePointPush2Gymnasium-v0": (((12, 20), (12, 40), (12, 80)), 0, 15, 3, 1),
    "OfflineAntVelocityGymnasium-v1": (((2800, 20), (2800, 40), (2800, 80)), 1, 3000, 500, 1),
    "OfflineHalfCheetahVelocityGymnasium-v1": (((3000, 20), (3000, 40), (3000, 80)), 1, 3000, 500, 1),
    "OfflineHopperVelocityGymnasium-v1": (((1750, 20), (1750, 40), (1750, 80)), 1, 2000, 300, 1),
    "OfflineSwimmerVelocityGymnasium-v1": (((160, 20), (160, 40), (160, 80)), 1, 250, 50, 1),
    "OfflineWalker2dVelocityGymnasium-v1": (((2800, 20), (2800, 40), (2800, 80)), 1, 3600, 800, 1),
    "OfflineMetadrive-easysparse-v0": (((300, 10), (350, 20), (400, 40)), 2, 500, 100, 1),
    "OfflineMetadrive-easymean-v0": (((300, 10), (350, 20), (400, 40)), 2, 500, 100, 1),
    "OfflineMetadrive-easydense-v0": (((300, 10), (350, 20), (400, 40)), 2, 500, 100, 1),
    "OfflineMetadrive-mediumsparse-v0": (((300, 10), (300, 20), (300, 40)), 0, 300, 100, 1),
    "OfflineMetadrive-mediummean-v0": (((300, 10), (300, 20), (300, 40)), 0, 300, 100, 1),
    "OfflineMetadrive-mediumdense-v0": (((300, 10), (300, 20), (300, 40)), 0, 300, 100, 1),
    "OfflineMetadrive-hardsparse-v0": (((300, 10), (350, 20), (400, 40)), 1, 500, 100, 1),
    "OfflineMetadrive-hardmean-v0": (((300, 10), (350, 20), (400, 40)), 1, 500, 100, 1),
    "OfflineMetadrive-harddense-v0": (((300, 10), (350, 20), (400, 40)), 1, 500, 100, 1),
}
# OSRL's CDTTrainConfig (the same for every task); ``target_entropy`` is -action_dim, set with the env
CDT_DEFAULTS: Dict[str, Any] = dict(
    embedding_dim=128, num_layers=3, num_heads=8, action_head_layers=1, seq_len=10, attention_dropout=0.1,
    residual_dropout=0.1, embedding_dropout=0.1, time_emb=True, use_rew=True, use_cost=True, cost_transform=True,
    cost_prefix=False, add_cost_feat=False, mul_cost_feat=False, cat_cost_feat=False, stochastic=True,
    init_temperature=0.1, learning_rate=1e-4, weight_decay=1e-4, betas=[0.9, 0.999], clip_grad=0.25,
    lr_warmup_steps=500, reward_scale=0.1, cost_scale=1.0, loss_cost_weight=0.02, loss_state_weight=0.0,
    cost_reverse=False, no_entropy=False,
    # SequenceDataset: Pareto augmentation of 20% and trajectories drawn with probability ~ max(70 - cost, 0)
    augment_percent=0.2, beta=1.0, cost_sample=True, cost_sample_offset=70.0,
)
DATA_KEYS = ("deg", "max_reward", "max_rew_decrease", "min_reward", "augment_percent", "beta", "cost_sample",
             "cost_sample_offset")


def cdt_defaults(task: str, thresholds: Sequence[float]) -> Dict[str, Any]:
    """CDT's hyperparameters for ``task``: OSRL's defaults, its per-task augmentation parameters, and
    the prompts keyed by threshold ("10": [return, cost])."""
    prompts, deg, max_reward, max_rew_decrease, min_reward = _TASKS[task]
    return {**CDT_DEFAULTS, "deg": deg, "max_reward": float(max_reward), "max_rew_decrease": float(max_rew_decrease),
            "min_reward": float(min_reward),
            "prompts": {f"{kappa:g}": [float(r), float(c)] for kappa, (r, c) in zip(thresholds, prompts)}}


def max_reward_warning(data: Dict[str, np.ndarray], max_reward: float) -> Optional[str]:
    """One line when the data's largest episode return exceeds ``max_reward``, else None. osrl's Pareto
    augmentation relabels trajectories with returns drawn between the data's frontier and ``max_reward``
    (OSRL's per-task values fit DSRL's reward scales, OSRL issue 20); above the data, that range runs
    backwards and the "augmented" returns land below the frontier."""
    ends = np.flatnonzero(data["terminals"] | data["timeouts"])
    if len(ends) == 0:
        return None
    returns = np.add.reduceat(np.asarray(data["rewards"], dtype=np.float64)[:ends[-1] + 1], np.r_[0, ends[:-1] + 1])
    largest = float(returns.max())
    if largest <= max_reward:
        return None
    return (f"warning: cdt: the data's largest episode return {largest:g} exceeds max_reward {max_reward:g}, the top "
            f"of the returns osrl's Pareto augmentation relabels with; set --hparam max_reward={math.ceil(largest)} "
            "(or more) for this data")


def prompt_for(hparams: Dict[str, Any], kappa: float) -> Tuple[float, float]:
    """The (target return, target cost) CDT is prompted with at threshold ``kappa``."""
    prompts = hparams["prompts"]
    if f"{kappa:g}" not in prompts:
        raise LSPCError(f"cdt has no prompt for cost limit {kappa:g} (it has prompts for {', '.join(prompts)}); "
                        f"give one with --prompt {kappa:g}=RETURN,COST when training")
    target_return, target_cost = prompts[f"{kappa:g}"]
    return float(target_return), float(target_cost)


def parse_prompts(values: Sequence[str]) -> Dict[str, list]:
    """``--prompt KAPPA=RETURN,COST`` flags as prompts keyed by threshold."""
    prompts = {}
    for value in values:
        try:
            kappa, target = value.split("=")
            target_return, target_cost = (float(x) for x in target.split(","))
            prompts[f"{float(kappa):g}"] = [target_return, target_cost]
        except ValueError:
            raise LSPCError(f"--prompt {value!r}: expected KAPPA=RETURN,COST, e.g. 10=500,10") from None
    return prompts


class SequenceSampler:
    """Seeded batches of CDT's training windows from osrl's ``SequenceDataset``'s trajectories
    (augmented ones included) and its trajectory probabilities."""

    def __init__(self, trajectories: Sequence[Dict[str, np.ndarray]], sample_prob: Optional[np.ndarray], seq_len: int,
                 reward_scale: float, cost_scale: float, device: torch.device, seed: int) -> None:
        def flat(key: str) -> torch.Tensor:
            return torch.as_tensor(np.concatenate([t[key] for t in trajectories]), dtype=torch.float32, device=device)

        self.lengths = torch.as_tensor([len(t["rewards"]) for t in trajectories], device=device)
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths
        self.observations, self.actions, self.costs = flat("observations"), flat("actions"), flat("costs")
        self.returns = flat("returns") * reward_scale
        self.cost_returns = flat("cost_returns") * cost_scale
        self.prob = (torch.full((len(trajectories),), 1.0 / len(trajectories), device=device) if sample_prob is None
                     else torch.as_tensor(sample_prob, dtype=torch.float64, device=device))
        self.window = torch.arange(seq_len, device=device)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def sample(self, batch_size: int) -> Dict[str, torch.Tensor]:
        """Trajectories by osrl's probabilities, each with a uniform start: their windows."""
        g = self.generator
        traj = torch.multinomial(self.prob, batch_size, replacement=True, generator=g)
        length = self.lengths[traj]
        start = (torch.rand(batch_size, generator=g, device=length.device) * length).long().clamp(max=length - 1)
        return self.gather(traj, start)

    def gather(self, traj: torch.Tensor, start: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The window of ``seq_len`` steps from ``start`` of each trajectory ``traj``, zero past its end
        (``mask`` 0), as osrl's ``SequenceDataset`` prepares a sample."""
        length = self.lengths[traj]
        position = start[:, None] + self.window  # [batch, seq_len]
        mask = position < length[:, None]
        index = self.offsets[traj][:, None] + torch.minimum(position, length[:, None] - 1)
        keep = mask.float()
        return {"states": self.observations[index] * keep[..., None], "actions": self.actions[index] * keep[..., None],
                "returns": self.returns[index] * keep, "costs_return": self.cost_returns[index] * keep,
                "time_steps": position, "mask": keep, "episode_cost": self.cost_returns[self.offsets[traj]],
                "costs": self.costs[index] * keep}


class CDTPolicy:
    """osrl's ``CDTTrainer.rollout`` for a batch of episodes that start together: each step the model
    sees the last ``seq_len`` (state, action, return-to-go, cost-to-go) of its episode and acts with
    its Gaussian's mean, clamped to the action box; the return-to-go and cost-to-go fall by the
    observed (scaled) reward and cost."""

    def __init__(self, model: torch.nn.Module, prompt: Tuple[float, float], reward_scale: float,
                 cost_scale: float) -> None:
        self.model, self.prompt = model, prompt
        self.reward_scale, self.cost_scale = reward_scale, cost_scale

    def reset(self, num_episodes: int) -> None:
        model, device = self.model, next(self.model.parameters()).device
        steps = model.episode_len
        self.states = torch.zeros(num_episodes, steps + 1, model.state_dim, device=device)
        self.actions = torch.zeros(num_episodes, steps, model.action_dim, device=device)
        self.returns = torch.zeros(num_episodes, steps + 1, device=device)
        self.costs = torch.zeros(num_episodes, steps + 1, device=device)
        self.returns[:, 0] = self.prompt[0] * self.reward_scale
        self.costs[:, 0] = self.prompt[1] * self.cost_scale
        # the cost prefix (cost_prefix=True) sees the scaled budget, as in training and osrl's train_cdt.py evaluation
        self.episode_cost = torch.full((num_episodes,), self.prompt[1] * self.cost_scale, device=device)
        self.time_steps = torch.arange(steps, device=device).expand(num_episodes, -1)
        self.step = 0

    @torch.no_grad()
    def __call__(self, obs: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        model, t = self.model, self.step
        if t >= model.episode_len:
            raise LSPCError(f"CDT acts for at most its episode_len ({model.episode_len}) steps")
        model.eval()  # no dropout when acting
        self.states[:, t] = obs
        window = slice(max(0, t + 1 - model.seq_len), t + 1)
        dist, _, _ = model(self.states[:, window], self.actions[:, window], self.returns[:, window],
                           self.costs[:, window], self.time_steps[:, window], None, self.episode_cost)
        mean = dist.mean if model.stochastic else dist
        action = mean[:, -1].clamp(-model.max_action, model.max_action)
        self.actions[:, t] = action
        return action

    def observe(self, rewards: np.ndarray, costs: np.ndarray) -> None:
        t, device = self.step, self.returns.device
        self.returns[:, t + 1] = self.returns[:, t] - torch.as_tensor(rewards, dtype=torch.float32, device=device) * self.reward_scale
        self.costs[:, t + 1] = self.costs[:, t] - torch.as_tensor(costs, dtype=torch.float32, device=device) * self.cost_scale
        self.step += 1
