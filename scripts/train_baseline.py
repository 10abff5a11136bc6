"""Train an OSRL baseline on the same data as LSPC, into the same kind of run directory.

    python scripts/train_baseline.py --algo bc-all|bc-safe|cpq|bcq-lag|coptidice --task TASK
        [--dataset_path P] [--seed S] [--cost_limit K] [--max_timesteps N] [--batch_size N]
        [--eval_every N] [--eval_episodes N] [--log_every N] [--logdir D] [--name NAME]
        [--device cpu|cuda] [--wandb_mode offline|online|disabled] [--hidden_dim N] [--resume RUN_DIR]

The algorithms are osrl-lib's (``lspc/baselines.py`` is the adapter) with OSRL's default
hyperparameters and schedule; ``--hidden_dim`` sets every hidden layer's width instead (smoke tests).
BC-Safe, CPQ, BCQ-Lag and COptiDICE train against ``--cost_limit``: one run per threshold. BC-All
ignores it except for choosing its best checkpoint.

Writes <logdir>/<task>-cost-<cost_limit>/<algo>-seed<seed>/ (``--name`` replaces the last part):
config.yaml, metrics.jsonl, checkpoint/model.pt (latest) and checkpoint/model_best.pt
(feasibility first), as train_lspc_iql.py does; ``--resume RUN_DIR`` continues bit for bit, and
only the schedule, device and wandb flags may change then. ``eval_lspc.py RUN_DIR`` scores it.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import sys
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import yaml  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from lspc import LSPCError  # noqa: E402
from lspc.baselines import (ALGOS, METADRIVE_MAX_TIMESTEPS, OSRL_DEFAULTS, Baseline, BaselineConfig,  # noqa: E402
                            config_dict, load_baseline_config, make_buffer, osrl, training_data)
from lspc.checkpoint import (atomic_write_bytes, capture_rng_state, load_checkpoint, restore_rng_state,  # noqa: E402
                             save_checkpoint)
from lspc.data import load_dataset  # noqa: E402
from lspc.envs import check_task, make_env  # noqa: E402
from lspc.evaluation import Evaluator, better_than, episode_seeds, summarize  # noqa: E402
from lspc.run_logger import WANDB_MODES, RunLogger, truncate_metrics  # noqa: E402
from lspc_iql_configs import TASK_OVERRIDES, check_device  # noqa: E402
from train_lspc_iql import NonFiniteLoss, StopRequest, prepare_run_dir, run_training_cli  # noqa: E402

# flags a resumed run may change: they do not touch the model, its data or its random streams
RESUMABLE = ("max_timesteps", "eval_every", "eval_episodes", "log_every", "device", "wandb_mode")
HIDDEN_SIZES = ("a_hidden_sizes", "c_hidden_sizes", "vae_hidden_sizes")  # what --hidden_dim sets


class StatsWindow:
    """The logger osrl's trainers ``store(**stats)`` into: means between log points, and the first
    step at which each statistic went NaN or infinite."""

    def __init__(self) -> None:
        self.sums: Dict[str, float] = {}
        self.first_bad: Dict[str, int] = {}
        self.count, self.step = 0, 0

    def begin_step(self, step: int) -> None:
        self.step = step
        self.count += 1

    def store(self, **stats: float) -> None:
        for key, value in stats.items():
            name = key.removeprefix("loss/")
            self.sums[name] = self.sums.get(name, 0.0) + value
            if not math.isfinite(value):
                self.first_bad.setdefault(name, self.step)

    def check_finite(self) -> None:
        if self.first_bad:
            name, step = min(self.first_bad.items(), key=lambda item: item[1])
            raise NonFiniteLoss(f"{name} became NaN or infinite at step {step}")

    def means(self) -> Dict[str, float]:
        self.check_finite()
        means = {f"train/{name}": total / max(self.count, 1) for name, total in self.sums.items()}
        self.sums, self.count = {}, 0
        return means


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one "error:" line and exit 2, like every other bad input
        raise LSPCError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
                     argument_default=argparse.SUPPRESS)  # only the flags given appear: --resume compares them
    parser.add_argument("--algo", help=f"one of {', '.join(ALGOS)}")
    parser.add_argument("--task")
    parser.add_argument("--dataset_path", help="a DSRL-layout hdf5 file (default: dsrl's download)")
    for name in ("seed", "max_timesteps", "batch_size", "eval_every", "eval_episodes", "log_every", "hidden_dim"):
        parser.add_argument(f"--{name}", type=int)
    parser.add_argument("--cost_limit", type=float)
    for name in ("logdir", "name", "device", "wandb_mode", "resume"):
        parser.add_argument(f"--{name}")
    return parser


def _hparams(algo: str, hidden_dim: Optional[int]) -> Dict:
    """OSRL's defaults for ``algo``, every hidden layer ``hidden_dim`` wide when it is given."""
    hparams = copy.deepcopy(OSRL_DEFAULTS[algo])
    if hidden_dim is not None:
        if hidden_dim <= 0:
            raise LSPCError(f"hidden_dim must be positive, got {hidden_dim}")
        for key in HIDDEN_SIZES:
            if key in hparams:  # a list of layer widths, or one int for the VAE's
                hparams[key] = [hidden_dim] * len(hparams[key]) if isinstance(hparams[key], list) else hidden_dim
    return hparams


