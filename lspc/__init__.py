"""Support library for LSPC: tasks and environments, data, evaluation, checkpoints, logging."""


class LSPCError(Exception):
    """A user-facing error: the scripts print its message on one line and exit with status 2."""
