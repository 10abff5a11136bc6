"""Evaluate a trained LSPC or baseline run the way DSRL's tables are made (the DSRL protocol).

    python eval_lspc.py logs/OfflineBallRun-v0-cost-10/lspc_iql-seed0 [--checkpoint latest|best_o|best_s]
        [--policies lspc-o lspc-s cvae] [--cost_limits 10 20 40] [--eval_episodes 20] [--seed 0] [--device cpu]
        [--vector sync|async|lockstep] [--eps_s 0.1 0.25 0.5 1.0] [--eps_o 0.1 0.25 0.5 1.0] [--state_step N]
        [--no_figures] [--wandb_mode online|offline|disabled]
    python eval_lspc.py logs/OfflineBallRun-v0-cost-10/cpq-seed0 [--checkpoint latest|best] [--cost_limits 10] ...

(``--path RUN_DIR`` works as well as the positional run directory.)

Several run directories of one task and method (the seeds of a stacked run, ``train_lspc_iql.py
--seeds 0 1 2``, or any runs of one configuration) are evaluated in one batched pass, seeds x episodes:
every run's policy plays the same seeded episodes with its own noise generator, in rows of its own,
so each run's results equal those of evaluating it alone; each run gets its own eval/ as below.

    python eval_lspc.py logs/OfflineBallRun-v0-cost-10/lspc_iql-seed{0,1,2} [flags as above]

Rebuilds the model from the run directory's config.yaml and checkpoint, runs seeded episodes of
each policy once, and scores them at every cost threshold of the task's suite (LSPC ignores the
threshold during training). --eps_s / --eps_o evaluate LSPC-S / LSPC-O again with other
restriction values, without retraining. Writes into <run>/eval/: results.json, results.md,
training_curves.png (from metrics.jsonl), action_space.png (2-D action tasks) and tradeoff.png
(with a sweep). The per-threshold results also go to the summary of the run's wandb run (resumed
by the id its checkpoint holds, in its own mode; ``--wandb_mode disabled`` skips it). Nothing else
in the run directory is touched.

A baseline run of scripts/train_baseline.py (its config.yaml has an ``algo`` key; an LSPC run's has
none) is rebuilt and scored by the same code, on the same seeded episodes, as the one policy
``<algo>``; results.json then also holds ``algo`` and the ``cost_limit`` it was trained with.
BC-All, CDT and FISOR are scored at every threshold of the suite like LSPC (CDT prompted per threshold:
each threshold's entry records its prompt and raw returns); BC-Safe, BCQ-Lag, BEAR-Lag, CPQ,
COptiDICE and TraC were trained against their run's cost limit, so they are scored there only and other
--cost_limits are refused (their score at another threshold would mean nothing). LSPC's restriction
sweeps and figures (--eps_s/--eps_o, --state_step) are refused for them. A run of your own method
(``--algo module:Class``, docs/add-your-method.md) is rebuilt through that import path and scored
the same way, as its ``per_threshold`` says.

--eval_task TASK (zero-shot transfer, paper appendix A.6) runs the episodes in another task whose
observation and action spaces are the run's (e.g. the nine MetaDrive tasks, or BallRun and CarRun),
with that task's time limit, thresholds and reference returns, into <run>/eval/transfer/TASK/
(results.json, results.md; no figures). scripts/transfer.py does it for several tasks and draws them.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import gymnasium as gym
import numpy as np
import torch
import yaml

from lspc import LSPCError
from lspc.methods.baselines import BaselineConfig, load_baseline_config, make_method, trained_per_threshold
from lspc.checkpoint import atomic_write_bytes, load_checkpoint
from lspc.envs import check_task, cost_limits, make_env
from lspc.run_logger import WANDB_MODES
from lspc.evaluation import (VECTOR_MODES, Evaluator, choose_vector, episode_seeds, episode_stats, make_eval_env,
                             score_at_thresholds)
from lspc.plots import ActionSnapshot, plot_action_space, plot_tradeoff, plot_training_curves, read_curves
from lspc.training import LATEST, Method
from lspc_iql_configs import TASK_OVERRIDES, TrainConfig, check_device, load_saved_config
from train_lspc_iql import LSPC, LSPCMethod

# the config field each LSPC policy reads its restriction eps from, at act time
SWEEP_FIELDS = {"lspc-s": "vae_clamper", "lspc-o": "max_latent_action"}
SWEEP_NOTES = {
    "lspc-s": "eps_S only restricts the prior when acting (training never reads it), so every value is an exact "
              "LSPC-S policy of this run.",
    "lspc-o": "LSPC-O's latent encoder was trained with eps_O = {trained:g}; other values rescale its squashed "
              "latent z = eps_O * tanh(u) without retraining, so they show sensitivity, not what training at that "
              "eps would give.",
}


@dataclasses.dataclass
class LoadedRun:
    path: str
    checkpoint: str
    method: Method
    agent: Any
    step: int
    env: gym.Env  # the task's env: its spaces and dsrl's normalization
    wandb_id: Optional[str] = None  # the training run's wandb run, None when it logged none

    @property
    def cfg(self) -> Union[TrainConfig, BaselineConfig]:
        return self.method.cfg

    @property
    def algo(self) -> Optional[str]:
        """The baseline's name, None for an LSPC run."""
        return self.cfg.algo if isinstance(self.cfg, BaselineConfig) else None

    def close(self) -> None:
        self.env.close()


