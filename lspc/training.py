"""The one training loop every method uses: run directory, checkpoints, evaluation schedule, resume,
signals, faults and the exit contract.

A method supplies only what is its own (a ``Method``): how its data is loaded, how its batch
sampler and its agent are built, and the names of the policies training evaluates. Its agent
supplies ``train(batch) -> metrics`` (one update and nothing else), ``training_policies()`` (batched
policies for ``lspc.evaluation.Evaluator``) and a complete ``state_dict``. Everything here is shared:

- ``<run_dir>/config.yaml`` and ``metrics.jsonl`` (plus wandb), a progress bar;
- the metrics window: means between log points, NaN/inf detection on the device without per-step syncs;
- evaluation every ``eval_every`` steps and at the end; per policy a best checkpoint, feasibility first;
  ``eval_every`` 0 turns it off, and then no simulator is made (``lspc.envs.dataset_env``): the run
  trains where the task's simulator is not installed and is scored afterwards by ``eval_lspc.py``;
- ``checkpoint/model.pt`` at every evaluation and at least every ``checkpoint_every_minutes`` of wall
  time, atomic and complete (model, optimizers, RNG streams, the metrics window, best scores), so a
  resumed run, after a signal or a SIGKILL, continues bit for bit;
- one process per run directory (a lock that dies with its process); a directory without a
  checkpoint is not a run and is started afresh;
- exit status: 2 bad input, 1 divergence or a failed checkpoint write, 128 + n after signal n.
"""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import errno
import fcntl
import os
import shutil
import signal
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple, Union

import gymnasium as gym
import torch
from tqdm.auto import tqdm

from lspc import LSPCError
from lspc.checkpoint import (TEMP_PREFIX, atomic_write_bytes, capture_rng_state, derived_seed, finish_commit,
                             load_checkpoint, restore_rng_state, save_checkpoint, save_checkpoints_together)
from lspc.envs import dataset_env, make_env
from lspc.evaluation import BatchPolicy, Evaluator, better_than, episode_seeds, summarize
from lspc.run_logger import RunLogger, eval_entries, truncate_metrics

Metric = Union[torch.Tensor, float]
LATEST = "model.pt"
# the fields of a method's config that this module reads
LOOP_FIELDS = ("task", "seed", "cost_limit", "episode_len", "max_timesteps", "batch_size", "eval_every",
               "eval_episodes", "log_every", "checkpoint_every_minutes", "logdir", "group", "name", "project",
               "device", "deterministic", "wandb_mode", "resume")


class NonFiniteLoss(Exception):
    pass


class CheckpointWriteError(Exception):
    pass


