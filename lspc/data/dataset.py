"""Offline data: load through dsrl, check it against the task's env, and sample batches on the device."""
from __future__ import annotations

import contextlib
import os
import random
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple, Union

import gymnasium as gym
import numpy as np
import torch

from lspc import LSPCError
from lspc.data.download import fetch_dsrl_file
from lspc.envs import dsrl_infos

DSRL_KEYS = ("observations", "next_observations", "actions", "rewards", "costs", "terminals", "timeouts")


def load_dataset(
    env: gym.Env,
    dataset_path: Optional[str] = None,
    *,
    density: float = 1.0,
    noise_scale: Optional[float] = None,
    outliers_percent: Optional[float] = None,
    inpaint_ranges: Optional[Sequence[Sequence[float]]] = None,
    cost_limit: float = 10.0,
    seed: int = 0,
    data_ratio: float = 1.0,
) -> Dict[str, np.ndarray]:
    """Load the task's DSRL dataset (``dataset_path`` if given, else ``fetch_dsrl_file``: dsrl's cache,
    DSRL's server, then its Hugging Face mirror) and check it.

    dsrl's ``pre_process_data`` (grid filter by density, observation noise, outliers, inpainting)
    runs only when one of its options is set, in a scratch directory because it always saves a
    PNG into the current one. A density below 1 thins with the task's bins of ``density_bins``.
    A ``data_ratio`` below 1 then keeps that fraction of the trajectories (``subsample_trajectories``).
    """
    offline_env = env.unwrapped
    bins = density_bins(env.spec.id, density)  # refused before any file is read
    if dataset_path is None:  # fetched here, with a fallback, so that dsrl itself never downloads
        dataset_path, _ = fetch_dsrl_file(offline_env.dataset_url)
    elif not os.path.isfile(dataset_path):
        raise LSPCError(f"dataset file {dataset_path!r} does not exist")
    check_file_keys(dataset_path)
    try:
        data = offline_env.get_dataset(h5path=dataset_path)
    except AssertionError as err:  # dsrl reports shape mismatches with bare asserts
        raise LSPCError(f"dataset {dataset_path}: {err}") from None
    except OSError as err:
        raise LSPCError(
            f"could not read the dataset from {dataset_path} ({err}); without network access pass "
            "--dataset_path FILE (a DSRL-layout hdf5 file, e.g. from scripts/collect_dataset.py)"
        ) from None
    check_dataset(data, env)
    if density != 1.0 or noise_scale is not None or outliers_percent is not None or inpaint_ranges is not None:
        offline_env.set_target_cost(cost_limit)
        random.seed(seed)  # dsrl's grid filter samples with Python's global generator
        with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
            data = offline_env.pre_process_data(
                data,
                outliers_percent=outliers_percent,
                noise_scale=noise_scale,
                inpaint_ranges=None if inpaint_ranges is None else tuple(tuple(r) for r in inpaint_ranges),
                density=density,
                **bins,
            )
    return data if data_ratio == 1.0 else subsample_trajectories(data, data_ratio, seed)


def trajectory_bounds(data: Dict[str, np.ndarray]) -> List[Tuple[int, int]]:
    """[start, end) of each trajectory: one ends at a terminal or a timeout (a last, unfinished one at the end)."""
    ends = np.flatnonzero(data["terminals"].astype(bool) | data["timeouts"].astype(bool)) + 1
    n = len(data["observations"])
    if len(ends) == 0 or ends[-1] != n:
        ends = np.append(ends, n)
    return list(zip([0, *ends[:-1]], ends))


def subsample_trajectories(data: Dict[str, np.ndarray], ratio: float, seed: int) -> Dict[str, np.ndarray]:
    """A seeded random ``ratio`` of the trajectories, each kept whole and in dataset order
    (at least one): a fraction of transitions would cut episodes and bias the Bellman targets."""
    if not 0 < ratio <= 1:
        raise LSPCError(f"data_ratio (the fraction of trajectories kept) must be in (0, 1], got {ratio}")
    bounds = trajectory_bounds(data)
    keep = max(1, round(ratio * len(bounds)))
    chosen = np.sort(np.random.default_rng(seed).choice(len(bounds), keep, replace=False))
    idx = np.concatenate([np.arange(*bounds[i]) for i in chosen])
    n = len(data["observations"])
    return {key: value[idx] if isinstance(value, np.ndarray) and len(value) == n else value
            for key, value in data.items()}