def run_method(config_path: str) -> Method:
    """The method a run directory's config.yaml belongs to: a baseline's or a plugin's has an ``algo`` key
    (a plugin's its import path, so that its module rebuilds the model), LSPC's none."""
    try:
        with open(config_path, encoding="utf-8") as f:
            content = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as err:
        raise LSPCError(f"could not read the run config {config_path}: {err}") from None
    if isinstance(content, dict) and "algo" in content:
        return make_method(load_baseline_config(config_path))
    return LSPCMethod(load_saved_config(config_path))


def checkpoint_files(method: Method) -> Dict[str, str]:
    """--checkpoint choice -> file: latest, and the best checkpoint of each policy training scores
    (best_o and best_s for LSPC; best for a method with one policy)."""
    files = {"latest": LATEST}
    for key, (_, filename) in method.policies.items():
        files["best" + (f"_{key}" if len(method.policies) > 1 else "")] = filename
    return files


def load_run(path: str, checkpoint: str = "latest", device: str = "cpu") -> LoadedRun:
    """The run's model from its config.yaml and checkpoint, on ``device`` (a GPU checkpoint loads on a CPU)."""
    check_device(device)
    config_path = os.path.join(path, "config.yaml")
    if not os.path.isfile(config_path):
        raise LSPCError(f"{path} is not a run directory: expected config.yaml and checkpoint/ written by "
                        "train_lspc_iql.py or scripts/train_baseline.py")
    method = run_method(config_path)
    method.cfg = dataclasses.replace(method.cfg, device=device)
    algo = getattr(method.cfg, "algo", None)
    kind = "an LSPC" if algo is None else f"a {algo}"
    checkpoints = checkpoint_files(method)
    if checkpoint not in checkpoints:
        raise LSPCError(f"{path} is {kind} run: --checkpoint must be one of {list(checkpoints)}, got {checkpoint!r}")
    checkpoint_path = os.path.join(path, "checkpoint", checkpoints[checkpoint])
    if not os.path.isfile(checkpoint_path):
        present = [name for name, file in checkpoints.items() if os.path.isfile(os.path.join(path, "checkpoint", file))]
        has = f"it has {', '.join(present)}" if present else "it has no checkpoint yet"
        raise LSPCError(f"no {checkpoint} checkpoint in {path}: expected checkpoint/{checkpoints[checkpoint]}; {has}")
    state = load_checkpoint(checkpoint_path)
    if not (isinstance(state, dict) and {"model", "step"} <= set(state) and isinstance(state.get("config"), dict)):
        raise LSPCError(f"{checkpoint_path} is not {kind} checkpoint: expected the model, config and step that "
                        "the training scripts save")
    for key in ("task", "algo"):  # an LSPC run has no algo: its config and checkpoint both lack it
        saved, expected = state["config"].get(key), getattr(method.cfg, key, None)
        if saved != expected:
            raise LSPCError(f"{checkpoint_path} was trained on {saved}, but the run directory is {expected}: "
                            f"expected a checkpoint of {expected}")
    env = make_env(method.cfg.task, method.cfg.episode_len)
    agent = method.make_agent(env, torch.device(device))
    try:
        agent.load_state_dict(state["model"])
    except KeyError as err:
        env.close()
        raise LSPCError(f"{checkpoint_path} does not fit the run's config.yaml: it lacks {err.args[0]!r}") from None
    except (RuntimeError, ValueError) as err:  # torch lists every mismatch on its own line; the first says enough
        env.close()
        details = [line.strip() for line in str(err).splitlines() if line.strip()]
        first = details[min(1, len(details) - 1)]
        raise LSPCError(f"{checkpoint_path} does not fit the run's config.yaml: {first}") from None
    return LoadedRun(path, checkpoint, method, agent, int(state["step"]), env, state.get("wandb_id"))


