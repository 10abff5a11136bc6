"""Behaviour agents for tasks without a controller: FSRL's Lagrangian agents, trained per cost limit.

DSRL made its datasets by training FSRL's safe-RL agents online at several cost limits and rolling
out the checkpoints saved along training, with noise. ``train_agent`` trains one with FSRL's own
agent, collector and trainer, and keeps its checkpoints in a cache directory. Two agents:

- ``ppol``, PPO-Lagrangian with FSRL's on-policy trainer, the default: on BallRun it ran about 4x
  the environment steps per second of SAC-Lagrangian on one core and kept its episode cost near the
  limit from the first 20k steps on, while SAC-Lagrangian's stayed at about 91 of 100 steps for 25k.
- ``sacl``, SAC-Lagrangian with FSRL's off-policy trainer (fsrl.config.sacl_cfg's settings, one
  update per step): for tasks PPO-Lagrangian learns too slowly (MetaDrive drove within 20k steps).

::

    <cache>/<task>/<agent>-cost<limit>-seed<seed>/
        agent.json        what identifies the agent (configuration without the step budget)
        epoch-0001.pt ... policy weights and statistics after each epoch
        resume.pt         weights, optimisers and step count of the last finished epoch
        buffer.pt         sacl: the replay buffer of the last finished epoch

Every file is written atomically. A rerun with the same configuration trains nothing; a larger
step budget, or a training that was interrupted, continues from ``resume.pt`` (the unfinished
epoch is redone). ``collect_fsrl`` rolls the checkpoints out: episode ``i`` picks a checkpoint and
a Gaussian action-noise scale and starts from a state that all depend only on ``(seed, i)``.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import io
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np
import torch

from lspc import LSPCError
from lspc.checkpoint import atomic_write_bytes
from lspc.data.collect import (EpisodeChunks, collect_in_chunks, episode_start_seed, episodes_to_dsrl, grid_filter,
                          record_episode)
from lspc.envs import check_task, cost_limits, make_env, numpy_state_kept

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".lspc", "agents")
PACKAGES = ("fast-safe-rl", "tianshou", "torch")  # versioned in the dataset's provenance
_INSTALL_HINT = "FSRL behaviour agents need tianshou and numba; install them with `make install-collect`"


# The collection settings behind the FSRL datasets of docs/data.md, the defaults of scripts/collect_dataset.py
# for these tasks (a flag given on its command line wins). Episodes long or slow to simulate get fewer
# episodes per policy update, so that the short budgets still make many updates; two agents (one
# below the lowest threshold, one far above the highest) with their checkpoints span the cost range.
COLLECTION_DEFAULTS = {"agent_algorithm": "ppol", "episodes": 600, "agent_steps": 200_000, "agent_epoch_steps": 10_000,
                       "agent_episodes_per_collect": 20, "cost_limits": None}
TASK_COLLECTION: Dict[str, Dict[str, object]] = {
    "OfflineCarCircle1Gymnasium-v0": {"episodes": 400, "agent_episodes_per_collect": 4, "cost_limits": (10, 160)},
    # PPO-Lagrangian learned to speed up but not to steer in 351k steps; the mean action of SAC-Lagrangian's
    # cost-80 agent returned 272 and 244 (cost about 60) after 20k and 30k steps
    "OfflineMetadrive-easysparse-v0": {"agent_algorithm": "sacl", "episodes": 300, "agent_steps": (50_000, 60_000),
                                       "agent_episodes_per_collect": 2, "cost_limits": (5, 80)},
    "OfflineDroneRun-v0": {"episodes": 800, "agent_episodes_per_collect": 10, "cost_limits": (5, 80)},
    # the cost-80 agent reached a deterministic return of about 680 only after 2M steps
    "OfflineDroneCircle-v0": {"episodes": 800, "agent_steps": (1_420_000, 1_780_000), "agent_episodes_per_collect": 10,
                              "cost_limits": (5, 80)},
    # one agent: its first checkpoints stand still (cost 0), its last run at episode cost about 90 to 100
    "OfflineAntRun-v0": {"agent_steps": 440_000, "agent_episodes_per_collect": 10, "cost_limits": (80,)},
    "OfflinePointGoal1Gymnasium-v0": {"episodes": 350, "agent_steps": 300_000, "agent_episodes_per_collect": 4,
                                      "cost_limits": (10, 160)},
    # PPO-Lagrangian's agent stood still through 240k steps; SAC-Lagrangian's circles from about 200k on,
    # at episode cost 100 to 200, and one cost-400 agent spans the range (its early checkpoints stand or fall)
    "OfflineAntCircle-v0": {"agent_algorithm": "sacl", "episodes": 1000, "agent_steps": 290_000,
                            "agent_episodes_per_collect": 2, "cost_limits": (400,)},
    "OfflineHalfCheetahVelocityGymnasium-v1": {"episodes": 500, "agent_steps": 1_000_000, "agent_epoch_steps": 50_000,
                                               "agent_episodes_per_collect": 4, "cost_limits": (10, 160)},
}


def collection_setting(task: str, name: str) -> object:
    """The default of a collection setting for ``task``: its entry in TASK_COLLECTION, else the generic one."""
    return TASK_COLLECTION.get(task, {}).get(name, COLLECTION_DEFAULTS[name])


# the cache's and the command line's names of FSRL's agents
ALGORITHMS = {"ppol": "PPOLagAgent", "sacl": "SACLagAgent"}


@dataclass(frozen=True)
class AgentConfig:
    """A training run of an FSRL agent; the rest are FSRL's defaults (fsrl.config.ppol_cfg, sacl_cfg)."""

    algorithm: str = "ppol"  # a key of ALGORITHMS
    steps: int = 200_000  # environment steps of training
    epoch_steps: int = 10_000  # steps per epoch: one checkpoint each
    episode_per_collect: int = 20  # episodes per policy update
    hidden_sizes: Tuple[int, ...] = (128, 128)
    seed: int = 0

    @property
    def epochs(self) -> int:
        return math.ceil(self.steps / self.epoch_steps)

    @property
    def agent_class(self) -> str:
        return f"fsrl.agent.{ALGORITHMS[self.algorithm]}"


