"""LSPC configuration: one pyrallis dataclass, a table of per-task overrides, and the loader.

Precedence: base defaults < task overrides < ``--config_path`` YAML < command-line flags.
A flag given on the command line always wins, even when its value equals a default.
Field names follow the authors' release where it has one (its users' commands keep working).
Each field's help is the docstring under it: ``field_help`` gives it to --help and to the docs.
A run's default name carries the fields that differ from the task's defaults (OSRL's ``auto_name``
convention, without its random suffix), so runs with other hyperparameters never share a directory.
"""

import argparse
import difflib
import functools
import os
import re
import sys
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Dict, List, Optional, Sequence, Type

import pyrallis
import pyrallis.argparsing
import pyrallis.wrappers
import torch
import yaml

from lspc import LSPCError
from lspc.data.dataset import density_bins
from lspc.envs import ALL_TASKS, check_task, cost_limits
from lspc.run_logger import WANDB_MODES

LSPC_S_SAMPLING = ("clamp", "tanh", "truncated")
LSPC_O_SAMPLING = ("stochastic", "deterministic")
KL_REDUCTIONS = ("mean", "sum")


@dataclass
class TrainConfig:
    # Each field's help is the docstring under it (pyrallis prints it in --help, field_help returns it).
    # No colon before an "=" in them: pyrallis would take such a line for a field.
    # task, data and run bookkeeping
    task: str = "OfflineBallRun-v0"
    """the DSRL task (scripts/list_tasks.py lists the 38); it sets the per-task defaults"""
    seed: int = 0
    """seeds the initialization, the batches, the data subsets and the evaluation episodes"""
    seeds: Optional[List[int]] = None
    """train these seeds in one process as one stacked model (instead of --seed); seed k writes the run
    directory --seed k would, named <name>-seed<k> (--name is then the prefix), and follows that run up
    to float rounding; a seed whose loss goes non-finite stops with its own error line, the others train on"""
    cost_limit: float = 10.0
    """threshold of the normalized cost, the model selection and the group name only (one LSPC model
    serves every threshold); default per task, its first DSRL threshold (10 Bullet and MetaDrive, 20 Safety-Gymnasium)"""
    dataset_path: Optional[str] = None
    """a DSRL-layout hdf5 file; None = dsrl's download"""
    density: float = 1.0
    """below 1, dsrl's grid filter thins the trajectories (bins from dsrl.infos.DENSITY_CFG)"""
    data_ratio: float = 1.0
    """below 1, train on this fraction of the trajectories, drawn whole with the run's seed"""
    noise_scale: Optional[float] = None
    """observation noise (dsrl's pre_process_data)"""
    outliers_percent: Optional[float] = None
    """percentage of augmented outliers (dsrl's pre_process_data)"""
    inpaint_ranges: Optional[List[List[float]]] = None
    """[[cost_min, cost_max, reward_min, reward_max], ...] fractions to remove (dsrl's pre_process_data)"""
    episode_len: int = 1000
    """evaluation time limit; default per task, its DSRL episode length"""
    logdir: str = "logs"
    """runs go to <logdir>/<group>/<name>/"""
    project: str = "LSPC"
    """the wandb project"""
    group: Optional[str] = None
    """default "<task>-cost-<cost_limit>" as in OSRL"""
    name: Optional[str] = None
    """default "lspc_iql[-<field><value>...]-seed<seed>" with the fields that differ from the task's
    defaults (OSRL's convention; not the schedule), so runs with other hyperparameters get their own directory"""
    device: str = "auto"
    """auto = cuda when available, else cpu"""
    compile: bool = False
    """torch.compile the step's losses (CUDA graphs on CUDA); slower on CPU"""
    deterministic: bool = False
    """deterministic algorithms only (torch.use_deterministic_algorithms and cuBLAS's fixed workspace), so a
    CUDA run repeats bit for bit; slower on a GPU, and an op without a deterministic CUDA kernel stops the run"""
    wandb_mode: str = "offline"
    """online | offline | disabled"""
    resume: Optional[str] = None
    """a run directory to continue from its latest checkpoint"""
    # schedule
    max_timesteps: int = 1_000_000
    """gradient steps in all"""
    batch_size: int = 1024
    """transitions per gradient step"""
    eval_every: int = 20_000
    """steps between evaluations (each also writes checkpoints); the last step is always evaluated; 0 turns
    evaluation during training off, so no simulator is needed (score the run afterwards with eval_lspc.py)"""
    eval_episodes: int = 10
    """episodes per evaluation during training"""
    log_every: int = 1_000
    """steps between rows of training metrics (means over the window)"""
    checkpoint_every_minutes: float = 5.0
    """model.pt also between evaluations, so a SIGKILL loses at most this"""
    # networks and optimisation
    hidden_dim: int = 256
    """width of every hidden layer"""
    latent_dim: int = 32
    """dimension of the CVAE's latent z"""
    learning_rate: float = 3e-4
    """Adam's learning rate, every network"""
    discount: float = 0.99
    """gamma of the reward and cost critics"""
    tau: float = 0.005
    """Polyak rate of the target critics"""
    iql_tau: float = 0.7
    """expectile xi of both value functions"""
    beta_reward: float = 2.0
    """lambda_r, temperature of the latent encoder's AWR weights (eq. 14)"""
    beta_cost: float = 2.0
    """lambda_c, temperature of the CVAE's cost-advantage weights (eq. 10)"""
    max_weight: float = 200.0
    """clip of both exponential weights"""
    vae_beta: float = 0.5
    """KL coefficient of the CVAE's ELBO"""
    kl_reduction: str = "mean"
    """mean (release) or sum over latent dims"""
    safe_qc_vc_threshold: float = 999.0
    """CVAE weight 0 where Qc or Vc exceeds it (999 = off; 0.02 on MetaDrive)"""
    clamp_cost_value: bool = False
    """the release's Vc(s) >= 0 in the cost V loss and the CVAE weights"""
    converse: bool = False
    """Converse LSPC-O (appendix A.3.2), the two advantage weights swap networks"""
    reward_scale: float = 1.0
    """scales data rewards for training only; evaluation reports raw returns"""
    bootstrap_on_timeout: bool = False
    """bootstrap through time-limit cuts (off, as the release, done = terminal OR timeout)"""
    # the two policies
    vae_clamper: float = 0.25
    """eps_S, LSPC-S restriction of z ~ N(0, I) (0.6 on the Bullet tasks but AntRun)"""
    max_latent_action: float = 0.25
    """eps_O, LSPC-O squashing of the latent safety encoder's z (0.6 on the Bullet tasks but AntRun)"""
    lspc_s_sampling: str = "clamp"
    """clamp (release) | tanh | truncated"""
    lspc_o_sampling: str = "stochastic"
    """stochastic (release) | deterministic"""