@contextlib.contextmanager
def acting_with(agent: LSPC, **overrides) -> Iterator[None]:
    """The policies read their eps and sampling modes from ``agent.cfg`` when they act: override them meanwhile."""
    saved = agent.cfg
    agent.cfg = dataclasses.replace(saved, **overrides)
    try:
        yield
    finally:
        agent.cfg = saved


def transfer_env(run: LoadedRun, eval_task: str) -> gym.Env:
    """The env of ``eval_task`` (its own time limit) for zero-shot transfer (appendix A.6), when its
    observation and action spaces are the run's task's."""
    check_task(eval_task)
    env = make_env(eval_task)
    for kind in ("observation_space", "action_space"):
        ours, theirs = getattr(run.env, kind), getattr(env, kind)
        if ours.shape != theirs.shape or not (np.array_equal(ours.low, theirs.low)
                                              and np.array_equal(ours.high, theirs.high)):
            env.close()
            raise LSPCError(f"cannot evaluate {run.path} on {eval_task}: its {kind.split('_')[0]} space "
                            f"{theirs} differs from {run.cfg.task}'s {ours}")
    return env


def run_thresholds(run: LoadedRun, thresholds: Optional[Sequence[float]]) -> List[float]:
    """Where a run is scored: a method that never sees the threshold while training (LSPC, BC-All,
    CDT) at the suite's (or the given) ones; one trained against its run's cost limit at that one only."""
    cfg = run.cfg
    if run.algo is None or not trained_per_threshold(run.algo):
        return [float(kappa) for kappa in (thresholds or cost_limits(cfg.task))]
    if thresholds and [float(kappa) for kappa in thresholds] != [cfg.cost_limit]:
        raise LSPCError(f"{cfg.algo} was trained for cost limit {cfg.cost_limit:g}, so its score at "
                        f"--cost_limits {' '.join(f'{k:g}' for k in thresholds)} would mean nothing: train one "
                        f"{cfg.algo} run per threshold and leave out --cost_limits")
    return [float(cfg.cost_limit)]


def _check_arguments(thresholds: Sequence[float], eval_episodes: int, seed: int,
                     sweeps: Dict[str, Sequence[float]]) -> None:
    if eval_episodes <= 0:
        raise LSPCError(f"--eval_episodes must be positive, got {eval_episodes}")
    if seed < 0:
        raise LSPCError(f"--seed must be >= 0, got {seed}")
    if any(kappa < 0 for kappa in thresholds):
        raise LSPCError(f"--cost_limits must be >= 0, got {list(thresholds)}")
    for values in sweeps.values():
        if any(eps <= 0 for eps in values):
            raise LSPCError(f"restriction values (--eps_s, --eps_o) must be positive, got {list(values)}")


def _merge(entry: Optional[Dict], scored: Dict, notes: Dict) -> Dict:
    """One policy's results over the thresholds it was run for. A policy acting the same at every
    threshold runs once; one prompted per threshold (CDT) runs per threshold: each threshold's
    entry then also holds its own raw means and what it was prompted with, and the top level
    covers all its episodes."""
    if entry is None and not notes:
        return scored
    per_threshold = {kappa: {**scores, "reward": scored["reward"], "cost": scored["cost"],
                             "length": scored["length"], **notes} for kappa, scores in scored["thresholds"].items()}
    if entry is None:
        return {**scored, "thresholds": per_threshold}
    episodes = {key: entry["episodes"][key] + scored["episodes"][key] for key in entry["episodes"]}
    return {**episode_stats(episodes), "thresholds": {**entry["thresholds"], **per_threshold}}


