"""Import-time fixes that let dsrl's Safety-Gymnasium and MetaDrive tasks run on Python 3.11.

Each is applied once, only when a task of that suite is first made:
- Safety-Gymnasium 0.4.0's geom classes are dataclasses with numpy-array defaults, which
  Python 3.11 rejects ("mutable default ... use default_factory"); while its builder is first
  imported, such defaults become default factories returning a copy.
- MetaDrive 0.2.6.0 uses numpy aliases removed in numpy 1.24 (np.bool, np.float, np.int) and its
  ``metadrive.register`` module registers dozens of old-gym ids we do not use; the aliases are
  restored and that module is replaced by an empty one before import.
- Safety-Gymnasium rebuilds its MuJoCo model from XML on every reset, and decoding the six HD
  skybox PNGs of that XML took 2 of the 2.5 s of a reset (measured on PointGoal1): more than the
  500 to 1000 steps of an episode. The skybox becomes a plain built-in gradient. It is only seen in
  rendered frames; no physics or vector observation depends on it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import types
from typing import Iterator

import numpy as np
import yaml


@contextlib.contextmanager
def ndarray_dataclass_defaults() -> Iterator[None]:
    """Within the block, ``@dataclass`` accepts numpy-array defaults (as copies per instance)."""
    original = dataclasses.dataclass

    def with_array_factories(cls=None, /, **kwargs):
        def wrap(klass):
            for name in getattr(klass, "__annotations__", {}):
                value = klass.__dict__.get(name)
                if isinstance(value, np.ndarray):
                    setattr(klass, name, dataclasses.field(default_factory=value.copy))
            return original(**kwargs)(klass)

        return wrap if cls is None else wrap(cls)

    dataclasses.dataclass = with_array_factories
    try:
        yield
    finally:
        dataclasses.dataclass = original


class _AssetsWithPlainSkybox:
    """Stands in for ``yaml`` in ``safety_gymnasium.world``, whose only use is loading its assets
    configuration: the same configuration with a gradient skybox instead of the HD PNG one."""

    FullLoader = yaml.FullLoader

    @staticmethod
    def load(stream, Loader) -> dict:  # noqa: N803 (yaml's own argument name)
        assets = yaml.load(stream, Loader=Loader)  # noqa: S506 (Safety-Gymnasium's own file)
        assets["textures"]["skybox"] = PLAIN_SKYBOX
        return assets


PLAIN_SKYBOX = {"@type": "skybox", "@builtin": "gradient", "@rgb1": "0.4 0.6 0.8", "@rgb2": "0 0 0",
                "@width": "32", "@height": "32"}


def import_bullet() -> None:
    """Import Bullet Safety Gym, which dsrl's Bullet tasks load only when one is made."""
    import bullet_safety_gym  # noqa: F401  (ImportError here means the suite is not installed)


def import_safety_gymnasium() -> None:
    """Import Safety-Gymnasium and register dsrl's tasks of it (navigation and velocity)."""
    import safety_gymnasium  # noqa: F401  (ImportError here means the suite is not installed)

    with ndarray_dataclass_defaults():
        import safety_gymnasium.builder  # noqa: F401
    import safety_gymnasium.world

    safety_gymnasium.world.yaml = _AssetsWithPlainSkybox
    import dsrl.offline_safety_gymnasium  # noqa: F401
    import dsrl.offline_safety_gymnasium.gym_envs  # noqa: F401


def import_metadrive() -> None:
    """Import MetaDrive and register dsrl's MetaDrive tasks (in old gym's registry)."""
    for alias, builtin in (("bool", bool), ("float", float), ("int", int)):
        if alias not in np.__dict__:
            setattr(np, alias, builtin)
    sys.modules.setdefault("metadrive.register", types.ModuleType("metadrive.register"))
    import metadrive  # noqa: F401  (ImportError here means the suite is not installed)
    import dsrl.offline_metadrive  # noqa: F401
    import dsrl.offline_metadrive.gym_envs  # noqa: F401
