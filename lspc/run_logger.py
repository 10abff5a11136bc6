"""Metrics to a local ``metrics.jsonl`` (always) and to wandb (online, offline or disabled)."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

WANDB_MODES = ("online", "offline", "disabled")


class RunLogger:
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
    ) -> None:
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self._file = open(self.path, "a", encoding="utf-8")
        self._wandb_run = None
        if wandb_mode != "disabled":
            import wandb

            self._wandb_run = wandb.init(
                project=project,
                group=group,
                name=name,
                dir=run_dir,
                mode=wandb_mode,
                config=config,
                id=wandb_id,
                resume="allow" if wandb_id else None,
            )

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
