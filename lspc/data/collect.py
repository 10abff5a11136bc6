"""Collect DSRL-layout datasets from the real simulators with parameterized behaviour controllers.

DSRL's files come from a hub that is often unreachable; these controllers make comparable data
offline. A controller reads the simulator state (``env.unwrapped.agent``) and its episode-level
parameters (target speed, lane offset or circle radius, wall margin, a late over-speed burst, a
dropped constraint, action noise) are drawn per episode, so the trajectories spread over a
reward-versus-cost frontier. As in DSRL, episodes whose cost exceeds the task's maximum episode
cost (``dsrl.infos.MAX_EPISODE_COST``, see ``default_cost_cap``) are dropped.

Episode ``i`` depends only on ``(seed, i)``: the same seed gives the same file whatever the number
of worker processes.

What every behaviour shares (lspc.data.behaviour's FSRL agents too) is here as well: the DSRL layout and
its writer, DSRL's (cost, reward) grid filter, and episodes saved in chunks so that a long
collection can be resumed.
"""
from __future__ import annotations

import concurrent.futures
import importlib.metadata
import io
import json
import os
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import gymnasium as gym
import h5py
import numpy as np
import torch
import tqdm

from lspc import LSPCError, available_cores
from lspc.checkpoint import atomic_write_bytes
from lspc.data.dataset import DSRL_KEYS
from lspc.envs import cost_limits, dsrl_reference, make_env, reset_seeded

Controller = Callable[[gym.Env, int], np.ndarray]  # (env, step) -> action
ControllerFactory = Callable[[np.random.Generator, int], Controller]  # (rng, episode_len) -> controller


