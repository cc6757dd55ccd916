"""Gaussian noise sources: seeded for reproducible research, cryptographic for production.

Both draw ``N(0, std^2)`` arrays through one interface, :class:`GaussianSource`
(``source(shape, std)``). The noise that protects privacy must not be predictable:
:class:`SecureGaussian` draws from the operating system's CSPRNG (``os.urandom``) through
a ChaCha20 keystream and the Box-Muller transform. :class:`SeededGaussian` (and the
function :func:`gaussian_noise`) wrap a passed-in ``numpy.random.Generator`` for
reproducible experiments and tests. Nothing here keeps global random state.

Notes
-----
Floating-point Gaussian samplers are not the exact discrete mechanisms of Canonne,
Kamath & Steinke 2020; Mironov 2012's attack on floating-point *Laplace* noise leaks
through the gaps of the output's low bits. fedpriv's central noise is added to float32
model updates, as in Opacus and TensorFlow Privacy; distributed noise under secure
aggregation uses the discrete mechanisms in :mod:`fedpriv.secagg`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = [
    "GaussianSource",
    "SecureGaussian",
    "SeededGaussian",
    "add_gaussian_noise",
    "gaussian_noise",
]


class GaussianSource(Protocol):
    """Draws ``N(0, std^2)`` arrays."""

    def __call__(self, shape: tuple[int, ...], std: float) -> np.ndarray:
        """An array of ``shape`` with i.i.d. ``N(0, std^2)`` entries (float64)."""
        ...


def _check_std(std: float) -> None:
    if not std >= 0 or not np.isfinite(std):
        raise ValueError(f"std must be in [0, inf), got {std!r}")


def gaussian_noise(shape: tuple[int, ...], std: float, rng: np.random.Generator
                   ) -> np.ndarray:
    """An array of ``shape`` with i.i.d. ``N(0, std^2)`` entries from ``rng`` (float64).

    ``std = 0`` gives zeros without consuming randomness; ``std < 0`` is refused.
    """
    _check_std(std)
    if std == 0:
        return np.zeros(shape)
    return rng.normal(0.0, std, size=shape)


class SeededGaussian:
    """Gaussian noise from a passed-in ``numpy.random.Generator`` (not for production)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def __call__(self, shape: tuple[int, ...], std: float) -> np.ndarray:
        """See :class:`GaussianSource`."""
        return gaussian_noise(shape, std, self.rng)


class SecureGaussian:
    """Gaussian noise from a ChaCha20 keystream keyed by 256 bits of ``os.urandom``.

    Uniforms are the top 53 bits of the keystream's 64-bit words, centred in their cell
    so they lie in the open interval (0, 1), mapped to normals with the Box-Muller
    transform (Box & Muller 1958, "A Note on the Generation of Random Normal Deviates",
    eq. 1): ``z = sqrt(-2 ln u1) * (cos 2 pi u2, sin 2 pi u2)``. Rekeyed from the OS for
    every call, so there is no state to leak or to restore.
    """

    def __call__(self, shape: tuple[int, ...], std: float) -> np.ndarray:
        """See :class:`GaussianSource`."""
        _check_std(std)
        n = int(np.prod(shape, dtype=np.int64))
        if std == 0 or n == 0:
            return np.zeros(shape)
        pairs = (n + 1) // 2
        key, nonce = os.urandom(32), os.urandom(16)
        enc = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()
        words = np.frombuffer(enc.update(bytes(16 * pairs)), dtype=np.uint64)  # (2 pairs,)
        u = ((words >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)  # (0, 1)
        u1, u2 = u[:pairs], u[pairs:]  # (pairs,) each
        r = np.sqrt(-2.0 * np.log(u1))
        z = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])[:n]
        return (z * std).reshape(shape)


def add_gaussian_noise(arrays: Sequence[np.ndarray], std: float, source: GaussianSource
                       ) -> list[np.ndarray]:
    """``Delta + N(0, std^2 I)``, one fresh draw per entry, each array keeping its dtype.

    McMahan et al. 2018, Algorithm 1: the server adds ``N(0, z^2 C^2)`` to the clipped
    sum, so ``std = z * C``. ``std = 0`` returns copies of the input unchanged;
    ``std < 0`` is refused.
    """
    _check_std(std)
    out = []
    for a in arrays:
        a = np.asarray(a)
        if std == 0:
            out.append(a.copy())
            continue
        dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else np.dtype(np.float64)
        out.append((a.astype(np.float64) + source(a.shape, std)).astype(dtype))
    return out
