"""Seeded evaluation of a policy in the real simulator, and the DSRL normalized scores.

Three ways to run a batch of episodes, all giving the same per-episode returns for the same
seeds (tests/test_eval.py checks it): ``lockstep`` steps a list of envs one by one in this
process (training's evaluator: no subprocesses), ``sync`` uses gymnasium's SyncVectorEnv and
``async`` its AsyncVectorEnv (one subprocess per episode, for slow simulators, and the only
mode for MetaDrive, whose engine is a process-wide singleton). In every mode
episode ``i`` runs in an env of its own that has run no episode before (``SeededEpisodeEnv``), from
start seed ``seeds[i]``, and the policy sees the whole batch in one forward per step.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple

import gymnasium as gym
import numpy as np
import torch

from lspc import LSPCError
from lspc.envs import check_task, make_env, numpy_state_kept

# obs batch (n, obs_dim) float32 on the policy's device, generator -> actions (n, act_dim)
BatchPolicy = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class EpisodicPolicy(Protocol):
    """A batched policy with per-episode state (CDT's history, return-to-go and cost-to-go): the
    evaluator calls ``reset(n)`` when its ``n`` episodes start, the policy once per step, and
    ``observe(rewards, costs)`` with each step's outcome. Rows of episodes that have ended keep
    being fed (their values are ignored), as for every policy."""

    def reset(self, num_episodes: int) -> None: ...

    def __call__(self, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...

    def observe(self, rewards: np.ndarray, costs: np.ndarray) -> None: ...
VECTOR_MODES = ("lockstep", "sync", "async")
ONE_ENV_PER_PROCESS = ("metadrive",)  # suites whose simulator allows one live env per process
# what one step of a batch of envs gives back: next observations, rewards, costs, episode ended
BatchStep = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def episode_seeds(seed: int, episodes: int) -> List[int]:
    """Start-state seeds of the evaluation episodes: the same at every evaluation of a run,
    so checkpoints are compared on the same starts, and far from the training seed itself."""
    return [2**20 + 10_000 * seed + i for i in range(episodes)]


class SeededEpisodeEnv(gym.Wrapper):
    """An env whose seeded episodes do not depend on what it ran before.

    ``reset(seed=s)`` starts every episode after the first in a freshly made env: Bullet Safety
    Gym's reset keeps some simulator state of the RaceCar and Drone agents (their start
    observations after ``reset(seed=s)`` differ with the previous episode), so a reused env
    would make an episode's return depend on the history of the env. It also seeds numpy's
    global generator with ``s`` in the process the env lives in, because Bullet draws start
    positions from it; the caller's global state is restored afterwards (so evaluation never
    shifts training's random stream, and making an env draws from it too), also around the
    unseeded resets that vector envs do after an episode ends. Every step's ``info['cost']`` is
    a float, so gymnasium's vector envs, which type a batched info key after its first value,
    never truncate a fractional cost to an int.
    """

    def __init__(self, make: Callable[[], gym.Env]) -> None:
        super().__init__(make())
        self.make, self.used = make, False

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> Tuple[np.ndarray, dict]:
        with numpy_state_kept():
            if seed is not None:
                if self.used:
                    self.env.close()
                    self.env = self.make()
                self.used = True
                np.random.seed(seed)
            return self.env.reset(seed=seed, options=options)

    def step(self, action: np.ndarray) -> Tuple[np.ndarray, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, "cost": float(info.get("cost", 0.0))}


def make_eval_env(task: str, episode_len: int) -> gym.Env:
    """A task's env for evaluation; module-level so that async workers can unpickle it."""
    return SeededEpisodeEnv(functools.partial(make_env, task, episode_len))


class _LockstepEnvs:
    """A list of envs in this process; only the envs whose episode is running are stepped."""

    def __init__(self, make: Callable[[], gym.Env], num_envs: int) -> None:
        self.make = make
        self.envs: List[gym.Env] = [make() for _ in range(num_envs)]

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        if len(seeds) > len(self.envs):
            self.envs += [self.make() for _ in range(len(seeds) - len(self.envs))]
        return np.stack([env.reset(seed=s)[0] for env, s in zip(self.envs, seeds)])

    def step(self, actions: np.ndarray, running: np.ndarray, obs: np.ndarray) -> BatchStep:
        next_obs, reward, cost, done = obs.copy(), np.zeros(len(obs)), np.zeros(len(obs)), np.zeros(len(obs), bool)
        for i in np.flatnonzero(running):
            next_obs[i], reward[i], terminated, truncated, info = self.envs[i].step(actions[i])
            cost[i], done[i] = info["cost"], terminated or truncated
        return next_obs, reward, cost, done

    def close(self) -> None:
        for env in self.envs:
            env.close()


