"""Protocol sweeps (DSRL's evaluation protocol): train and evaluate every task x seed x method, on this machine
or on a Slurm cluster with submitit, then make Table 1 of the sweep directory.

    python scripts/sweep.py --executor local|slurm (--tasks T [T ...] | --suite bullet ...) \\
        [--seeds 0 1 2] [--methods lspc bc-all bc-safe cdt bcq-lag bear-lag cpq coptidice fisor trac module:Class] \\
        --logdir DIR \\
        [--dataset_dir DIR] [--jobs N] [--threads_per_job 1] [--max_timesteps N] [--eval_every N] \\
        [--eval_episodes N] [--extra="ARGS"] [--method_extra "METHOD=ARGS" ...] [--eval_extra="ARGS"] \\
        [--slurm_partition P] [--slurm_time_min M] [--slurm_gpus_per_job G] [--slurm_cpus_per_job C] \\
        [--slurm_mem_gb M] [--stack_seeds] [--no_wait] [--dry_run] [--table_only]

Runs: LSPC, BC-All, CDT and FISOR ignore the threshold while training: one run per (task, seed), in
<logdir>/<task>-cost-<first threshold>/, scored at all the task's thresholds. BC-Safe, BCQ-Lag,
BEAR-Lag, CPQ, COptiDICE and TraC: one run per (task, seed, threshold), each scored at its own threshold.
Your own method, by its import path (``--methods my_pkg.my_method:MyMethod``, docs/add-your-method.md),
runs through scripts/train_baseline.py, per threshold or not as its ``per_threshold`` says, in
<task>-cost-<kappa>/<its name>-seed<seed>/; its module must be importable in the jobs (the current
directory is added to their PYTHONPATH).

One job per run: train (a finished run is not retrained; an interrupted one continues with
--resume), then evaluate with eval_lspc.py (unless eval/results.json is newer than the
checkpoint), each as a subprocess with OMP_NUM_THREADS = MKL_NUM_THREADS = --threads_per_job.
Runs already trained and evaluated are skipped without submitting anything, so rerunning the
same command finishes an interrupted sweep. At most --jobs jobs run at once: locally the sweep
submits a new job whenever one ends; on Slurm the runs are one job array with that parallelism
(interrupted jobs are requeued by submitit and resume from their checkpoint). A failed run is
reported with its submitit log and does not stop the others; the exit status is 1 if any run
failed.

--stack_seeds: one job per LSPC (task, threshold) instead of one per seed. It trains the seeds as one
stacked model (train_lspc_iql.py --seeds ...: the kernel launches of one model, which pace a GPU's step),
each in the run directory its own run would have, and evaluates them with one eval_lspc.py in one batched
pass, each seed scoring as it would alone; the table sees ordinary runs. Seeds not started yet are
stacked together, an interrupted stack resumes as a whole from any of its seeds' directories, and
the seeds that finished are evaluated even when another seed of their stack diverged (that job is
reported as failed). Not the default: what a stack saves is a GPU's kernel launches, while on a CPU,
whose step is bound by arithmetic, one job per seed spreads the seeds over the cores; a stacked seed
equals its single run only up to float rounding; and flags that draw the data with each seed
(--data_ratio, --density, ...) cannot stack (refused before submitting). Finish a sweep with the
setting it started with. The baselines keep one job per seed.

At the end (or with --table_only) scripts/make_table.py writes <logdir>/table.md and
<logdir>/table.csv from every eval/results.json under <logdir>. Bad input: one `error:` line,
exit status 2, before anything is submitted.

--extra is given to every training command, --method_extra only to that method's (its flags
differ: e.g. --method_extra "lspc=--hidden_dim 32 --latent_dim 8"), also a step count per method
(--method_extra "fisor=--max_timesteps 3000", with no --max_timesteps for all); write
--extra="--flag value" with an equals sign when the value is a single flag.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import cloudpickle
import submitit
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import make_table  # noqa: E402
from lspc import LSPCError, available_cores  # noqa: E402
from lspc.methods.baselines import ALGOS, method_name, plugin_class, trained_per_threshold  # noqa: E402
from lspc.plugin import is_import_path  # noqa: E402
from lspc.envs import SUITES, check_task, cost_limits  # noqa: E402

if __name__ in sys.modules and __name__ != "__main__":  # imported: job processes could not import it by name
    cloudpickle.register_pickle_by_value(sys.modules[__name__])

LSPC = "lspc"
BASELINE_SCRIPT = os.path.join(ROOT, "scripts", "train_baseline.py")
METHODS = (LSPC, *ALGOS)
LOCAL_TIMEOUT_MIN = 30 * 24 * 60  # submitit's local default (2 min) would kill every training run
POLL_S = 1.0


@dataclasses.dataclass(frozen=True)
class Run:
    """One run directory: a seed's training run and its evaluation."""
    task: str
    method: str
    seed: int
    cost_limit: float
    run_dir: str
    max_timesteps: Optional[int]  # None: the run's own config (the script's default)
    label: str  # for messages


