"""OSRL baselines on LSPC's data: BC-All, BC-Safe, CPQ, BCQ-Lag and COptiDICE.

The algorithms are osrl-lib's own models and trainers (``osrl.algorithms``) with OSRL's default
hyperparameters; nothing here re-implements their losses. This module is the one adapter between
them and this project: the data they train on (``training_data``, ``make_buffer``), one gradient
step, a batched seeded policy for ``lspc.evaluation.Evaluator``, and a complete state for
checkpoints. ``scripts/train_baseline.py`` trains them with LSPC's run-directory contract and
``eval_lspc.py`` scores their run directories like LSPC's.

What osrl-lib 0.1.0 needs around it, and why (each point is handled here, nowhere else):
  1. ``osrl.algorithms`` imports ``fsrl.utils`` (for the ``DummyLogger``/``WandbLogger`` defaults of
     its trainers), which imports tensorboard and wandb: fast-safe-rl is installed ``--no-deps``
     and tensorboard pinned (requirements). osrl also prints a notice about its CDT baseline on
     import; it is silenced. The trainers log through ``logger.store(**stats)``: we pass our own
     collector (``scripts/train_baseline.StatsWindow``), so fsrl's loggers are never used.
  2. osrl samples batches with ``np.random.choice`` inside DataLoader workers, which no seed
     reproduces; we sample with a seeded ``torch.Generator`` (``lspc.data.TransitionBuffer``) and
     build COptiDICE's episode-start flags and statistics with osrl's own ``TransitionDataset``.
  3. osrl's ``Trainer.evaluate`` runs unseeded single-env episodes; our policies (``act``) act on
     a batch and draw any noise from the evaluator's generator. BCQ-Lag's ``VAE.decode`` draws its
     latent from the global torch generator when given none: ``act`` passes one drawn from the
     evaluation generator, clamped to [-0.5, 0.5] as ``VAE.decode`` does.
  4. ``model.state_dict()`` misses state the algorithms keep in plain attributes: CPQ's
     ``log_alpha``, COptiDICE's ``tau``/``lmbda`` (their optimizers hold them, so they are restored
     in place) and its data statistics, BCQ-Lag's PID controller (``error_old``,
     ``error_integral``), and every optimizer; ``state_dict`` saves all of it for a bit-exact resume.
None of osrl's algorithm code needed changing for torch 2.13, gymnasium 0.28 or numpy 1.26.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import io
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Dict, Iterator, Optional

import gymnasium as gym
import numpy as np
import torch
import yaml

from lspc import LSPCError
from lspc.data import TransitionBuffer

ALGOS = ("bc-all", "bc-safe", "cpq", "bcq-lag", "coptidice")
# trained against the cost limit, so one run per threshold; BC-All never sees it
PER_THRESHOLD = ("bc-safe", "cpq", "bcq-lag", "coptidice")

# OSRL's defaults: liuzuxin/OSRL examples/configs/{bc,cpq,bcql,coptidice}_configs.py (the versions
# that go with osrl-lib 0.1.0's algorithms). Model and trainer arguments; cost_scale is 1 in all of
# them (the trainers' default). BC's gamma discounts the cost returns BC-Safe filters on.
_BC = dict(a_hidden_sizes=[256, 256], actor_lr=1e-3, gamma=1.0)
_CRITICS = dict(a_hidden_sizes=[256, 256], c_hidden_sizes=[256, 256], gamma=0.99, reward_scale=0.1)
OSRL_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "bc-all": {**_BC, "bc_mode": "all"},
    "bc-safe": {**_BC, "bc_mode": "safe"},
    "cpq": {**_CRITICS, "vae_hidden_sizes": 400, "sample_action_num": 10, "tau": 0.005, "beta": 0.5, "num_q": 2,
            "num_qc": 2, "qc_scalar": 1.5, "actor_lr": 1e-4, "critic_lr": 1e-3, "alpha_lr": 1e-4, "vae_lr": 1e-3},
    "bcq-lag": {**_CRITICS, "vae_hidden_sizes": 400, "sample_action_num": 10, "tau": 0.005, "phi": 0.05,
                "lmbda": 0.75, "beta": 0.5, "num_q": 2, "num_qc": 2, "PID": [0.1, 0.003, 0.001], "actor_lr": 1e-3,
                "critic_lr": 1e-3, "vae_lr": 1e-3},
    "coptidice": {**_CRITICS, "alpha": 0.5, "cost_ub_epsilon": 0.01, "f_type": "softchi", "num_nu": 2, "num_chi": 2,
                  "actor_lr": 1e-4, "critic_lr": 1e-4, "scalar_lr": 1e-4},
}
# OSRL's schedule (same in all four configs); MetaDrive trains 200k steps there
OSRL_SCHEDULE = dict(max_timesteps=100_000, batch_size=512, eval_every=2_500, eval_episodes=10)
METADRIVE_MAX_TIMESTEPS = 200_000
_OSRL_CLASSES = {"bc-all": "BC", "bc-safe": "BC", "cpq": "CPQ", "bcq-lag": "BCQL", "coptidice": "COptiDICE"}


@dataclass
class BaselineConfig:
    """Everything a baseline run needs; ``config.yaml`` of its run directory holds exactly this."""

    algo: str
    task: str
    episode_len: int  # evaluation time limit, the task's DSRL episode length as for LSPC
    seed: int = 0
    cost_limit: float = 10.0
    dataset_path: Optional[str] = None  # a DSRL-layout hdf5 file; None = dsrl's download
    max_timesteps: int = OSRL_SCHEDULE["max_timesteps"]
    batch_size: int = OSRL_SCHEDULE["batch_size"]
    eval_every: int = OSRL_SCHEDULE["eval_every"]
    eval_episodes: int = OSRL_SCHEDULE["eval_episodes"]
    log_every: int = 1_000
    logdir: str = "logs"
    project: str = "LSPC"
    group: Optional[str] = None  # default "<task>-cost-<cost_limit>"
    name: Optional[str] = None  # default "<algo>-seed<seed>"
    device: str = "auto"
    wandb_mode: str = "offline"
    resume: Optional[str] = None
    hparams: Dict[str, Any] = field(default_factory=dict)  # osrl model/trainer arguments, OSRL_DEFAULTS[algo]


def config_dict(cfg: BaselineConfig) -> Dict[str, Any]:
    return dataclasses.asdict(cfg)


def load_baseline_config(path: str) -> BaselineConfig:
    """Read a baseline run directory's ``config.yaml``."""
    try:
        with open(path, encoding="utf-8") as f:
            content = yaml.safe_load(f)
        return BaselineConfig(**content)
    except (OSError, yaml.YAMLError, TypeError) as err:
        raise LSPCError(f"could not read the run config {path}: {err}") from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """osrl prints on import and while filtering data; our scripts say what matters themselves."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@functools.lru_cache(maxsize=None)
def osrl() -> SimpleNamespace:
    """osrl-lib's algorithms and data helpers, imported on first use (fsrl's import takes a second,
    which evaluating an LSPC run should not pay)."""
    with _quiet():
        import osrl.algorithms as algorithms
        from osrl.common.dataset import TransitionDataset, process_bc_dataset
        from osrl.common.exp_util import seed_all
    return SimpleNamespace(algorithms=algorithms, TransitionDataset=TransitionDataset,
                           process_bc_dataset=process_bc_dataset, seed_all=seed_all)


def training_data(cfg: BaselineConfig, data: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The transitions ``cfg.algo`` trains on: for BC, osrl's ``process_bc_dataset`` (BC-Safe keeps
    only the trajectories whose cost return is <= cost_limit); the others train on all of them."""
    if cfg.algo not in ("bc-all", "bc-safe"):
        return data
    data = dict(data)  # osrl filters in place and adds the return columns
    with _quiet():
        osrl().process_bc_dataset(data, cfg.cost_limit, cfg.hparams["gamma"], cfg.hparams["bc_mode"])
    return data


