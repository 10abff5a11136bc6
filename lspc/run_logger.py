"""Metrics to a local ``metrics.jsonl`` (always) and to wandb (online, offline or disabled).

Evaluation metrics carry the names of the authors' release (its ``train_lspc_iql.py``), so
dashboards and scripts built on it read our runs: ``eval/Reward``, ``eval/Cost``, ``eval/Length``,
their ``_std`` over the episodes, ``normalized_eval/Normalized_Reward`` and
``normalized_eval/Normalized_Cost``; LSPC-S under ``eval_star/`` and ``normalized_eval_star/``.
Runs logged before this naming used ``eval/reward`` and ``normalized_eval/reward``:
``eval_value`` reads either.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

from lspc import LSPCError

WANDB_MODES = ("online", "offline", "disabled")
RAW_EVAL_METRICS = ("reward", "cost", "length")  # logged with their standard deviation over episodes
NORMALIZED_EVAL_METRICS = ("reward", "cost")


def eval_key(prefix: str, metric: str, normalized: bool = False, std: bool = False) -> str:
    """The release's name of an evaluation metric: ``eval_key("eval", "cost")`` is ``eval/Cost``,
    ``eval_key("eval_star", "reward", normalized=True)`` is ``normalized_eval_star/Normalized_Reward``."""
    if normalized:
        return f"normalized_{prefix}/Normalized_{metric.capitalize()}"
    return f"{prefix}/{metric.capitalize()}" + ("_std" if std else "")


def eval_entries(prefix: str, scores: Dict[str, float]) -> Dict[str, float]:
    """The logged evaluation metrics of one policy, from ``lspc.evaluation.summarize``'s scores."""
    entries = {}
    for metric in RAW_EVAL_METRICS:
        entries[eval_key(prefix, metric)] = scores[metric]
        entries[eval_key(prefix, metric, std=True)] = scores[f"{metric}_std"]
    for metric in NORMALIZED_EVAL_METRICS:
        entries[eval_key(prefix, metric, normalized=True)] = scores[f"normalized_{metric}"]
    return entries


def eval_value(row: Dict[str, Any], prefix: str, metric: str, normalized: bool = False) -> Optional[float]:
    """An evaluation metric of a ``metrics.jsonl`` row under the release's name or the one runs logged
    before it (``eval/reward``, ``normalized_eval/reward``); None when the row has neither."""
    old_name = f"{'normalized_' if normalized else ''}{prefix}/{metric}"
    for key in (eval_key(prefix, metric, normalized), old_name):
        if key in row:
            return row[key]
    return None


def is_eval_row(row: Dict[str, Any], prefix: str = "eval") -> bool:
    """The row logs an evaluation of the policy under ``prefix`` (either naming)."""
    return eval_value(row, prefix, "reward") is not None


class RunLogger:
    """``own_process``: the wandb run lives in a child process of its own (wandb keeps one run per
    process, and a stacked run logs one per seed)."""

    def __init__(
        self,
        run_dir: str,
        config: Dict[str, Any],
        *,
        project: str,
        group: str,
        name: str,
        wandb_mode: str,
        wandb_id: Optional[str] = None,
        own_process: bool = False,
    ) -> None:
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self._file = open(self.path, "a", encoding="utf-8")
        self._wandb_run = None
        if wandb_mode != "disabled":
            settings = dict(project=project, group=group, name=name, dir=run_dir, mode=wandb_mode, config=config,
                            id=wandb_id, resume="allow" if wandb_id else None)
            self._wandb_run = _WandbProcess(settings) if own_process else _wandb_init(settings)

    @property
    def wandb_id(self) -> Optional[str]:
        return None if self._wandb_run is None else self._wandb_run.id

    def log(self, step: int, metrics: Dict[str, float]) -> None:
        """One JSON line per call; callers log every ``log_every`` steps, so flushing here is cheap."""
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        self._file.flush()
        if self._wandb_run is not None:
            self._wandb_run.log(metrics, step=step)

    def close(self) -> None:
        self._file.close()
        if self._wandb_run is not None:
            self._wandb_run.finish()


def _wandb_init(settings: Dict[str, Any]):
    """wandb.init, or one line saying why it failed (LSPCError)."""
    import wandb

    try:
        return wandb.init(**settings)
    except Exception as err:  # wandb's own errors (no API key, no network) have no common base class
        raise LSPCError(f"wandb could not start the run {settings['name']} ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else 'no message'}); log in with `wandb login`, or "
                        "train with --wandb_mode offline or disabled") from None


def _wandb_child(settings: Dict[str, Any], rows, reply) -> None:
    """A child process's wandb run: logs the rows it is sent until None (or its parent is gone)."""
    import queue
    import signal

    # Ctrl-C reaches the whole process group and Slurm's SIGTERM every process of the job: the parent
    # stops at its next step, logs what it has and finishes this run, which must live until then
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    parent = os.getppid()
    try:
        run = _wandb_init(settings)
    except LSPCError as err:
        reply.put(("error", str(err)))
        return
    reply.put(("id", run.id))
    while True:
        try:
            row = rows.get(timeout=5.0)
        except queue.Empty:
            if os.getppid() != parent:  # the parent was killed: end the run with what it logged
                break
            continue
        if row is None:
            break
        run.log(row[1], step=row[0])
    run.finish()


class _WandbProcess:
    """A wandb run in a child process, with the ``id``, ``log`` and ``finish`` a run has."""

    def __init__(self, settings: Dict[str, Any]) -> None:
        import multiprocessing
        import queue

        context = multiprocessing.get_context("spawn")
        self._rows, reply = context.Queue(), context.Queue()
        self._process = context.Process(target=_wandb_child, args=(settings, self._rows, reply), daemon=True)
        self._process.start()
        try:
            kind, self.id = reply.get(timeout=300)
        except queue.Empty:
            kind, self.id = "error", f"wandb did not start the run {settings['name']} in 300 s"
        if kind == "error":
            self._end(timeout=5)
            raise LSPCError(self.id)

    def log(self, metrics: Dict[str, float], step: int) -> None:
        self._rows.put((step, metrics))

    def finish(self) -> None:
        self._rows.put(None)
        self._end(timeout=300)

    def _end(self, timeout: float) -> None:
        """Wait for the child, and kill it if it has not ended by then: it ignores SIGTERM, which
        multiprocessing would send it at exit."""
        self._process.join(timeout=timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def read_metrics(run_dir: str) -> list:
    """The logged rows. A last line cut short by a killed process (no newline yet) is not a row."""
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    return [json.loads(line) for line in lines[:-1] if line.strip()]


def truncate_metrics(run_dir: str, last_step: int) -> None:
    """On resume, drop lines logged after the checkpoint: the resumed run logs those steps again."""
    from lspc.checkpoint import atomic_write_bytes

    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return
    kept = [json.dumps(row) + "\n" for row in read_metrics(run_dir) if row["step"] <= last_step]
    atomic_write_bytes(path, lambda f: f.write("".join(kept).encode("utf-8")))
