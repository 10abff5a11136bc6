"""Train a baseline on the same data as LSPC, into the same kind of run directory.

    python scripts/train_baseline.py --algo bc-all|bc-safe|cdt|bcq-lag|bear-lag|cpq|coptidice|fisor|trac|module:Class --task TASK
        [--dataset_path P] [--seed S] [--cost_limit K] [--max_timesteps N] [--batch_size N]
        [--eval_every N] [--eval_episodes N] [--log_every N] [--checkpoint_every_minutes M] [--logdir D]
        [--name NAME] [--device cpu|cuda] [--wandb_mode offline|online|disabled] [--hidden_dim N]
        [--hparam NAME=VALUE ...] [--prompt KAPPA=RETURN,COST ...] [--resume RUN_DIR] [--print_config]

The first seven are osrl-lib's (``lspc/methods/baselines.py`` is the adapter) with OSRL's default
hyperparameters and schedule; FISOR and TraC are ours (``lspc/methods/fisor.py``, ``lspc/methods/trac.py``) with
their authors' defaults and schedules. ``--hidden_dim`` sets every hidden layer's width instead (CDT:
its embedding width; FISOR: its critics' and its denoiser's), ``--hparam`` any one hyperparameter (a
YAML value, e.g. ``--hparam max_reward=500`` for CDT's augmentation on data with other reward scales).
BC-Safe, BCQ-Lag, BEAR-Lag, CPQ, COptiDICE and TraC train against ``--cost_limit``: one run per
threshold. BC-All, CDT and FISOR ignore it except for choosing the best checkpoint (and CDT's prompt
while training); CDT's ``--prompt`` adds or replaces the (target return, target cost) it is prompted
with at a threshold.

``--algo my_pkg.my_method:MyMethod`` trains your own method (an ``lspc.plugin.Method``; see
docs/add-your-method.md) with its defaults, through the same loop and into the same kind of run
directory, named after its ``name``; config.yaml records the import path.

``--cost_limit`` defaults to the task's first DSRL threshold; ``--print_config`` prints the resolved
config and exits.

Writes <logdir>/<task>-cost-<cost_limit>/<algo>-seed<seed>/, with any non-default batch size,
--hidden_dim, --hparam or --prompt in the name (``<algo>-hidden_dim32-seed0``; ``--name`` replaces it):
config.yaml, metrics.jsonl, checkpoint/model.pt (latest) and checkpoint/model_best.pt
(feasibility first), through the same loop as train_lspc_iql.py (lspc/training.py);
``--resume RUN_DIR`` continues bit for bit, and only the schedule, device and wandb flags may
change then. ``eval_lspc.py RUN_DIR`` scores it.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import math
import os
import sys
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import yaml  # noqa: E402

from lspc import LSPCError  # noqa: E402
from lspc.methods.baselines import (ALGOS, OWN_MODULES, BaselineConfig, default_hparams,  # noqa: E402
                                   default_schedule, load_baseline_config, make_method, method_name, own_module,
                                   plugin_class)
from lspc.plugin import build_config, is_import_path  # noqa: E402
from lspc.methods.cdt import parse_prompts, prompt_for  # noqa: E402
from lspc.envs import check_task  # noqa: E402
from lspc.run_logger import WANDB_MODES  # noqa: E402
from lspc.training import run_training_cli  # noqa: E402
from lspc_iql_configs import TASK_OVERRIDES, auto_name, check_device, field_help  # noqa: E402

# flags a resumed run may change: they do not touch the model, its data or its random streams
RESUMABLE = ("max_timesteps", "eval_every", "eval_episodes", "log_every", "checkpoint_every_minutes", "device",
             "wandb_mode")
# what --hidden_dim sets
HIDDEN_SIZES = ("a_hidden_sizes", "c_hidden_sizes", "vae_hidden_sizes", "embedding_dim", "actor_hidden_dim")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one "error:" line and exit 2, like every other bad input
        raise LSPCError(message)


# defaults that depend on the method or the task, so --help cannot show one value
_VARYING_DEFAULTS = ("cost_limit", "max_timesteps", "batch_size", "eval_every", "eval_episodes")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
                     argument_default=argparse.SUPPRESS)  # only the flags given appear: --resume compares them
    helps = field_help(BaselineConfig)
    defaults = {f.name: f.default for f in dataclasses.fields(BaselineConfig)}

    def add(name: str, kind: type = str) -> None:
        default = defaults[name]
        shown = (f" (default: {default})" if name not in _VARYING_DEFAULTS and default is not dataclasses.MISSING
                 and default is not None else "")
        parser.add_argument(f"--{name}", type=kind, help=helps[name] + shown)

    add("algo")
    add("task")
    add("dataset_path")
    for name in ("seed", "max_timesteps", "batch_size", "eval_every", "eval_episodes", "log_every"):
        add(name, int)
    add("cost_limit", float)
    add("checkpoint_every_minutes", float)
    for name in ("logdir", "name", "device", "wandb_mode", "resume"):
        add(name)
    parser.add_argument("--deterministic", action="store_true", help=helps["deterministic"])
    parser.add_argument("--hidden_dim", type=int, help="every hidden layer's width (CDT: its embedding width; "
                        "FISOR: its critics' and its denoiser's); default: the method's own")
    parser.add_argument("--hparam", action="append", metavar="NAME=VALUE", help="one hyperparameter (a YAML value)")
    parser.add_argument("--prompt", action="append", metavar="KAPPA=RETURN,COST", help="CDT: its prompt at KAPPA")
    # handled by lspc.training.run_training_cli before parsing; here for --help
    parser.add_argument("--print_config", action="store_true",
                        help="print the resolved config (the method's and the task's defaults applied) and exit")
    return parser


def _parse_flags(argv: List[str]) -> Dict[str, Any]:
    """The flags given, by name; an unknown one names the nearest known flag."""
    parser = _parser()
    given, unknown = parser.parse_known_args(argv)
    for token in unknown:
        if token.startswith("--"):
            name = token[2:].split("=", 1)[0]
            known = [option[2:] for action in parser._actions for option in action.option_strings
                     if option.startswith("--")]
            close = difflib.get_close_matches(name, known, n=1)
            raise LSPCError(f"unknown flag --{name}" + (f"; did you mean --{close[0]}?" if close else ""))
    if unknown:
        raise LSPCError(f"unrecognized arguments: {' '.join(unknown)}")
    return vars(given)


def _name_changes(cfg: BaselineConfig, hidden_dim: Optional[int]) -> Dict[str, Any]:
    """What differs from the method's defaults on the task, for the run name: --hidden_dim as given,
    the batch size, and each hyperparameter that --hparam or --prompt changed (of a dict, its changed entries)."""
    changes: Dict[str, Any] = {}
    if cfg.batch_size != default_schedule(cfg.algo, cfg.task)["batch_size"]:
        changes["batch_size"] = cfg.batch_size
    if hidden_dim is not None:
        changes["hidden_dim"] = hidden_dim
    defaults = _hparams(cfg.algo, cfg.task, hidden_dim, [], [])
    for key, value in cfg.hparams.items():
        default = defaults.get(key)
        if isinstance(value, dict) and isinstance(default, dict):
            value = {k: v for k, v in value.items() if default.get(k) != v}
        if value != default and value != {}:
            changes[key] = value
    return changes


def _hparams(algo: str, task: str, hidden_dim: Optional[int], overrides: List[str], prompts: List[str]) -> Dict[str, Any]:
    """OSRL's defaults for ``algo`` on ``task``; every hidden layer ``hidden_dim`` wide when it is
    given; then the ``--hparam`` and (CDT) ``--prompt`` values."""
    hparams = copy.deepcopy(default_hparams(algo, task))
    if hidden_dim is not None:
        if hidden_dim <= 0:
            raise LSPCError(f"hidden_dim must be positive, got {hidden_dim}")
        if not set(HIDDEN_SIZES) & set(hparams):
            raise LSPCError(f"--hidden_dim sets {', '.join(HIDDEN_SIZES)}, and {algo} has none of them; "
                            "use --hparam NAME=VALUE")
        for key in HIDDEN_SIZES:
            if key in hparams:  # a list of layer widths, or one int for the VAE's and CDT's
                hparams[key] = [hidden_dim] * len(hparams[key]) if isinstance(hparams[key], list) else hidden_dim
    for override in overrides:
        name, sep, value = override.partition("=")
        if not sep or name not in hparams:
            raise LSPCError(f"--hparam {override!r}: expected NAME=VALUE with NAME one of {algo}'s hyperparameters "
                            f"({', '.join(sorted(hparams))})")
        try:
            hparams[name] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise LSPCError(f"--hparam {override!r}: {value!r} is not a YAML value") from None
    if prompts:
        if algo != "cdt":
            raise LSPCError(f"--prompt applies to cdt only, not {algo}")
        hparams["prompts"] = {**hparams["prompts"], **parse_prompts(prompts)}
    return hparams


def load_config(argv: Optional[List[str]] = None) -> BaselineConfig:
    """The run's config from the command line (``sys.argv[1:]`` by default), checked."""
    given = _parse_flags(list(sys.argv[1:] if argv is None else argv))
    given.pop("print_config", None)
    hidden_dim = given.pop("hidden_dim", None)
    overrides, prompts = given.pop("hparam", []), given.pop("prompt", [])
    if "resume" in given:
        saved_path = os.path.join(given["resume"], "config.yaml")
        if not os.path.isfile(saved_path):
            raise LSPCError(f"--resume {given['resume']!r} is not a run directory (no config.yaml in it)")
        saved = load_baseline_config(saved_path)
        changed = [name for name, value in given.items()
                   if name not in RESUMABLE + ("resume",) and value != getattr(saved, name)]
        model_flags = [flag for flag, value in (("hidden_dim", hidden_dim), ("hparam", overrides), ("prompt", prompts))
                       if value]
        if model_flags and _hparams(saved.algo, saved.task, hidden_dim, overrides, prompts) != saved.hparams:
            changed += model_flags
        if changed:
            raise LSPCError(f"a resumed run cannot change {changed}; start a new run instead")
        cfg = dataclasses.replace(saved, **{name: given[name] for name in RESUMABLE if name in given},
                                  resume=given["resume"])
    else:
        for name in ("algo", "task"):
            if name not in given:
                raise LSPCError(f"--{name} is required" + (f" (one of {', '.join(ALGOS)})" if name == "algo" else ""))
        if given["algo"] not in ALGOS and not is_import_path(given["algo"]):
            raise LSPCError(f"unknown algo {given['algo']!r}; expected one of {', '.join(ALGOS)}, or your own "
                            "method's import path module.sub:Class")
        plugin_class(given["algo"])  # a plugin's import, checked in one line
        check_task(given["task"])
        task_defaults = TASK_OVERRIDES[given["task"]]
        cfg = BaselineConfig(episode_len=task_defaults["episode_len"],
                             hparams=_hparams(given["algo"], given["task"], hidden_dim, overrides, prompts),
                             **{**default_schedule(given["algo"], given["task"]),
                                "cost_limit": task_defaults["cost_limit"], **given})
        cfg = dataclasses.replace(cfg, group=f"{cfg.task}-cost-{cfg.cost_limit:g}", name=cfg.name or auto_name(
            method_name(cfg.algo), cfg.seed, _name_changes(cfg, hidden_dim)))
    if cfg.device == "auto":
        cfg = dataclasses.replace(cfg, device="cuda" if torch.cuda.is_available() else "cpu")
    validate(cfg)
    return cfg