class EpisodeStartBuffer(TransitionBuffer):
    """A TransitionBuffer whose batches also hold ``is_init`` (1 at an episode's first transition),
    the flags of osrl's ``TransitionDataset(state_init=True)`` that COptiDICE's initial-state term needs."""

    _KEYS = ("observations", "actions", "rewards", "costs", "next_observations", "dones", "is_init")

    def __init__(self, data: Dict[str, np.ndarray], device: torch.device, seed: int, *, reward_scale: float) -> None:
        super().__init__(data, device, seed, reward_scale=reward_scale)
        flags = osrl().TransitionDataset(dict(data), state_init=True).dataset["is_init"]
        self.is_init = torch.as_tensor(flags, dtype=torch.float32, device=device)

    def sample(self, batch_size: int) -> Dict[str, torch.Tensor]:
        # TransitionBuffer.sample keeps its indices to itself: the same single draw, one key more
        idx = torch.randint(self.size, (batch_size,), generator=self.generator, device=self.observations.device)
        return {key: getattr(self, key)[idx] for key in self._KEYS}


def make_buffer(cfg: BaselineConfig, data: Dict[str, np.ndarray], device: torch.device) -> TransitionBuffer:
    """``data`` on the device, sampled with a generator seeded by ``cfg.seed``; rewards scaled by
    OSRL's reward_scale (training only: evaluation reports raw returns)."""
    reward_scale = cfg.hparams.get("reward_scale", 1.0)
    if cfg.algo == "coptidice":
        return EpisodeStartBuffer(data, device, cfg.seed, reward_scale=reward_scale)
    return TransitionBuffer(data, device, cfg.seed, reward_scale=reward_scale)