@dataclass(frozen=True)
class TrainedAgent:
    task: str
    cost_limit: float
    directory: str
    checkpoints: Tuple[str, ...]  # epoch files, in training order
    env_steps: Tuple[int, ...]  # training steps behind each checkpoint
    trained_steps: int  # steps trained by this call (0: all from the cache)
    training_seconds: float  # wall time of the training behind the last checkpoint, over all runs


def default_agent_cost_limits(task: str) -> Tuple[float, ...]:
    """Half the lowest threshold, the middle one and twice the highest: agents from safe-and-slow
    to fast-and-unsafe, so that the checkpoints cover every threshold from both sides."""
    low, middle, high = cost_limits(task)
    return (low / 2, middle, 2 * high)


def import_fsrl() -> None:
    """Import FSRL's agent stack or say how to install it (tianshou prints old gym's banner)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            import fsrl.agent  # noqa: F401
    except ImportError as err:
        raise LSPCError(f"{_INSTALL_HINT} ({err})") from None


def agent_dir(cache_dir: str, task: str, cost_limit: float, config: AgentConfig) -> str:
    return os.path.join(cache_dir, task, f"{config.algorithm}-cost{cost_limit:g}-seed{config.seed}")


def epoch_file(directory: str, epoch: int) -> str:
    return os.path.join(directory, f"epoch-{epoch:04d}.pt")


@contextlib.contextmanager
def _global_rngs_kept() -> Iterator[None]:
    # FSRL's agents reseed random, numpy and torch when built; rollouts must not shift the caller's streams
    saved = random.getstate()
    with numpy_state_kept(), torch.random.fork_rng():
        try:
            yield
        finally:
            random.setstate(saved)


def _make_agent(env: gym.Env, cost_limit: float, config: AgentConfig, seed: int):
    import_fsrl()
    from fsrl.agent import PPOLagAgent, SACLagAgent
    from fsrl.utils import BaseLogger

    class QuietLogger(BaseLogger):
        def print(self, msg: str, color: str = "green") -> None:
            pass  # PPO's "early stop due to reaching max kl" on most updates would bury the progress lines

    # a fresh in-memory logger: the trainer reads its statistics; FSRL's default one is shared
    common = dict(cost_limit=cost_limit, thread=torch.get_num_threads(), seed=seed, hidden_sizes=config.hidden_sizes)
    if config.algorithm == "sacl":  # where sacl_cfg differs from SACLagAgent's own defaults
        return SACLagAgent(env, QuietLogger(), **common, alpha=0.005, gamma=0.97, unbounded=False,
                           deterministic_eval=True)
    return PPOLagAgent(env, QuietLogger(), **common, max_grad_norm=0.5)  # max_grad_norm: ppol_cfg's


def _save_torch(path: str, obj: object) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, lambda f: f.write(buffer.getvalue()))


def load_agent_file(path: str) -> dict:
    """An epoch or resume file of the agent cache: weights, env steps, training seconds and returns."""
    # our own cache files; FSRL's Lagrangian state holds numpy scalars, which weights_only refuses
    return torch.load(path, weights_only=False)


def _shared_settings(config: AgentConfig) -> Dict[str, object]:
    """The settings that identify an agent, its step budget and algorithm (``agent_class``) left out."""
    return {k: v for k, v in asdict(config).items() if k not in ("steps", "algorithm")}


def _identity(task: str, cost_limit: float, config: AgentConfig) -> Dict[str, object]:
    identity = {"agent": config.agent_class, "task": task, "cost_limit": cost_limit, **_shared_settings(config)}
    return json.loads(json.dumps(identity))


def train_agent(task: str, cost_limit: float, config: AgentConfig, cache_dir: str = DEFAULT_CACHE,
                log: Callable[[str], None] = print) -> TrainedAgent:
    """Train (or reuse, or resume) the agent of ``task`` at ``cost_limit``; see the module docstring."""
    if config.steps <= 0 or config.epoch_steps <= 0 or config.episode_per_collect <= 0:
        raise LSPCError("agent steps, epoch steps and episodes per collect must be positive, got "
                        f"{config.steps}, {config.epoch_steps} and {config.episode_per_collect}")
    if cost_limit < 0:
        raise LSPCError(f"cost limits must be non-negative, got {cost_limit:g}")
    if config.algorithm not in ALGORITHMS:
        raise LSPCError(f"unknown agent {config.algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    directory = agent_dir(cache_dir, task, cost_limit, config)
    os.makedirs(directory, exist_ok=True)
    identity, identity_path = _identity(task, cost_limit, config), os.path.join(directory, "agent.json")
    if os.path.exists(identity_path):
        with open(identity_path) as f:
            saved = json.load(f)
        if saved != identity:
            differ = sorted(k for k in identity if saved.get(k) != identity[k])
            raise LSPCError(f"{directory} holds an agent trained with other settings ({', '.join(differ)}); "
                            "remove it or pass the same ones")
    else:
        atomic_write_bytes(identity_path, lambda f: f.write(json.dumps(identity, indent=1).encode()))

    resume_path = os.path.join(directory, "resume.pt")
    state = load_agent_file(resume_path) if os.path.exists(resume_path) else None
    done_epochs = state["epoch"] if state else 0
    trained = 0
    if done_epochs < config.epochs:
        trained = _train(task, cost_limit, config, directory, state, log)
    paths = [epoch_file(directory, e) for e in range(1, config.epochs + 1)]
    saved = [load_agent_file(p) for p in paths]
    return TrainedAgent(task, cost_limit, directory, tuple(paths), tuple(int(w["env_step"]) for w in saved), trained,
                        float(saved[-1]["train_seconds"]))


def _optimisers(policy) -> Dict[str, torch.optim.Optimizer]:
    """The optimisers of an FSRL policy whose state a resumed run needs."""
    if hasattr(policy, "critics_optim"):  # SAC-Lagrangian
        found = {"actor": policy.actor_optim, "critics": policy.critics_optim}
        if policy._is_auto_alpha:
            found["alpha"] = policy._alpha_optim
        return found
    return {"policy": policy.optim}


def _training_state(policy) -> dict:
    """What a resumed run needs besides the weights: the optimisers and, for SAC, the entropy temperature."""
    state = {"optimisers": {name: optimiser.state_dict() for name, optimiser in _optimisers(policy).items()}}
    if getattr(policy, "_is_auto_alpha", False):  # a plain tensor of the policy, outside its state_dict
        state["log_alpha"] = policy._log_alpha.detach().clone()
    return state


def _restore(policy, state: dict) -> None:
    """Put a resume file's weights, optimisers and, for SAC, entropy temperature back into ``policy``."""
    policy.load_state_dict(state["policy"])
    # fsrl 0.1.0's set_extra_state looks for a key in the list it is given and restores nothing:
    # put the PID Lagrange multipliers back by hand
    for lag_optim, saved in zip(policy.lag_optims, state["policy"].get("_extra_state") or []):
        lag_optim.load_state_dict(saved)
    # resume files of PPO-Lagrangian agents written before SAC-Lagrangian came hold one "optim"
    saved = state["optimisers"] if "optimisers" in state else {"policy": state["optim"]}
    for name, optimiser in _optimisers(policy).items():
        optimiser.load_state_dict(saved[name])
    if "log_alpha" in state:
        with torch.no_grad():
            policy._log_alpha.copy_(state["log_alpha"])
        policy._alpha = policy._log_alpha.detach().exp()


