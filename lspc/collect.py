"""Collect DSRL-layout datasets from the real simulators with parameterized behaviour controllers.

DSRL's files come from a hub that is often unreachable; these controllers make comparable data
offline. A controller reads the simulator state (``env.unwrapped.agent``) and its episode-level
parameters (target speed, lane offset or circle radius, wall margin, a late over-speed burst, a
dropped constraint, action noise) are drawn per episode, so the trajectories spread over a
reward-versus-cost frontier. As in DSRL, episodes whose cost exceeds the task's maximum episode
cost (``dsrl.infos.MAX_EPISODE_COST``, see ``default_cost_cap``) are dropped.

Episode ``i`` depends only on ``(seed, i)``: the same seed gives the same file whatever the number
of worker processes.
"""
from __future__ import annotations

import concurrent.futures
import importlib.metadata
import io
from typing import Callable, Dict, List, Optional, Tuple

import gymnasium as gym
import h5py
import numpy as np

from lspc import LSPCError
from lspc.checkpoint import atomic_write_bytes
from lspc.data import DSRL_KEYS
from lspc.envs import cost_limits, dsrl_reference, make_env, reset_seeded

Controller = Callable[[gym.Env, int], np.ndarray]  # (env, step) -> action
ControllerFactory = Callable[[np.random.Generator, int], Controller]  # (rng, episode_len) -> controller