class _VectorEnvs:
    """gymnasium's Sync/AsyncVectorEnv with one sub-env per episode. The vector env steps every
    sub-env and auto-resets those whose episode ended; the loop ignores them from then on, so each
    sub-env contributes exactly one seeded episode."""

    def __init__(self, make: Callable[[], gym.Env], num_envs: int, asynchronous: bool) -> None:
        self.make, self.asynchronous = make, asynchronous
        self.vector_env = self._build(num_envs)

    def _build(self, num_envs: int) -> gym.vector.VectorEnv:
        env_fns = [self.make] * num_envs
        return gym.vector.AsyncVectorEnv(env_fns) if self.asynchronous else gym.vector.SyncVectorEnv(env_fns)

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        if len(seeds) != self.vector_env.num_envs:  # a vector env has a fixed size
            self.vector_env.close()
            self.vector_env = self._build(len(seeds))
        return self.vector_env.reset(seed=list(seeds))[0]

    def step(self, actions: np.ndarray, running: np.ndarray, obs: np.ndarray) -> BatchStep:
        next_obs, reward, terminated, truncated, info = self.vector_env.step(actions)
        done = terminated | truncated
        cost = np.zeros(len(done))
        if "cost" in info:  # absent when every sub-env ended this step (the infos are the resets')
            cost[info["_cost"]] = info["cost"][info["_cost"]]
        for i in np.flatnonzero(done):  # the ended episode's last step, not the auto-reset's start
            next_obs[i] = info["final_observation"][i]
            cost[i] = info["final_info"][i]["cost"]
        return next_obs, reward, cost, done

    def close(self) -> None:
        self.vector_env.close()


def choose_vector(task: str, vector: Optional[str], num_envs: int, in_process: str = "lockstep") -> str:
    """``vector``, checked; when None, ``in_process`` (lockstep or sync), or async for a simulator
    that allows one env per process."""
    one_per_process = check_task(task) in ONE_ENV_PER_PROCESS
    if vector is None:
        return "async" if one_per_process else in_process
    if vector not in VECTOR_MODES:
        raise LSPCError(f"vector must be one of {list(VECTOR_MODES)}, got {vector!r}")
    if one_per_process and vector != "async" and num_envs > 1:
        raise LSPCError(f"{task} allows one environment per process: run its {num_envs} episodes with --vector async")
    return vector


class Evaluator:
    """Runs ``len(seeds)`` episodes side by side, one batched policy forward per step.

    Episode ``i`` always starts from ``seeds[i]`` and the policy's noise comes from a generator
    seeded with ``policy_seed``, so the same arguments give the same returns, in every
    ``vector`` mode (see the module docstring) and whatever ran before. ``vector`` None:
    lockstep, or async where the simulator allows one env per process (MetaDrive).
    """

    def __init__(self, task: str, episode_len: int, num_envs: int, vector: Optional[str] = None) -> None:
        vector = choose_vector(task, vector, num_envs)
        make = functools.partial(make_eval_env, task, episode_len)
        self.envs = (_LockstepEnvs(make, num_envs) if vector == "lockstep"
                     else _VectorEnvs(make, num_envs, asynchronous=vector == "async"))

    def run(self, policy: BatchPolicy | EpisodicPolicy, seeds: Sequence[int], policy_seed: int,
            device: torch.device) -> Dict[str, np.ndarray]:
        """Per-episode raw ``reward``, ``cost`` and ``length`` arrays."""
        return self.run_groups([policy], [seeds], [policy_seed], device)[0]

    def run_groups(self, policies: Sequence[BatchPolicy | EpisodicPolicy], seeds: Sequence[Sequence[int]],
                   policy_seeds: Sequence[int], device: torch.device) -> List[Dict[str, np.ndarray]]:
        """Several policies' episodes side by side in one batch of envs (the seeds of a stacked run):
        policy ``g`` plays the episodes ``seeds[g]`` with its noise from a generator seeded with
        ``policy_seeds[g]`` and sees only its own rows, so each group's results are those of ``run`` alone."""
        generators = []
        for policy_seed in policy_seeds:
            generators.append(torch.Generator(device=device))
            generators[-1].manual_seed(policy_seed)
        bounds = np.cumsum([0, *(len(group) for group in seeds)])
        rows = [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:])]
        episodic = [hasattr(policy, "observe") for policy in policies]
        obs = self.envs.reset([seed for group in seeds for seed in group])
        for policy, group, is_episodic in zip(policies, seeds, episodic):
            if is_episodic:
                policy.reset(len(group))
        n = len(obs)
        reward, cost, length = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64)
        running = np.ones(n, dtype=bool)
        while running.any():
            # every row is fed, ended episodes with their last observation, so the policy draws
            # the same noise in every mode
            with torch.no_grad():
                obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
                # each group's rows in a tensor of their own: a matmul's rounding may depend on where its
                # input starts in memory, and a group must get the actions it would get alone
                group_obs = [obs_t] if len(rows) == 1 else [obs_t[row].clone() for row in rows]
                actions = [policy(group, generator) for policy, group, generator in zip(policies, group_obs, generators)]
                actions = (actions[0] if len(actions) == 1 else torch.cat(actions)).cpu().numpy()
            next_obs, step_reward, step_cost, done = self.envs.step(actions, running, obs)
            for policy, row, is_episodic in zip(policies, rows, episodic):
                if is_episodic:
                    policy.observe(step_reward[row], step_cost[row])
            reward[running] += step_reward[running]
            cost[running] += step_cost[running]
            length[running] += 1
            obs[running] = next_obs[running]
            running &= ~done
        return [{"reward": reward[row], "cost": cost[row], "length": length[row]} for row in rows]

    def close(self) -> None:
        self.envs.close()


