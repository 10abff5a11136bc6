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
from lspc.checkpoint import (TEMP_PREFIX, atomic_write_bytes, capture_rng_state, derived_seed, load_checkpoint,
                             restore_rng_state, save_checkpoint)
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


class MetricsWindow:
    """Sums the step metrics between log points and remembers the first step each went non-finite.
    Tensors stay on the device (one stack per step, no sync); plain floats are summed on the CPU.
    The names are fixed by the first step after a reset."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.names: Tuple[str, ...] = ()
        self.reset()

    def reset(self) -> None:
        self.sums: Optional[torch.Tensor] = None
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
        if self.sums is None:
            self.sums = torch.zeros_like(values)
            self.first_bad = torch.full(values.shape, -1, dtype=torch.long, device=values.device)
        elif self.sums.device != values.device:  # a window loaded from a checkpoint (on the CPU)
            self.sums, self.first_bad = self.sums.to(values.device), self.first_bad.to(values.device)
        self.sums += values
        newly_bad = ~torch.isfinite(values) & (self.first_bad < 0)
        self.first_bad = torch.where(newly_bad, torch.full_like(self.first_bad, step), self.first_bad)
        self.count += 1

    def check_finite(self) -> None:
        """The earliest step, then losses before other statistics, then update order: the root cause."""
        if self.first_bad is None:
            return
        bad = [(step, not self.names[i].endswith("loss"), i) for i, step in enumerate(self.first_bad.tolist())
               if step >= 0]
        if bad:
            step, _, i = min(bad)
            raise NonFiniteLoss(f"{self.names[i]} became NaN or infinite at step {step}")

    def means(self) -> Dict[str, float]:
        self.check_finite()
        if self.sums is None:
            return {}
        means = (self.sums / max(self.count, 1)).tolist()
        names = self.names
        self.reset()
        return {f"train/{name}": value for name, value in zip(names, means)}

    def state_dict(self) -> Dict[str, Any]:
        """The partial window: a run resumed between log points logs the same means."""
        return {"names": list(self.names), "sums": self.sums, "first_bad": self.first_bad, "count": self.count}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.names, self.count = tuple(state["names"]), state["count"]
        self.sums, self.first_bad = state["sums"], state["first_bad"]


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


def open_run_dir(cfg: Any) -> Tuple[str, RunLock, bool]:
    """The run directory, created, writable and locked for this process, and whether to resume.
    A directory without a checkpoint holds no run (one stopped before its first checkpoint): the
    original command and ``--resume`` both start it afresh, and say so."""
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
    lock = RunLock(run_dir)
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
    return run_dir, lock, cfg.resume is not None and has_checkpoint


def seed_all(seed: int) -> None:
    """osrl's seed_all (Python, numpy, torch and CUDA generators; cuDNN deterministic), which every
    method's data and initialization draw from."""
    with contextlib.redirect_stdout(open(os.devnull, "w")):  # osrl prints a notice about CDT's package
        from osrl.common.exp_util import seed_all as osrl_seed_all
    osrl_seed_all(seed)


def restart_streams(checkpoint: Dict[str, Any], device: torch.device, sampler: Sampler, lost: List[str]) -> None:
    """A checkpoint written on another device type: its GPU and sampler generator states fit only there.
    The model, optimizers and CPU streams continue; the lost streams restart from seeds derived from
    the run's seed and step (the method's own generators do the same in their ``load_state_dict``)."""
    step, seed = checkpoint["step"], checkpoint["config"]["seed"]
    if "the batch sampler's" in lost:
        sampler.generator.manual_seed(derived_seed(seed, step))
    if device.type == "cuda":
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