def evaluate(run: LoadedRun, policies: Optional[Sequence[str]] = None, thresholds: Optional[Sequence[float]] = None,
             eval_episodes: int = 20, seed: int = 0, vector: Optional[str] = None, eps_s: Sequence[float] = (),
             eps_o: Sequence[float] = (), eval_task: Optional[str] = None) -> Dict:
    """The run's policies (all, or ``policies``) over the same seeded episodes, scored at
    ``run_thresholds``; then LSPC's restriction sweeps, on the same episodes and policy noise
    (common random numbers). ``vector`` None: sync, or async for MetaDrive (one env per process);
    every mode gives the same numbers. ``eval_task``: episodes of that task instead (same spaces),
    normalized with its reference returns."""
    return evaluate_runs([run], policies, thresholds, eval_episodes, seed, vector, eps_s, eps_o, eval_task)[0]


def check_together(runs: Sequence[LoadedRun]) -> None:
    """Runs evaluated in one batched pass: distinct run directories of one task and one method (the
    seeds of a stacked run, or any runs of one configuration), so their policies play one batch of envs."""
    first = runs[0]
    paths = [os.path.realpath(run.path) for run in runs]
    repeated = next((run.path for run, path in zip(runs, paths) if paths.count(path) > 1), None)
    if repeated is not None:
        raise LSPCError(f"{repeated} is given twice; give each run directory once")
    for run in runs[1:]:
        if (run.cfg.task, run.cfg.episode_len, run.algo) != (first.cfg.task, first.cfg.episode_len, first.algo):
            raise LSPCError(f"runs evaluated together play one batch of episodes, so they need one task and method: "
                            f"{run.path} is {run.algo or 'lspc'} on {run.cfg.task}, {first.path} is "
                            f"{first.algo or 'lspc'} on {first.cfg.task}; evaluate them one by one")