def normalized_scores(env: gym.Env, reward: float, cost: float, cost_limit: float) -> tuple:
    """dsrl's own normalization: reward by the task's reference returns, cost by the threshold."""
    offline_env = env.unwrapped
    offline_env.set_target_cost(cost_limit)
    return offline_env.get_normalized_score(reward, cost)


def summarize(env: gym.Env, episodes: Dict[str, np.ndarray], cost_limit: float) -> Dict[str, float]:
    """Mean raw return, cost and length, their standard deviations over the episodes (numpy's
    population std, as the authors' release logs them), and the normalized reward and cost at
    ``cost_limit``. ``lspc.run_logger.eval_entries`` gives them the release's metric names."""
    reward, cost = float(episodes["reward"].mean()), float(episodes["cost"].mean())
    norm_reward, norm_cost = normalized_scores(env, reward, cost, cost_limit)
    return {
        "reward": reward,
        "cost": cost,
        "length": float(episodes["length"].mean()),
        "reward_std": float(np.std(episodes["reward"])),
        "cost_std": float(np.std(episodes["cost"])),
        "length_std": float(np.std(episodes["length"])),
        "normalized_reward": float(norm_reward),
        "normalized_cost": float(norm_cost),
    }


def score_at_thresholds(env: gym.Env, episodes: Dict[str, np.ndarray], thresholds: Sequence[float]) -> Dict[str, Any]:
    """Raw mean and std over episodes, the per-episode values, and per threshold the mean and std
    of dsrl's normalized reward and cost of each episode (normalization is affine, so the mean of
    the normalized scores is the normalized mean)."""
    per_threshold = {}
    for kappa in thresholds:
        norm_reward, norm_cost = np.array([normalized_scores(env, r, c, kappa)
                                           for r, c in zip(episodes["reward"], episodes["cost"])], dtype=np.float64).T
        per_threshold[f"{kappa:g}"] = {
            "normalized_reward": float(norm_reward.mean()), "normalized_reward_std": float(norm_reward.std()),
            "normalized_cost": float(norm_cost.mean()), "normalized_cost_std": float(norm_cost.std()),
        }
    return {**episode_stats(episodes), "thresholds": per_threshold}


def episode_stats(episodes: Dict[str, Sequence[float]]) -> Dict[str, Any]:
    """Raw mean and std over episodes of the return and cost, mean length, and the per-episode values."""
    raw = {key: np.asarray(values, dtype=np.float64) for key, values in episodes.items()}
    return {"reward": float(raw["reward"].mean()), "reward_std": float(raw["reward"].std()),
            "cost": float(raw["cost"].mean()), "cost_std": float(raw["cost"].std()),
            "length": float(raw["length"].mean()),
            "episodes": {key: np.asarray(values).tolist() for key, values in episodes.items()}}


def better_than(candidate: Dict[str, float], best: Dict[str, float] | None) -> bool:
    """Feasibility-first model selection (the best checkpoint).

    A feasible evaluation (normalized cost <= 1) beats any infeasible one; among feasible ones
    the higher normalized reward wins; among infeasible ones the lower normalized cost wins.
    """
    if best is None:
        return True

    def key(scores: Dict[str, float]) -> tuple:
        feasible = scores["normalized_cost"] <= 1.0
        return (1, scores["normalized_reward"]) if feasible else (0, -scores["normalized_cost"])

    return key(candidate) > key(best)