@dataclasses.dataclass(frozen=True)
class Job:
    """What one submitted job does: train its runs, then evaluate them with one eval_lspc.py. One run,
    or with --stack_seeds every seed of an LSPC configuration: one command trains them as one stacked
    model (train_lspc_iql.py --seeds, each seed in the run directory --seed k would write) and the
    evaluation plays them in one batched pass."""
    runs: Tuple[Run, ...]
    train_cmd: Tuple[str, ...]  # trains every run from scratch; a stack's ends with --name PREFIX --seeds s1 .. sn
    eval_cmd: Tuple[str, ...]  # eval_lspc.py and its flags; --path RUN_DIR for each run to evaluate is added
    threads: int
    label: str  # for messages

    @property
    def stacked(self) -> bool:
        return len(self.runs) > 1


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------
def plan_jobs(args: argparse.Namespace) -> List[Job]:
    """Every job of the sweep: one per run, or with --stack_seeds one per LSPC (task, threshold) with all
    its seeds (the baselines keep one job per seed)."""
    logdir = os.path.abspath(args.logdir)
    schedule = [token for flag in ("max_timesteps", "eval_every", "eval_episodes")
                if getattr(args, flag) is not None for token in (f"--{flag}", str(getattr(args, flag)))]
    evaluate = (sys.executable, os.path.join(ROOT, "eval_lspc.py"),
                *(["--eval_episodes", str(args.eval_episodes)] if args.eval_episodes else []), *args.eval_extra)
    jobs = []
    for task in args.tasks:
        data = ([] if not args.dataset_dir else
                ["--dataset_path", os.path.abspath(os.path.join(args.dataset_dir, f"{task}.hdf5"))])
        for method in args.methods:
            # threshold-agnostic methods: one run, filed under the task's first threshold
            kappas = cost_limits(task) if method != LSPC and trained_per_threshold(method) else cost_limits(task)[:1]
            script = ([os.path.join(ROOT, "train_lspc_iql.py")] if method == LSPC
                      else [BASELINE_SCRIPT, "--algo", method])
            name = "lspc_iql" if method == LSPC else method_name(method)  # the scripts' plain run names
            stack = args.stack_seeds and method == LSPC and len(args.seeds) > 1
            for kappa in kappas:
                at = f" κ={kappa:g}" if len(kappas) > 1 else ""
                # named explicitly: flags in --extra would otherwise enter the scripts' automatic names;
                # the sweep directory already tells the sweep's configurations apart
                runs = [Run(task, method, seed, kappa,
                            os.path.join(logdir, f"{task}-cost-{kappa:g}", f"{name}-seed{seed}"),
                            args.max_timesteps, f"{task} {method} seed {seed}{at}") for seed in args.seeds]
                flags = ["--cost_limit", f"{kappa:g}", "--logdir", logdir, *data, *schedule, *args.extra,
                         *args.method_extra.get(method, [])]
                if stack:  # seed k of the stack is named <name>-seed<k>, as its own run
                    seeds = [str(seed) for seed in args.seeds]
                    jobs.append(Job(tuple(runs), (sys.executable, *script, "--task", task, *flags, "--name", name,
                                                  "--seeds", *seeds),
                                    evaluate, args.threads_per_job, f"{task} {method} seeds {' '.join(seeds)}{at}"))
                    continue
                for run in runs:
                    train = (sys.executable, *script, "--task", task, "--seed", str(run.seed), *flags,
                             "--name", os.path.basename(run.run_dir))
                    jobs.append(Job((run,), train, evaluate, args.threads_per_job, run.label))
    return jobs