def evaluate_runs(runs: Sequence[LoadedRun], policies: Optional[Sequence[str]] = None,
                  thresholds: Optional[Sequence[float]] = None, eval_episodes: int = 20, seed: int = 0,
                  vector: Optional[str] = None, eps_s: Sequence[float] = (), eps_o: Sequence[float] = (),
                  eval_task: Optional[str] = None) -> List[Dict]:
    """``evaluate`` of several runs of one task and method in one batched pass (seeds x episodes): each
    run's policy plays the same seeded episodes with a generator of its own seeded as alone, in rows of
    its own (``Evaluator.run_groups``), so each run's results are those it gets evaluated alone."""
    check_together(runs)
    cfg = runs[0].cfg
    if eval_task is not None and eval_task != cfg.task:
        envs: List[gym.Env] = []
        try:  # the same evaluation, with the other task's env, time limit and thresholds
            transferred = []
            for run in runs:
                envs.append(transfer_env(run, eval_task))
                transferred.append(dataclasses.replace(run, env=envs[-1], method=copy.copy(run.method)))
                transferred[-1].method.cfg = dataclasses.replace(
                    run.cfg, task=eval_task,
                    episode_len=TASK_OVERRIDES[eval_task].get("episode_len", run.cfg.episode_len))
            results = evaluate_runs(transferred, policies, thresholds, eval_episodes, seed, vector, eps_s, eps_o)
            return [{**result, "trained_task": run.cfg.task} for run, result in zip(runs, results)]
        finally:
            for env in envs:
                env.close()
    sweeps = {policy: list(values) for policy, values in (("lspc-s", eps_s), ("lspc-o", eps_o)) if values}
    if sweeps and runs[0].algo is not None:
        flags = " and ".join(flag for flag, values in (("--eps_s", eps_s), ("--eps_o", eps_o)) if values)
        raise LSPCError(f"only LSPC runs take {flags}; {runs[0].path} is a {runs[0].algo} run")
    kappas = [run_thresholds(run, thresholds) for run in runs]
    for run_kappas in kappas:
        _check_arguments(run_kappas, eval_episodes, seed, sweeps)
    # per run: (name, policy, thresholds, notes); runs of one method list the same names in the same order
    scored = [run.agent.evaluation_policies(run_kappas) for run, run_kappas in zip(runs, kappas)]
    names = list(dict.fromkeys(name for name, *_ in scored[0]))
    unknown = [name for name in policies or () if name not in names]
    if unknown:
        raise LSPCError(f"unknown policies {unknown}; {runs[0].path} has the policies {names}")
    chosen = list(policies or names)
    seeds = episode_seeds(seed, eval_episodes)
    evaluator = Evaluator(cfg.task, cfg.episode_len, eval_episodes * len(runs),
                          choose_vector(cfg.task, vector, eval_episodes * len(runs), in_process="sync"))

    def score(acting: Sequence[Any], run_kappas: Sequence[Sequence[float]]) -> List[Dict]:
        """Run k's policy ``acting[k]`` scored at ``run_kappas[k]``; every run's episodes in one batch."""
        episodes = evaluator.run_groups(acting, [seeds] * len(runs), [seed] * len(runs), runs[0].agent.device)
        return [score_at_thresholds(run.env, run_episodes, at)
                for run, run_episodes, at in zip(runs, episodes, run_kappas)]

    results = []
    for run, run_kappas in zip(runs, kappas):
        result = {"task": run.cfg.task, "trained_task": run.cfg.task, "run": os.path.abspath(run.path),
                  "checkpoint": run.checkpoint, "step": run.step, "train_seed": run.cfg.seed, "seed": seed,
                  "episodes": eval_episodes, "thresholds": run_kappas, "device": run.cfg.device}
        if run.algo is None:
            result["restriction"] = {"eps_s": run.cfg.vae_clamper, "eps_o": run.cfg.max_latent_action,
                                     "lspc_s_sampling": run.cfg.lspc_s_sampling,
                                     "lspc_o_sampling": run.cfg.lspc_o_sampling}
        else:
            result.update(algo=run.algo, cost_limit=run.cfg.cost_limit, per_threshold=trained_per_threshold(run.algo))
        results.append(result)
    try:
        entries: List[Dict[str, Dict]] = [{} for _ in runs]
        for rows in zip(*scored):  # the same policy of every run
            name = rows[0][0]
            if name in chosen:
                for run_entries, (_, _, _, notes), scores in zip(entries, rows, score([row[1] for row in rows],
                                                                                      [row[2] for row in rows])):
                    run_entries[name] = _merge(run_entries.get(name), scores, notes)
        for result, run_entries in zip(results, entries):
            result["policies"] = {name: run_entries[name] for name in chosen}
        for policy, values in sweeps.items():
            field = SWEEP_FIELDS[policy]
            acting = [dict((name, act) for name, act, *_ in run_scored)[policy] for run_scored in scored]
            points: List[List[Dict]] = [[] for _ in runs]
            for eps in values:
                with contextlib.ExitStack() as stack:
                    for run in runs:
                        stack.enter_context(acting_with(run.agent, **{field: eps}))
                    for run_points, scores in zip(points, score(acting, kappas)):
                        run_points.append({"eps": eps, **scores})
            for result, run, run_points in zip(results, runs, points):
                trained = getattr(run.cfg, field)
                result.setdefault("sweep", {})[policy] = {
                    "parameter": field, "trained_eps": trained, "note": SWEEP_NOTES[policy].format(trained=trained),
                    "points": run_points}
    finally:
        evaluator.close()
    return results


def summary_entries(results: Dict) -> Dict[str, float]:
    """results.json's scores as flat wandb summary keys, with the metric names of the authors' release:
    ``eval_lspc/<policy>/Reward`` (raw, and ``_std``), ``eval_lspc/<policy>/cost-<κ>/Normalized_Reward``
    (normalized at κ, and ``_std``); a transfer's under ``eval_lspc/transfer/<task>/``."""
    prefix = "eval_lspc" if results["task"] == results.get("trained_task", results["task"]) else \
        f"eval_lspc/transfer/{results['task']}"
    entries: Dict[str, float] = {f"{prefix}/step": results["step"], f"{prefix}/episodes": results["episodes"]}
    for policy, entry in results["policies"].items():
        base = f"{prefix}/{policy}"
        entries[f"{base}/Length"] = entry["length"]
        for metric in ("reward", "cost"):
            entries[f"{base}/{metric.capitalize()}"] = entry[metric]
            entries[f"{base}/{metric.capitalize()}_std"] = entry[f"{metric}_std"]
            for kappa, scores in entry["thresholds"].items():
                name = f"{base}/cost-{kappa}/Normalized_{metric.capitalize()}"
                entries[name] = scores[f"normalized_{metric}"]
                entries[f"{name}_std"] = scores[f"normalized_{metric}_std"]
    return entries


