"""The 38 DSRL tasks, their suites and thresholds, and one place that makes their environments."""
from __future__ import annotations

import contextlib
import difflib
import functools
import io
import os
import sys
from types import ModuleType
from typing import Dict, Iterator, List, Optional, Tuple

import gymnasium as gym
import numpy as np

from lspc import LSPCError, suite_shims

_BULLET = [f"Offline{agent}{task}-v0" for agent in ("Ant", "Ball", "Car", "Drone") for task in ("Run", "Circle")]
_SAFETY_GYM_NAV = [
    f"Offline{agent}{task}{level}Gymnasium-v0"
    for agent in ("Car", "Point")
    for task in ("Button", "Circle", "Goal", "Push")
    for level in (1, 2)
]
_VELOCITY = [
    f"Offline{agent}VelocityGymnasium-v1"
    for agent in ("Ant", "HalfCheetah", "Hopper", "Swimmer", "Walker2d")
]
_METADRIVE = [
    f"OfflineMetadrive-{road}{density}-v0"
    for road in ("easy", "medium", "hard")
    for density in ("sparse", "mean", "dense")
]

SUITES: Dict[str, List[str]] = {
    "bullet": _BULLET,
    "safety_gymnasium": _SAFETY_GYM_NAV,
    "velocity": _VELOCITY,
    "metadrive": _METADRIVE,
}
ALL_TASKS: List[str] = [task for tasks in SUITES.values() for task in tasks]

# DSRL's protocol: the cost thresholds at which every policy is scored.
SUITE_COST_LIMITS: Dict[str, Tuple[float, ...]] = {
    "bullet": (10.0, 20.0, 40.0),
    "safety_gymnasium": (20.0, 40.0, 80.0),
    "velocity": (20.0, 40.0, 80.0),
    "metadrive": (10.0, 20.0, 40.0),
}

# (observation size, action size) of every task, as its simulator makes it (tests/test_suites.py checks
# them against the simulators); every DSRL task acts in the box [-1, 1]^act. They let a run train where
# the task's simulator is not installed (``dataset_env``).
_NAV_OBS = {"Car": {"Button": 88, "Circle": 40, "Goal": 72, "Push": 88},
            "Point": {"Button": 76, "Circle": 28, "Goal": 60, "Push": 76}}
TASK_SPACES: Dict[str, Tuple[int, int]] = {
    "OfflineAntRun-v0": (33, 8), "OfflineAntCircle-v0": (34, 8), "OfflineBallRun-v0": (7, 2),
    "OfflineBallCircle-v0": (8, 2), "OfflineCarRun-v0": (7, 2), "OfflineCarCircle-v0": (8, 2),
    "OfflineDroneRun-v0": (17, 4), "OfflineDroneCircle-v0": (18, 4),
    **{f"Offline{agent}{task}{level}Gymnasium-v0": (obs, 2)
       for agent, sizes in _NAV_OBS.items() for task, obs in sizes.items() for level in (1, 2)},
    "OfflineAntVelocityGymnasium-v1": (27, 8), "OfflineHalfCheetahVelocityGymnasium-v1": (17, 6),
    "OfflineHopperVelocityGymnasium-v1": (11, 3), "OfflineSwimmerVelocityGymnasium-v1": (8, 2),
    "OfflineWalker2dVelocityGymnasium-v1": (17, 6),
    **{task: (259, 2) for task in _METADRIVE},
}
ACTION_BOUND = 1.0
assert sorted(TASK_SPACES) == sorted(ALL_TASKS), "the spaces table must cover exactly the DSRL tasks"

# What each suite needs beyond the core install.
_SUITE_INSTALL_HINT = {
    "bullet": "the Bullet Safety Gym suite (pybullet, bullet-safety-gym); install it with `make install`",
    "safety_gymnasium": "the Safety-Gymnasium suite; install it with `make install-suites`",
    "velocity": "the Safety-Gymnasium suite; install it with `make install-suites`",
    "metadrive": "the MetaDrive suite; install it with `make install-suites`",
}


