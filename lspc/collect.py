"""Collect DSRL-layout datasets from the real simulator with parameterized behaviour controllers.

Only OfflineBallRun-v0 has a controller so far; it is the data source of ``make demo`` and the
tests while the DSRL hub is unreachable. A controller reads the simulator state
(``env.unwrapped.agent``), so episode-level parameters (target speed, lane offset, noise, an
over-speed burst) spread the trajectories over a reward-versus-cost frontier.
"""
from __future__ import annotations

import importlib.metadata
from typing import Callable, Dict, List

import gymnasium as gym
import h5py
import numpy as np

from lspc import LSPCError
from lspc.checkpoint import atomic_write_bytes
from lspc.data import DSRL_KEYS
from lspc.envs import make_env, reset_seeded

Controller = Callable[[gym.Env, int], np.ndarray]  # (env, step) -> action


def ball_run_controller(rng: np.random.Generator, episode_len: int) -> Controller:
    """A speed-and-lane controller for the Ball agent (external force in world x/y).

    The velocity limit is 2.5 and the lane is |y| <= 2: target speeds above 2.5, lane offsets
    near the boundary and a late over-speed burst produce the costly, high-reward episodes.
    """
    target_speed = rng.uniform(0.8, 2.4) if rng.random() < 0.6 else rng.uniform(2.4, 4.0)
    lane_offset = rng.uniform(-2.6, 2.6) if rng.random() < 0.2 else rng.uniform(-1.0, 1.0)
    burst_from = int(rng.integers(episode_len // 4, episode_len)) if rng.random() < 0.3 else episode_len
    noise = rng.uniform(0.0, 0.3)

    def act(env: gym.Env, step: int) -> np.ndarray:
        agent = env.unwrapped.agent
        x_vel, y_vel = agent.get_linear_velocity()[:2]
        y = agent.get_position()[1]
        speed = 4.0 if step >= burst_from else target_speed
        action = np.array([1.5 * (speed - x_vel), -1.0 * (y - lane_offset) - 0.5 * y_vel])
        action += noise * rng.standard_normal(2)
        return action

    return act


CONTROLLERS: Dict[str, Callable[[np.random.Generator, int], Controller]] = {
    "OfflineBallRun-v0": ball_run_controller,
}


def collect(task: str, episodes: int, seed: int) -> Dict[str, np.ndarray]:
    """Roll out ``episodes`` controller episodes; episode ``i`` is reproducible from (seed, i)."""
    if task not in CONTROLLERS:
        raise LSPCError(f"no behaviour controller for {task!r} yet; available: {sorted(CONTROLLERS)}")
    env = make_env(task)
    episode_len = env.spec.max_episode_steps
    columns: Dict[str, List[np.ndarray]] = {key: [] for key in DSRL_KEYS}
    for episode in range(episodes):
        rng = np.random.default_rng([seed, episode])
        controller = CONTROLLERS[task](rng, episode_len)
        obs = reset_seeded(env, int(rng.integers(2**31)))
        for step in range(episode_len):
            # store the action actually applied, clipped to the action space
            action = np.clip(controller(env, step), env.action_space.low, env.action_space.high).astype(np.float32)
            next_obs, reward, terminated, truncated, info = env.step(action)
            for key, value in zip(
                DSRL_KEYS,
                (obs, next_obs, action, reward, info.get("cost", 0.0), terminated, truncated and not terminated),
            ):
                columns[key].append(np.asarray(value))
            obs = next_obs
            if terminated or truncated:
                break
    env.close()
    data = {key: np.stack(values) for key, values in columns.items()}
    for key in ("observations", "next_observations", "actions", "rewards", "costs"):
        data[key] = data[key].astype(np.float32)
    for key in ("terminals", "timeouts"):
        data[key] = data[key].astype(bool)
    return data


def write_dsrl_hdf5(path: str, data: Dict[str, np.ndarray], attrs: Dict[str, object]) -> None:
    """Write ``data`` in the DSRL layout, atomically, with provenance in the file attributes."""
    import io

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for key in DSRL_KEYS:
            f.create_dataset(key, data=data[key], compression="gzip")
        for name, value in attrs.items():
            f.attrs[name] = value
        f.attrs["versions"] = ", ".join(
            f"{pkg}=={importlib.metadata.version(pkg)}" for pkg in ("dsrl", "bullet-safety-gym", "gymnasium", "numpy")
        )
    atomic_write_bytes(path, lambda out: out.write(buffer.getvalue()))


def episode_returns(data: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Per-episode reward and cost returns (episodes end at terminals or timeouts)."""
    ends = np.flatnonzero(data["terminals"] | data["timeouts"]) + 1
    starts = np.concatenate([[0], ends[:-1]])
    return {
        "reward": np.array([data["rewards"][s:e].sum() for s, e in zip(starts, ends)]),
        "cost": np.array([data["costs"][s:e].sum() for s, e in zip(starts, ends)]),
    }