def threads_per_worker(workers: int) -> int:
    """Torch threads for each of ``workers`` processes so that together they use each core once."""
    return max(1, available_cores() // workers)


def process_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """Worker processes that share the cores. Torch's default, a thread per core in every process,
    oversubscribes them: two FSRL agents training side by side on 2 cores ran 8x slower."""
    return concurrent.futures.ProcessPoolExecutor(workers, initializer=torch.set_num_threads,
                                                  initargs=(threads_per_worker(workers),))


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


def record_episode(env: gym.Env, start_seed: int, choose: Callable[[np.ndarray, int], np.ndarray]
                   ) -> Dict[str, np.ndarray]:
    """One episode from ``start_seed`` in the DSRL columns, ``choose(obs, step)`` giving each action."""
    obs = reset_seeded(env, start_seed)
    columns: Dict[str, List[np.ndarray]] = {key: [] for key in DSRL_KEYS}
    for step in range(env.spec.max_episode_steps):
        # store the action actually applied, clipped to the action space
        action = np.clip(choose(obs, step), env.action_space.low, env.action_space.high).astype(np.float32)
        next_obs, reward, terminated, truncated, info = env.step(action)
        values = (obs, next_obs, action, reward, info.get("cost", 0.0), terminated, truncated and not terminated)
        for key, value in zip(DSRL_KEYS, values):
            columns[key].append(np.asarray(value))
        obs = next_obs
        if terminated or truncated:
            break
    return {key: np.stack(values) for key, values in columns.items()}


def rollout(env: gym.Env, task: str, seed: int, episode: int) -> Dict[str, np.ndarray]:
    """One controller episode; its parameters, noise and start state depend only on (seed, episode)."""
    controller = CONTROLLERS[task](np.random.default_rng([seed, episode, 1]), env.spec.max_episode_steps)
    return record_episode(env, episode_start_seed(seed, episode), lambda obs, step: controller(env, step))


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
    pool = process_pool(workers) if workers > 1 else None
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
    data = episodes_to_dsrl([ep for _, ep in kept])
    data["episode_indices"] = np.array([i for i, _ in kept])
    data["episode_start_seeds"] = np.array([episode_start_seed(seed, i) for i, _ in kept])
    data["episodes_attempted"] = np.array(next_index)
    return data


def episodes_to_dsrl(episodes: Sequence[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """Concatenate per-episode columns into the DSRL layout and dtypes."""
    data = {key: np.concatenate([ep[key] for ep in episodes]) for key in DSRL_KEYS}
    for key in ("observations", "next_observations", "actions", "rewards", "costs"):
        data[key] = data[key].astype(np.float32)
    for key in ("terminals", "timeouts"):
        data[key] = data[key].astype(bool)
    return data


def grid_filter(cost: np.ndarray, reward: np.ndarray, rng: np.random.Generator, cost_bins: int = 60,
                reward_bins: int = 50, max_per_bin: int = 10, cost_range: Tuple[float, float] = (-np.inf, np.inf),
                reward_range: Tuple[float, float] = (-np.inf, np.inf)) -> np.ndarray:
    """Indices (ascending) of the episodes that DSRL's grid filter keeps (its scripts/utils.py).

    The grid spans the episodes' own (cost, reward) extent clipped to the ranges; episodes outside
    the ranges are dropped. Cell ``(cost - lo) // step`` with ``step = (hi - lo) / bins``, so the
    maximum gets a cell of its own, as in DSRL. A cell holding more than ``max_per_bin`` episodes
    keeps ``max_per_bin`` of them drawn without replacement from ``rng``. An extent of zero width
    is one cell (DSRL divides by zero there).
    """
    cost, reward = np.asarray(cost, dtype=np.float64), np.asarray(reward, dtype=np.float64)
    if cost.shape != reward.shape or cost.ndim != 1:
        raise LSPCError(f"grid filter needs two equal-length 1-d arrays, got shapes {cost.shape} and {reward.shape}")
    if max_per_bin <= 0 or cost_bins <= 0 or reward_bins <= 0:
        raise LSPCError(f"grid filter bins and max_per_bin must be positive, "
                        f"got {cost_bins}, {reward_bins}, {max_per_bin}")
    if len(cost) == 0:
        return np.zeros(0, dtype=np.int64)

    def cells(x: np.ndarray, bounds: Tuple[float, float], bins: int) -> Tuple[np.ndarray, np.ndarray]:
        lo, hi = max(x.min(), bounds[0]), min(x.max(), bounds[1])
        inside = (x >= lo) & (x <= hi)
        step = (hi - lo) / bins
        # floor division, not floor(x / step): DSRL's ``//`` puts boundary values in the same cells
        return (np.floor_divide(x - lo, step) if step > 0 else np.zeros_like(x)).astype(np.int64), inside

    cost_cell, cost_inside = cells(cost, cost_range, cost_bins)
    reward_cell, reward_inside = cells(reward, reward_range, reward_bins)
    members: Dict[Tuple[int, int], List[int]] = {}
    for i in np.flatnonzero(cost_inside & reward_inside):
        members.setdefault((int(cost_cell[i]), int(reward_cell[i])), []).append(int(i))
    kept: List[int] = []
    for cell in sorted(members):  # a fixed order, so the draws depend only on rng
        indices = members[cell]
        kept += indices if len(indices) <= max_per_bin else rng.choice(indices, max_per_bin, replace=False).tolist()
    return np.array(sorted(kept), dtype=np.int64)


class EpisodeChunks:
    """Episodes saved in chunks of ``chunk`` consecutive indices under ``directory``, so that an
    interrupted collection continues from what is on disk. ``meta`` (the collection's parameters)
    is stored beside them; chunks of a different collection are refused, not mixed in."""

    def __init__(self, directory: str, meta: Dict[str, object], chunk: int) -> None:
        if chunk <= 0:
            raise LSPCError(f"chunk must be positive, got {chunk}")
        self.directory, self.chunk = directory, chunk
        meta = json.loads(json.dumps({**meta, "chunk": chunk}))  # as it reads back from disk
        meta_path = os.path.join(directory, "meta.json")
        os.makedirs(directory, exist_ok=True)
        if os.path.exists(meta_path):
            with open(meta_path) as f:
                saved = json.load(f)
            if saved != meta:
                differ = sorted(k for k in set(saved) | set(meta) if saved.get(k) != meta.get(k))
                raise LSPCError(f"{directory} holds episodes of another collection (differs in {', '.join(differ)}); "
                                "remove it or rerun with the same arguments")
        else:
            atomic_write_bytes(meta_path, lambda f: f.write(json.dumps(meta, indent=1).encode()))

    def _path(self, start: int) -> str:
        return os.path.join(self.directory, f"chunk-{start:07d}.npz")

    def starts(self, episodes: int) -> List[int]:
        return list(range(0, episodes, self.chunk))

    def missing(self, episodes: int) -> List[range]:
        return [range(s, min(s + self.chunk, episodes)) for s in self.starts(episodes)
                if not self._holds(s, min(s + self.chunk, episodes))]

    def _holds(self, start: int, stop: int) -> bool:
        if not os.path.exists(self._path(start)):
            return False
        with np.load(self._path(start)) as f:
            return int(f["count"]) >= stop - start

    def save(self, start: int, episodes: Sequence[Dict[str, np.ndarray]]) -> None:
        """Save the episodes ``start, start + 1, ...``: each a dict of per-step columns and scalars."""
        columns = {key: [np.asarray(ep[key]) for ep in episodes] for key in episodes[0]}
        arrays: Dict[str, np.ndarray] = {}
        for key, values in columns.items():
            if values[0].ndim == 0:
                arrays[f"scalar/{key}"] = np.stack(values)
            else:
                arrays[f"step/{key}"] = np.concatenate(values)
                arrays[f"length/{key}"] = np.array([len(v) for v in values])
        buffer = io.BytesIO()
        np.savez(buffer, count=len(episodes), **arrays)
        atomic_write_bytes(self._path(start), lambda f: f.write(buffer.getvalue()))

    def load(self, episodes: int) -> List[Dict[str, np.ndarray]]:
        """Episodes ``0 .. episodes - 1``, all of which must be saved."""
        loaded: List[Dict[str, np.ndarray]] = []
        for start in self.starts(episodes):
            with np.load(self._path(start)) as f:
                count, split = int(f["count"]), {}
                for name in f.files:
                    kind, _, key = name.partition("/")
                    if kind == "scalar":
                        split[key] = list(f[name])
                    elif kind == "step":
                        split[key] = np.split(f[name], np.cumsum(f[f"length/{key}"])[:-1])
            loaded += [{k: np.asarray(v[i]) for k, v in split.items()} for i in range(count)]
        return loaded[:episodes]


def collect_in_chunks(chunks: EpisodeChunks, episodes: int, roll: Callable[[range], List[Dict[str, np.ndarray]]],
                      workers: int = 1, desc: str = "episodes") -> List[Dict[str, np.ndarray]]:
    """Roll out the episodes not yet on disk, ``roll(range)`` per chunk (in ``workers`` processes;
    ``roll`` must then be picklable), saving each chunk as it finishes, with a progress bar."""
    todo = chunks.missing(episodes)
    with tqdm.tqdm(total=episodes, initial=episodes - sum(len(r) for r in todo), desc=desc, unit="ep",
                   dynamic_ncols=True) as bar:
        def done(r: range, rolled: List[Dict[str, np.ndarray]]) -> None:
            chunks.save(r.start, rolled)
            bar.update(len(r))

        if workers > 1 and len(todo) > 1:
            with process_pool(workers) as pool:
                for r, rolled in zip(todo, pool.map(roll, todo)):
                    done(r, rolled)
        else:
            for r in todo:
                done(r, roll(r))
    return chunks.load(episodes)


def write_dsrl_hdf5(path: str, data: Dict[str, np.ndarray], attrs: Dict[str, object],
                    packages: Iterable[str] = ()) -> None:
    """Write the DSRL keys of ``data`` atomically; provenance and the remaining entries of
    ``data`` (e.g. per-episode start seeds) go into the file attributes, since dsrl slices every
    dataset it finds per transition. ``packages`` are versioned beside the simulator's."""
    buffer = io.BytesIO()
    # the HDF5 1.8 format stores attributes over 64 KiB (per-episode provenance beyond ~8,000 episodes)
    with h5py.File(buffer, "w", libver=("v108", "v108")) as f:
        for key in DSRL_KEYS:
            f.create_dataset(key, data=data[key], compression="gzip")
        for name, value in {**attrs, **{k: v for k, v in data.items() if k not in DSRL_KEYS}}.items():
            f.attrs[name] = value
        f.attrs["versions"] = ", ".join(
            f"{pkg}=={_version(pkg)}" for pkg in ("dsrl", "bullet-safety-gym", "gymnasium", "numpy", *packages))
    atomic_write_bytes(path, lambda out: out.write(buffer.getvalue()))


def _version(package: str) -> str:
    """The installed version; a file rewritten where the simulator is missing says so."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def episode_returns(data: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Per-episode reward and cost returns (episodes end at terminals or timeouts)."""
    ends = np.flatnonzero(data["terminals"] | data["timeouts"]) + 1
    starts = np.concatenate([[0], ends[:-1]])
    return {
        "reward": np.array([data["rewards"][s:e].sum() for s, e in zip(starts, ends)]),
        "cost": np.array([data["costs"][s:e].sum() for s, e in zip(starts, ends)]),
        "length": ends - starts,
    }

