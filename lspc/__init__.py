"""Support library for LSPC: tasks and environments, data, evaluation, checkpoints, logging."""
import os


class LSPCError(Exception):
    """A user-facing error: the scripts print its message on one line and exit with status 2."""


def available_cores() -> int:
    """The cores this process may run on (its affinity where the OS reports one, as under Slurm)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
