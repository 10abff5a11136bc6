"""The baselines on LSPC's data: BC-All, BC-Safe, CDT, BCQ-Lag, BEAR-Lag, CPQ, COptiDICE, FISOR and TraC.

The first seven are osrl-lib's own models and trainers (``osrl.algorithms``) with OSRL's default
hyperparameters; nothing here re-implements their losses. FISOR and TraC are not in osrl-lib: they
are ours (``lspc/methods/fisor.py``, ``lspc/methods/trac.py``), each module giving its defaults, its sampler and its
agent, which this module dispatches to. This module is the one adapter between them and this
project: ``BaselineMethod`` gives the shared training loop (``lspc/training.py``) the data they
train on, the seeded batch sampler, the agent (one gradient step, batched seeded policies for
``lspc.evaluation.Evaluator``, a complete state for checkpoints); ``scripts/train_baseline.py`` is
its command line and ``eval_lspc.py`` scores their run directories like LSPC's.

What osrl-lib 0.1.0 needs around it, and why (each point is handled here or in ``lspc/methods/cdt.py``):
  1. ``osrl.algorithms`` imports ``fsrl.utils`` (for the ``DummyLogger``/``WandbLogger`` defaults of
     its trainers), which imports tensorboard and wandb: fast-safe-rl is installed ``--no-deps``
     and tensorboard pinned (requirements). osrl also prints a notice about CDT's package on
     import; it is silenced. The trainers log through ``logger.store(**stats)``: they get
     ``_StepStats``, whose values ``train`` returns, so fsrl's loggers are never used.
  2. osrl samples batches with ``np.random.choice`` inside DataLoader workers, which no seed
     reproduces; we sample with a seeded ``torch.Generator`` (``lspc.data.dataset.TransitionBuffer``; CDT's
     sequences in ``lspc.methods.cdt.SequenceSampler``) and build COptiDICE's episode-start flags and
     statistics with osrl's own ``TransitionDataset``.
  3. osrl's ``Trainer.evaluate`` runs unseeded single-env episodes; our policies act on a batch and
     draw any noise from the evaluator's generator. BCQ-Lag's ``VAE.decode`` draws its latent from
     the global torch generator when given none: ``act`` passes one drawn from the evaluation
     generator, clamped to [-0.5, 0.5] as ``VAE.decode`` does. CDT acts through
     ``lspc.methods.cdt.CDTPolicy``, with per-episode state, prompted per threshold.
  4. ``model.state_dict()`` misses state the algorithms keep in plain attributes: CPQ's and
     BEAR-Lag's ``log_alpha``, COptiDICE's ``tau``/``lmbda`` (their optimizers hold them, so they
     are restored in place) and its data statistics, the PID controllers of BCQ-Lag and BEAR-Lag
     (``error_old``, ``error_integral``), BEAR-Lag's step counter, CDT's ``log_temperature`` and
     learning-rate schedule, and every optimizer; ``state_dict`` saves all of it for a bit-exact resume.
None of osrl's algorithm code needed changing for torch 2.13, gymnasium 0.28 or numpy 1.26.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import inspect
import io
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np
import torch
import yaml

from lspc import LSPCError
from lspc.methods.cdt import DATA_KEYS as CDT_DATA_KEYS
from lspc.methods.cdt import CDTPolicy, SequenceSampler, cdt_defaults, max_reward_warning, prompt_for
from lspc.data.dataset import TransitionBuffer, load_dataset
from lspc.envs import action_bound, check_task, cost_limits
from lspc.evaluation import BatchPolicy
from lspc.training import Method

# the paper's column order (BASELINES_SPEC section 0)
ALGOS = ("bc-all", "bc-safe", "cdt", "bcq-lag", "bear-lag", "cpq", "coptidice", "fisor", "trac")
# trained against the cost limit, so one run per threshold; BC-All, CDT (its prompt) and FISOR (its
# reachability critic) never see it in training
PER_THRESHOLD = ("bc-safe", "bcq-lag", "bear-lag", "cpq", "coptidice", "trac")
# the methods implemented here rather than in osrl-lib: algo -> (module, its agent class), imported on first use
OWN_MODULES = {"fisor": ("lspc.methods.fisor", "FISOR"), "trac": ("lspc.methods.trac", "TraC")}

# OSRL's defaults: liuzuxin/OSRL examples/configs/{bc,cpq,bcql,bearl,coptidice}_configs.py (the versions
# that go with osrl-lib 0.1.0's algorithms); CDT's in lspc/methods/cdt.py. Model and trainer arguments;
# cost_scale is 1 in all of them (the trainers' default). BC's gamma discounts the cost returns BC-Safe filters on.
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
    # alpha_lr: BEARLTrainer's default (OSRL's script does not set it)
    "bear-lag": {**_CRITICS, "vae_hidden_sizes": 400, "sample_action_num": 10, "tau": 0.005, "beta": 0.5,
                 "lmbda": 0.75, "mmd_sigma": 50.0, "target_mmd_thresh": 0.05, "num_samples_mmd_match": 10,
                 "start_update_policy_step": 0, "kernel": "gaussian", "num_q": 2, "num_qc": 2,
                 "PID": [0.1, 0.003, 0.001], "actor_lr": 1e-3, "critic_lr": 1e-3, "vae_lr": 1e-3, "alpha_lr": 1e-3},
    "coptidice": {**_CRITICS, "alpha": 0.5, "cost_ub_epsilon": 0.01, "f_type": "softchi", "num_nu": 2, "num_chi": 2,
                  "actor_lr": 1e-4, "critic_lr": 1e-4, "scalar_lr": 1e-4},
}
# OSRL's schedules: evaluation every 2,500 steps on 10 episodes for all; steps and batch per algorithm;
# MetaDrive trains 200k steps
OSRL_SCHEDULE = dict(max_timesteps=100_000, batch_size=512, eval_every=2_500, eval_episodes=10)
_SCHEDULES = {"cdt": dict(batch_size=2048), "bear-lag": dict(max_timesteps=300_000)}
METADRIVE_MAX_TIMESTEPS = 200_000
_OSRL_CLASSES = {"bc-all": "BC", "bc-safe": "BC", "cdt": "CDT", "cpq": "CPQ", "bcq-lag": "BCQL", "bear-lag": "BEARL",
                 "coptidice": "COptiDICE"}


def own_module(algo: str) -> Any:
    """``lspc.methods.fisor`` or ``lspc.methods.trac``: defaults, ``make_sampler`` and the agent class of one of our methods."""
    return importlib.import_module(OWN_MODULES[algo][0])


def plugin_class(algo: str) -> Optional[type]:
    """The ``lspc.plugin.Method`` an import path ``module:Class`` names (checked), None for one of ours."""
    from lspc import plugin  # it builds on this module

    return plugin.load_method(algo) if plugin.is_import_path(algo) else None


def osrl_schedule(task: str, **overrides: int) -> Dict[str, int]:
    """OSRL's schedule on ``task`` with an algorithm's ``overrides``; MetaDrive's steps in every case."""
    schedule = {**OSRL_SCHEDULE, **overrides}
    if check_task(task) == "metadrive":
        schedule["max_timesteps"] = METADRIVE_MAX_TIMESTEPS
    return schedule