class Interrupted(Exception):
    def __init__(self, signum: int, step: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum, self.step = signum, step


class Agent(Protocol):
    device: torch.device

    def train(self, batch: Dict[str, torch.Tensor]) -> Dict[str, Metric]: ...

    def training_policies(self) -> Dict[str, BatchPolicy]: ...

    def state_dict(self) -> Dict[str, Any]: ...

    def load_state_dict(self, state: Dict[str, Any]) -> None: ...


class Sampler(Protocol):
    generator: torch.Generator

    def sample(self, batch_size: int) -> Dict[str, torch.Tensor]: ...


class Method(abc.ABC):
    """A method's own part of a training run. ``cfg`` is its config dataclass; the loop reads the
    fields every method has (``LOOP_FIELDS``): task, seed, cost_limit, episode_len, the schedule
    (max_timesteps, batch_size, eval_every, eval_episodes, log_every, checkpoint_every_minutes),
    logdir, group, name, project, device, deterministic, wandb_mode and resume."""

    label: str  # the progress bar's title
    # policy key of ``Agent.training_policies`` -> (metrics prefix, best-checkpoint file)
    policies: Dict[str, Tuple[str, str]]

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @abc.abstractmethod
    def config_yaml(self) -> str:
        """``config.yaml``'s text: everything the eval script needs to rebuild the model."""

    @abc.abstractmethod
    def config_dict(self) -> Dict[str, Any]:
        """The config as plain values (checkpoints, wandb)."""

    @abc.abstractmethod
    def load_data(self, env: gym.Env) -> Any:
        """The training data, checked; called before the random streams are seeded."""

    @abc.abstractmethod
    def make_sampler(self, data: Any, device: torch.device) -> Sampler:
        """The training batches, drawn with a generator seeded by cfg.seed; called after seeding."""

    @abc.abstractmethod
    def make_agent(self, env: gym.Env, device: torch.device, data: Any = None) -> Agent:
        """The agent sized for ``env``; without data when a checkpoint is about to be loaded into it."""

    def seed_methods(self) -> List["Method"]:
        """One method per seed this process trains: itself, or with ``cfg.seeds`` (a method that can
        stack seeds) one per seed, each with the config of that seed's own run."""
        return [self]

    def stack(self, agents: List[Agent], noise_generators: List[torch.Generator]) -> "StackedAgent":
        """Several seeds' agents as one stacked model, each drawing its training noise from its generator
        (with ``cfg.seeds`` only: ``make_sampler`` then draws a batch per seed)."""
        raise NotImplementedError(f"{self.label} does not train several seeds as one model")


class StackedAgent(Protocol):
    """Several seeds trained as one model (``--seeds``): ``train`` takes batches of [seeds, batch, ...]
    and returns metrics of shape [seeds]; ``members[k]`` is seed k's own agent (its policies), and
    ``state_dicts()[k]`` its state in the single-seed layout, so each seed's checkpoints are ordinary."""
    device: torch.device
    members: List[Agent]
    noise_generators: List[torch.Generator]

    def train(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]: ...

    def state_dicts(self) -> List[Dict[str, Any]]: ...

    def load_state_dicts(self, states: List[Dict[str, Any]]) -> None: ...


class MetricsWindow:
    """Sums the step metrics between log points and remembers the first step each went non-finite,
    per seed (a stacked run's metrics have a leading seed dimension; a single run is one seed).
    Tensors stay on the device (one stack per step, no sync); plain floats are summed on the CPU.
    The names are fixed by the first step after a reset."""

    def __init__(self, device: torch.device, seeds: int = 1) -> None:
        self.device, self.seeds = device, seeds
        self.names: Tuple[str, ...] = ()
        self.reset()

    def reset(self) -> None:
        self.sums: Optional[torch.Tensor] = None  # [metrics, seeds]
        self.first_bad: Optional[torch.Tensor] = None
        self.count = 0

    def add(self, metrics: Dict[str, Metric], step: int) -> None:
        if self.sums is None:
            self.names = tuple(metrics)
        elif tuple(metrics) != self.names:
            raise RuntimeError(f"the step's metrics changed from {list(self.names)} to {list(metrics)}")
        first = next(iter(metrics.values()), None)
        if isinstance(first, torch.Tensor):
            values = torch.stack([metrics[name] for name in self.names]).double()
        else:
            values = torch.tensor([float(metrics[name]) for name in self.names], dtype=torch.float64)
        values = values.view(len(self.names), self.seeds)
        if self.sums is None:
            self.sums = torch.zeros_like(values)
            self.first_bad = torch.full(values.shape, -1, dtype=torch.long, device=values.device)
        elif self.sums.device != values.device:  # a window loaded from a checkpoint (on the CPU)
            self.sums, self.first_bad = self.sums.to(values.device), self.first_bad.to(values.device)
        self.sums += values
        newly_bad = ~torch.isfinite(values) & (self.first_bad < 0)
        self.first_bad = torch.where(newly_bad, torch.full_like(self.first_bad, step), self.first_bad)
        self.count += 1

    def nonfinite(self) -> List[Optional[str]]:
        """Per seed, the metric that went NaN or infinite (the earliest step, then losses before other
        statistics, then update order: the root cause), or None."""
        if self.first_bad is None:
            return [None] * self.seeds
        first_bad = self.first_bad.tolist()
        messages = []
        for seed in range(self.seeds):
            bad = [(row[seed], not self.names[i].endswith("loss"), i) for i, row in enumerate(first_bad) if row[seed] >= 0]
            step, _, i = min(bad) if bad else (None, None, None)
            messages.append(None if step is None else f"{self.names[i]} became NaN or infinite at step {step}")
        return messages

    def check_finite(self) -> None:
        message = next((message for message in self.nonfinite() if message), None)
        if message:
            raise NonFiniteLoss(message)

    def seed_means(self) -> List[Dict[str, float]]:
        """Each seed's means since the last call, unchecked (``nonfinite`` says which seeds diverged)."""
        if self.sums is None:
            return [{} for _ in range(self.seeds)]
        means = (self.sums / max(self.count, 1)).tolist()
        names = self.names
        self.reset()
        return [{f"train/{name}": row[seed] for name, row in zip(names, means)} for seed in range(self.seeds)]

    def means(self) -> Dict[str, float]:
        """A single run's means since the last call; NonFiniteLoss if a metric went non-finite."""
        self.check_finite()
        return self.seed_means()[0]

    def state_dict(self, seed: int = 0) -> Dict[str, Any]:
        """One seed's partial window: a run resumed between log points logs the same means."""
        column = (lambda t: None if t is None else t[:, seed].clone())
        return {"names": list(self.names), "sums": column(self.sums), "first_bad": column(self.first_bad),
                "count": self.count}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.load_state_dicts([state])

    def load_state_dicts(self, states: List[Dict[str, Any]]) -> None:
        """Every seed's window (saved at the same step, so with the same names and count)."""
        self.names, self.count = tuple(states[0]["names"]), states[0]["count"]
        stacked = (lambda key: None if states[0][key] is None else torch.stack([s[key] for s in states], dim=1))
        self.sums, self.first_bad = stacked("sums"), stacked("first_bad")


class PhaseClock:
    """Wall time spent training, evaluating and writing periodic checkpoints. It waits for the
    device only when the phase changes (evaluation and checkpoint points), never per step."""

    PHASES = ("train", "eval", "checkpoint")

    def __init__(self, device: torch.device, step: int) -> None:
        self.device = device
        self.total = dict.fromkeys(self.PHASES, 0.0)
        self.since_log = dict.fromkeys(self.PHASES, 0.0)
        self.phase, self.started, self.logged_step = "train", time.perf_counter(), step

    def switch(self, phase: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        for seconds in (self.total, self.since_log):
            seconds[self.phase] += now - self.started
        self.phase, self.started = phase, now

    @contextlib.contextmanager
    def timing(self, phase: str):
        self.switch(phase)
        try:
            yield
        finally:
            self.switch("train")

    def entries(self, step: int) -> Dict[str, float]:
        """Training steps per second and evaluation and checkpoint seconds since the last call; their
        shares of this process's wall time so far."""
        self.switch(self.phase)
        wall = max(sum(self.total.values()), 1e-9)
        entries = {"time/train_steps_per_s": (step - self.logged_step) / max(self.since_log["train"], 1e-9),
                   "time/eval_s": self.since_log["eval"], "time/eval_share": self.total["eval"] / wall,
                   "time/checkpoint_s": self.since_log["checkpoint"],
                   "time/checkpoint_share": self.total["checkpoint"] / wall}
        self.since_log = dict.fromkeys(self.PHASES, 0.0)
        self.logged_step = step
        return entries


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class RunLock:
    """One training process per run directory. A POSIX record lock on ``<run_dir>/.lock``: the
    kernel drops it when its process ends however it ends (SIGKILL included), and forked children
    (async evaluation envs) do not hold it."""

    def __init__(self, run_dir: str) -> None:
        self.path = os.path.join(run_dir, ".lock")
        self._file = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.lockf(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise LSPCError(f"{run_dir} is being trained by process {holder}; wait for it to end or stop it "
                            f"(kill {holder})") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"{os.getpid()}\n")
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()  # closing releases the lock


def run_dir_of(cfg: Any) -> str:
    return cfg.resume or os.path.join(cfg.logdir, cfg.group, cfg.name)


def lock_run_dir(cfg: Any) -> Tuple[str, RunLock]:
    """The run directory, created, writable and locked for this process."""
    run_dir = run_dir_of(cfg)
    checkpoint_dir = os.path.join(run_dir, "checkpoint")
    try:
        os.makedirs(checkpoint_dir, exist_ok=True)
        probe = os.path.join(checkpoint_dir, ".write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as err:
        raise LSPCError(f"cannot write to the run directory {run_dir} ({err.strerror}); choose another --logdir") from None
    return run_dir, RunLock(run_dir)


def prepare_run_dir(cfg: Any, run_dir: str, lock: RunLock) -> bool:
    """Whether to resume the locked ``run_dir``; partial writes of a killed process are removed.
    A directory without a checkpoint holds no run (one stopped before its first checkpoint): the
    original command and ``--resume`` both start it afresh, and say so."""
    checkpoint_dir = os.path.join(run_dir, "checkpoint")
    for directory in (run_dir, checkpoint_dir):  # partial writes of a killed process (atomic_write_bytes' temp files)
        for name in os.listdir(directory):
            if name.startswith(TEMP_PREFIX):
                os.remove(os.path.join(directory, name))
    has_checkpoint = os.path.isfile(os.path.join(checkpoint_dir, LATEST))
    started = os.path.exists(os.path.join(run_dir, "config.yaml"))
    if cfg.resume is None and started and has_checkpoint:
        lock.close()
        raise LSPCError(f"run directory {run_dir} already holds a run; continue it with --resume {run_dir} "
                        "or choose another --name")
    if started and not has_checkpoint:
        print(f"note: {run_dir} has no checkpoint (its run stopped before writing one): starting it afresh "
              "from step 0", flush=True)
    return cfg.resume is not None and has_checkpoint


def seed_all(seed: int) -> None:
    """osrl's seed_all (Python, numpy, torch and CUDA generators; cuDNN deterministic), which every
    method's data and initialization draw from."""
    with contextlib.redirect_stdout(open(os.devnull, "w")):  # osrl prints a notice about CDT's package
        from osrl.common.exp_util import seed_all as osrl_seed_all
    osrl_seed_all(seed)


def default_generator_copy(device: torch.device) -> torch.Generator:
    """A generator in the state of ``device``'s default one: a stacked seed's noise stream, which goes
    on as that seed's own run would draw from the default generator."""
    generator = torch.Generator(device=device)
    generator.set_state(torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state())
    return generator


def restart_streams(checkpoint: Dict[str, Any], device: torch.device, sampler: torch.Generator, lost: List[str],
                    noise: Optional[torch.Generator] = None) -> None:
    """A checkpoint written on another device type: its GPU and sampler generator states fit only there.
    The model, optimizers and CPU streams continue; the lost streams restart from seeds derived from
    the run's seed and step (the method's own generators do the same in their ``load_state_dict``)."""
    step, seed = checkpoint["step"], checkpoint["config"]["seed"]
    if "the batch sampler's" in lost:
        sampler.manual_seed(derived_seed(seed, step))
    if device.type == "cuda" and noise is not None:  # a stacked seed's stand-in for the default generator
        noise.manual_seed(derived_seed(seed + 1, step))
    elif device.type == "cuda":
        torch.cuda.manual_seed(derived_seed(seed + 1, step))
    written_on = checkpoint["rng"].get("device_type", "another device")
    print(f"note: resuming on {device.type} a checkpoint written on {written_on} at step {step}: the model, "
          f"optimizers and CPU random streams continue, but the random streams of {' and '.join(lost)} (and "
          "any the method keeps on the device) restart from seeds derived from the run's seed and step, so "
          "this run will not match an uninterrupted one bit for bit", flush=True)


def use_deterministic_algorithms() -> None:
    """Bit-for-bit repeatable CUDA runs: cuBLAS with a fixed workspace (read when cuBLAS starts, so set
    before the first GPU matmul; a value the user set is kept) and only deterministic kernels (an op
    without one raises instead of varying). cuDNN is already deterministic (``seed_all``)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)


def check_loop_fields(method: Method) -> None:
    """One line naming the ``LOOP_FIELDS`` that ``method``'s config lacks, before anything is written."""
    missing = [name for name in LOOP_FIELDS if not hasattr(method.cfg, name)]
    if missing:
        raise LSPCError(f"{type(method).__name__}'s config ({type(method.cfg).__name__}) lacks the fields the "
                        f"training loop reads: {', '.join(missing)}; keep the config the loop passes as self.cfg "
                        "(lspc.plugin.RunConfig has them all)")


class SeedRun:
    """One seed's run inside the loop: its method (with that seed's config), run directory, logger,
    best scores, and why it stopped if its metrics went non-finite."""

    def __init__(self, method: Method, run_dir: str, resume: bool) -> None:
        self.method, self.cfg, self.run_dir = method, method.cfg, run_dir
        self.checkpoint_dir = os.path.join(run_dir, "checkpoint")
        self.checkpoint = load_checkpoint(os.path.join(self.checkpoint_dir, LATEST)) if resume else None
        self.best: Dict[str, Optional[Dict[str, float]]] = dict.fromkeys(method.policies)
        self.wandb_id: Optional[str] = None
        self.logger: Optional[RunLogger] = None
        self.diverged: Optional[str] = None


JOURNAL = "stack-commit.json"  # save_checkpoints_together's journal, in the first seed's checkpoint directory


def train(method: Method) -> str:
    """Train ``method`` as its config says; returns the run directory (with ``cfg.seeds``, the first
    seed's: the stacked seeds' directories are its siblings)."""
    check_loop_fields(method)
    cfg = method.cfg
    device = torch.device(cfg.device)
    stacked = bool(getattr(cfg, "seeds", None))
    methods = method.seed_methods()
    created = [_missing_dirs(run_dir_of(m.cfg)) for m in methods]  # removed again if the run fails before it starts
    journal = os.path.join(run_dir_of(methods[0].cfg), "checkpoint", JOURNAL)
    resources: List[Any] = []
    locks: List[RunLock] = []
    was_deterministic = torch.are_deterministic_algorithms_enabled()  # restored after: a process may train twice
    try:
        for m in methods:
            locks.append(lock_run_dir(m.cfg)[1])
        finish_commit(journal)  # a stacked save cut short after its commit point: completed before any clean-up
        runs = [SeedRun(m, run_dir_of(m.cfg), prepare_run_dir(m.cfg, run_dir_of(m.cfg), lock))
                for m, lock in zip(methods, locks)]
        stack_record = {"seeds": [run.cfg.seed for run in runs], "diverged": {}}
        if stacked:
            runs, stack_record = _resumable(runs, stack_record)
            method = type(method)(dataclasses.replace(cfg, seeds=[run.cfg.seed for run in runs]))
        if cfg.deterministic:
            use_deterministic_algorithms()
        env = make_env(cfg.task) if cfg.eval_every else dataset_env(cfg.task)
        resources.append(env)
        data = method.load_data(env)
        seed_all(cfg.seed)
        evaluator = None
        if cfg.eval_every:  # made before any RNG restore; one batch of envs plays every seed's episodes
            evaluator = Evaluator(cfg.task, cfg.episode_len, cfg.eval_episodes * len(runs))
            resources.append(evaluator)
        sampler = method.make_sampler(data, device)
        if stacked:
            agents, noise = [], []
            for run in runs:  # each seed initialised as its own run initialises it
                seed_all(run.cfg.seed)
                agents.append(run.method.make_agent(env, device, data))
                noise.append(default_generator_copy(device))
            agent = method.stack(agents, noise)
        else:
            agent = method.make_agent(env, device, data)
        window = MetricsWindow(device, seeds=len(runs))
        start_step = 0
        if runs[0].checkpoint is not None:
            checkpoints = [run.checkpoint for run in runs]
            if stacked:
                agent.load_state_dicts([checkpoint["model"] for checkpoint in checkpoints])
            else:
                agent.load_state_dict(checkpoints[0]["model"])
            for run, generator, noise_generator in zip(runs, _sampler_generators(sampler, stacked),
                                                       _noise_generators(agent, stacked)):
                lost = restore_rng_state(run.checkpoint["rng"], device, generator, noise_generator)
                if lost:  # a resume on another device type: its generators cannot take the other's states
                    restart_streams(run.checkpoint, device, generator, lost, noise_generator)
                run.best, run.wandb_id = run.checkpoint["best"], run.checkpoint["wandb_id"]
            if "window" in checkpoints[0]:  # checkpoints before periodic checkpoints were taken at log points
                window.load_state_dicts([checkpoint["window"] for checkpoint in checkpoints])
            start_step = checkpoints[0]["step"]
            if start_step >= cfg.max_timesteps:
                raise LSPCError(f"the run is already at step {start_step}; raise --max_timesteps to train further")
        for run in runs:
            truncate_metrics(run.run_dir, start_step)  # rows after the checkpoint are logged again
            atomic_write_bytes(os.path.join(run.run_dir, "config.yaml"),
                               lambda f: f.write(run.method.config_yaml().encode()))
        created = []  # the run has started: its directory stays whatever happens next
        for run in runs:
            run.logger = RunLogger(run.run_dir, run.method.config_dict(), project=cfg.project, group=run.cfg.group,
                                   name=run.cfg.name, wandb_mode=cfg.wandb_mode, wandb_id=run.wandb_id,
                                   own_process=stacked)
            resources.append(run.logger)
            print(f"run_dir: {run.run_dir}", flush=True)
        if evaluator is None:
            paths = " ".join(f"--path {run.run_dir}" for run in runs)
            print(f"note: in-training evaluation is off (eval_every 0): no simulator is made and no best checkpoints "
                  f"are kept; score the run{'s' if len(runs) > 1 else ''} with `python eval_lspc.py {paths}` "
                  f"where {cfg.task}'s simulator is installed", flush=True)
        _loop(method, agent, sampler, evaluator, env, runs, window, start_step, journal if stacked else None,
              stack_record, resources)
    except BaseException:
        for lock in locks:
            lock.close()
        for directories in created:
            _remove_created(directories)
        raise
    finally:
        for resource in reversed(resources):
            resource.close()
        for lock in locks:
            lock.close()
        torch.use_deterministic_algorithms(was_deterministic)
    return run_dir_of(methods[0].cfg)


def _resumable(runs: List[SeedRun], record: Dict[str, Any]) -> Tuple[List[SeedRun], Dict[str, Any]]:
    """The seeds of a stacked run that go on: all of them, but those whose metrics went non-finite
    before (their directories keep their last good checkpoint). The others resume at one step."""
    saved = [run.checkpoint for run in runs if run.checkpoint is not None]
    if saved:
        latest = max(saved, key=lambda checkpoint: checkpoint["step"])
        record = latest.get("stack", record)
    diverged = {int(seed) for seed in record["diverged"]}
    live = [run for run in runs if run.cfg.seed not in diverged]
    for run in runs:
        if run.cfg.seed in diverged:
            print(f"note: seed {run.cfg.seed} diverged before ({record['diverged'][run.cfg.seed]}): "
                  f"{run.run_dir} keeps its last good checkpoint and the other seeds go on without it", flush=True)
    if not live:
        raise LSPCError("every seed of this stacked run diverged; there is nothing to resume")
    steps = {run.cfg.seed: None if run.checkpoint is None else run.checkpoint["step"] for run in live}
    if len(set(steps.values())) > 1:
        raise LSPCError(f"the seeds' checkpoints are at different steps ({steps}); these directories were not "
                        "written by one stacked run: resume each seed on its own")
    return live, record


def _sampler_generators(sampler: Sampler, stacked: bool) -> List[torch.Generator]:
    return sampler.generators if stacked else [sampler.generator]


def _noise_generators(agent: Any, stacked: bool) -> List[Optional[torch.Generator]]:
    return agent.noise_generators if stacked else [None]


def _missing_dirs(path: str) -> List[str]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    path = os.path.abspath(path)
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def _remove_created(directories: List[str]) -> None:
    """Remove the run directory made by a run that failed before its config was written (an early
    error, such as a batch larger than the data or a failed download, leaves no empty run behind),
    then its parents made with it while they are empty: another run may have been started in them since."""
    if directories:
        shutil.rmtree(directories[0], ignore_errors=True)
    for directory in directories[1:]:
        try:
            os.rmdir(directory)
        except OSError:
            break


def _loop(method: Method, agent: Any, sampler: Sampler, evaluator: Optional[Evaluator], env: gym.Env,
          runs: List[SeedRun], window: MetricsWindow, start_step: int, journal: Optional[str], stack_record: Dict[str, Any],
          resources: List[Any]) -> None:
    """The steps of one run, or of a stacked run's seeds (``journal`` set): each seed logs, evaluates
    and checkpoints into its own directory as its own run would."""
    cfg = method.cfg
    stacked = journal is not None
    generators, noise_generators = _sampler_generators(sampler, stacked), _noise_generators(agent, stacked)
    seed_agents = agent.members if stacked else [agent]
    clock = PhaseClock(agent.device, start_step)
    saved = {"step": start_step, "time": time.monotonic()}

    def check_finite() -> None:
        """A seed whose metrics went non-finite stops there with its own error line, its directory
        keeping its last good checkpoint; the other seeds train on. NonFiniteLoss when none is left."""
        for run, message in zip(runs, window.nonfinite()):
            if message and not run.diverged:
                run.diverged = message
                stack_record["diverged"][run.cfg.seed] = message
                if stacked:
                    print(f"error: seed {run.cfg.seed} diverged: {message}; {run.run_dir} keeps its last good "
                          "checkpoint, the other seeds train on", file=sys.stderr, flush=True)
        if all(run.diverged for run in runs):
            raise NonFiniteLoss(runs[0].diverged if not stacked else "every seed diverged (see the lines above)")

    def save(step: int, files: List[List[str]]) -> None:
        """``files[k]``: seed k's checkpoint files of this step (the latest one last)."""
        check_finite()  # never save a diverged model
        states = agent.state_dicts() if stacked else [agent.state_dict()]
        writes = []
        for k, run in enumerate(runs):
            if run.diverged:
                continue
            payload = {"step": step, "model": states[k],
                       "rng": capture_rng_state(agent.device, generators[k], noise_generators[k]),
                       "window": window.state_dict(k), "best": run.best, "config": run.method.config_dict(),
                       "wandb_id": run.logger.wandb_id}
            if stacked:
                payload["stack"] = stack_record
            writes += [(os.path.join(run.checkpoint_dir, name), payload) for name in files[k]]
        path = ""
        try:
            if stacked:  # all seeds' files of this step, or none of them
                save_checkpoints_together(writes, journal)
            else:
                for path, payload in writes:
                    save_checkpoint(path, payload)
        except OSError as err:
            path = err.filename if stacked and err.filename else path
            kept = f"checkpoint/{LATEST} of step {saved['step']} is kept" if saved["step"] else "no checkpoint was written yet"
            raise CheckpointWriteError(f"could not write {path} at step {step} ({err.strerror or err}); "
                                       f"training stopped, {kept}") from None
        saved.update(step=step, time=time.monotonic())

    def resource_entries(step: int) -> Dict[str, float]:
        """Throughput and time shares since the last call, and the GPU's peak memory."""
        entries = clock.entries(step)
        if agent.device.type == "cuda":  # the allocator's own count: no wait for the device
            entries["gpu/peak_memory_mb"] = torch.cuda.max_memory_allocated(agent.device) / 2**20
        return entries

    def evaluate(step: int) -> None:
        check_finite()  # never evaluate or save a diverged model
        live = [k for k, run in enumerate(runs) if not run.diverged]
        with clock.timing("eval"):
            scores: Dict[int, Dict[str, Dict[str, float]]] = {k: {} for k in live}
            for key in method.policies:  # every live seed's episodes in one batch of envs
                policies = [seed_agents[k].training_policies()[key] for k in live]
                episodes = evaluator.run_groups(policies, [episode_seeds(runs[k].cfg.seed, cfg.eval_episodes)
                                                           for k in live], [runs[k].cfg.seed for k in live],
                                                agent.device)
                for k, seed_episodes in zip(live, episodes):
                    scores[k][key] = summarize(env, seed_episodes, cfg.cost_limit)
            timing = resource_entries(step)
            files: List[List[str]] = [[] for _ in runs]
            for k in live:
                run, entries = runs[k], {}
                for key, (prefix, _) in method.policies.items():
                    entries.update(eval_entries(prefix, scores[k][key]))  # the authors' release's names
                run.logger.log(step, {**entries, **timing})
                improved = [key for key in method.policies if better_than(scores[k][key], run.best[key])]
                for key in improved:
                    run.best[key] = {"step": step, **scores[k][key]}
                # the latest checkpoint last: a model.pt at step N means every file of step N is written
                files[k] = [method.policies[key][1] for key in improved] + [LATEST]
            bar.set_postfix({f"{key or 'eval'}_{m}": round(scores[live[0]][key][f"normalized_{m}"], 3)
                             for key in method.policies for m in ("reward", "cost")})
            save(step, files)

    bar = tqdm(range(start_step, cfg.max_timesteps), initial=start_step, total=cfg.max_timesteps,
               desc=method.label, mininterval=2.0, dynamic_ncols=True)
    resources.append(bar)
    checkpoint_seconds = 60.0 * cfg.checkpoint_every_minutes
    with StopRequest() as stop:
        for step in range(start_step + 1, cfg.max_timesteps + 1):
            window.add(agent.train(sampler.sample(cfg.batch_size)), step)
            bar.update(1)
            if step % cfg.log_every == 0:
                check_finite()
                # with no evaluations, the log points carry the throughput
                timing = resource_entries(step) if evaluator is None else {}
                for run, means in zip(runs, window.seed_means()):
                    if not run.diverged:
                        run.logger.log(step, {**means, **timing})
            # read the flag once: a signal landing between two reads would stop without a checkpoint
            signum = stop.signum
            if evaluator is not None and (step % cfg.eval_every == 0 or step == cfg.max_timesteps):
                evaluate(step)
            elif (signum is not None or step == cfg.max_timesteps
                  or time.monotonic() - saved["time"] >= checkpoint_seconds):
                with clock.timing("checkpoint"):
                    save(step, [[LATEST]] * len(runs))
            if signum is not None:
                raise Interrupted(signum, step)
    diverged = [str(run.cfg.seed) for run in runs if run.diverged]
    if diverged:
        raise NonFiniteLoss(f"seed {', '.join(diverged)} diverged (the lines above); the other seeds finished")


def run_training_cli(load_config_fn: Callable[[Optional[List[str]]], Any], method_cls: Callable[[Any], Method],
                     argv: Optional[List[str]] = None) -> None:
    """The exit contract every training script shares: bad input 2, divergence or a failed checkpoint
    write 1, a signal 128 + its number (after the checkpoint is written), with one line saying what
    to do next. ``--print_config`` prints the resolved config as YAML and exits 0 without training."""
    argv = list(sys.argv[1:] if argv is None else argv)
    print_config = "--print_config" in argv
    argv = [token for token in argv if token != "--print_config"]
    try:
        cfg = load_config_fn(argv)
        if print_config:
            print(method_cls(cfg).config_yaml(), end="")
            return
        run_dir = train(method_cls(cfg))
    except LSPCError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLoss as err:
        print(f"error: training diverged: {err}; the last good checkpoint is kept", file=sys.stderr)
        sys.exit(1)
    except CheckpointWriteError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except Interrupted as err:
        print(f"interrupted by {err} at step {err.step}; checkpoint saved; continue with --resume {run_dir_of(cfg)}",
              file=sys.stderr)
        sys.exit(128 + err.signum)
    print(f"done: {run_dir}")
