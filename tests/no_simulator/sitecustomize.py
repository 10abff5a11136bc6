"""Put this folder first on PYTHONPATH to start Python as if no simulator were installed: importing
pybullet, Bullet Safety Gym, Safety-Gymnasium, MuJoCo or MetaDrive fails as it does where the package is
missing (the GPU node of docs/gpu.md). Used by the tests of training without a simulator."""
import importlib.abc
import sys

BLOCKED = ("pybullet", "pybullet_data", "bullet_safety_gym", "safety_gymnasium", "mujoco", "metadrive", "panda3d")


class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