# Spec section 4/5: restriction 0.6 on the Bullet tasks except AntRun; safety mask on MetaDrive.
_BULLET_WIDE = dict(vae_clamper=0.6, max_latent_action=0.6)
_METADRIVE = dict(episode_len=1000, safe_qc_vc_threshold=0.02)
TASK_OVERRIDES: Dict[str, Dict[str, Any]] = {
    # Bullet Safety Gym
    "OfflineAntRun-v0": dict(episode_len=200),
    "OfflineAntCircle-v0": dict(episode_len=500, **_BULLET_WIDE),
    "OfflineBallRun-v0": dict(episode_len=100, **_BULLET_WIDE),
    "OfflineBallCircle-v0": dict(episode_len=200, **_BULLET_WIDE),
    "OfflineCarRun-v0": dict(episode_len=200, **_BULLET_WIDE),
    "OfflineCarCircle-v0": dict(episode_len=300, **_BULLET_WIDE),
    "OfflineDroneRun-v0": dict(episode_len=200, **_BULLET_WIDE),
    "OfflineDroneCircle-v0": dict(episode_len=300, **_BULLET_WIDE),
    # Safety-Gymnasium navigation
    "OfflineCarButton1Gymnasium-v0": dict(episode_len=1000),
    "OfflineCarButton2Gymnasium-v0": dict(episode_len=1000),
    "OfflineCarCircle1Gymnasium-v0": dict(episode_len=500),
    "OfflineCarCircle2Gymnasium-v0": dict(episode_len=500),
    "OfflineCarGoal1Gymnasium-v0": dict(episode_len=1000),
    "OfflineCarGoal2Gymnasium-v0": dict(episode_len=1000),
    "OfflineCarPush1Gymnasium-v0": dict(episode_len=1000),
    "OfflineCarPush2Gymnasium-v0": dict(episode_len=1000),
    "OfflinePointButton1Gymnasium-v0": dict(episode_len=1000),
    "OfflinePointButton2Gymnasium-v0": dict(episode_len=1000),
    "OfflinePointCircle1Gymnasium-v0": dict(episode_len=500),
    "OfflinePointCircle2Gymnasium-v0": dict(episode_len=500),
    "OfflinePointGoal1Gymnasium-v0": dict(episode_len=1000),
    "OfflinePointGoal2Gymnasium-v0": dict(episode_len=1000),
    "OfflinePointPush1Gymnasium-v0": dict(episode_len=1000),
    "OfflinePointPush2Gymnasium-v0": dict(episode_len=1000),
    # Safety-Gymnasium velocity
    "OfflineAntVelocityGymnasium-v1": dict(episode_len=1000),
    "OfflineHalfCheetahVelocityGymnasium-v1": dict(episode_len=1000),
    "OfflineHopperVelocityGymnasium-v1": dict(episode_len=1000),
    "OfflineSwimmerVelocityGymnasium-v1": dict(episode_len=1000),
    "OfflineWalker2dVelocityGymnasium-v1": dict(episode_len=1000),
    # MetaDrive
    "OfflineMetadrive-easysparse-v0": _METADRIVE,
    "OfflineMetadrive-easymean-v0": _METADRIVE,
    "OfflineMetadrive-easydense-v0": _METADRIVE,
    "OfflineMetadrive-mediumsparse-v0": _METADRIVE,
    "OfflineMetadrive-mediummean-v0": _METADRIVE,
    "OfflineMetadrive-mediumdense-v0": _METADRIVE,
    "OfflineMetadrive-hardsparse-v0": _METADRIVE,
    "OfflineMetadrive-hardmean-v0": _METADRIVE,
    "OfflineMetadrive-harddense-v0": _METADRIVE,
}
assert sorted(TASK_OVERRIDES) == sorted(ALL_TASKS), "the override table must cover exactly the DSRL tasks"
# cost_limit: the task's first DSRL threshold, so a plain run's curves and best checkpoints use a
# threshold of the protocol (the release's default is 10 on every task)
TASK_OVERRIDES = {task: {"cost_limit": cost_limits(task)[0], **values} for task, values in TASK_OVERRIDES.items()}