def check_task(task: str) -> str:
    """Return the task's suite, or raise a clear error that lists the known tasks."""
    for suite, tasks in SUITES.items():
        if task in tasks:
            return suite
    close = difflib.get_close_matches(task, ALL_TASKS, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise LSPCError(f"unknown task {task!r}{hint}; known tasks: {', '.join(ALL_TASKS)}")


def cost_limits(task: str) -> Tuple[float, ...]:
    return SUITE_COST_LIMITS[check_task(task)]


def action_bound(env: gym.Env, method: str) -> float:
    """m of an action box [-m, m] in every dimension (every DSRL task's is [-1, 1]): the one bound that
    LSPC's decoder (m * tanh) and osrl's actors take. Another box is refused in one line."""
    low, high = env.action_space.low, env.action_space.high
    if not ((high == high[0]).all() and (low == -high).all()):
        raise LSPCError(f"{method} acts in a box [-m, m] in every dimension; this task's actions are in "
                        f"[{low}, {high}]")
    return float(high[0])


@contextlib.contextmanager
def _real_std_streams() -> Iterator[None]:
    """bullet_safety_gym silences pybullet by flushing the C stream named after ``sys.stdout`` /
    ``sys.stderr`` (at import and at env construction), which fails when Python's streams are
    replaced (pytest capture, Jupyter). Point them at the process's real streams meanwhile."""
    replaced = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = sys.__stdout__ or sys.stdout, sys.__stderr__ or sys.stderr
    try:
        yield
    finally:
        sys.stdout, sys.stderr = replaced


def _import_dsrl() -> None:
    # dsrl imports every suite and prints a warning for each one that is missing; we import the
    # suites ourselves (with their shims) and report a missing one only when it is asked for.
    os.environ.setdefault("DSRL_SUPPRESS_IMPORT_ERROR", "1")
    # dsrl imports old gym (for MetaDrive), which prints a banner asking to migrate to gymnasium
    with contextlib.redirect_stderr(io.StringIO()):
        import dsrl  # noqa: F401  (registers the Bullet tasks with gymnasium)


_SUITE_IMPORTS = {"bullet": suite_shims.import_bullet,
                  "safety_gymnasium": suite_shims.import_safety_gymnasium,
                  "velocity": suite_shims.import_safety_gymnasium,
                  "metadrive": suite_shims.import_metadrive}


@functools.lru_cache(maxsize=None)
def import_suite(suite: str) -> None:
    """Import dsrl and the simulator of ``suite`` once, or say how to install it."""
    _import_dsrl()
    if suite in _SUITE_IMPORTS:
        try:
            with _real_std_streams():
                _SUITE_IMPORTS[suite]()
        except ImportError as err:
            raise LSPCError(f"{suite} tasks need {_SUITE_INSTALL_HINT[suite]} ({err}); training without it: "
                            "--eval_every 0, then eval_lspc.py where it is installed") from None


def simulator_missing(task: str) -> str:
    """Why ``task``'s simulator cannot be imported here, in one line ('' where it can)."""
    try:
        import_suite(check_task(task))
    except LSPCError as err:
        return str(err)
    return ""


def dsrl_infos() -> ModuleType:
    """dsrl's table module ``dsrl.infos`` (reference returns, density bins), imported quietly."""
    _import_dsrl()
    from dsrl import infos

    return infos


def dsrl_key(task: str) -> str:
    """The short name ``dsrl.infos`` files a task under (``OfflineBallRun-v0`` -> ``BallRun``)."""
    check_task(task)
    key = task.removeprefix("Offline").removesuffix("-v0").removesuffix("-v1").removesuffix("Gymnasium")
    return key.removeprefix("Metadrive-")


def dsrl_reference(task: str) -> Dict[str, float]:
    """DSRL's reference returns of a task (``dsrl.infos``): reward range and max episode cost."""
    infos, key = dsrl_infos(), dsrl_key(task)
    return {"min_episode_reward": float(infos.MIN_EPISODE_REWARD[key]),
            "max_episode_reward": float(infos.MAX_EPISODE_REWARD[key]),
            "max_episode_cost": float(infos.MAX_EPISODE_COST[key])}


def make_env(task: str, episode_len: Optional[int] = None) -> gym.Env:
    """Make a DSRL task's environment: gymnasium API, ``info['cost']`` on every step, and
    ``env.unwrapped`` the dsrl OfflineEnv (``get_dataset``, ``get_normalized_score``).

    ``episode_len`` overrides the task's registered time limit (DSRL's episode length).
    """
    suite = check_task(task)
    import_suite(suite)
    limit = {} if episode_len is None else {"max_episode_steps": episode_len}
    with _real_std_streams():
        if suite == "metadrive":  # dsrl registers MetaDrive in old gym's registry
            import gym as old_gym

            return OldGymAdapter(old_gym.make(task, **limit))
        return gym.make(task, **limit)


def dataset_env(task: str) -> gym.Env:
    """The task as its offline data sees it, with no simulator: dsrl's ``OfflineEnv`` (the dataset's
    address, ``get_dataset``, the reference returns of ``get_normalized_score``) with the spaces of
    ``TASK_SPACES`` and the task's registered time limit. Training with evaluation off uses it, so a run
    trains where pybullet, MuJoCo or MetaDrive is not installed; it cannot be reset or stepped."""
    check_task(task)
    infos, key = dsrl_infos(), dsrl_key(task)
    from dsrl.offline_env import OfflineEnv

    class DatasetEnv(OfflineEnv):
        def reset(self, *args, **kwargs):
            raise LSPCError(f"{task} was made without its simulator (training with --eval_every 0); "
                            "evaluate the run with eval_lspc.py where the simulator is installed")

        step = reset

    obs_size, act_size = TASK_SPACES[task]
    env = DatasetEnv(max_episode_reward=infos.MAX_EPISODE_REWARD[key], min_episode_reward=infos.MIN_EPISODE_REWARD[key],
                     max_episode_cost=infos.MAX_EPISODE_COST[key], min_episode_cost=infos.MIN_EPISODE_COST[key],
                     dataset_url=infos.DATASET_URLS[key])
    env.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_size,), np.float32)
    env.action_space = gym.spaces.Box(-ACTION_BOUND, ACTION_BOUND, (act_size,), np.float32)
    env.spec = gym.envs.registration.EnvSpec(task, max_episode_steps=infos.DEFAULT_MAX_EPISODE_STEPS[key])
    return env