def _train(task: str, cost_limit: float, config: AgentConfig, directory: str, state: Optional[dict],
           log: Callable[[str], None]) -> int:
    import_fsrl()
    from fsrl.data import FastCollector
    from fsrl.trainer import OffpolicyTrainer, OnpolicyTrainer
    from tianshou.data import VectorReplayBuffer
    from tianshou.env import DummyVectorEnv

    done_epochs, done_steps, done_seconds = (0, 0, 0.0) if state is None else (
        state["epoch"], state["env_step"], state["train_seconds"])
    start = time.perf_counter()
    # a resumed run draws fresh random numbers, not the first epoch's again
    seed = int(np.random.SeedSequence([config.seed, done_epochs]).generate_state(1)[0])
    env = make_env(task)
    agent = _make_agent(env, cost_limit, config, seed)
    env.close()
    off_policy = config.algorithm == "sacl"
    buffer_path = os.path.join(directory, "buffer.pt")
    if state:
        _restore(agent.policy, state)
        log(f"{task} cost limit {cost_limit:g}: resuming after epoch {done_epochs} ({done_steps} steps)")
    # MetaDrive allows one simulator per process
    envs = 1 if check_task(task) == "metadrive" else min(config.episode_per_collect, 4)
    train_envs = DummyVectorEnv([functools.partial(make_env, task)] * envs)
    # an off-policy agent resumes with its replay buffer (written before resume.pt, so at worst one epoch newer)
    buffer = (torch.load(buffer_path, weights_only=False) if state and off_policy
              else VectorReplayBuffer(100_000, envs))  # sacl_cfg's buffer size
    collector = FastCollector(agent.policy, train_envs, buffer, exploration_noise=True)
    # fsrl.config's batch size and update repeats (ppol); sacl makes one update per environment step, as in
    # SAC's paper (sacl_cfg's 0.2, with its 10 parallel envs, left AntCircle's agent falling over at 155k
    # steps); no test collector: every epoch is kept anyway
    shared = dict(policy=agent.policy, train_collector=collector, max_epoch=config.epochs, batch_size=256,
                  cost_limit=cost_limit, step_per_epoch=config.epoch_steps, episode_per_test=1,  # read by train_step
                  episode_per_collect=config.episode_per_collect, logger=agent.logger, verbose=False,
                  show_progress=False)
    trainer = OffpolicyTrainer(**shared, update_per_step=1.0) if off_policy else OnpolicyTrainer(**shared,
                                                                                                  repeat_per_collect=4)
    trainer.start_epoch = done_epochs
    try:
        for epoch, stats, _ in trainer:
            env_step = done_steps + trainer.env_step
            weights = {"policy": agent.policy.state_dict(), "epoch": epoch, "env_step": env_step,
                       "train_seconds": done_seconds + time.perf_counter() - start,
                       "train_reward": float(stats["train/reward"]), "train_cost": float(stats["train/cost"])}
            # the epoch file first: resume.pt never points past what is on disk
            _save_torch(epoch_file(directory, epoch), weights)
            if off_policy:
                _save_torch(buffer_path, collector.buffer)
            _save_torch(os.path.join(directory, "resume.pt"), {**weights, **_training_state(agent.policy)})
            log(f"{task} cost limit {cost_limit:g}: epoch {epoch}/{config.epochs}, {env_step} steps, "
                f"episode reward {weights['train_reward']:.1f}, cost {weights['train_cost']:.1f}")
    finally:
        train_envs.close()
    return trainer.env_step