def write_wandb_summary(run: LoadedRun, results: Dict, wandb_mode: Optional[str] = None) -> bool:
    """Add ``summary_entries(results)`` to the summary of the wandb run that trained ``run`` (resumed
    by its id, in the run's own wandb mode unless ``wandb_mode`` says otherwise). False when there is
    none: the run trained with wandb disabled, or ``wandb_mode`` is disabled."""
    mode = wandb_mode or run.cfg.wandb_mode
    if mode == "disabled" or run.wandb_id is None:
        return False
    import wandb

    cfg = run.cfg
    wandb_run = wandb.init(project=cfg.project, group=cfg.group, name=cfg.name, dir=run.path, mode=mode,
                           id=run.wandb_id, resume="allow")
    try:
        wandb_run.summary.update(summary_entries(results))
    finally:
        wandb_run.finish()
    return True


def evaluate_run(path: str, checkpoint: str = "latest", policies: Optional[List[str]] = None,
                 thresholds: Optional[List[float]] = None, eval_episodes: int = 20, seed: int = 0,
                 device: str = "cpu", vector: Optional[str] = None, eps_s: Sequence[float] = (),
                 eps_o: Sequence[float] = ()) -> Dict:
    """``load_run`` then ``evaluate``: the results.json content of a run directory."""
    run = load_run(path, checkpoint, device)
    try:
        return evaluate(run, policies, thresholds, eval_episodes, seed, vector, eps_s, eps_o)
    finally:
        run.close()


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------
def _score_cells(entry: Dict, thresholds: Sequence[str]) -> List[str]:
    return [f"{entry['reward']:.1f} ± {entry['reward_std']:.1f}", f"{entry['cost']:.1f} ± {entry['cost_std']:.1f}"] + [
        f"{entry['thresholds'][k]['normalized_reward']:.3f} / {entry['thresholds'][k]['normalized_cost']:.3f}"
        for k in thresholds]


def _table(first_column: str, rows: Dict[str, Dict], thresholds: Sequence[str]) -> List[str]:
    header = [first_column, "reward", "cost"] + [f"norm. reward / cost @ {k}" for k in thresholds]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([label] + _score_cells(entry, thresholds)) + " |" for label, entry in rows.items()]
    return lines


def markdown_table(results: Dict) -> str:
    thresholds = [f"{kappa:g}" for kappa in results["thresholds"]]
    if "algo" in results:  # a baseline run
        settings = f"{results['algo']} trained at cost limit {results['cost_limit']:g}"
    else:
        restriction = results["restriction"]
        settings = (f"eps_S = {restriction['eps_s']:g} ({restriction['lspc_s_sampling']}), "
                    f"eps_O = {restriction['eps_o']:g} ({restriction['lspc_o_sampling']})")
    trained_task = results.get("trained_task", results["task"])  # results.json files from before transfer lack it
    trained = "" if trained_task == results["task"] else f" (zero-shot: trained on {trained_task})"
    lines = [f"{results['task']}{trained}, checkpoint {results['checkpoint']} (step {results['step']}), "
             f"{results['episodes']} episodes, seed {results['seed']}; {settings}; mean ± std over episodes", ""]
    lines += _table("policy", results["policies"], thresholds)
    for policy, sweep in results.get("sweep", {}).items():
        rows = {f"{p['eps']:g}" + (" (trained)" if np.isclose(p["eps"], sweep["trained_eps"]) else ""): p
                for p in sweep["points"]}
        lines += ["", f"{policy.upper()} restriction sweep ({sweep['parameter']}). {sweep['note']}", ""]
        lines += _table("eps", rows, thresholds)
    return "\n".join(lines) + "\n"