# Fields left out of automatic run names: bookkeeping, the threshold (already in the group name),
# the data file's path and the schedule (a run continued with a larger max_timesteps is the same run).
NAME_SKIPS = ("task", "seed", "seeds", "cost_limit", "dataset_path", "logdir", "project", "group", "name", "device",
              "compile", "deterministic", "wandb_mode", "resume", "max_timesteps", "eval_every", "eval_episodes", "log_every",
              "checkpoint_every_minutes")
DESCRIPTION = """Train LSPC (Koirala et al., ICLR 2025) on a DSRL task; one run serves every cost threshold.

Precedence: defaults < the task's defaults < --config_path YAML < flags. The task's defaults
(episode_len, cost_limit and, for some suites, vae_clamper, max_latent_action and
safe_qc_vc_threshold) replace the "(default: ...)" shown below: --task X --print_config prints
the resolved config of task X."""

# Fields that fix the model's shapes or its data: a resumed run cannot change them.
_FIXED_ON_RESUME = ("task", "hidden_dim", "latent_dim", "dataset_path", "density", "data_ratio", "noise_scale",
                    "outliers_percent", "inpaint_ranges", "reward_scale", "bootstrap_on_timeout")


def _flags_given(argv: Sequence[str]) -> List[str]:
    """Names of the config fields set on the command line (``--name value`` or ``--name=value``)."""
    names = {f.name for f in fields(TrainConfig)}
    given = []
    for token in argv:
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0]
            if name in names:
                given.append(name)
            elif name not in ("config_path", "help"):
                # argparse would take an abbreviation (--vae_clamp) as the full flag, unseen here,
                # so a task override could silently beat it: accept exact names only
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"; did you mean --{close[0]}?" if close else ""
                raise LSPCError(f"unknown flag --{name}{hint}")
    return given