def default_schedule(algo: str, task: str) -> Dict[str, int]:
    """The training schedule of ``algo`` on ``task``: OSRL's, FISOR's and TraC's own, or a plugin's."""
    if algo in OWN_MODULES:
        return own_module(algo).default_schedule(task)
    plugin = plugin_class(algo)
    if plugin is not None:
        return plugin.default_schedule(task)
    return osrl_schedule(task, **_SCHEDULES.get(algo, {}))


def default_hparams(algo: str, task: str) -> Dict[str, Any]:
    """The hyperparameters of ``algo``: OSRL's (CDT's per task: its prompts and augmentation), FISOR's and
    TraC's own, or a plugin's ``default_config(task)``."""
    if algo in OWN_MODULES:
        return own_module(algo).default_hparams(task)
    plugin = plugin_class(algo)
    if plugin is not None:
        return dataclasses.asdict(plugin.default_config(task))
    if algo == "cdt":
        return cdt_defaults(task, cost_limits(task))
    return dict(OSRL_DEFAULTS[algo])


@dataclass
class BaselineConfig:
    """Everything a baseline run needs; ``config.yaml`` of its run directory holds exactly this."""

    # Each field's help is the docstring under it (scripts/train_baseline.py's --help,
    # lspc_iql_configs.field_help). No colon before an "=" in them: pyrallis would take such a line for a field.
    algo: str
    """the method, one of bc-all, bc-safe, cdt, bcq-lag, bear-lag, cpq, coptidice, fisor, trac, or your own by its
    import path module.sub:Class (docs/add-your-method.md)"""
    task: str
    """the DSRL task (scripts/list_tasks.py lists the 38)"""
    episode_len: int
    """evaluation time limit, the task's DSRL episode length as for LSPC"""
    seed: int = 0
    """seeds the initialization, the batches and the evaluation episodes"""
    cost_limit: float = 10.0
    """the threshold; BC-Safe, BCQ-Lag, BEAR-Lag, CPQ, COptiDICE and TraC train against it, the others use it
    for the best checkpoint only (CDT also for its prompt); default per task, its first DSRL threshold"""
    dataset_path: Optional[str] = None
    """a DSRL-layout hdf5 file; None = dsrl's download"""
    max_timesteps: int = OSRL_SCHEDULE["max_timesteps"]
    """gradient steps in all; default per method, OSRL's schedule (FISOR's and TraC's their authors')"""
    batch_size: int = OSRL_SCHEDULE["batch_size"]
    """samples per gradient step; default per method as max_timesteps"""
    eval_every: int = OSRL_SCHEDULE["eval_every"]
    """steps between evaluations (each also writes checkpoints); the last step is always evaluated; 0 turns
    evaluation during training off, so no simulator is needed (score the run afterwards with eval_lspc.py)"""
    eval_episodes: int = OSRL_SCHEDULE["eval_episodes"]
    """episodes per evaluation during training"""
    log_every: int = 1_000
    """steps between rows of training metrics"""
    checkpoint_every_minutes: float = 5.0
    """model.pt also between evaluations, so a SIGKILL loses at most this"""
    logdir: str = "logs"
    """runs go to <logdir>/<group>/<name>/"""
    project: str = "LSPC"
    """the wandb project"""
    group: Optional[str] = None
    """default "<task>-cost-<cost_limit>" as in OSRL"""
    name: Optional[str] = None
    """default "<algo>[-<hyperparameter><value>...]-seed<seed>" with what differs from the method's defaults"""
    device: str = "auto"
    """auto = cuda when available, else cpu"""
    deterministic: bool = False
    """deterministic algorithms only (torch.use_deterministic_algorithms and cuBLAS's fixed workspace), so a
    CUDA run repeats bit for bit; slower on a GPU, and an op without a deterministic CUDA kernel stops the run"""
    wandb_mode: str = "offline"
    """online | offline | disabled"""
    resume: Optional[str] = None
    """a run directory to continue from its latest checkpoint"""
    hparams: Dict[str, Any] = field(default_factory=dict)
    """the method's hyperparameters (default_hparams, changed by --hidden_dim, --hparam and --prompt)"""


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
    """osrl prints on import and while filtering data, and draws progress bars; our scripts say what
    matters themselves (errors still propagate)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


@functools.lru_cache(maxsize=None)
def osrl() -> SimpleNamespace:
    """osrl-lib's algorithms and data helpers, imported on first use (fsrl's import takes a second,
    which evaluating an LSPC run should not pay)."""
    with _quiet():
        import osrl.algorithms as algorithms
        from osrl.common.dataset import SequenceDataset, TransitionDataset, process_bc_dataset
    return SimpleNamespace(algorithms=algorithms, SequenceDataset=SequenceDataset,
                           TransitionDataset=TransitionDataset, process_bc_dataset=process_bc_dataset)


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


def sequence_sampler(cfg: BaselineConfig, data: Dict[str, np.ndarray], device: torch.device) -> SequenceSampler:
    """CDT's training windows: osrl's SequenceDataset (trajectories, Pareto augmentation, cost-weighted
    trajectory probabilities), sampled with a generator seeded by ``cfg.seed``. The augmentation
    draws from numpy's global generator, which the loop has seeded."""
    h = cfg.hparams
    lengths = np.diff(np.r_[-1, np.flatnonzero(data["terminals"] | data["timeouts"])])
    if lengths.max(initial=0) > cfg.episode_len:
        raise LSPCError(f"cdt: the dataset has trajectories of {lengths.max()} steps, longer than the task's episode "
                        f"length {cfg.episode_len} that CDT's timestep embedding covers")
    costs = data["costs"]
    if not np.isin(costs, (0.0, 1.0)).all():
        raise LSPCError("cdt: its cost head classifies each step's cost as 0 or 1, but the dataset has costs "
                        f"{sorted(set(np.unique(costs).tolist()) - {0.0, 1.0})[:5]}")
    warning = max_reward_warning(data, h["max_reward"]) if h["augment_percent"] > 0 else None
    if warning:
        print(warning, flush=True)
    offset = h["cost_sample_offset"]
    try:
        with _quiet():
            dataset = osrl().SequenceDataset(
                dict(data), seq_len=h["seq_len"], reward_scale=h["reward_scale"], cost_scale=h["cost_scale"],
                deg=h["deg"], max_rew_decrease=h["max_rew_decrease"], beta=h["beta"],
                augment_percent=h["augment_percent"], max_reward=h["max_reward"], min_reward=h["min_reward"],
                cost_reverse=h["cost_reverse"], cost_sample=h["cost_sample"], cost_transform=lambda x: offset - x)
    except (ValueError, TypeError, np.linalg.LinAlgError) as err:
        # osrl's augmentation first drops sparse (cost, return) bins, then fits a degree-deg frontier
        raise LSPCError(f"cdt: osrl's Pareto augmentation failed on this dataset ({err}); it needs enough "
                        "trajectories in its (cost, return) grid; use more data or --hparam augment_percent=0") from None
    return SequenceSampler(dataset.dataset, dataset.sample_prob, h["seq_len"], h["reward_scale"], h["cost_scale"],
                           device, cfg.seed)


