"""Gaussian noise sources: seeded for reproducible research, cryptographic for production.

The noise that protects privacy must not be predictable: :class:`SecureGaussian` draws
from the operating system's CSPRNG (``os.urandom``) through a ChaCha20 keystream and the
Box-Muller transform. :class:`SeededGaussian` wraps a ``numpy.random.Generator`` for
reproducible experiments and tests.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = ["GaussianSource", "SecureGaussian", "SeededGaussian"]


class GaussianSource(Protocol):
    """Draws ``N(0, std^2)`` arrays."""

    def __call__(self, shape: tuple[int, ...], std: float) -> np.ndarray:
        """An array of ``shape`` with i.i.d. ``N(0, std^2)`` entries (float64)."""
        ...


def _check_std(std: float) -> None:
    if not std >= 0 or not np.isfinite(std):
        raise ValueError(f"std must be in [0, inf), got {std!r}")


class SeededGaussian:
    """Gaussian noise from a passed-in ``numpy.random.Generator`` (not for production)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def __call__(self, shape: tuple[int, ...], std: float) -> np.ndarray:
        """See :class:`GaussianSource`."""
        _check_std(std)
        if std == 0:
            return np.zeros(shape)
        return self.rng.normal(0.0, std, size=shape)


class SecureGaussian:
    """Gaussian noise from a ChaCha20 keystream keyed by 256 bits of ``os.urandom``.

    Uniforms are 53-bit fractions of the keystream's 64-bit words, mapped to normals with
    the Box-Muller transform (Box & Muller 1958). Rekeyed from the OS for every call.
    """

    def __call__(self, shape: tuple[int, ...], std: float) -> np.ndarray:
        """See :class:`GaussianSource`."""
        _check_std(std)
        n = int(np.prod(shape, dtype=np.int64))
        if std == 0 or n == 0:
            return np.zeros(shape)
        pairs = (n + 1) // 2
        enc = Cipher(algorithms.ChaCha20(os.urandom(32), os.urandom(16)), mode=None).encryptor()
        words = np.frombuffer(enc.update(bytes(16 * pairs)), dtype=np.uint64)  # (2 * pairs,)
        u = ((words >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)  # (0, 1)
        u1, u2 = u[:pairs], u[pairs:]
        r = np.sqrt(-2.0 * np.log(u1))
        z = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])[:n]
        return (z * std).reshape(shape)