def _config_path(argv: Sequence[str]) -> Optional[str]:
    for i, token in enumerate(argv):
        if token == "--config_path" and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith("--config_path="):
            return token.split("=", 1)[1]
    return None


def _yaml_keys(path: str) -> List[str]:
    if not os.path.isfile(path):
        raise LSPCError(f"--config_path {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        content = yaml.safe_load(f) or {}
    if not isinstance(content, dict):
        raise LSPCError(f"--config_path {path!r} must hold a mapping of config fields")
    unknown = sorted(set(content) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise LSPCError(f"--config_path {path!r} has unknown fields {unknown}")
    return list(content)


@functools.lru_cache(maxsize=None)
def _docstring_help(config_class: Type) -> Dict[str, str]:
    return {wrapper.name: wrapper.help or "" for wrapper in pyrallis.wrappers.DataclassWrapper(config_class).fields}


def field_help(config_class: Type) -> Dict[str, str]:
    """Each field of a config dataclass and its help, as pyrallis builds it for --help (the docstring
    under the field, else the comment above it, else its inline comment), whitespace collapsed."""
    return {name: " ".join(text.split()) for name, text in _docstring_help(config_class).items()}


class _FieldWrapper(pyrallis.wrappers.FieldWrapper):
    """pyrallis's own help text, read once per class: pyrallis re-reads the class's source for every
    field at every parse (a second per command line)."""

    @property
    def help(self) -> str:
        return _docstring_help(self.parent.dataclass)[self.name]

    @help.setter
    def help(self, value: str) -> None:
        raise AttributeError("the help of a config field is its docstring")


class _ArgumentParser(pyrallis.argparsing.ArgumentParser):
    def set_dataclass(self, dataclass, prefix="", default=None, dataclass_wrapper_class=None) -> None:
        super().set_dataclass(dataclass, prefix, default,
                              functools.partial(pyrallis.wrappers.DataclassWrapper, field_wrapper_class=_FieldWrapper))


def _parser() -> pyrallis.argparsing.ArgumentParser:
    parser = _ArgumentParser(config_class=TrainConfig, description=DESCRIPTION)
    # handled by lspc.training.run_training_cli before parsing; here for --help
    parser.add_argument("--print_config", action="store_true", default=argparse.SUPPRESS,
                        help="print the resolved config (the task's defaults applied) as YAML and exit")
    return parser


def _joined_seeds(argv: Sequence[str]) -> List[str]:
    """``--seeds 0 1 2`` as pyrallis reads a list (``--seeds [0,1,2]``)."""
    argv = list(argv)
    for i, token in enumerate(argv):
        if token == "--seeds":
            end = next((j for j in range(i + 1, len(argv)) if argv[j].startswith("--")), len(argv))
            return [*argv[:i + 1], f"[{','.join(argv[i + 1:end])}]", *argv[end:]]
    return argv


def _parse(argv: Sequence[str]) -> TrainConfig:
    try:
        return _parser().parse_args(_joined_seeds(argv))
    except pyrallis.utils.ParsingError as err:
        raise LSPCError(str(err).splitlines()[0]) from None


def _name_value(value: Any) -> str:
    """A config value as a run-name fragment: OSRL's to_string (sequences and dicts joined with "_")."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return "_".join(f"{_name_value(k)}_{_name_value(v)}" for k, v in sorted(value.items()))
    if isinstance(value, (list, tuple)):
        return "_".join(_name_value(v) for v in value)
    return str(value).replace(os.sep, "_")


def auto_name(prefix: str, seed: int, changed: Dict[str, Any]) -> str:
    """OSRL's run-name convention without its random suffix (a rerun of a command finds its run):
    "<prefix>-<field><value>-...-seed<seed>" with the fields that differ from the defaults."""
    return "-".join([prefix, *(f"{key}{_name_value(value)}" for key, value in changed.items()), f"seed{seed}"])


def load_saved_config(path: str) -> TrainConfig:
    """Read a run directory's ``config.yaml``."""
    try:
        with open(path, encoding="utf-8") as f:
            return pyrallis.load(TrainConfig, f)
    except (OSError, pyrallis.utils.ParsingError, TypeError) as err:
        raise LSPCError(f"could not read the run config {path}: {err}") from None


def load_config(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """Resolve the config of a training run from the command line (``sys.argv[1:]`` by default)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    explicit = _flags_given(argv)
    config_path = _config_path(argv)
    from_file = _yaml_keys(config_path) if config_path else []  # checked before pyrallis reads it
    parsed = _parse(argv)  # defaults < YAML < flags, with pyrallis's type checks
    if parsed.resume is not None:
        saved_path = os.path.join(parsed.resume, "config.yaml")
        if not os.path.isfile(saved_path):
            raise LSPCError(f"--resume {parsed.resume!r} is not a run directory (no config.yaml in it)")
        base = load_saved_config(saved_path)
        fixed = [name for name in explicit if name in _FIXED_ON_RESUME and getattr(parsed, name) != getattr(base, name)]
        if fixed:
            raise LSPCError(f"a resumed run cannot change {fixed}; start a new run instead")
        if base.seeds is not None:
            _check_stacked_resume(parsed, base, explicit)
        elif "seeds" in explicit:
            raise LSPCError(f"--resume {parsed.resume} is a single-seed run: resume it without --seeds")
        kept = ("resume", "seeds", "name") if base.seeds is not None else ("resume",)
        cfg = replace(base, **{name: getattr(parsed, name) for name in explicit if name not in kept}, resume=parsed.resume)
    else:
        check_task(parsed.task)
        cfg = replace(TrainConfig(), **TASK_OVERRIDES[parsed.task])
        cfg = replace(cfg, **{name: getattr(parsed, name) for name in [*from_file, *explicit]})
        if cfg.seeds is not None:
            if "seed" in explicit:
                raise LSPCError("--seeds trains several seeds in one process, --seed one: give one of them")
            check_seeds(cfg.seeds)
            # seed_configs names seed k <prefix>-seed<k>; --name is the prefix
            name = None if cfg.name is None else stacked_name(cfg.name, cfg.seeds[0])
            cfg = replace(cfg, seed=cfg.seeds[0], name=name)
    return finalize(cfg)


def check_seeds(seeds: Sequence[int]) -> None:
    duplicates = sorted({seed for seed in seeds if list(seeds).count(seed) > 1})
    if duplicates:
        raise LSPCError(f"--seeds lists seed {', '.join(map(str, duplicates))} twice; give each seed once")
    if not seeds:
        raise LSPCError("--seeds needs at least one seed")


def stacked_name(prefix: str, seed: int) -> str:
    """The run name of seed ``seed`` of a stacked run: the name its own run would have."""
    return f"{prefix}-seed{seed}"


def _check_stacked_resume(parsed: TrainConfig, base: TrainConfig, explicit: Sequence[str]) -> None:
    """A stacked run resumes with its own seeds and names (from any seed's directory)."""
    if "seed" in explicit:
        raise LSPCError(f"--resume {parsed.resume} is a stacked run of seeds {base.seeds}: resume it without --seed")
    if "seeds" in explicit and list(parsed.seeds) != list(base.seeds):
        raise LSPCError(f"--resume {parsed.resume} is a stacked run of seeds {base.seeds}, not {parsed.seeds}: "
                        "resume it with its own seeds (or leave --seeds out)")
    prefix = base.name[:-len(stacked_name("", base.seed))]
    if "name" in explicit and parsed.name not in (prefix, base.name):
        raise LSPCError(f"--resume {parsed.resume} is a stacked run named {prefix}-seed<k>: resume it without --name")


def seed_configs(cfg: TrainConfig) -> List[TrainConfig]:
    """Each seed's config in a stacked run: the one ``--seed k`` would resolve, with the stack's seeds;
    on resume, each seed's own run directory (a sibling of the one given)."""
    prefix = cfg.name[:-len(stacked_name("", cfg.seed))]
    configs = []
    for seed in cfg.seeds:
        name = stacked_name(prefix, seed)
        resume = None if cfg.resume is None else os.path.join(os.path.dirname(os.path.normpath(cfg.resume)), name)
        configs.append(replace(cfg, seed=seed, name=name, resume=resume))
    return configs


def finalize(cfg: TrainConfig) -> TrainConfig:
    """Fill the derived fields (group, name, device) and validate every value."""
    if cfg.group is None:
        cfg = replace(cfg, group=f"{cfg.task}-cost-{cfg.cost_limit:g}")
    if cfg.name is None:
        check_task(cfg.task)
        defaults = asdict(replace(TrainConfig(), **TASK_OVERRIDES[cfg.task]))
        changed = {key: value for key, value in asdict(cfg).items()
                   if key not in NAME_SKIPS and value != defaults[key]}
        cfg = replace(cfg, name=auto_name("lspc_iql", cfg.seed, changed))
    if cfg.device == "auto":
        cfg = replace(cfg, device="cuda" if torch.cuda.is_available() else "cpu")
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """One-line errors for values that cannot work, before anything is loaded or written."""
    check_task(cfg.task)
    positive = ("max_timesteps", "batch_size", "eval_episodes", "log_every", "episode_len",
                "hidden_dim", "latent_dim", "learning_rate", "vae_clamper", "max_latent_action",
                "max_weight", "reward_scale", "checkpoint_every_minutes")
    for name in positive:
        if not getattr(cfg, name) > 0:
            raise LSPCError(f"{name} must be positive, got {getattr(cfg, name)}")
    non_negative = ("seed", "eval_every", "cost_limit", "beta_reward", "beta_cost", "vae_beta")
    for name in non_negative:
        if getattr(cfg, name) < 0:
            raise LSPCError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.seeds is not None:
        if any(seed < 0 for seed in cfg.seeds):
            raise LSPCError(f"seeds must be >= 0, got {cfg.seeds}")
        # one copy of the data serves every seed: options that draw the data with the run's seed cannot stack
        per_seed_data = [flag for flag, on in (("density", cfg.density < 1), ("data_ratio", cfg.data_ratio < 1),
                                               ("noise_scale", cfg.noise_scale is not None),
                                               ("outliers_percent", cfg.outliers_percent is not None)) if on]
        if per_seed_data:
            raise LSPCError(f"--{per_seed_data[0]} draws each seed's data with its seed, and --seeds trains every "
                            "seed on one copy of the data: train these seeds one by one with --seed")
    for name in ("discount", "tau"):
        if not 0 < getattr(cfg, name) <= 1:
            raise LSPCError(f"{name} must be in (0, 1], got {getattr(cfg, name)}")
    if not 0 < cfg.iql_tau < 1:
        raise LSPCError(f"iql_tau (the expectile) must be in (0, 1), got {cfg.iql_tau}")
    if not 0 < cfg.density <= 1:
        raise LSPCError(f"density must be in (0, 1], got {cfg.density}")
    density_bins(cfg.task, cfg.density)
    if not 0 < cfg.data_ratio <= 1:
        raise LSPCError(f"data_ratio (the fraction of trajectories kept) must be in (0, 1], got {cfg.data_ratio}")
    choices = {"lspc_s_sampling": LSPC_S_SAMPLING, "lspc_o_sampling": LSPC_O_SAMPLING,
               "kl_reduction": KL_REDUCTIONS, "wandb_mode": WANDB_MODES}
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise LSPCError(f"{name} must be one of {list(allowed)}, got {getattr(cfg, name)!r}")
    if cfg.inpaint_ranges is not None and any(len(r) != 4 for r in cfg.inpaint_ranges):
        raise LSPCError("inpaint_ranges must be a list of [cost_min, cost_max, reward_min, reward_max] fractions")
    check_device(cfg.device)


def check_device(device: str) -> None:
    """cpu, cuda or cuda:N, and CUDA only where there is one (``auto`` is resolved before this)."""
    if device not in ("cpu", "cuda") and not re.fullmatch(r"cuda:\d+", device):
        raise LSPCError(f"--device must be cpu, cuda or cuda:N (training also takes auto), got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LSPCError(f"--device {device} was asked for but CUDA is not available; use --device cpu")


def config_dict(cfg: TrainConfig) -> Dict[str, Any]:
    return asdict(cfg)