def make_sampler(cfg: BaselineConfig, data: Dict[str, np.ndarray], device: torch.device) -> Any:
    """``data`` on the device, sampled with a generator seeded by ``cfg.seed``; rewards scaled by
    OSRL's reward_scale (training only: evaluation reports raw returns). FISOR and TraC: their own."""
    if cfg.algo in OWN_MODULES:
        return own_module(cfg.algo).make_sampler(cfg, data, device)
    if cfg.algo == "cdt":
        return sequence_sampler(cfg, data, device)
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


class _StepStats:
    """The logger osrl's trainers ``store(**stats)`` into: the statistics of one step."""

    def __init__(self) -> None:
        self.stats: Dict[str, float] = {}

    def store(self, tab: Optional[str] = None, **stats: float) -> None:  # CDT passes tab="train"
        self.stats.update({key.removeprefix("loss/"): float(value) for key, value in stats.items()})


class Baseline:
    """One osrl-lib algorithm: its model, its trainer (``train``: one gradient step) and its policies."""

    def __init__(self, cfg: BaselineConfig, env: gym.Env, device: torch.device,
                 data: Optional[Dict[str, np.ndarray]] = None) -> None:
        algorithms = osrl().algorithms
        # osrl's Normal policies would check their arguments at every forward pass: a host sync each
        # (9 of BEAR-Lag's 18 per step on a GPU); the values are the networks' own outputs
        torch.distributions.Distribution.set_default_validate_args(False)
        self.cfg, self.algo, self.device = cfg, cfg.algo, device
        model_cls = getattr(algorithms, _OSRL_CLASSES[cfg.algo])
        trainer_cls = getattr(algorithms, _OSRL_CLASSES[cfg.algo] + "Trainer")
        given = {**cfg.hparams, "state_dim": env.observation_space.shape[0], "action_dim": env.action_space.shape[0],
                 "max_action": action_bound(env, cfg.algo), "cost_limit": cfg.cost_limit,
                 "episode_len": cfg.episode_len, "device": str(device)}
        if cfg.algo == "coptidice":
            given.update(_data_statistics(env, data))
        if cfg.algo == "cdt":
            given.update(target_entropy=-env.action_space.shape[0], betas=tuple(cfg.hparams["betas"]))
        own = {"gamma", "prompts", *CDT_DATA_KEYS} if cfg.algo == "cdt" else {"gamma"}
        unused = set(cfg.hparams) - set(_arguments(model_cls, given)) - set(_arguments(trainer_cls, given)) - own
        if unused:  # a misspelt hyperparameter would otherwise be ignored without a word
            raise LSPCError(f"{cfg.algo} takes no hyperparameters {sorted(unused)}")
        self.model = model_cls(**_arguments(model_cls, given)).to(device)
        self._stats = _StepStats()
        given["logger"] = self._stats
        # the env argument serves only osrl's own (unseeded) evaluate(), which is never called
        self.trainer = trainer_cls(self.model, None, **_arguments(trainer_cls, given))

    def train(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """One osrl gradient step on ``batch``; the statistics its trainer stored."""
        b = batch
        if self.algo in ("bc-all", "bc-safe"):
            self.trainer.train_one_step(b["observations"], b["actions"])
        elif self.algo == "cdt":
            self.model.train()  # evaluation switched dropout off
            self.trainer.train_one_step(b["states"], b["actions"], b["returns"], b["costs_return"], b["time_steps"],
                                        b["mask"], b["episode_cost"], b["costs"])
        elif self.algo == "coptidice":
            self.trainer.train_one_step([b["observations"], b["next_observations"], b["actions"], b["rewards"],
                                         b["costs"], b["dones"], b["is_init"]])
        else:
            self.trainer.train_one_step(b["observations"], b["next_observations"], b["actions"], b["rewards"],
                                        b["costs"], b["dones"])
        stats, self._stats.stats = self._stats.stats, {}
        return stats

    @torch.no_grad()
    def act(self, obs: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The policy osrl evaluates, batched: the mean action of BC, CPQ, BEAR-Lag and COptiDICE;
        BCQ-Lag's perturbation of a VAE sample whose latent comes from ``generator``."""
        model = self.model
        if self.algo in ("bc-all", "bc-safe"):
            return model.actor(obs)
        if self.algo in ("cpq", "bear-lag"):
            return model._actor_forward(obs, deterministic=True, with_logprob=False)[0]
        if self.algo == "coptidice":
            return model.actor(obs, deterministic=True, with_logprob=False)[0]
        if self.algo == "bcq-lag":
            z = torch.randn((obs.shape[0], model.latent_dim), generator=generator, device=obs.device).clamp(-0.5, 0.5)
            return model.actor(obs, model.vae.decode(obs, z))
        raise ValueError(f"{self.algo} acts through policy_at(kappa)")

    def policy_at(self, kappa: float) -> BatchPolicy:
        """The policy scored at threshold ``kappa``: CDT prompted for it, the others' one policy."""
        if self.algo != "cdt":
            return self.act
        h = self.cfg.hparams
        return CDTPolicy(self.model, prompt_for(h, kappa), h["reward_scale"], h["cost_scale"])

    def training_policies(self) -> Dict[str, BatchPolicy]:
        return {self.algo: self.policy_at(self.cfg.cost_limit)}

    def evaluation_policies(self, thresholds: Sequence[float]) -> List[Tuple[str, BatchPolicy, List[float], Dict]]:
        """(name, policy, thresholds it is scored at, what to record) for eval_lspc.py."""
        if self.algo != "cdt":
            return [(self.algo, self.act, list(thresholds), {})]
        return [(self.algo, self.policy_at(kappa), [kappa], {"prompt": list(prompt_for(self.cfg.hparams, kappa))})
                for kappa in thresholds]

    def _owners(self) -> Dict[str, Any]:
        # where osrl keeps state outside the model's parameters: CDT's optimizers and schedule live in its trainer
        return {"model": self.model, "trainer": self.trainer}

    def _optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        return {f"{owner}.{name}": value for owner, obj in self._owners().items() for name, value in vars(obj).items()
                if isinstance(value, torch.optim.Optimizer)}

    def _schedulers(self) -> Dict[str, torch.optim.lr_scheduler.LRScheduler]:
        return {name: value for name, value in vars(self.trainer).items()
                if isinstance(value, torch.optim.lr_scheduler.LRScheduler)}

    def _plain_tensors(self) -> Dict[str, torch.Tensor]:
        # tensors kept as plain attributes; the underscored ones are recomputed at every step
        return {name: value for name, value in vars(self.model).items()
                if isinstance(value, torch.Tensor) and not name.startswith("_")}

    def state_dict(self) -> Dict[str, Any]:
        state = {"model": self.model.state_dict(),
                 "optimizers": {name: opt.state_dict() for name, opt in self._optimizers().items()},
                 # LambdaLR's state holds no function: its step counter and learning rates
                 "schedulers": {name: {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}
                                for name, sched in self._schedulers().items()},
                 "tensors": {name: value.detach().clone() for name, value in self._plain_tensors().items()}}
        if hasattr(self.model, "controller"):  # the PID-Lagrangian of BCQ-Lag and BEAR-Lag
            controller = self.model.controller
            state["controller"] = {"error_old": torch.as_tensor(controller.error_old),
                                   "error_integral": torch.as_tensor(controller.error_integral)}
        if hasattr(self.model, "n_train_steps"):  # BEAR-Lag's switch from MMD-only to the full actor loss
            state["n_train_steps"] = self.model.n_train_steps
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        for name, optimizer in self._optimizers().items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, scheduler in self._schedulers().items():
            scheduler.load_state_dict({**scheduler.state_dict(), **state["schedulers"][name]})
        tensors = self._plain_tensors()
        if set(state["tensors"]) != set(tensors):
            raise ValueError(f"expected the tensors {sorted(tensors)}, got {sorted(state['tensors'])}")
        with torch.no_grad():
            for name, value in state["tensors"].items():
                tensors[name].copy_(value)  # in place: the optimizers hold COptiDICE's tau and lmbda, CDT's temperature
        if "controller" in state:
            for name, value in state["controller"].items():
                setattr(self.model.controller, name, value.to(self.device))
        if "n_train_steps" in state:
            self.model.n_train_steps = int(state["n_train_steps"])


def make_agent(cfg: BaselineConfig, env: gym.Env, device: torch.device,
               data: Optional[Dict[str, np.ndarray]] = None) -> Any:
    """The agent of ``cfg.algo`` (``Baseline`` for osrl-lib's, ``FISOR`` / ``TraC``); without data
    when a checkpoint is about to be loaded into it."""
    if cfg.algo in OWN_MODULES:
        return getattr(own_module(cfg.algo), OWN_MODULES[cfg.algo][1])(cfg, env, device, data)
    return Baseline(cfg, env, device, data)


def method_name(algo: str) -> str:
    """``algo``'s short name: its own, or a plugin's ``name`` (run names, results.json's policy, the table)."""
    plugin = plugin_class(algo)
    return algo if plugin is None else plugin.name


def trained_per_threshold(algo: str) -> bool:
    """Whether ``algo`` trains against its cost limit (one run per threshold, scored there only)."""
    plugin = plugin_class(algo)
    return algo in PER_THRESHOLD if plugin is None else plugin.per_threshold


def make_method(cfg: BaselineConfig) -> Method:
    """The ``Method`` of a baseline run's config: ``BaselineMethod``, or the plugin ``cfg.algo`` names."""
    plugin = plugin_class(cfg.algo)
    return BaselineMethod(cfg) if plugin is None else plugin(cfg)


class BaselineMethod(Method):
    """A baseline's part of a training run (see lspc/training.py): its data, sampler and agent."""

    def __init__(self, cfg: BaselineConfig) -> None:
        super().__init__(cfg)
        self.label = f"{cfg.algo} {cfg.task}"
        self.policies = {cfg.algo: ("eval", "model_best.pt")}

    def config_yaml(self) -> str:
        return yaml.safe_dump(config_dict(self.cfg), sort_keys=False)

    def config_dict(self) -> Dict[str, Any]:
        return config_dict(self.cfg)

    def load_data(self, env: gym.Env) -> Dict[str, np.ndarray]:
        cfg = self.cfg
        dataset = load_dataset(env, cfg.dataset_path, cost_limit=cfg.cost_limit, seed=cfg.seed)
        data = training_data(cfg, dataset)
        size = len(data["observations"])
        if size == 0:
            raise LSPCError(f"{cfg.algo}: no trajectory of the dataset has a cost <= {cfg.cost_limit:g}")
        if cfg.algo not in ("cdt", "trac") and cfg.batch_size > size:  # their batches are windows and segments
            raise LSPCError(f"batch_size {cfg.batch_size} is larger than the {size} transitions {cfg.algo} trains on")
        print(f"data: {cfg.algo} trains on {size} of the dataset's {len(dataset['observations'])} transitions", flush=True)
        return data

    def make_sampler(self, data: Dict[str, np.ndarray], device: torch.device) -> Any:
        return make_sampler(self.cfg, data, device)

    def make_agent(self, env: gym.Env, device: torch.device, data: Optional[Dict[str, np.ndarray]] = None) -> Any:
        return make_agent(self.cfg, env, device, data)