def agent_provenance(agents: Sequence[TrainedAgent], config: AgentConfig) -> Dict[str, object]:
    """File attributes that say which agents made a dataset."""
    return {
        "agents": json.dumps([{"agent": config.agent_class, "cost_limit": a.cost_limit, "seed": config.seed,
                               "training_steps": a.env_steps[-1], "training_seconds": round(a.training_seconds, 1),
                               "checkpoint_steps": list(a.env_steps)}
                              for a in agents]),
        "agent_cost_limits": np.array([a.cost_limit for a in agents], dtype=np.float64),
        "agent_training_steps": np.array([a.env_steps[-1] for a in agents], dtype=np.int64),
        # the settings the agents share; each one's step budget is in "agents"
        "agent_config": json.dumps(_shared_settings(config)),
        "behaviour_versions": ", ".join(f"{p}=={importlib.metadata.version(p)}" for p in PACKAGES),
    }


@functools.lru_cache(maxsize=None)
def _policy(task: str, algorithm: str, hidden_sizes: Tuple[int, ...]):
    env = make_env(task)
    with _global_rngs_kept():
        policy = _make_agent(env, 0.0, AgentConfig(algorithm=algorithm, hidden_sizes=hidden_sizes), seed=0).policy
    env.close()
    return policy.eval()