def check_stacks(jobs: Sequence[Job]) -> None:
    """The stacked training commands checked as train_lspc_iql.py checks them, before anything is
    submitted (LSPCError): flags that cannot stack (--seed, or data drawn with each seed's seed) are refused."""
    stacks = [job for job in jobs if job.stacked]
    if not stacks:
        return
    from lspc_iql_configs import load_config  # imports torch: only for a sweep with stacks

    for job in stacks:
        try:
            load_config(list(job.train_cmd[2:]))
        except LSPCError as err:
            raise LSPCError(f"{job.label} (--stack_seeds): {err}") from None


def check_trac_budgets(jobs: Sequence[Job]) -> None:
    """TraC's training commands checked as scripts/train_baseline.py checks them, before anything is
    submitted (LSPCError): a budget of at most bc_steps is refused there, not scaled, since such a run
    would be plain behaviour cloning. Prints each task's split of TraC's steps."""
    trac_jobs = [job for job in jobs if job.runs[0].method == "trac"]
    if not trac_jobs:
        return
    import train_baseline  # imports torch: only for a sweep with TraC

    splits: Dict[str, Tuple[int, int]] = {}
    for job in trac_jobs:
        try:
            cfg = train_baseline.load_config(list(job.train_cmd[2:]))
        except LSPCError as err:
            raise LSPCError(f"{job.label}: {err}") from None
        splits.setdefault(job.runs[0].task, (cfg.hparams["bc_steps"], cfg.max_timesteps))
    for task, (bc_steps, total) in splits.items():
        print(f"trac on {task}: {bc_steps} behaviour-cloning steps, then {total - bc_steps} classification steps "
              "(a budget of at most bc_steps is refused, not scaled)")


def evaluated(run: Run) -> bool:
    """eval/results.json is newer than the latest checkpoint."""
    checkpoint, results = (os.path.join(run.run_dir, *parts) for parts in (("checkpoint", "model.pt"),
                                                                            ("eval", "results.json")))
    return os.path.isfile(results) and os.path.getmtime(results) > os.path.getmtime(checkpoint)