def action_snapshot(run: LoadedRun, seed: int, state_step: int, samples: int = 500, grid: int = 101) -> ActionSnapshot:
    """Figure 3's data at the state LSPC-O reaches after ``state_step`` steps of the first evaluation episode."""
    agent, device = run.agent, run.agent.device
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)

    def batch(obs: np.ndarray, rows: int) -> torch.Tensor:
        return torch.as_tensor(obs, dtype=torch.float32, device=device).expand(rows, -1)

    env = make_eval_env(run.cfg.task, run.cfg.episode_len)
    try:
        obs, _ = env.reset(seed=episode_seeds(seed, 1)[0])
        reached = 0
        while reached < state_step:
            obs, _, terminated, truncated, _ = env.step(agent.act_lspc_o(batch(obs, 1), generator)[0].cpu().numpy())
            reached += 1
            if terminated or truncated:
                break
    finally:
        env.close()
    low, high = run.env.action_space.low, run.env.action_space.high
    a0, a1 = np.meshgrid(np.linspace(low[0], high[0], grid), np.linspace(low[1], high[1], grid))
    grid_actions = torch.as_tensor(np.stack([a0.ravel(), a1.ravel()], axis=1), dtype=torch.float32, device=device)
    with torch.no_grad():
        states = batch(obs, len(grid_actions))
        q_reward = torch.min(*agent.q.both(states, grid_actions)).reshape(grid, grid)
        q_cost = torch.max(*agent.cost_q.both(states, grid_actions)).reshape(grid, grid)
    with acting_with(agent, lspc_o_sampling="deterministic"):
        lspc_o_mean = agent.act_lspc_o(batch(obs, 1), generator)[0]
    cfg = run.cfg
    return ActionSnapshot(
        title=f"{cfg.task}, checkpoint {run.checkpoint} (step {run.step}): state after {reached} LSPC-O steps of "
              f"evaluation episode 0 (seed {seed}); eps_S = {cfg.vae_clamper:g} ({cfg.lspc_s_sampling}), "
              f"eps_O = {cfg.max_latent_action:g}; {samples} samples per policy",
        low=low, high=high, q_reward=q_reward.cpu().numpy(), q_cost=q_cost.cpu().numpy(),
        cvae=agent.act_cvae(batch(obs, samples), generator).cpu().numpy(),
        lspc_s=agent.act_lspc_s(batch(obs, samples), generator).cpu().numpy(),
        lspc_o=agent.act_lspc_o(batch(obs, samples), generator).cpu().numpy(),
        lspc_o_mean=lspc_o_mean.cpu().numpy(),
    )


def write_figures(run: LoadedRun, results: Dict, out_dir: str, state_step: int) -> List[str]:
    """The run's figures into ``out_dir``; returns what was written, and says what was skipped and why."""
    written = []
    try:
        curves = read_curves(run.path)
    except LSPCError as err:
        print(f"note: no training curves: {err}")
    else:
        written.append(os.path.join(out_dir, "training_curves.png"))
        plot_training_curves({run.cfg.task: [curves]}, {run.cfg.task: results["thresholds"]}, written[-1])
    if run.env.action_space.shape == (2,):
        written.append(os.path.join(out_dir, "action_space.png"))
        plot_action_space(action_snapshot(run, results["seed"], state_step), written[-1])
    else:
        print(f"note: no action-space figure: {run.cfg.task} has {run.env.action_space.shape[0]}-D actions, it needs 2")
    if "sweep" in results:
        written.append(os.path.join(out_dir, "tradeoff.png"))
        plot_tradeoff(results, written[-1])
    return written


