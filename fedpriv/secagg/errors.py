"""Errors of the secure-aggregation protocol."""

from __future__ import annotations

__all__ = ["SecAggAbort", "SecAggError"]


class SecAggError(ValueError):
    """A message was rejected: replayed, out of round or stage, malformed or forged.

    The state machine that raised it is unchanged and can go on with other messages.
    """


class SecAggAbort(RuntimeError):
    """The round cannot complete (too few clients left); the global model stays as it was."""