def validate(cfg: BaselineConfig) -> None:
    """One-line errors for values that cannot work, before anything is written."""
    for name in ("max_timesteps", "batch_size", "eval_episodes", "log_every"):
        if getattr(cfg, name) <= 0:
            raise LSPCError(f"{name} must be positive, got {getattr(cfg, name)}")
    for name in ("seed", "eval_every"):
        if getattr(cfg, name) < 0:
            raise LSPCError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if not (math.isfinite(cfg.cost_limit) and cfg.cost_limit >= 0):
        raise LSPCError(f"cost_limit must be a finite number >= 0, got {cfg.cost_limit}")
    if cfg.wandb_mode not in WANDB_MODES:
        raise LSPCError(f"wandb_mode must be one of {list(WANDB_MODES)}, got {cfg.wandb_mode!r}")
    if cfg.dataset_path is not None and not os.path.isfile(cfg.dataset_path):
        raise LSPCError(f"dataset file {cfg.dataset_path!r} does not exist")
    if not cfg.checkpoint_every_minutes > 0:
        raise LSPCError(f"checkpoint_every_minutes must be positive, got {cfg.checkpoint_every_minutes}")
    if cfg.algo == "cdt":
        prompt_for(cfg.hparams, cfg.cost_limit)  # its evaluations during training are prompted for cost_limit
    if cfg.algo in OWN_MODULES:  # FISOR's and TraC's hyperparameter checks
        own_module(cfg.algo).check_config(cfg)
    plugin = plugin_class(cfg.algo)
    if plugin is not None:  # its config dataclass's own checks
        build_config(plugin, cfg.hparams)
    check_device(cfg.device)


def main(argv: Optional[List[str]] = None) -> None:
    run_training_cli(load_config, make_method, argv)


if __name__ == "__main__":
    main()
