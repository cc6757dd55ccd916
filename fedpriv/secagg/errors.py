"""Errors of the secure-aggregation protocol."""

from __future__ import annotations

__all__ = ["SecAggAbort", "SecAggError", "ShareAuthenticationError"]


class SecAggError(ValueError):
    """A message was rejected: replayed, out of round or stage, malformed or forged.

    The state machine that raised it is unchanged and can go on with other messages.
    """


class ShareAuthenticationError(SecAggError):
    """An encrypted share bundle failed AEAD authentication.

    Raised for tampered ciphertexts, a wrong key, or associated data (sender, recipient,
    round, stage) other than the one it was sealed under: a misrouted or replayed share.
    """


class SecAggAbort(RuntimeError):
    """The round cannot complete (too few clients left); the model stays as it was."""