def load_config(argv: Optional[List[str]] = None) -> BaselineConfig:
    """The run's config from the command line (``sys.argv[1:]`` by default), checked."""
    given = vars(_parser().parse_args(sys.argv[1:] if argv is None else argv))
    hidden_dim = given.pop("hidden_dim", None)
    if "resume" in given:
        saved_path = os.path.join(given["resume"], "config.yaml")
        if not os.path.isfile(saved_path):
            raise LSPCError(f"--resume {given['resume']!r} is not a run directory (no config.yaml in it)")
        saved = load_baseline_config(saved_path)
        changed = [name for name, value in given.items()
                   if name not in RESUMABLE + ("resume",) and value != getattr(saved, name)]
        if hidden_dim is not None and _hparams(saved.algo, hidden_dim) != saved.hparams:
            changed.append("hidden_dim")
        if changed:
            raise LSPCError(f"a resumed run cannot change {changed}; start a new run instead")
        cfg = dataclasses.replace(saved, **{name: given[name] for name in RESUMABLE if name in given},
                                  resume=given["resume"])
    else:
        for name in ("algo", "task"):
            if name not in given:
                raise LSPCError(f"--{name} is required" + (f" (one of {', '.join(ALGOS)})" if name == "algo" else ""))
        if given["algo"] not in ALGOS:
            raise LSPCError(f"unknown algo {given['algo']!r}; expected one of {', '.join(ALGOS)}")
        schedule = {"max_timesteps": METADRIVE_MAX_TIMESTEPS} if check_task(given["task"]) == "metadrive" else {}
        cfg = BaselineConfig(episode_len=TASK_OVERRIDES[given["task"]]["episode_len"],
                             hparams=_hparams(given["algo"], hidden_dim), **{**schedule, **given})
        cfg = dataclasses.replace(cfg, group=f"{cfg.task}-cost-{cfg.cost_limit:g}",
                                  name=cfg.name or f"{cfg.algo}-seed{cfg.seed}")
    if cfg.device == "auto":
        cfg = dataclasses.replace(cfg, device="cuda" if torch.cuda.is_available() else "cpu")
    validate(cfg)
    return cfg


def validate(cfg: BaselineConfig) -> None:
    """One-line errors for values that cannot work, before anything is written."""
    for name in ("max_timesteps", "batch_size", "eval_every", "eval_episodes", "log_every"):
        if getattr(cfg, name) <= 0:
            raise LSPCError(f"{name} must be positive, got {getattr(cfg, name)}")
    if cfg.seed < 0:
        raise LSPCError(f"seed must be >= 0, got {cfg.seed}")
    if not (math.isfinite(cfg.cost_limit) and cfg.cost_limit >= 0):
        raise LSPCError(f"cost_limit must be a finite number >= 0, got {cfg.cost_limit}")
    if cfg.wandb_mode not in WANDB_MODES:
        raise LSPCError(f"wandb_mode must be one of {list(WANDB_MODES)}, got {cfg.wandb_mode!r}")
    if cfg.dataset_path is not None and not os.path.isfile(cfg.dataset_path):
        raise LSPCError(f"dataset file {cfg.dataset_path!r} does not exist")
    check_device(cfg.device)


def evaluate(agent: Baseline, evaluator: Evaluator, env, cfg: BaselineConfig) -> Dict[str, float]:
    """Seeded evaluation at the run's cost limit, on the episodes LSPC's evaluations use."""
    episodes = evaluator.run(agent.act, episode_seeds(cfg.seed, cfg.eval_episodes), cfg.seed, agent.device)
    return summarize(env, episodes, cfg.cost_limit)