@functools.lru_cache(maxsize=64)
def _weights(path: str) -> dict:
    return load_agent_file(path)["policy"]


def episode_plan(seed: int, episode: int, checkpoints: int,
                 action_noise: float) -> Tuple[np.random.Generator, int, float]:
    """Episode ``episode``'s generator (for its action noise), checkpoint index and noise scale."""
    rng = np.random.default_rng([seed, episode, 2])
    return rng, int(rng.integers(checkpoints)), float(rng.uniform(0.0, action_noise))


def rollout_policy(env: gym.Env, policy, start_seed: int, noise: float,
                   rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """One episode of ``policy``'s deterministic action plus N(0, noise^2) noise in its [-1, 1] range."""
    from tianshou.data import Batch

    def choose(obs: np.ndarray, step: int) -> np.ndarray:
        with torch.no_grad():
            act = policy(Batch(obs=obs[None].astype(np.float32), info={})).act[0].numpy()
        # the policy's own clipping and scaling of the noisy action (record_episode then clips to the box)
        return policy.map_action(act + noise * rng.standard_normal(act.shape))

    return record_episode(env, start_seed, choose)


def checkpoint_returns(task: str, weights: dict, config: AgentConfig,
                       start_seeds: Sequence[int]) -> List[Tuple[float, float, int]]:
    """(reward, cost, length) of one noise-free episode of a checkpoint's policy (``weights``: its
    "policy" entry; ``config``: its agent's) per start seed: where an agent stands (its training
    episodes sample actions, so their returns lag its mean action's)."""
    policy = _policy(task, config.algorithm, config.hidden_sizes)
    policy.load_state_dict(weights)
    returns = []
    for start_seed in start_seeds:
        env = make_env(task)  # a fresh env per episode: Bullet's reset keeps some state
        try:
            episode = rollout_policy(env, policy, start_seed, 0.0, np.random.default_rng(0))
        finally:
            env.close()
        returns.append((float(episode["rewards"].sum()), float(episode["costs"].sum()), len(episode["rewards"])))
    return returns


def rollout_chunk(task: str, checkpoints: Tuple[str, ...], config: AgentConfig, seed: int,
                  action_noise: float, episodes: range) -> List[Dict[str, np.ndarray]]:
    """Episodes ``episodes`` with their provenance (start seed, checkpoint index, noise scale)."""
    policy = _policy(task, config.algorithm, config.hidden_sizes)
    # Bullet's reset keeps some simulator state (see lspc.data.collect): each of its episodes gets a fresh env.
    # A seeded Safety-Gymnasium reset rebuilds the world and starts the same episode whatever ran before
    # (tests/test_suites.py), and launching MetaDrive's engine for every episode took most of its time.
    fresh_env_per_episode = check_task(task) == "bullet"
    rolled, env = [], None
    try:
        for episode in episodes:
            rng, checkpoint, noise = episode_plan(seed, episode, len(checkpoints), action_noise)
            policy.load_state_dict(_weights(checkpoints[checkpoint]))
            if env is None or fresh_env_per_episode:
                if env is not None:
                    env.close()
                env = make_env(task)
            start_seed = episode_start_seed(seed, episode)
            rolled.append({**rollout_policy(env, policy, start_seed, noise, rng), "episode": np.array(episode),
                           "start_seed": np.array(start_seed), "checkpoint": np.array(checkpoint),
                           "noise": np.array(noise)})
    finally:
        if env is not None:
            env.close()
    return rolled


def collect_fsrl(task: str, agents: Sequence[TrainedAgent], config: AgentConfig, episodes: int, seed: int,
                 chunk_dir: str, action_noise: float = 0.3, workers: int = 1,
                 chunk: int = 20) -> List[Dict[str, np.ndarray]]:
    """Roll out ``episodes`` episodes of the agents' checkpoints, resuming from the chunks in ``chunk_dir``."""
    if episodes <= 0:
        raise LSPCError(f"episodes must be positive, got {episodes}")
    if action_noise < 0:
        raise LSPCError(f"action noise must be non-negative, got {action_noise:g}")
    checkpoints = tuple(path for agent in agents for path in agent.checkpoints)
    meta = {"task": task, "seed": seed, "action_noise": action_noise, "algorithm": config.algorithm,
            "hidden_sizes": list(config.hidden_sizes),
            "checkpoints": [os.path.relpath(p, os.path.dirname(os.path.dirname(p))) for p in checkpoints]}
    chunks = EpisodeChunks(chunk_dir, meta, chunk)
    roll = functools.partial(rollout_chunk, task, checkpoints, config, seed, action_noise)
    return collect_in_chunks(chunks, episodes, roll, workers, desc=f"{task} episodes")


def collect_dataset(task: str, agents: Sequence[TrainedAgent], config: AgentConfig, episodes: int, seed: int,
                    chunk_dir: str, cost_cap: float, action_noise: float = 0.3, max_per_bin: int = 10,
                    cost_bins: int = 60, reward_bins: int = 50, workers: int = 1,
                    chunk: int = 20) -> Tuple[Dict[str, np.ndarray], Dict[str, object]]:
    """Roll out ``episodes`` episodes (``collect_fsrl``), keep those DSRL's grid filter keeps with
    cost <= ``cost_cap`` (DSRL's cap is its filter's upper cost bound), and return them in the DSRL
    layout with per-episode provenance, and the file attributes that describe the collection."""
    rolled = collect_fsrl(task, agents, config, episodes, seed, chunk_dir, action_noise, workers, chunk)
    cost = np.array([ep["costs"].sum() for ep in rolled])
    reward = np.array([ep["rewards"].sum() for ep in rolled])
    keep = grid_filter(cost, reward, np.random.default_rng([seed, 3]), cost_bins, reward_bins, max_per_bin,
                       cost_range=(-np.inf, cost_cap))
    if len(keep) == 0:
        raise LSPCError(f"none of the {len(rolled)} episodes had cost <= {cost_cap:g}")
    kept = [rolled[i] for i in keep]
    checkpoints = [(a.cost_limit, step) for a in agents for step in a.env_steps]
    data = episodes_to_dsrl(kept)
    data["episode_indices"] = np.array([int(ep["episode"]) for ep in kept])
    data["episode_start_seeds"] = np.array([int(ep["start_seed"]) for ep in kept])
    chosen = [checkpoints[int(ep["checkpoint"])] for ep in kept]
    data["episode_agent_cost_limits"] = np.array([limit for limit, _ in chosen], dtype=np.float32)
    data["episode_checkpoint_steps"] = np.array([step for _, step in chosen], dtype=np.int32)
    data["episode_action_noise"] = np.array([float(ep["noise"]) for ep in kept], dtype=np.float32)
    data["episodes_attempted"] = np.array(len(rolled))
    provenance = {"task": task, "seed": seed, "behaviour": "fsrl", "action_noise": action_noise,
                  "cost_filter": f"episode cost <= {cost_cap:g}",
                  "grid_filter": f"at most {max_per_bin} per cell of a {cost_bins} x {reward_bins} (cost, reward) grid",
                  **agent_provenance(agents, config)}
    return data, provenance
