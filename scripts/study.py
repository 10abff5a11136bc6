"""The paper's studies, one command each: train one LSPC run per value and seed through
scripts/sweep.py's machinery (locally or on Slurm; finished runs are skipped, so rerunning the
command only redraws), then draw the study's figure into its directory.

    python scripts/study.py --study restriction|converse|lambda|xi|data_ratio --task T [--seeds 0 1 2]
        [--values V [V ...]] [--max_timesteps N] [--eval_every N] [--eval_episodes N] [--dataset_dir DIR]
        [--logdir studies] [--executor local|slurm] [--jobs N] [--extra="ARGS"] [--dry_run]

Studies (figures in <logdir>/<task>/<study>/; runs in <logdir>/<task>/runs/, one sweep directory per value):
  restriction  paper Figure 4: eps_S and eps_O swept at evaluation (eval_lspc.py --eps_s/--eps_o)
               on one run per seed; figure: normalized reward and cost against eps.
  converse     appendix A.3.2, Figure 5: --converse off and on; training curves per value.
  lambda       Figures 6 and 7: beta_cost (lambda_c) and beta_reward (lambda_r), each varied with the
               other at its default; training curves per value, one figure per parameter.
  xi           Figure 8: iql_tau, the expectile of both value functions; training curves per value.
  data_ratio   FISOR's data-quantity experiment: --data_ratio; final normalized reward and cost
               against the fraction of trajectories.
--values replaces the study's values (restriction: the eps values). The runs at the default
configuration (runs/default) serve every study but restriction, whose evaluation differs
(runs/restriction); rerunning a study, or running another, skips every run already done.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import sweep  # noqa: E402
from lspc import LSPCError  # noqa: E402
from lspc.envs import check_task, cost_limits  # noqa: E402
from lspc.plots import plot_against_value, plot_training_curves, read_curves  # noqa: E402
from lspc_iql_configs import TASK_OVERRIDES, TrainConfig, validate  # noqa: E402

DEFAULT = "default"
RESTRICTION = "restriction"  # the default configuration, evaluated with the eps sweep


@dataclasses.dataclass(frozen=True)
class Study:
    parameters: Tuple[str, ...]  # TrainConfig fields varied one at a time (restriction: none, eps at evaluation)
    values: Tuple[float, ...]
    figure: str  # "curves": training curves per value; "final": final scores against the value
    about: str


STUDIES: Dict[str, Study] = {
    "restriction": Study((), (0.1, 0.25, 0.5, 0.6, 1.0), "final", "restriction eps at evaluation (Figure 4)"),
    "converse": Study(("converse",), (0, 1), "curves", "Converse LSPC-O (appendix A.3.2)"),
    "lambda": Study(("beta_cost", "beta_reward"), (0.5, 2.0, 8.0), "curves", "AWR temperatures lambda"),
    "xi": Study(("iql_tau",), (0.5, 0.7, 0.9), "curves", "expectile xi"),
    "data_ratio": Study(("data_ratio",), (0.1, 0.3, 1.0), "final", "fraction of trajectories"),
}


def default_value(task: str, parameter: str) -> float:
    return float(TASK_OVERRIDES[task].get(parameter, getattr(TrainConfig, parameter)))


def value_flag(parameter: str, value: float) -> List[str]:
    if parameter == "converse":  # a pyrallis bool
        return [f"--converse={'true' if value else 'false'}"]
    return [f"--{parameter}", f"{value:g}"]


def variants(study: Study, task: str, values: Sequence[float]) -> Dict[str, List[str]]:
    """Sweep directory name -> the training flags of its runs; every default value shares ``default``."""
    if not study.parameters:
        return {RESTRICTION: []}
    found = {DEFAULT: []}
    for parameter in study.parameters:
        for value in values:
            if value != default_value(task, parameter):
                found[f"{parameter}={value:g}"] = value_flag(parameter, value)
    return found


def check_values(study_name: str, values: Sequence[float]) -> None:
    study = STUDIES[study_name]
    for parameter in study.parameters:
        probe = TrainConfig()
        for value in values:
            try:  # the training script's own checks, in one line, before anything runs
                validate(dataclasses.replace(probe, **{parameter: type(getattr(probe, parameter))(value)},
                                             device="cpu"))
            except LSPCError as err:
                raise LSPCError(f"--values for the {study_name} study: {err}") from None
        if parameter == "converse" and not set(values) <= {0, 1}:
            raise LSPCError(f"--values for the converse study are 0 (off) and 1 (on), got {list(values)}")
    if not study.parameters and any(v <= 0 for v in values):
        raise LSPCError(f"restriction values must be positive, got {list(values)}")


def plan(args: argparse.Namespace) -> Tuple[argparse.Namespace, Dict[str, List[sweep.Job]]]:
    """The sweep arguments of the first variant (the executor's settings) and each variant's jobs (one per run)."""
    study = STUDIES[args.study]
    eval_extra = shlex.join(["--eps_s", *map(str, args.values), "--eps_o", *map(str, args.values)]) \
        if not study.parameters else ""
    planned, first = {}, None
    for name, flags in variants(study, args.task, args.values).items():
        argv = ["--executor", args.executor, "--tasks", args.task, "--seeds", *map(str, args.seeds), "--methods",
                sweep.LSPC, "--logdir", os.path.join(args.runs_dir, name), f"--extra={args.extra}",
                f"--method_extra=lspc={shlex.join(flags)}", f"--eval_extra={eval_extra} --no_figures"]
        for flag in ("max_timesteps", "eval_every", "eval_episodes", "jobs", "dataset_dir"):
            if getattr(args, flag) is not None:
                argv += [f"--{flag}", str(getattr(args, flag))]
        if args.dry_run:
            argv.append("--dry_run")
        sweep_args = sweep.parse_args(argv)
        sweep.check_args(sweep_args)
        planned[name] = sweep.plan_jobs(sweep_args)
        first = first or sweep_args
    return first, planned


def final_scores(run: sweep.Run, policy: str, eps: Optional[float] = None) -> Tuple[float, float]:
    """(normalized reward, normalized cost) at the task's first threshold from eval/results.json;
    ``eps``: that point of the policy's restriction sweep."""
    with open(os.path.join(run.run_dir, "eval", "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    entry = results["policies"][policy]
    if eps is not None:
        entry = next(p for p in results["sweep"][policy]["points"] if abs(p["eps"] - eps) < 1e-9)
    scores = entry["thresholds"][f"{results['thresholds'][0]:g}"]
    return scores["normalized_reward"], scores["normalized_cost"]


def draw(args: argparse.Namespace, planned_jobs: Dict[str, List[sweep.Job]]) -> List[str]:
    """The study's figures from its finished runs; returns their paths."""
    study = STUDIES[args.study]
    planned = {name: [run for job in jobs for run in job.runs] for name, jobs in planned_jobs.items()}
    some_run = next(iter(planned.values()))[0]
    title = (f"{args.task}: {study.about}, {some_run.max_timesteps or 'default'} steps; normalized at "
             f"κ = {cost_limits(args.task)[0]:g}")
    os.makedirs(args.study_dir, exist_ok=True)
    written = []
    if not study.parameters:  # restriction: one point per eps from each seed's evaluation sweep
        points = {policy: {eps: [final_scores(run, policy, eps) for run in planned[RESTRICTION]] for eps in args.values}
                  for policy in ("lspc-o", "lspc-s")}
        written.append(os.path.join(args.study_dir, "restriction.png"))
        plot_against_value(points, "restriction eps (eps_O for LSPC-O, eps_S for LSPC-S)", title, written[-1])
        return written
    for parameter in study.parameters:
        by_value = {value: planned[DEFAULT if value == default_value(args.task, parameter) else f"{parameter}={value:g}"]
                    for value in sorted(args.values)}
        written.append(os.path.join(args.study_dir, f"{parameter}.png"))
        if study.figure == "final":
            points = {policy: {value: [final_scores(run, policy) for run in runs] for value, runs in by_value.items()}
                      for policy in ("lspc-o", "lspc-s")}
            plot_against_value(points, parameter, title, written[-1])
        else:
            groups = {f"{parameter}={value:g}": [read_curves(run.run_dir) for run in runs]
                      for value, runs in by_value.items()}
            plot_training_curves(groups, {label: cost_limits(args.task) for label in groups}, written[-1])
    return written


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--study", required=True, choices=list(STUDIES), help="which study (see above)")
    parser.add_argument("--task", required=True, help="the DSRL task")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    parser.add_argument("--values", nargs="+", type=float, default=None, help="default: the study's own")
    parser.add_argument("--logdir", default="studies",
                        help="runs in <logdir>/<task>/runs/, figures in <logdir>/<task>/<study>/")
    parser.add_argument("--dataset_dir", help="use <dataset_dir>/<task>.hdf5 (as scripts/sweep.py)")
    parser.add_argument("--max_timesteps", type=int, help="training steps of every run (default: LSPC's)")
    parser.add_argument("--eval_every", type=int, help="steps between evaluations during training (default: LSPC's)")
    parser.add_argument("--eval_episodes", type=int, help="episodes of the training evaluations and of eval_lspc.py")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local",
                        help="as scripts/sweep.py (default: local)")
    parser.add_argument("--jobs", type=int, help="runs at once (default: as scripts/sweep.py)")
    parser.add_argument("--extra", default="", help="more flags for every training command (one string)")
    parser.add_argument("--dry_run", action="store_true", help="list the runs and their commands, run nothing")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    try:
        check_task(args.task)
        args.values = list(dict.fromkeys(args.values or STUDIES[args.study].values))
        check_values(args.study, args.values)
        root = os.path.join(os.path.abspath(args.logdir), args.task)
        args.runs_dir, args.study_dir = os.path.join(root, "runs"), os.path.join(root, args.study)
        sweep_args, planned = plan(args)
    except LSPCError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    jobs = [job for jobs in planned.values() for job in jobs]
    print(f"study {args.study} on {args.task}: {len(planned)} configurations x {len(args.seeds)} seeds "
          f"({', '.join(planned)}) in {args.study_dir}")
    failures = sweep.run_all(sweep_args, jobs, args.runs_dir, f"then the figures in {args.study_dir}")
    if failures is None:
        return
    if failures:
        sys.exit(1)
    print("wrote " + ", ".join(draw(args, planned)))


if __name__ == "__main__":
    main()