def train(method: Method) -> str:
    """Train ``method`` as its config says; returns the run directory."""
    check_loop_fields(method)
    cfg = method.cfg
    device = torch.device(cfg.device)
    created = _missing_dirs(run_dir_of(cfg))  # removed again if the run fails before it starts
    run_dir, lock, resume = open_run_dir(cfg)
    checkpoint_dir = os.path.join(run_dir, "checkpoint")
    resources: List[Any] = [lock]
    was_deterministic = torch.are_deterministic_algorithms_enabled()  # restored after: a process may train twice
    try:
        if cfg.deterministic:
            use_deterministic_algorithms()
        env = make_env(cfg.task) if cfg.eval_every else dataset_env(cfg.task)
        resources.append(env)
        data = method.load_data(env)
        seed_all(cfg.seed)
        evaluator = None
        if cfg.eval_every:
            evaluator = Evaluator(cfg.task, cfg.episode_len, cfg.eval_episodes)  # made before any RNG restore
            resources.append(evaluator)
        sampler = method.make_sampler(data, device)
        agent = method.make_agent(env, device, data)
        window = MetricsWindow(device)
        start_step, wandb_id = 0, None
        best: Dict[str, Optional[Dict[str, float]]] = dict.fromkeys(method.policies)
        if resume:
            checkpoint = load_checkpoint(os.path.join(checkpoint_dir, LATEST))
            agent.load_state_dict(checkpoint["model"])
            lost = restore_rng_state(checkpoint["rng"], device, sampler.generator)
            if lost:  # a resume on another device type: its generators cannot take the other's states
                restart_streams(checkpoint, device, sampler, lost)
            if "window" in checkpoint:  # checkpoints before periodic checkpoints were taken at log points
                window.load_state_dict(checkpoint["window"])
            start_step, best, wandb_id = checkpoint["step"], checkpoint["best"], checkpoint["wandb_id"]
            if start_step >= cfg.max_timesteps:
                raise LSPCError(f"the run is already at step {start_step}; raise --max_timesteps to train further")
        truncate_metrics(run_dir, start_step)  # rows after the checkpoint are logged again
        atomic_write_bytes(os.path.join(run_dir, "config.yaml"), lambda f: f.write(method.config_yaml().encode()))
        created = []  # the run has started: its directory stays whatever happens next
        logger = RunLogger(run_dir, method.config_dict(), project=cfg.project, group=cfg.group, name=cfg.name,
                           wandb_mode=cfg.wandb_mode, wandb_id=wandb_id)
        resources.append(logger)
        print(f"run_dir: {run_dir}", flush=True)
        if evaluator is None:
            print(f"note: in-training evaluation is off (eval_every 0): no simulator is made and no best checkpoints "
                  f"are kept; score the run with `python eval_lspc.py --path {run_dir}` where {cfg.task}'s "
                  "simulator is installed", flush=True)
        _loop(method, agent, sampler, evaluator, env, logger, window, best, start_step, checkpoint_dir, resources)
    except BaseException:
        lock.close()
        _remove_created(created)
        raise
    finally:
        for resource in reversed(resources):
            resource.close()
        torch.use_deterministic_algorithms(was_deterministic)
    return run_dir


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


def _loop(method: Method, agent: Agent, sampler: Sampler, evaluator: Optional[Evaluator], env: gym.Env, logger: RunLogger,
          window: MetricsWindow, best: Dict[str, Any], start_step: int, checkpoint_dir: str,
          resources: List[Any]) -> None:
    cfg = method.cfg
    clock = PhaseClock(agent.device, start_step)
    saved = {"step": start_step, "time": time.monotonic()}

    def save(step: int, files: List[str]) -> None:
        window.check_finite()  # never save a diverged model
        payload = {"step": step, "model": agent.state_dict(), "rng": capture_rng_state(agent.device, sampler.generator),
                   "window": window.state_dict(), "best": best, "config": method.config_dict(),
                   "wandb_id": logger.wandb_id}
        for name in files:
            path = os.path.join(checkpoint_dir, name)
            try:
                save_checkpoint(path, payload)
            except OSError as err:
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
        window.check_finite()  # never evaluate or save a diverged model
        with clock.timing("eval"):
            seeds = episode_seeds(cfg.seed, cfg.eval_episodes)
            scores = {key: summarize(env, evaluator.run(policy, seeds, cfg.seed, agent.device), cfg.cost_limit)
                      for key, policy in agent.training_policies().items()}
            entries = {}
            for key, (prefix, _) in method.policies.items():
                entries.update(eval_entries(prefix, scores[key]))  # the authors' release's names
            logger.log(step, {**entries, **resource_entries(step)})
            bar.set_postfix({f"{key or 'eval'}_{m}": round(scores[key][f"normalized_{m}"], 3)
                             for key in method.policies for m in ("reward", "cost")})
            improved = [key for key in method.policies if better_than(scores[key], best[key])]
            for key in improved:
                best[key] = {"step": step, **scores[key]}
            # the latest checkpoint last: a model.pt at step N means every file of step N is written
            save(step, [method.policies[key][1] for key in improved] + [LATEST])

    bar = tqdm(range(start_step, cfg.max_timesteps), initial=start_step, total=cfg.max_timesteps,
               desc=method.label, mininterval=2.0, dynamic_ncols=True)
    resources.append(bar)
    checkpoint_seconds = 60.0 * cfg.checkpoint_every_minutes
    with StopRequest() as stop:
        for step in range(start_step + 1, cfg.max_timesteps + 1):
            window.add(agent.train(sampler.sample(cfg.batch_size)), step)
            bar.update(1)
            if step % cfg.log_every == 0:  # with no evaluations, the log points carry the throughput
                logger.log(step, {**window.means(), **(resource_entries(step) if evaluator is None else {})})
            # read the flag once: a signal landing between two reads would stop without a checkpoint
            signum = stop.signum
            if evaluator is not None and (step % cfg.eval_every == 0 or step == cfg.max_timesteps):
                evaluate(step)
            elif (signum is not None or step == cfg.max_timesteps
                  or time.monotonic() - saved["time"] >= checkpoint_seconds):
                with clock.timing("checkpoint"):
                    save(step, [LATEST])
            if signum is not None:
                raise Interrupted(signum, step)


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