class OldGymAdapter(gym.Env):
    """Presents an old-gym (0.26) env, as dsrl registers MetaDrive, with gymnasium spaces.

    MetaDrive's DSRL maps hold one scenario, so ``reset`` takes no seed there; start-state
    randomness (traffic) comes from numpy's global generator, which ``reset_seeded`` seeds.
    """

    def __init__(self, env) -> None:
        self.env = env
        self.spec = env.spec
        self.observation_space = _gymnasium_box(env.observation_space)
        self.action_space = _gymnasium_box(env.action_space)

    @property
    def unwrapped(self):
        return self.env.unwrapped

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        obs, info = self.env.reset()
        return obs, info

    def step(self, action):
        return self.env.step(action)

    def close(self) -> None:
        self.env.close()


def _gymnasium_box(space) -> gym.spaces.Box:
    return gym.spaces.Box(low=space.low, high=space.high, shape=space.shape, dtype=space.dtype)


def reset_seeded(env: gym.Env, seed: int) -> np.ndarray:
    """Reset to a reproducible start state.

    Bullet Safety Gym draws start positions from numpy's global generator, not from the
    ``seed`` given to ``reset``, so that one is seeded as well; the caller's global numpy
    state is restored afterwards so evaluation never shifts the training random stream.
    """
    with numpy_state_kept():
        np.random.seed(seed)
        obs, _ = env.reset(seed=seed)
    return obs


@contextlib.contextmanager
def numpy_state_kept() -> Iterator[None]:
    """Restore numpy's global generator on exit, whatever the block drew from or seeded it with."""
    saved = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(saved)
