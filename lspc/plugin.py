"""Bring your own method: what a method written outside this repository implements to be trained,
evaluated and tabulated like LSPC and the baselines, with no edit of ours (docs/add-your-method.md).

    python scripts/train_baseline.py --algo my_pkg.my_method:MyMethod --task OfflineCarRun-v0
    python -m lspc.check_method my_pkg.my_method:MyMethod

The import path ``module:Class`` works wherever a baseline's name does (``scripts/sweep.py``,
``eval_lspc.py``, ``scripts/make_table.py``, ``scripts/transfer.py``); the run's ``config.yaml``
records it, so the module must be importable (from the current directory or ``PYTHONPATH``)
wherever the run is evaluated. This module is the whole public protocol:

``Method`` (subclass it)
    ``name``            its short name: run names, the policy in results.json, the table's column
    ``config_cls``      a dataclass of its hyperparameters, every field with a default
    ``per_threshold``   True (the default) when training reads ``cfg.cost_limit``: one run per
                        threshold, scored there only; False: one run scored at every threshold
    ``build_agent(env, device, data=None)``  its ``Agent``; without data when a checkpoint follows
    optional: ``default_config(task)``, ``default_schedule(task)`` (per-task defaults),
    ``load_data(env)``, ``make_sampler(data, device)``
``Agent`` (subclass it)
    ``device``, ``train(batch) -> metrics`` (one update, tensors, no host sync), ``act(obs, generator)``
    (batched, no autograd graph, noise from ``generator`` only), ``state_dict()`` / ``load_state_dict()``
    (everything a bit-exact resume needs: optimizers, counters, generators)

``self.cfg`` is the run's ``RunConfig`` (task, seed, cost_limit, episode_len, the schedule, device,
and ``hparams``: the hyperparameters as plain values); ``self.hparams`` is the ``config_cls`` built
from them. Everything else (run directory, checkpoints, resume, lock, NaN stop, evaluation, exit
statuses) is the shared loop's, ``lspc/training.py``.
"""
from __future__ import annotations

import abc
import dataclasses
import importlib
import inspect
import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np
import torch

from lspc import LSPCError
from lspc.checkpoint import derived_seed, generator_state, restore_generator
from lspc.data.dataset import TransitionBuffer, load_dataset
from lspc.evaluation import BatchPolicy
from lspc.methods.baselines import ALGOS, BaselineConfig, osrl_schedule
from lspc.training import Method as LoopMethod

RunConfig = BaselineConfig  # the run's config: the loop's fields, and the method's hyperparameters in ``hparams``
# names a plugin may not take: our methods, and LSPC's run and policy names
RESERVED = (*ALGOS, "lspc", "lspc_iql", "lspc-o", "lspc-s", "cvae")
_NAME = re.compile(r"[a-z0-9][a-z0-9_.+-]*")


class Agent(abc.ABC):
    """A plugin's model: its networks, optimizers and random generators."""

    device: torch.device

    @abc.abstractmethod
    def train(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """One update on ``batch`` (observations, actions, rewards, costs, next_observations, dones);
        its statistics as 0-dim tensors, the same names every step."""

    @abc.abstractmethod
    def act(self, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Actions for a batch of observations; any noise drawn from ``generator``."""

    @abc.abstractmethod
    def state_dict(self) -> Dict[str, Any]:
        """Everything a bit-exact resume needs (tensors and plain values)."""

    @abc.abstractmethod
    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


class Method(LoopMethod):
    """A plugin's part of a training run. Subclass it and set ``name`` and ``config_cls``."""

    name: str = ""
    config_cls: type = type(None)
    per_threshold: bool = True

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        self.hparams = build_config(type(self), cfg.hparams)
        self.label = f"{self.name} {cfg.task}"
        self.policies = {self.name: ("eval", "model_best.pt")}

    @classmethod
    def default_config(cls, task: str) -> Any:
        """The hyperparameters on ``task``: the dataclass's defaults; override for per-task ones."""
        return cls.config_cls()

    @classmethod
    def default_schedule(cls, task: str) -> Dict[str, int]:
        """max_timesteps, batch_size, eval_every, eval_episodes on ``task``: OSRL's, as the baselines'."""
        return osrl_schedule(task)

    @abc.abstractmethod
    def build_agent(self, env: gym.Env, device: torch.device, data: Optional[Dict[str, np.ndarray]] = None) -> Agent:
        """The agent sized for ``env``; ``data`` is None when a checkpoint is about to be loaded into it."""

    def load_data(self, env: gym.Env) -> Dict[str, np.ndarray]:
        cfg = self.cfg
        data = load_dataset(env, cfg.dataset_path, cost_limit=cfg.cost_limit, seed=cfg.seed)
        if cfg.batch_size > len(data["observations"]):
            raise LSPCError(f"batch_size {cfg.batch_size} is larger than the {len(data['observations'])} transitions "
                            f"{self.name} trains on")
        return data

    def make_sampler(self, data: Dict[str, np.ndarray], device: torch.device) -> TransitionBuffer:
        """Uniform batches of transitions, drawn with a generator seeded by ``cfg.seed``."""
        return TransitionBuffer(data, device, self.cfg.seed)

    def config_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.config_dict(), sort_keys=False)

    def config_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self.cfg)

    def make_agent(self, env: gym.Env, device: torch.device, data: Optional[Dict[str, np.ndarray]] = None) -> "Plugged":
        return Plugged(self.name, self.build_agent(env, device, data))


