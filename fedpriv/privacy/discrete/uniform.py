"""Uniform random numbers for the discrete samplers: cryptographic or seeded.

Every sampler in :mod:`fedpriv.privacy.discrete` consumes i.i.d. uniforms on the open
interval (0, 1) through one interface, :class:`UniformSource` (``source(n)``), so the
noise that protects privacy and the noise of a reproducible experiment run through the
same code. Both sources below put a 53-bit integer ``k`` (uniform on ``[0, 2^53)``) in
the middle of its cell, ``u = (k + 1/2) / 2^53``: u is never 0 or 1 (logarithms stay
finite) and is exactly representable as a float64.

- :class:`SecureUniforms`: a ChaCha20 keystream (RFC 8439, via ``cryptography``) keyed
  by 256 bits of ``os.urandom`` and re-keyed on every call, as
  :class:`fedpriv.privacy.noise.SecureGaussian` does: nothing to predict, leak or
  restore. The default for noise shares.
- :class:`SeededUniforms`: a passed-in ``numpy.random.Generator`` (research and tests;
  not for production). Nothing here keeps global random state.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = ["SecureUniforms", "SeededUniforms", "UniformSource"]

_BITS = 53
_SCALE = float(1 << _BITS)


class UniformSource(Protocol):
    """Draws i.i.d. uniforms on the open interval (0, 1)."""

    def __call__(self, n: int) -> np.ndarray:
        """``n`` float64 uniforms in (0, 1), shape ``(n,)``."""
        ...


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    return int(n)


def _to_open_unit(words: np.ndarray) -> np.ndarray:
    """Top 53 bits of uint64 words, centred in their cell: (k + 1/2) / 2^53 in (0, 1)."""
    return ((words >> np.uint64(64 - _BITS)).astype(np.float64) + 0.5) / _SCALE


class SecureUniforms:
    """Uniforms from a ChaCha20 keystream keyed by ``os.urandom`` (fresh key per call)."""

    def __call__(self, n: int) -> np.ndarray:
        """See :class:`UniformSource`."""
        n = _check_n(n)
        if n == 0:
            return np.zeros(0)
        key, nonce = os.urandom(32), os.urandom(16)
        enc = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
        words = np.frombuffer(enc.update(bytes(8 * n)), dtype=np.uint64)  # (n,)
        return _to_open_unit(words)


class SeededUniforms:
    """Uniforms from a passed-in ``numpy.random.Generator`` (reproducible; not secure)."""

    def __init__(self, rng: np.random.Generator) -> None:
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator, got {rng!r}")
        self.rng = rng

    def __call__(self, n: int) -> np.ndarray:
        """See :class:`UniformSource`."""
        n = _check_n(n)
        words = self.rng.integers(0, np.iinfo(np.uint64).max, size=n, dtype=np.uint64,
                                  endpoint=True)  # (n,)
        return _to_open_unit(words)
