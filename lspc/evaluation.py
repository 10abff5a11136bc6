"""Seeded evaluation of a policy in the real simulator, and the DSRL normalized scores."""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import gymnasium as gym
import numpy as np
import torch

from lspc.envs import make_env, reset_seeded

# obs batch (n, obs_dim) float32 on the policy's device, generator -> actions (n, act_dim)
BatchPolicy = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def episode_seeds(seed: int, episodes: int) -> List[int]:
    """Start-state seeds of the evaluation episodes: the same at every evaluation of a run,
    so checkpoints are compared on the same starts, and far from the training seed itself."""
    return [2**20 + 10_000 * seed + i for i in range(episodes)]


class Evaluator:
    """Runs ``len(seeds)`` episodes in lockstep, one batched policy forward per step.

    Episode ``i`` always starts from ``seeds[i]`` and the policy's noise comes from a generator
    seeded with ``policy_seed``, so the same arguments give the same returns. The envs are made
    once and reused across evaluations.
    """

    def __init__(self, task: str, episode_len: int, num_envs: int) -> None:
        self.task, self.episode_len = task, episode_len
        self.envs: List[gym.Env] = [make_env(task, episode_len) for _ in range(num_envs)]

    def run(self, policy: BatchPolicy, seeds: Sequence[int], policy_seed: int, device: torch.device) -> Dict[str, np.ndarray]:
        """Per-episode raw ``reward``, ``cost`` and ``length`` arrays."""
        if len(seeds) > len(self.envs):
            self.envs += [make_env(self.task, self.episode_len) for _ in range(len(seeds) - len(self.envs))]
        envs = self.envs[: len(seeds)]
        generator = torch.Generator(device=device)
        generator.manual_seed(policy_seed)
        obs = np.stack([reset_seeded(env, s) for env, s in zip(envs, seeds)])
        n = len(envs)
        reward, cost, length = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64)
        running = np.ones(n, dtype=bool)
        while running.any():
            with torch.no_grad():
                obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
                actions = policy(obs_t, generator).cpu().numpy()
            for i in np.flatnonzero(running):
                next_obs, r, terminated, truncated, info = envs[i].step(actions[i])
                reward[i] += r
                cost[i] += info.get("cost", 0.0)
                length[i] += 1
                obs[i] = next_obs
                running[i] = not (terminated or truncated)
        return {"reward": reward, "cost": cost, "length": length}

    def close(self) -> None:
        for env in self.envs:
            env.close()


def normalized_scores(env: gym.Env, reward: float, cost: float, cost_limit: float) -> tuple:
    """dsrl's own normalization: reward by the task's reference returns, cost by the threshold."""
    offline_env = env.unwrapped
    offline_env.set_target_cost(cost_limit)
    return offline_env.get_normalized_score(reward, cost)


def summarize(env: gym.Env, episodes: Dict[str, np.ndarray], cost_limit: float) -> Dict[str, float]:
    """Mean raw return, cost and length, and the normalized reward and cost at ``cost_limit``."""
    reward, cost = float(episodes["reward"].mean()), float(episodes["cost"].mean())
    norm_reward, norm_cost = normalized_scores(env, reward, cost, cost_limit)
    return {
        "reward": reward,
        "cost": cost,
        "length": float(episodes["length"].mean()),
        "normalized_reward": float(norm_reward),
        "normalized_cost": float(norm_cost),
    }


def better_than(candidate: Dict[str, float], best: Dict[str, float] | None) -> bool:
    """Feasibility-first model selection (spec section 6 row 10).

    A feasible evaluation (normalized cost <= 1) beats any infeasible one; among feasible ones
    the higher normalized reward wins; among infeasible ones the lower normalized cost wins.
    """
    if best is None:
        return True

    def key(scores: Dict[str, float]) -> tuple:
        feasible = scores["normalized_cost"] <= 1.0
        return (1, scores["normalized_reward"]) if feasible else (0, -scores["normalized_cost"])

    return key(candidate) > key(best)
