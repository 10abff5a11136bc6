"""LSPC configuration: one pyrallis dataclass, a table of per-task overrides, and the loader.

Precedence: base defaults < task overrides < ``--config_path`` YAML < command-line flags.
A flag given on the command line always wins, even when its value equals a default.
Field names follow the authors' release where it has one (its users' commands keep working).
"""

import difflib
import os
import re
import sys
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Dict, List, Optional, Sequence

import pyrallis
import torch
import yaml

from lspc import LSPCError
from lspc.data import density_bins
from lspc.envs import ALL_TASKS, check_task
from lspc.run_logger import WANDB_MODES

LSPC_S_SAMPLING = ("clamp", "tanh", "truncated")
LSPC_O_SAMPLING = ("stochastic", "deterministic")
KL_REDUCTIONS = ("mean", "sum")


@dataclass
class TrainConfig:
    # --- task, data and run bookkeeping
    task: str = "OfflineBallRun-v0"
    seed: int = 0
    cost_limit: float = 10.0  # used for normalized cost, model selection and the run's group name only
    dataset_path: Optional[str] = None  # a DSRL-layout hdf5 file; None = dsrl's download
    density: float = 1.0  # < 1: dsrl's grid filter thins trajectories, bins from dsrl.infos.DENSITY_CFG
    data_ratio: float = 1.0  # < 1: train on this fraction of the trajectories, drawn whole with the run's seed
    noise_scale: Optional[float] = None  # dsrl pre_process_data: observation noise
    outliers_percent: Optional[float] = None  # dsrl pre_process_data: augmented outliers
    inpaint_ranges: Optional[List[List[float]]] = None  # dsrl pre_process_data: [[cmin, cmax, rmin, rmax], ...]
    episode_len: int = 1000  # evaluation time limit; per-task value from the table below
    logdir: str = "logs"
    project: str = "LSPC"
    group: Optional[str] = None  # default: "<task>-cost-<cost_limit>" as in OSRL
    name: Optional[str] = None  # default: "lspc_iql-seed<seed>"
    device: str = "auto"  # auto = cuda when available, else cpu
    compile: bool = False  # torch.compile the step's losses (CUDA graphs on CUDA); slower on CPU, see README
    wandb_mode: str = "offline"  # online | offline | disabled
    resume: Optional[str] = None  # a run directory to continue from its latest checkpoint
    # --- schedule
    max_timesteps: int = 1_000_000
    batch_size: int = 1024
    eval_every: int = 20_000
    eval_episodes: int = 10
    log_every: int = 1_000
    checkpoint_every_minutes: float = 5.0  # model.pt also between evaluations: a SIGKILL loses at most this
    # --- networks and optimisation (spec sections 2, 3, 5)
    hidden_dim: int = 256
    latent_dim: int = 32
    learning_rate: float = 3e-4
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critics
    iql_tau: float = 0.7  # expectile xi of both value functions
    beta_reward: float = 2.0  # lambda_r, temperature of the latent encoder's AWR weights (eq. 14)
    beta_cost: float = 2.0  # lambda_c, temperature of the CVAE's cost-advantage weights (eq. 10)
    max_weight: float = 200.0  # clip of both exponential weights
    vae_beta: float = 0.5  # KL coefficient of the CVAE's ELBO
    kl_reduction: str = "mean"  # mean (release) or sum over latent dims
    safe_qc_vc_threshold: float = 999.0  # CVAE weight 0 where Qc or Vc exceeds it (999 = off)
    clamp_cost_value: bool = False  # True: the release's Vc(s) >= 0 in the cost V loss and the CVAE weights
    converse: bool = False  # True: "Converse LSPC-O" (appendix A.3.2), the two advantage weights swap networks
    reward_scale: float = 1.0  # scales data rewards for training only; evaluation reports raw returns
    bootstrap_on_timeout: bool = False  # False: done = terminal OR timeout (release); True: time-limit cuts bootstrap
    # --- the two policies (spec section 4)
    vae_clamper: float = 0.25  # eps_S, LSPC-S restriction of z ~ N(0, I)
    max_latent_action: float = 0.25  # eps_O, LSPC-O squashing of the latent safety encoder's z
    lspc_s_sampling: str = "clamp"  # clamp (release) | tanh | truncated
    lspc_o_sampling: str = "stochastic"  # stochastic (release) | deterministic


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


def _parse(argv: Sequence[str]) -> TrainConfig:
    try:
        return pyrallis.parse(config_class=TrainConfig, args=list(argv))
    except pyrallis.utils.ParsingError as err:
        raise LSPCError(str(err).splitlines()[0]) from None


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
        cfg = replace(base, **{name: getattr(parsed, name) for name in explicit if name != "resume"}, resume=parsed.resume)
    else:
        check_task(parsed.task)
        cfg = replace(TrainConfig(), **TASK_OVERRIDES[parsed.task])
        cfg = replace(cfg, **{name: getattr(parsed, name) for name in [*from_file, *explicit]})
    return finalize(cfg)


def finalize(cfg: TrainConfig) -> TrainConfig:
    """Fill the derived fields (group, name, device) and validate every value."""
    if cfg.group is None:
        cfg = replace(cfg, group=f"{cfg.task}-cost-{cfg.cost_limit:g}")
    if cfg.name is None:
        cfg = replace(cfg, name=f"lspc_iql-seed{cfg.seed}")
    if cfg.device == "auto":
        cfg = replace(cfg, device="cuda" if torch.cuda.is_available() else "cpu")
    validate(cfg)
    return cfg


def validate(cfg: TrainConfig) -> None:
    """One-line errors for values that cannot work, before anything is loaded or written."""
    check_task(cfg.task)
    positive = ("max_timesteps", "batch_size", "eval_every", "eval_episodes", "log_every", "episode_len",
                "hidden_dim", "latent_dim", "learning_rate", "vae_clamper", "max_latent_action",
                "max_weight", "reward_scale", "checkpoint_every_minutes")
    for name in positive:
        if not getattr(cfg, name) > 0:
            raise LSPCError(f"{name} must be positive, got {getattr(cfg, name)}")
    non_negative = ("seed", "cost_limit", "beta_reward", "beta_cost", "vae_beta")
    for name in non_negative:
        if getattr(cfg, name) < 0:
            raise LSPCError(f"{name} must be >= 0, got {getattr(cfg, name)}")
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