def write_outputs(run: LoadedRun, results: Dict, args: argparse.Namespace) -> str:
    """One run's results.json, results.md, figures and wandb summary; returns what was written, in words."""
    transfer = results["task"] != run.cfg.task
    # a transfer never replaces the run's own results (the sweep reads eval/results.json)
    out_dir = os.path.join(run.path, "eval", *(("transfer", results["task"]) if transfer else ()))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise LSPCError(f"cannot write the results to {out_dir} ({err.strerror})") from None
    table = markdown_table(results)
    atomic_write_bytes(os.path.join(out_dir, "results.json"), lambda f: f.write(json.dumps(results, indent=2).encode()))
    atomic_write_bytes(os.path.join(out_dir, "results.md"), lambda f: f.write(table.encode()))
    print(table)
    figures = [] if args.no_figures or run.algo is not None or transfer else write_figures(
        run, results, out_dir, run.cfg.episode_len // 2 if args.state_step is None else args.state_step)
    summarized = write_wandb_summary(run, results, args.wandb_mode)
    return (", ".join([f"{out_dir}/results.json", "results.md"] + [os.path.basename(f) for f in figures])
            + (f" and the wandb summary of run {run.wandb_id}" if summarized else ""))


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("run_dirs", nargs="*", metavar="run_dir",
                        help="a run directory written by train_lspc_iql.py or scripts/train_baseline.py; several "
                             "(of one task and method, e.g. the seeds of a stacked run) play in one batched pass")
    parser.add_argument("--path", action="append", default=[],
                        help="a run directory, instead of the positional arguments; repeatable")
    parser.add_argument("--checkpoint", default="latest",
                        help="LSPC runs: latest, best_o or best_s; baseline runs: latest or best")
    parser.add_argument("--policies", nargs="+", default=None,
                        help="the policies to score (default: all of the run's; LSPC: lspc-o lspc-s cvae)")
    parser.add_argument("--cost_limits", nargs="+", type=float, default=None,
                        help="thresholds to score at (default: the task suite's three; a baseline trained per "
                             "threshold: its run's cost limit, the only one allowed)")
    parser.add_argument("--eval_episodes", type=int, default=20, help="episodes per policy (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the episode starts and the policies' noise")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--vector", choices=VECTOR_MODES, default=None,
                        help="how episodes run side by side: gymnasium's SyncVectorEnv, AsyncVectorEnv (one "
                             "subprocess per episode, for slow simulators) or a plain in-process list; same numbers "
                             "(default: sync; async for MetaDrive, which allows one environment per process)")
    parser.add_argument("--eps_s", nargs="+", type=float, default=[], help="LSPC-S restriction values to sweep")
    parser.add_argument("--eps_o", nargs="+", type=float, default=[], help="LSPC-O restriction values to sweep")
    parser.add_argument("--state_step", type=int, default=None,
                        help="action-space figure: the state after this many LSPC-O steps (default: half an episode)")
    parser.add_argument("--eval_task", default=None,
                        help="zero-shot transfer: evaluate on this task (same observation and action spaces), "
                             "normalized with its reference returns; writes into <run>/eval/transfer/<task>/")
    parser.add_argument("--no_figures", action="store_true", help="write results.json and results.md only")
    parser.add_argument("--wandb_mode", choices=WANDB_MODES, default=None,
                        help="the per-threshold results also go to the summary of the run's wandb run "
                             "(default: the mode it trained with; none when it trained with wandb disabled)")
    args = parser.parse_args(argv)
    if bool(args.run_dirs) == bool(args.path):
        parser.error("give the run directories once: as positional arguments or with --path")
    paths = args.run_dirs or args.path
    runs: List[LoadedRun] = []
    try:
        if args.state_step is not None and args.state_step < 0:
            raise LSPCError(f"--state_step must be >= 0, got {args.state_step}")
        try:
            for path in paths:
                runs.append(load_run(path, args.checkpoint, args.device))
                if runs[-1].algo is not None and args.state_step is not None:
                    raise LSPCError(f"--state_step applies to LSPC runs (their action-space figure); {path} is a "
                                    f"{runs[-1].algo} run")
            episodes = args.eval_episodes * len(runs)
            vector = choose_vector(runs[0].cfg.task, args.vector, episodes, in_process="sync")
            start = time.perf_counter()
            results = evaluate_runs(runs, args.policies, args.cost_limits, args.eval_episodes, args.seed, vector,
                                    args.eps_s, args.eps_o, args.eval_task)
            elapsed = time.perf_counter() - start
            written = [write_outputs(run, run_results, args) for run, run_results in zip(runs, results)]
        finally:
            for run in runs:
                run.close()
    except LSPCError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    evaluations = len(results[0]["policies"]) + sum(len(s["points"]) for s in results[0].get("sweep", {}).values())
    together = f" of each of {len(runs)} runs, side by side," if len(runs) > 1 else ""
    print(f"{evaluations} evaluations of {args.eval_episodes} episodes{together} in {elapsed:.1f} s "
          f"(--vector {vector})")
    for line in written:
        print(f"wrote {line}")


if __name__ == "__main__":
    main()