def _burst_step(rng: np.random.Generator, episode_len: int, probability: float) -> int:
    """The step from which an episode misbehaves (never, with 1 - probability)."""
    return int(rng.integers(episode_len // 2, episode_len)) if rng.random() < probability else episode_len


def ball_run_controller(rng: np.random.Generator, episode_len: int) -> Controller:
    """Ball (external force in world x/y): speed and lane control. The velocity limit is 2.5 and
    the lane is |y| <= 2, so fast targets, offsets near the boundary and a late burst cost."""
    target_speed = rng.uniform(0.8, 2.4) if rng.random() < 0.6 else rng.uniform(2.4, 6.0)
    lane_offset = rng.uniform(-2.6, 2.6) if rng.random() < 0.2 else rng.uniform(-1.0, 1.0)
    burst_from = _burst_step(rng, episode_len, 0.4)
    burst_speed = rng.uniform(3.0, 9.0)
    noise = rng.uniform(0.0, 0.3)

    def act(env: gym.Env, step: int) -> np.ndarray:
        agent = env.unwrapped.agent
        x_vel, y_vel = agent.get_linear_velocity()[:2]
        y = agent.get_position()[1]
        speed = burst_speed if step >= burst_from else target_speed
        return np.array([1.5 * (speed - x_vel), -1.0 * (y - lane_offset) - 0.5 * y_vel]) + noise * rng.standard_normal(2)

    return act


def car_run_controller(rng: np.random.Generator, episode_len: int) -> Controller:
    """RaceCar (wheel speed, steering angle): ``action[0] < 0`` drives forward at about
    3.3 * |action[0]| m/s, positive ``action[1]`` turns towards -y. Speed limit 1.5, lane |y| <= 2."""
    target_speed = rng.uniform(0.4, 1.3) if rng.random() < 0.6 else rng.uniform(1.3, 2.5)
    lane_offset = rng.choice([-1, 1]) * rng.uniform(1.5, 2.5) if rng.random() < 0.15 else rng.uniform(-1.0, 1.0)
    burst_from = _burst_step(rng, episode_len, 0.5)
    burst_speed = rng.uniform(2.0, 3.3)
    noise = rng.uniform(0.0, 0.2)

    def act(env: gym.Env, step: int) -> np.ndarray:
        agent = env.unwrapped.agent
        y, y_vel = agent.get_position()[1], agent.get_linear_velocity()[1]
        speed = burst_speed if step >= burst_from else target_speed
        return np.array([-speed / 3.3, (y - lane_offset) + y_vel]) + noise * rng.standard_normal(2)

    return act


def _circle_velocity(position: np.ndarray, radius: float, wall: float) -> np.ndarray:
    """Desired direction of a clockwise lap (the reward's direction) at ``radius``, flattened so
    that |x| stays within ``wall`` (the cost is |x| > 6); ``wall = inf`` ignores the constraint."""
    distance = np.linalg.norm(position) + 1e-6
    radial = position / distance
    tangent = np.array([position[1], -position[0]]) / distance
    target_radius = min(radius, wall / max(abs(radial[0]), 1e-6))
    return tangent + 0.5 * (target_radius - distance) * radial


def _circle_parameters(rng: np.random.Generator, episode_len: int, speeds: Tuple[float, float],
                       walls: Tuple[float, float]) -> Dict[str, float]:
    return {
        "speed": rng.uniform(*speeds),
        "radius": rng.uniform(3.0, 7.5),
        "wall": rng.uniform(*walls),
        "drop_wall_from": _burst_step(rng, episode_len, 0.3),  # fills the middle of the cost range
        "noise": rng.uniform(0.0, 0.3),
    }


def ball_circle_controller(rng: np.random.Generator, episode_len: int) -> Controller:
    """Ball: track the desired lap velocity with a force proportional to the velocity error."""
    p = _circle_parameters(rng, episode_len, speeds=(1.0, 7.0), walls=(4.5, 6.0))

    def act(env: gym.Env, step: int) -> np.ndarray:
        agent = env.unwrapped.agent
        wall = np.inf if step >= p["drop_wall_from"] else p["wall"]
        desired = p["speed"] * _circle_velocity(agent.get_position()[:2], p["radius"], wall)
        return desired - agent.get_linear_velocity()[:2] + p["noise"] * rng.standard_normal(2)

    return act


def car_circle_controller(rng: np.random.Generator, episode_len: int) -> Controller:
    """RaceCar: constant wheel speed, steering towards the desired lap direction (the car drives
    along yaw + pi). Its turning radius overshoots the flattened path, hence the tighter walls."""
    p = _circle_parameters(rng, episode_len, speeds=(0.8, 3.3), walls=(3.5, 5.5))

    def act(env: gym.Env, step: int) -> np.ndarray:
        agent = env.unwrapped.agent
        wall = np.inf if step >= p["drop_wall_from"] else p["wall"]
        desired = _circle_velocity(agent.get_position()[:2], p["radius"], wall)
        heading = agent.get_orientation()[2] + np.pi
        error = heading - np.arctan2(desired[1], desired[0])
        steering = 2.0 * np.arctan2(np.sin(error), np.cos(error))
        return np.array([-p["speed"] / 3.3, steering]) + p["noise"] * rng.standard_normal(2)

    return act


CONTROLLERS: Dict[str, ControllerFactory] = {
    "OfflineBallRun-v0": ball_run_controller,
    "OfflineCarRun-v0": car_run_controller,
    "OfflineBallCircle-v0": ball_circle_controller,
    "OfflineCarCircle-v0": car_circle_controller,
}


def default_cost_cap(task: str) -> float:
    """DSRL's max episode cost, but at least twice the task's largest threshold: CarRun's DSRL cap
    (40) equals its top threshold and would leave no trajectory that is unsafe at every threshold."""
    return max(dsrl_reference(task)["max_episode_cost"], 2 * max(cost_limits(task)))


def episode_start_seed(seed: int, episode: int) -> int:
    return int(np.random.default_rng([seed, episode]).integers(2**31))


def rollout(env: gym.Env, task: str, seed: int, episode: int) -> Dict[str, np.ndarray]:
    """One controller episode; its parameters, noise and start state depend only on (seed, episode)."""
    rng = np.random.default_rng([seed, episode, 1])
    controller = CONTROLLERS[task](rng, env.spec.max_episode_steps)
    obs = reset_seeded(env, episode_start_seed(seed, episode))
    columns: Dict[str, List[np.ndarray]] = {key: [] for key in DSRL_KEYS}
    for step in range(env.spec.max_episode_steps):
        # store the action actually applied, clipped to the action space
        action = np.clip(controller(env, step), env.action_space.low, env.action_space.high).astype(np.float32)
        next_obs, reward, terminated, truncated, info = env.step(action)
        values = (obs, next_obs, action, reward, info.get("cost", 0.0), terminated, truncated and not terminated)
        for key, value in zip(DSRL_KEYS, values):
            columns[key].append(np.asarray(value))
        obs = next_obs
        if terminated or truncated:
            break
    return {key: np.stack(values) for key, values in columns.items()}


def _rollout_chunk(task: str, seed: int, episodes: range) -> List[Dict[str, np.ndarray]]:
    # a fresh env per episode: Bullet's reset keeps some simulator state (RaceCar, Drone), so a
    # reused env would make an episode depend on the ones before it and break its replay
    results = []
    for episode in episodes:
        env = make_env(task)
        try:
            results.append(rollout(env, task, seed, episode))
        finally:
            env.close()
    return results


def collect(task: str, episodes: int, seed: int, workers: int = 1, max_cost: Optional[float] = None,
            chunk: int = 20) -> Dict[str, np.ndarray]:
    """``episodes`` episodes with cost <= ``max_cost`` (default ``default_cost_cap``), in the DSRL layout.

    Episodes are rolled out in index order (in chunks spread over ``workers`` processes) and the
    first ``episodes`` that pass the cost filter are kept. Per-episode provenance is returned
    under ``episode_indices`` and ``episode_start_seeds`` (not part of the DSRL layout).
    """
    if task not in CONTROLLERS:
        raise LSPCError(f"no behaviour controller for {task!r} yet; available: {sorted(CONTROLLERS)}")
    if episodes <= 0:
        raise LSPCError(f"episodes must be positive, got {episodes}")
    cost_cap = default_cost_cap(task) if max_cost is None else max_cost
    kept: List[Tuple[int, Dict[str, np.ndarray]]] = []
    next_index, max_attempts = 0, 20 * episodes
    pool = concurrent.futures.ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        while len(kept) < episodes:
            if next_index >= max_attempts:
                raise LSPCError(f"only {len(kept)} of {next_index} episodes had cost <= {cost_cap:g}")
            ranges = [range(start, start + chunk) for start in range(next_index, next_index + chunk * max(workers, 1), chunk)]
            next_index = ranges[-1].stop
            if pool is None:
                results = [_rollout_chunk(task, seed, r) for r in ranges]
            else:
                results = list(pool.map(_rollout_chunk, [task] * len(ranges), [seed] * len(ranges), ranges))
            for r, chunk_episodes in zip(ranges, results):
                kept += [(i, ep) for i, ep in zip(r, chunk_episodes) if ep["costs"].sum() <= cost_cap]
    finally:
        if pool is not None:
            pool.shutdown()
    kept = kept[:episodes]
    data = {key: np.concatenate([ep[key] for _, ep in kept]) for key in DSRL_KEYS}
    for key in ("observations", "next_observations", "actions", "rewards", "costs"):
        data[key] = data[key].astype(np.float32)
    for key in ("terminals", "timeouts"):
        data[key] = data[key].astype(bool)
    data["episode_indices"] = np.array([i for i, _ in kept])
    data["episode_start_seeds"] = np.array([episode_start_seed(seed, i) for i, _ in kept])
    data["episodes_attempted"] = np.array(next_index)
    return data


def write_dsrl_hdf5(path: str, data: Dict[str, np.ndarray], attrs: Dict[str, object]) -> None:
    """Write the DSRL keys of ``data`` atomically; provenance and the remaining entries of
    ``data`` (e.g. per-episode start seeds) go into the file attributes, since dsrl slices every
    dataset it finds per transition."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for key in DSRL_KEYS:
            f.create_dataset(key, data=data[key], compression="gzip")
        for name, value in {**attrs, **{k: v for k, v in data.items() if k not in DSRL_KEYS}}.items():
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
        "length": ends - starts,
    }