class Plugged:
    """A plugin's agent as the loop and eval_lspc.py drive it: its one policy under its name."""

    def __init__(self, name: str, agent: Agent) -> None:
        self.name, self.agent, self.device = name, agent, agent.device

    def train(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return self.agent.train(batch)

    def training_policies(self) -> Dict[str, BatchPolicy]:
        return {self.name: self.agent.act}

    def evaluation_policies(self, thresholds: Sequence[float]) -> List[Tuple[str, BatchPolicy, List[float], Dict]]:
        return [(self.name, self.agent.act, list(thresholds), {})]

    def state_dict(self) -> Dict[str, Any]:
        return self.agent.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.agent.load_state_dict(state)


def save_generator(generator: torch.Generator) -> Dict[str, Any]:
    """A generator's state for ``Agent.state_dict``."""
    return generator_state(generator)


def load_generator(generator: torch.Generator, saved: Dict[str, Any], seed: int, step: int) -> None:
    """Restore a state from ``save_generator``; one written on another device type (a GPU run resumed
    on a CPU) cannot be, and the stream restarts from a seed derived from ``seed`` and ``step``."""
    if not restore_generator(generator, saved):
        generator.manual_seed(derived_seed(seed, step))


# ---------------------------------------------------------------------------------------------
# Loading a plugin by its import path, and what is refused
# ---------------------------------------------------------------------------------------------
def is_import_path(algo: str) -> bool:
    return ":" in algo


def load_method(path: str) -> type:
    """The ``Method`` subclass at ``module:Class``, checked; one-line LSPCErrors say what is wrong."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise LSPCError(f"--algo {path!r}: expected one of {', '.join(ALGOS)} or an import path module.sub:Class")
    if os.getcwd() not in sys.path:  # as `python -m` does: a module beside the user, as well as on PYTHONPATH
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise LSPCError(f"--algo {path}: cannot import {module_name} ({err}); put its directory on PYTHONPATH "
                        "or run from the directory that holds it") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise LSPCError(f"--algo {path}: {module_name} has no {class_name}")
    if not (inspect.isclass(cls) and issubclass(cls, Method)):
        raise LSPCError(f"--algo {path}: {class_name} is not a Method: subclass lspc.plugin.Method "
                        "(docs/add-your-method.md)")
    if inspect.isabstract(cls):
        raise LSPCError(f"--algo {path}: {class_name} does not implement {', '.join(sorted(cls.__abstractmethods__))}")
    if not (isinstance(cls.name, str) and _NAME.fullmatch(cls.name)):
        raise LSPCError(f"--algo {path}: {class_name}.name must be a lower-case name (letters, digits, . _ + -), "
                        f"got {cls.name!r}")
    if cls.name in RESERVED:
        raise LSPCError(f"--algo {path}: its name {cls.name!r} is one of ours ({', '.join(RESERVED)}); "
                        f"give {class_name} another name")
    check_config_cls(path, cls)
    return cls


def check_config_cls(path: str, cls: type) -> None:
    """``config_cls``: a dataclass whose fields all have defaults and none of which is a field of the run's config
    (the loop reads ``cfg.batch_size``; a hyperparameter of that name would be ignored without a word)."""
    config_cls = cls.config_cls
    if not dataclasses.is_dataclass(config_cls):
        raise LSPCError(f"--algo {path}: {cls.__name__}.config_cls must be a dataclass of its hyperparameters, "
                        f"got {config_cls!r}")
    fields = dataclasses.fields(config_cls)
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    shadowed = [f.name for f in fields if f.name in {f.name for f in dataclasses.fields(RunConfig)}]
    if required or shadowed:
        problem = (f"fields without a default: {required}" if required else
                   f"fields the run's config already has (the loop reads cfg.<field>): {shadowed}")
        raise LSPCError(f"--algo {path}: {config_cls.__name__} has {problem}")


def build_config(cls: type, hparams: Dict[str, Any]) -> Any:
    """``cls.config_cls`` from plain values; a value its checks refuse (``__post_init__`` raising
    ValueError) gives one line."""
    unknown = sorted(set(hparams) - {f.name for f in dataclasses.fields(cls.config_cls)})
    if unknown:
        raise LSPCError(f"{cls.name} takes no hyperparameters {unknown}")
    try:
        return cls.config_cls(**hparams)
    except (TypeError, ValueError) as err:
        raise LSPCError(f"{cls.name}: {err}") from None