def density_bins(task: str, density: float) -> Dict[str, int]:
    """The grid filter's settings for ``density`` < 1, from ``dsrl.infos.DENSITY_CFG`` as the
    authors' code takes them: trajectories are binned by (cost return, reward return) into
    ``cbins`` x ``rbins`` cells, a cell keeps at most ``max_npb`` of them (drawn at random) and
    is dropped if it has ``min_npb`` or fewer. dsrl's own defaults would thin every task alike.
    Density 1 (no filter) needs none."""
    if density == 1.0:
        return {}
    table = dsrl_infos().DENSITY_CFG
    key = f"{task}_density{density}"
    if key not in table:
        listed = sorted(float(name.split("_density")[1]) for name in table if name.startswith(f"{task}_density"))
        choices = (f"it lists {', '.join(f'{d:g}' for d in listed)} for {task}" if listed
                   else f"it lists none for {task}")
        raise LSPCError(f"density {density:g} has no grid-filter bins in dsrl's DENSITY_CFG: {choices} "
                        "(density 1.0, no filter, works for every task)")
    return {name: int(table[key][name]) for name in ("cbins", "rbins", "max_npb", "min_npb")}


def check_file_keys(dataset_path: str) -> None:
    """Name every missing key at once (dsrl stops at the first with a bare assert)."""
    import h5py

    try:
        with h5py.File(dataset_path, "r") as f:
            missing = [key for key in DSRL_KEYS if key not in f]
    except OSError as err:
        raise LSPCError(f"dataset file {dataset_path!r} is not a readable hdf5 file ({err})") from None
    if missing:
        raise LSPCError(f"dataset {dataset_path!r} lacks the DSRL keys {missing}; expected all of {list(DSRL_KEYS)}")


def check_dataset(data: Dict[str, np.ndarray], env: gym.Env) -> None:
    """Raise a one-line error for data that cannot be trained on for this env."""
    n = len(data["observations"])
    if n == 0:
        raise LSPCError("the dataset is empty")
    expected = {
        "observations": (n, *env.observation_space.shape),
        "next_observations": (n, *env.observation_space.shape),
        "actions": (n, *env.action_space.shape),
        "rewards": (n,),
        "costs": (n,),
        "terminals": (n,),
        "timeouts": (n,),
    }
    for key, shape in expected.items():
        if data[key].shape != shape:
            raise LSPCError(
                f"dataset key {key!r} has shape {data[key].shape}, but {env.spec.id} needs {shape}"
            )
    for key in ("observations", "next_observations", "actions", "rewards", "costs"):
        bad = ~np.isfinite(data[key])
        if bad.any():
            first = int(np.argwhere(bad)[0][0])
            raise LSPCError(f"dataset key {key!r} has {int(bad.sum())} NaN/inf values (first at transition {first})")
    if (data["costs"] < 0).any():
        raise LSPCError("dataset costs must be non-negative (the cost critics assume c >= 0)")


def episode_dones(data: Dict[str, np.ndarray], bootstrap_on_timeout: bool) -> np.ndarray:
    """The `done` used in the Bellman targets.

    Default: terminals OR timeouts, the authors' release's choice without its
    sum bug (terminal + timeout can be 2). ``bootstrap_on_timeout`` treats a time-limit cut as
    a non-terminal and bootstraps through it, the textbook treatment.
    """
    terminals = data["terminals"].astype(bool)
    if bootstrap_on_timeout:
        return terminals.astype(np.float32)
    return (terminals | data["timeouts"].astype(bool)).astype(np.float32)


class TransitionBuffer:
    """The whole dataset as tensors on the training device, sampled uniformly with its own generator.
    ``seed`` a list (several seeds trained as one stacked model): one copy of the data, one generator
    per seed, seeded as that seed's own run seeds it, and batches of shape [seeds, batch_size, ...]."""

    def __init__(
        self,
        data: Dict[str, np.ndarray],
        device: torch.device,
        seed: Union[int, Sequence[int]],
        *,
        reward_scale: float = 1.0,
        bootstrap_on_timeout: bool = False,
    ) -> None:
        def as_tensor(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)

        self.observations = as_tensor(data["observations"])
        self.actions = as_tensor(data["actions"])
        self.rewards = as_tensor(data["rewards"]) * reward_scale  # the rewards only: costs are never scaled
        self.costs = as_tensor(data["costs"])
        self.next_observations = as_tensor(data["next_observations"])
        self.dones = as_tensor(episode_dones(data, bootstrap_on_timeout))
        self.size = len(self.observations)
        self.stacked = not isinstance(seed, int)
        self.generators = []
        for each in seed if self.stacked else [seed]:
            self.generators.append(torch.Generator(device=device))
            self.generators[-1].manual_seed(each)
        self.generator = self.generators[0]

    def sample(self, batch_size: int) -> Dict[str, torch.Tensor]:
        draws = [torch.randint(self.size, (batch_size,), generator=g, device=self.observations.device)
                 for g in self.generators]
        idx = torch.stack(draws) if self.stacked else draws[0]
        return {
            "observations": self.observations[idx],
            "actions": self.actions[idx],
            "rewards": self.rewards[idx],
            "costs": self.costs[idx],
            "next_observations": self.next_observations[idx],
            "dones": self.dones[idx],
        }