def _data_statistics(env: gym.Env, data: Optional[Dict[str, np.ndarray]]) -> Dict[str, Any]:
    """COptiDICE's constructor arguments from the data (osrl's ``get_dataset_states``). Without data
    (a checkpoint is about to be loaded) placeholders of the right shapes: the checkpoint holds the values."""
    if data is None:
        return {"init_state_propotion": 1.0,
                "observations_std": np.ones((1, env.observation_space.shape[0]), np.float32),
                "actions_std": np.ones((1, env.action_space.shape[0]), np.float32)}
    init, obs_std, act_std = osrl().TransitionDataset(dict(data), state_init=True).get_dataset_states()
    # float32 like the observations: a float64 std would promote COptiDICE's noisy inputs to float64
    return {"init_state_propotion": float(init), "observations_std": obs_std.astype(np.float32),
            "actions_std": act_std.astype(np.float32)}


def _arguments(cls: type, values: Dict[str, Any]) -> Dict[str, Any]:
    names = inspect.signature(cls.__init__).parameters
    return {key: value for key, value in values.items() if key in names}


class Baseline:
    """One osrl-lib algorithm: its model, its trainer (``train``: one gradient step) and its policy (``act``)."""

    def __init__(self, cfg: BaselineConfig, env: gym.Env, device: torch.device,
                 data: Optional[Dict[str, np.ndarray]] = None, logger: Any = None) -> None:
        algorithms = osrl().algorithms
        self.algo, self.device = cfg.algo, device
        model_cls = getattr(algorithms, _OSRL_CLASSES[cfg.algo])
        trainer_cls = getattr(algorithms, _OSRL_CLASSES[cfg.algo] + "Trainer")
        given = {**cfg.hparams, "state_dim": env.observation_space.shape[0], "action_dim": env.action_space.shape[0],
                 "max_action": float(env.action_space.high[0]), "cost_limit": cfg.cost_limit,
                 "episode_len": cfg.episode_len, "device": str(device)}
        if cfg.algo == "coptidice":
            given.update(_data_statistics(env, data))
        unused = set(cfg.hparams) - set(_arguments(model_cls, given)) - set(_arguments(trainer_cls, given)) - {"gamma"}
        if unused:  # a misspelt hyperparameter would otherwise be ignored without a word
            raise LSPCError(f"{cfg.algo} takes no hyperparameters {sorted(unused)}")
        self.model = model_cls(**_arguments(model_cls, given))
        if logger is not None:
            given["logger"] = logger
        # the env argument serves only osrl's own (unseeded) evaluate(), which is never called
        self.trainer = trainer_cls(self.model, None, **_arguments(trainer_cls, given))

    def train(self, batch: Dict[str, torch.Tensor]) -> None:
        """One osrl gradient step on ``batch``; its statistics go to the trainer's logger."""
        b = batch
        if self.algo in ("bc-all", "bc-safe"):
            self.trainer.train_one_step(b["observations"], b["actions"])
        elif self.algo == "coptidice":
            self.trainer.train_one_step([b["observations"], b["next_observations"], b["actions"], b["rewards"],
                                         b["costs"], b["dones"], b["is_init"]])
        else:
            self.trainer.train_one_step(b["observations"], b["next_observations"], b["actions"], b["rewards"],
                                        b["costs"], b["dones"])

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The policy osrl evaluates, batched: the mean action of BC, CPQ and COptiDICE; BCQ-Lag's
        perturbation of a VAE sample whose latent comes from ``generator``."""
        model = self.model
        if self.algo in ("bc-all", "bc-safe"):
            return model.actor(obs)
        if self.algo == "cpq":
            return model._actor_forward(obs, deterministic=True, with_logprob=False)[0]
        if self.algo == "coptidice":
            return model.actor(obs, deterministic=True, with_logprob=False)[0]
        z = torch.randn((obs.shape[0], model.latent_dim), generator=generator, device=obs.device).clamp(-0.5, 0.5)
        return model.actor(obs, model.vae.decode(obs, z))

    def _optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        return {name: value for name, value in vars(self.model).items() if isinstance(value, torch.optim.Optimizer)}

    def _plain_tensors(self) -> Dict[str, torch.Tensor]:
        # tensors kept as plain attributes; the underscored ones are recomputed at every step
        return {name: value for name, value in vars(self.model).items()
                if isinstance(value, torch.Tensor) and not name.startswith("_")}

    def state_dict(self) -> Dict[str, Any]:
        state = {"model": self.model.state_dict(),
                 "optimizers": {name: opt.state_dict() for name, opt in self._optimizers().items()},
                 "tensors": {name: value.detach().clone() for name, value in self._plain_tensors().items()}}
        if self.algo == "bcq-lag":
            controller = self.model.controller
            state["controller"] = {"error_old": torch.as_tensor(controller.error_old),
                                   "error_integral": torch.as_tensor(controller.error_integral)}
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        for name, optimizer in self._optimizers().items():
            optimizer.load_state_dict(state["optimizers"][name])
        tensors = self._plain_tensors()
        if set(state["tensors"]) != set(tensors):
            raise ValueError(f"expected the tensors {sorted(tensors)}, got {sorted(state['tensors'])}")
        with torch.no_grad():
            for name, value in state["tensors"].items():
                tensors[name].copy_(value)  # in place: COptiDICE's optimizers hold tau and lmbda
        if self.algo == "bcq-lag":
            for name, value in state["controller"].items():
                setattr(self.model.controller, name, value.to(self.device))