def eval_log_entries(scores: Dict[str, float]) -> Dict[str, float]:
    """The keys LSPC logs for LSPC-O, so that tools reading metrics.jsonl read both."""
    return {**{f"eval/{m}": scores[m] for m in ("reward", "cost", "length")},
            **{f"normalized_eval/{m}": scores[f"normalized_{m}"] for m in ("reward", "cost")}}


def train(cfg: BaselineConfig) -> str:
    """Train ``cfg.algo`` as configured; returns the run directory."""
    device = torch.device(cfg.device)
    run_dir = prepare_run_dir(cfg)
    checkpoint_dir = os.path.join(run_dir, "checkpoint")
    env = make_env(cfg.task)
    dataset = load_dataset(env, cfg.dataset_path, cost_limit=cfg.cost_limit, seed=cfg.seed)
    data = training_data(cfg, dataset)
    size = len(data["observations"])
    if size == 0:
        raise LSPCError(f"{cfg.algo}: no trajectory of the dataset has a cost <= {cfg.cost_limit:g}")
    if cfg.batch_size > size:
        raise LSPCError(f"batch_size {cfg.batch_size} is larger than the {size} transitions {cfg.algo} trains on")

    osrl().seed_all(cfg.seed)
    evaluator = Evaluator(cfg.task, cfg.episode_len, cfg.eval_episodes)  # made before any RNG restore
    buffer = make_buffer(cfg, data, device)
    window = StatsWindow()
    agent = Baseline(cfg, env, device, data, logger=window)
    start_step, best, wandb_id = 0, None, None
    if cfg.resume is not None:
        checkpoint = load_checkpoint(os.path.join(checkpoint_dir, "model.pt"), device)
        agent.load_state_dict(checkpoint["model"])
        restore_rng_state(checkpoint["rng"], buffer.generator)
        start_step, best, wandb_id = checkpoint["step"], checkpoint["best"], checkpoint["wandb_id"]
        truncate_metrics(run_dir, start_step)
        if start_step >= cfg.max_timesteps:
            raise LSPCError(f"the run is already at step {start_step}; raise --max_timesteps to train further")

    atomic_write_bytes(os.path.join(run_dir, "config.yaml"),
                       lambda f: f.write(yaml.safe_dump(config_dict(cfg), sort_keys=False).encode("utf-8")))
    logger = RunLogger(run_dir, config_dict(cfg), project=cfg.project, group=cfg.group, name=cfg.name,
                       wandb_mode=cfg.wandb_mode, wandb_id=wandb_id)
    print(f"run_dir: {run_dir}", flush=True)
    print(f"data: {cfg.algo} trains on {size} of the dataset's {len(dataset['observations'])} transitions", flush=True)

    def checkpoint_payload(step: int) -> dict:
        return {"step": step, "model": agent.state_dict(), "rng": capture_rng_state(buffer.generator),
                "best": best, "config": config_dict(cfg), "wandb_id": logger.wandb_id}

    def save_latest(step: int) -> None:
        window.check_finite()  # never save a diverged model
        save_checkpoint(os.path.join(checkpoint_dir, "model.pt"), checkpoint_payload(step))

    bar = tqdm(range(start_step, cfg.max_timesteps), initial=start_step, total=cfg.max_timesteps,
               desc=f"{cfg.algo} {cfg.task}", mininterval=2.0, dynamic_ncols=True)
    try:
        with StopRequest() as stop:
            for step in range(start_step + 1, cfg.max_timesteps + 1):
                window.begin_step(step)
                agent.train(buffer.sample(cfg.batch_size))
                bar.update(1)
                if step % cfg.log_every == 0:
                    logger.log(step, window.means())
                if step % cfg.eval_every == 0 or step == cfg.max_timesteps:
                    window.check_finite()  # never evaluate or save a diverged model
                    scores = evaluate(agent, evaluator, env, cfg)
                    logger.log(step, eval_log_entries(scores))
                    bar.set_postfix({f"{m}": round(scores[f"normalized_{m}"], 3) for m in ("reward", "cost")})
                    improved = better_than(scores, best)
                    if improved:
                        best = {"step": step, **scores}
                    payload = checkpoint_payload(step)
                    save_checkpoint(os.path.join(checkpoint_dir, "model.pt"), payload)
                    if improved:
                        save_checkpoint(os.path.join(checkpoint_dir, "model_best.pt"), payload)
                stop.stop_if_requested(step, lambda: save_latest(step))
    finally:
        for resource in (bar, logger, evaluator, env):
            resource.close()
    return run_dir


def main(argv: Optional[List[str]] = None) -> None:
    run_training_cli(load_config, train, argv)


if __name__ == "__main__":
    main()