def run_status(run: Run) -> str:
    """What a run still needs: 'train' (nothing there), 'restart' (a run that never wrote a
    checkpoint: the training script starts it afresh), 'resume', 'evaluate' or 'done'."""
    checkpoint = os.path.join(run.run_dir, "checkpoint", "model.pt")
    if not os.path.isfile(checkpoint):
        return "restart" if os.path.exists(os.path.join(run.run_dir, "config.yaml")) else "train"
    from lspc.checkpoint import load_checkpoint  # imports torch: only when there is a checkpoint to read

    try:
        step = int(load_checkpoint(checkpoint)["step"])
        with open(os.path.join(run.run_dir, "config.yaml"), encoding="utf-8") as f:
            target = run.max_timesteps or int(yaml.safe_load(f)["max_timesteps"])
    except (LSPCError, OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return "resume"  # the training script says what is wrong with the run
    if step < target:
        return "resume"
    return "done" if evaluated(run) else "evaluate"


DID = {"train": "trained, evaluated", "restart": "trained anew, evaluated", "resume": "resumed, evaluated",
       "evaluate": "evaluated", "done": "nothing to do"}


def stack_of(run: Run) -> Tuple[int, ...]:
    """The seeds its config.yaml says ``run`` was trained with as one stacked model; its own seed when alone."""
    try:
        with open(os.path.join(run.run_dir, "config.yaml"), encoding="utf-8") as f:
            seeds = yaml.safe_load(f).get("seeds")
    except (OSError, AttributeError, yaml.YAMLError):
        seeds = None
    return tuple(seeds) if seeds else (run.seed,)


def training_commands(job: Job, statuses: Dict[Run, str]) -> List[List[str]]:
    """What the job's runs of these statuses need trained: the runs not started, from scratch (a stack of
    those seeds); each interrupted run with --resume. A stack resumes from any of its seeds' directories,
    with its own seeds and name (the flags before them are given again: a longer --max_timesteps goes on)."""
    fresh = [run for run in job.runs if statuses[run] in ("train", "restart")]
    commands = []
    if fresh:
        commands.append(list(job.train_cmd) if not job.stacked else
                        [*job.train_cmd[:-len(job.runs)], *(str(run.seed) for run in fresh)])
    resumed: set = set()
    for run in job.runs:
        if statuses[run] == "resume" and run.seed not in resumed:
            flags = job.train_cmd[:-len(job.runs) - 3] if job.stacked else job.train_cmd
            commands.append([*flags, "--resume", run.run_dir])
            resumed.update(stack_of(run) if job.stacked else (run.seed,))
    return commands


def evaluation_command(job: Job, runs: Sequence[Run]) -> List[str]:
    """eval_lspc.py for ``runs``: a stack's seeds in one batched pass."""
    return [*job.eval_cmd, *(token for run in runs for token in ("--path", run.run_dir))]


def commands(job: Job, statuses: Dict[Run, str]) -> List[List[str]]:
    """The subprocesses the job needs, in order: training, then the evaluation of every run not done."""
    pending = [run for run in job.runs if statuses[run] != "done"]
    return training_commands(job, statuses) + ([evaluation_command(job, pending)] if pending else [])


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------
def _ignore_requeue_signal() -> None:
    signal.signal(getattr(signal, f"SIG{submitit.JobEnvironment.USR_SIG}"), signal.SIG_IGN)


def call(cmd: List[str], env: Dict[str, str]) -> int:
    """Run a script to its end. It runs in its own session, and the job passes Ctrl-C and SIGTERM
    (a cancel) on to it once: the training scripts then save a checkpoint and stop, which a second
    signal, or subprocess.run's kill, would cut short. The signal Slurm sends before a time limit
    (submitit's USR2) is ignored there: it is the job's, and by default it would kill the script
    before its checkpoint; submitit answers it by requeueing the job, whose SIGTERM stops the script."""
    process = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_ignore_requeue_signal)
    previous = {signum: signal.signal(signum, lambda signum, frame: process.send_signal(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def requeued() -> bool:
    """In a Slurm job: whether Slurm has requeued it since it started (``scontrol requeue``, a
    preemption, or submitit's own requeue at a time limit), i.e. its restart count went up."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id is None:
        return False
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    restarts = re.search(r"\bRestarts=(\d+)", shown)
    return restarts is not None and int(restarts.group(1)) > int(os.environ.get("SLURM_RESTART_COUNT", "0"))


class RunJob(submitit.helpers.Checkpointable):
    """Train then evaluate a job's runs. Checkpointable: on a Slurm timeout or preemption submitit
    requeues the same call, which resumes the runs from their checkpoints. ``gpus``: the local GPUs
    (CUDA_VISIBLE_DEVICES) this job has to itself; None leaves the variable as the job found it."""

    def __init__(self, gpus: Optional[str] = None) -> None:
        self.gpus = gpus

    def __call__(self, job: Job) -> str:
        env = dict(os.environ, OMP_NUM_THREADS=str(job.threads), MKL_NUM_THREADS=str(job.threads))
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus
        statuses = {run: run_status(run) for run in job.runs}
        failed = [self.script(cmd, env) for cmd in training_commands(job, statuses)]
        # every run trained to its end is evaluated, also when another seed of its stack failed (diverged)
        trained = [run for run in job.runs if run_status(run) == "evaluate"]
        if trained:
            failed.append(self.script(evaluation_command(job, trained), env))
        failed = [message for message in failed if message]
        unfinished = [run for run in job.runs if run_status(run) != "done"]
        if failed or unfinished:
            problems = failed or [f"no eval/results.json newer than the checkpoint in {unfinished[0].run_dir}"]
            if job.stacked and unfinished:
                problems.append(f"unfinished: seed {', '.join(str(run.seed) for run in unfinished)}")
            raise RuntimeError("; ".join(problems))
        return "; ".join(dict.fromkeys(DID[status] for status in statuses.values() if status != "done"))

    @staticmethod
    def script(cmd: List[str], env: Dict[str, str]) -> str:
        """Run one script; what went wrong, or ''."""
        print("$ " + shlex.join(cmd), flush=True)
        code = call(cmd, env)
        if code != 0 and requeued():
            # Slurm stops a job it requeues with SIGTERM, and the script has saved its checkpoint. Leave
            # without a result (submitit records none for SystemExit): the sweep waits for the next start,
            # which resumes the run, instead of reporting a failure.
            print(f"requeued by Slurm: {os.path.basename(cmd[1])} stopped with status {code}", flush=True)
            raise SystemExit(code)
        return f"{os.path.basename(cmd[1])} exited with status {code}" if code != 0 else ""


# ---------------------------------------------------------------------------------------------
# Executors
# ---------------------------------------------------------------------------------------------
def make_executor(args: argparse.Namespace, folder: str) -> submitit.AutoExecutor:
    """submitit's local or Slurm executor; --jobs bounds a Slurm array's parallelism."""
    executor = submitit.AutoExecutor(folder, cluster=args.executor)
    if args.executor == "slurm":
        executor.update_parameters(
            name="lspc-sweep", timeout_min=args.slurm_time_min, gpus_per_node=args.slurm_gpus_per_job,
            cpus_per_task=args.slurm_cpus_per_job or args.threads_per_job, slurm_array_parallelism=args.jobs,
            **({"slurm_partition": args.slurm_partition} if args.slurm_partition else {}),
            **({"mem_gb": args.slurm_mem_gb} if args.slurm_mem_gb else {}))
    else:
        # submitit's local gpus_per_node would give every job GPUs 0..n-1: RunJob sets each job's own
        executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=0)
    return executor


def local_gpu_slots(gpus_per_job: int, visible: Optional[Sequence[str]] = None) -> List[str]:
    """Disjoint CUDA_VISIBLE_DEVICES values of ``gpus_per_job`` GPUs each, from the GPUs this process
    sees (its own CUDA_VISIBLE_DEVICES, else every GPU torch counts); none for CPU jobs."""
    if gpus_per_job <= 0:
        return []
    if visible is None:
        listed = os.environ.get("CUDA_VISIBLE_DEVICES")
        if listed is not None:
            visible = [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
        else:
            import torch

            visible = [str(i) for i in range(torch.cuda.device_count())]
    if len(visible) < gpus_per_job:
        raise LSPCError(f"--local_gpus_per_job {gpus_per_job} needs at least that many GPUs, but this machine shows "
                        f"{len(visible)}; use fewer, or --local_gpus_per_job 0 for CPU jobs")
    count = len(visible) // gpus_per_job
    return [",".join(visible[i * gpus_per_job:(i + 1) * gpus_per_job]) for i in range(count)]


def last_line(err: BaseException) -> str:
    """The gist of a failed job's error: the last line of its trace (the whole trace is in its log)."""
    text = str(err)
    if isinstance(err, submitit.core.utils.FailedJobError):  # trace between two lines of dashes
        text = text.split("-" * 22 + "\n")[1] if text.count("-" * 22 + "\n") >= 2 else text
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def execute(executor: submitit.AutoExecutor, planned: Sequence[Job], jobs: int, wait: bool,
            gpu_slots: Sequence[str] = ()) -> List[Tuple[Job, str]]:
    """Run every planned job with at most ``jobs`` at once; returns the failures (job, message). Local jobs
    each take one of ``gpu_slots`` (``local_gpu_slots``) while they run, when there are any."""
    pending = collections.deque(planned)
    free_gpus = collections.deque(gpu_slots)
    running: Dict[submitit.Job, Tuple[Job, float, Optional[str]]] = {}
    if executor.cluster == "slurm":  # one array; Slurm keeps at most `jobs` of it running
        with executor.batch():
            submitted = [executor.submit(RunJob(), job) for job in planned]
        running = {handle: (job, time.time(), None) for handle, job in zip(submitted, planned)}
        pending = collections.deque()
        array = submitted[0].job_id.split("_")[0]
        print(f"submitted Slurm array {array} ({len(planned)} jobs, at most {jobs} at once)")
        if not wait:
            print("not waiting (--no_wait): rerun the same command when they are done (finished runs are skipped), "
                  "or with --table_only")
            return []
    failures, finished = [], 0
    try:
        while pending or running:
            # submitit's local executor starts whatever it is given
            while pending and len(running) < jobs and (free_gpus or not gpu_slots):
                job = pending.popleft()
                gpus = free_gpus.popleft() if gpu_slots else None
                handle = executor.submit(RunJob(gpus), job)
                running[handle] = (job, time.time(), gpus)
                on_gpus = "" if gpus is None else f", CUDA_VISIBLE_DEVICES={gpus}"
                print(f"started  {job.label} (job {handle.job_id}{on_gpus}, log {handle.paths.stdout})", flush=True)
            time.sleep(POLL_S)
            for handle in [handle for handle in running if handle.done()]:
                job, start, gpus = running.pop(handle)
                if gpus is not None:
                    free_gpus.append(gpus)
                finished += 1
                progress = f"[{finished}/{len(planned)}] {time.time() - start:.0f} s"
                try:
                    print(f"finished {job.label} {progress} ({handle.result()})", flush=True)
                except Exception as err:  # submitit's FailedJobError, UncompletedJobError (killed, cancelled)
                    failures.append((job, f"{last_line(err)}; log: {handle.paths.stderr}"))
                    print(f"FAILED   {job.label} {progress}: {failures[-1][1]}", flush=True)
    except KeyboardInterrupt:
        if executor.cluster == "local":  # the training runs save a checkpoint and stop
            for handle in running:
                handle.cancel(check=False)
        raise
    return failures


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--executor", choices=("local", "slurm"), default="local",
                        help="run the jobs on this machine or as a Slurm job array (default: local)")
    parser.add_argument("--tasks", nargs="+", default=[], help="DSRL tasks (added to those of --suite)")
    parser.add_argument("--suite", nargs="+", default=[], help=f"every task of these suites: {', '.join(SUITES)}")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    parser.add_argument("--stack_seeds", action="store_true",
                        help="LSPC: one job per task (and threshold) trains all --seeds as one stacked model "
                             "(train_lspc_iql.py --seeds) and evaluates them in one batched pass; each seed keeps "
                             "the run directory of its own run. For GPU jobs (default: one job per seed)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        help=f"any of {', '.join(METHODS)}, or your own by its import path module.sub:Class")
    parser.add_argument("--logdir", required=True, help="the sweep directory: runs, submitit logs, table.md/.csv")
    parser.add_argument("--dataset_dir", help="use <dataset_dir>/<task>.hdf5 as every run's --dataset_path")
    parser.add_argument("--jobs", type=int, default=None,
                        help="jobs running at once (default: local, cores / threads_per_job; slurm, all)")
    parser.add_argument("--threads_per_job", type=int, default=None,
                        help="OMP_NUM_THREADS and MKL_NUM_THREADS of a job (default 1; slurm: --slurm_cpus_per_job)")
    parser.add_argument("--max_timesteps", type=int, help="every run's training steps (default: each method's own)")
    parser.add_argument("--eval_every", type=int,
                        help="steps between evaluations during training (default: each method's own)")
    parser.add_argument("--eval_episodes", type=int, help="episodes of the training evaluations and of eval_lspc.py")
    parser.add_argument("--extra", default="", help="more flags for every training command (one string)")
    parser.add_argument("--method_extra", action="append", default=[], metavar="METHOD=ARGS",
                        help="more flags for one method's training commands; repeatable")
    parser.add_argument("--eval_extra", default="", help="more flags for eval_lspc.py (e.g. --no_figures)")
    parser.add_argument("--local_gpus_per_job", type=int, default=0,
                        help="local executor: GPUs of its own for each job (CUDA_VISIBLE_DEVICES; default 0: CPU)")
    parser.add_argument("--slurm_partition", help="slurm: the partition (default: the cluster's)")
    parser.add_argument("--slurm_time_min", type=int, default=24 * 60,
                        help="Slurm time limit per job; an unfinished run is requeued and resumes (default 1440)")
    parser.add_argument("--slurm_gpus_per_job", type=int, default=0, help="slurm: GPUs per job (default: 0)")
    parser.add_argument("--slurm_cpus_per_job", type=int, default=None, help="default: --threads_per_job or 1")
    parser.add_argument("--slurm_mem_gb", type=int, default=None,
                        help="slurm: memory per job in GB (default: the partition's)")
    parser.add_argument("--no_wait", action="store_true", help="slurm: submit and exit")
    parser.add_argument("--dry_run", action="store_true", help="print what each run needs and the commands")
    parser.add_argument("--table_only", action="store_true", help="only write <logdir>/table.md and table.csv")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Every input error before anything runs (LSPCError); normalizes tasks, methods and flags."""
    unknown = [suite for suite in args.suite if suite not in SUITES]
    if unknown:
        raise LSPCError(f"unknown suite {unknown[0]!r}; known suites: {', '.join(SUITES)}")
    args.tasks = list(dict.fromkeys([*args.tasks, *(task for suite in args.suite for task in SUITES[suite])]))
    if args.table_only:
        return
    if not args.tasks:
        raise LSPCError("no task: give --tasks or --suite")
    for task in args.tasks:
        check_task(task)
    args.methods = list(dict.fromkeys(args.methods))
    for method in args.methods:
        if method not in METHODS and not is_import_path(method):
            raise LSPCError(f"unknown method {method!r}; known methods: {', '.join(METHODS)}, or your own method's "
                            "import path module.sub:Class")
        plugin_class(method)  # a plugin's import, checked in one line
    if any(m != LSPC for m in args.methods) and not os.path.isfile(BASELINE_SCRIPT):
        raise LSPCError(f"the baselines need {BASELINE_SCRIPT}, which is missing")
    if any(seed < 0 for seed in args.seeds):
        raise LSPCError(f"seeds must be >= 0, got {args.seeds}")
    args.seeds = list(dict.fromkeys(args.seeds))
    for name in ("threads_per_job", "max_timesteps", "eval_every", "eval_episodes", "jobs", "slurm_time_min",
                 "slurm_cpus_per_job", "slurm_mem_gb"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise LSPCError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.dataset_dir:
        missing = [task for task in args.tasks if not os.path.isfile(os.path.join(args.dataset_dir, f"{task}.hdf5"))]
        if missing:
            raise LSPCError(f"no dataset file {os.path.join(args.dataset_dir, missing[0] + '.hdf5')} "
                            f"(--dataset_dir needs <task>.hdf5 for {', '.join(missing)})")
    try:
        args.extra, args.eval_extra = shlex.split(args.extra), shlex.split(args.eval_extra)
        per_method: Dict[str, List[str]] = {}
        for item in args.method_extra:
            method, sep, flags = item.partition("=")
            if not sep or method not in [*METHODS, *args.methods]:
                raise LSPCError(f"--method_extra takes METHOD=ARGS with METHOD one of {', '.join(METHODS)} or "
                                f"an import path in --methods, got {item!r}")
            per_method.setdefault(method, []).extend(shlex.split(flags))
        args.method_extra = per_method
    except ValueError as err:
        raise LSPCError(f"cannot split the extra flags ({err})") from None
    if args.executor == "slurm" and not args.dry_run and not submitit.SlurmExecutor.affinity() > 0:
        raise LSPCError("--executor slurm needs a Slurm cluster (no srun on PATH)")
    if args.threads_per_job is None:  # a Slurm job's threads use the cores it asked for
        args.threads_per_job = args.slurm_cpus_per_job if args.executor == "slurm" and args.slurm_cpus_per_job else 1
    if args.jobs is None and args.executor == "local":  # (Slurm: the whole array at once, set in main)
        args.jobs = max(1, available_cores() // args.threads_per_job)
    args.gpu_slots = local_gpu_slots(args.local_gpus_per_job) if args.executor == "local" else []
    if args.gpu_slots and args.jobs > len(args.gpu_slots):
        print(f"note: {len(args.gpu_slots)} local GPU slot(s) of {args.local_gpus_per_job} GPU(s): at most "
              f"{len(args.gpu_slots)} jobs at once (not {args.jobs})")
        args.jobs = len(args.gpu_slots)


def write_table(logdir: str) -> bool:
    """make_table over the sweep directory; says why when it cannot."""
    out = os.path.join(logdir, "table")
    try:
        print(make_table.write_table([logdir], out))
    except LSPCError as err:
        print(f"error: no table: {err}", file=sys.stderr)
        return False
    print(f"wrote {out}.md and {out}.csv")
    return True


def run_all(args: argparse.Namespace, planned: Sequence[Job], folder: str, then: str
            ) -> Optional[List[Tuple[Job, str]]]:
    """Skip the finished runs, run the jobs of the others (submitit logs under ``folder``/submitit) and
    report; returns the failures, or None when nothing waited for them (--dry_run, which prints every
    run's status and each job's commands, or --no_wait). ``then`` says what follows a dry run. Also used
    by scripts/study.py, whose jobs come from several plans."""
    runs = [run for job in planned for run in job.runs]
    statuses = {run: run_status(run) for run in runs}
    todo = [job for job in planned if any(statuses[run] != "done" for run in job.runs)]
    done = [run for run in runs if statuses[run] == "done"]
    in_jobs = f" in {len(todo)} jobs" if any(job.stacked for job in planned) else ""
    args.jobs = args.jobs or max(len(todo), 1)
    if args.dry_run:
        for job in planned:
            for run in job.runs:
                print(f"# {run.label}: {statuses[run]} ({run.run_dir})")
            for cmd in commands(job, statuses):
                print(f"OMP_NUM_THREADS={job.threads} MKL_NUM_THREADS={job.threads} {shlex.join(cmd)}")
        print(f"dry run: {len(runs) - len(done)} of {len(runs)} runs to submit{in_jobs} ({args.executor}, at most "
              f"{args.jobs} at once); {then}")
        return None
    print(f"sweep: {len(runs)} runs, {len(done)} already done (skipped), {len(runs) - len(done)} to run{in_jobs} "
          f"({args.executor}, at most {min(args.jobs, max(len(todo), 1))} at once)")
    for run in done:
        print(f"skipped  {run.label} (trained and evaluated: {run.run_dir})")
    failures: List[Tuple[Job, str]] = []
    if todo:
        # job processes unpickle this module's functions, which import lspc from the repository
        # (and the current directory: a plugin's module beside the user, as scripts/train_baseline.py finds it)
        os.environ["PYTHONPATH"] = os.pathsep.join([ROOT, os.getcwd(), *filter(None, [os.environ.get("PYTHONPATH")])])
        executor = make_executor(args, os.path.join(os.path.abspath(folder), "submitit"))
        try:
            failures = execute(executor, todo, args.jobs, wait=not args.no_wait,
                               gpu_slots=getattr(args, "gpu_slots", ()))
        except KeyboardInterrupt:
            where = "keep running on the cluster" if args.executor == "slurm" else "were stopped"
            print(f"interrupted: the running jobs {where}; run the same command again to go on "
                  "(finished runs are skipped, interrupted ones resume)", file=sys.stderr)
            sys.exit(130)
        if args.no_wait:
            return None
    for job, message in failures:
        print(f"failed: {job.label}: {message}", file=sys.stderr)
    # a failed stack's seeds that finished count as run
    failed = [run for job, _ in failures for run in job.runs if run_status(run) != "done"]
    print(f"sweep: {len(done)} skipped, {len(runs) - len(done) - len(failed)} ran, {len(failed)} failed")
    return failures


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    try:
        check_args(args)
    except LSPCError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if args.table_only:
        sys.exit(0 if write_table(args.logdir) else 1)

    jobs = plan_jobs(args)
    try:
        check_stacks(jobs)
        check_trac_budgets(jobs)
    except LSPCError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    failures = run_all(args, jobs, args.logdir, f"then the table in {os.path.join(args.logdir, 'table.md')}")
    if failures is None:  # a dry run, or Slurm without waiting
        return
    table_ok = write_table(args.logdir)
    sys.exit(1 if failures or not table_ok else 0)


if __name__ == "__main__":
    main()
