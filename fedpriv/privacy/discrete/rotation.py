"""Randomised Walsh-Hadamard rotation from a public seed: flatten a vector before rounding.

Kairouz, Liu & Steinke 2021, "The Distributed Discrete Gaussian Mechanism for Federated
Learning with Secure Aggregation" (ICML; arXiv:2102.06387), Section 4.2 ("flattening"):
before scaling and rounding, each client multiplies its update by a random orthogonal
matrix ``U = H D`` shared by all clients, so that no coordinate carries much of the
norm and the modular sum rarely wraps. ``D`` is diagonal with independent uniform signs
and ``H`` is the normalised Walsh-Hadamard matrix of order ``d' = 2^ceil(log2 d)``
(Sylvester's construction, ``H_1 = [1]``, ``H_2k = [[H_k, H_k], [H_k, -H_k]] / sqrt(2)``),
the randomised Hadamard transform of Ailon & Chazelle 2009 (SIAM J. Comput. 39(1)).
The vector is zero-padded to d'. ``H`` is symmetric and orthogonal, so ``U^-1 = D H``
and ``||U x|| = ||x||``. For any fixed x, each coordinate ``(U x)_j = sum_k H_jk D_k x_k``
is sub-Gaussian with variance proxy ``||x||^2 / d'`` over the signs (Hoeffding's lemma),
which is what :mod:`fedpriv.privacy.discrete.wraparound` uses; that needs the seed to be
drawn independently of the data (a fresh public seed per round, drawn by the server
*after* the clients' updates are fixed is the safe order).

Signs: the ChaCha20 keystream (RFC 8439, via ``cryptography``) under key
``SHA-256("fedpriv/ddp/rotation/v1" || seed)`` and a zero nonce, one bit per coordinate
(bit i of byte i // 8, least significant first; 1 means -1), so every client derives the
same D from the same public seed on any platform. The transform itself is the in-place
butterfly, O(d' log d') with numpy.
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = ["hadamard_transform", "padded_dimension", "rotate", "rotation_signs", "unrotate"]

_DOMAIN = b"fedpriv/ddp/rotation/v1"


def padded_dimension(d: int) -> int:
    """The padded length d' = 2^ceil(log2 d), the least power of two >= d (d >= 1)."""
    if isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 1:
        raise ValueError(f"d must be an integer >= 1, got {d!r}")
    return 1 << (int(d) - 1).bit_length()


def _check_seed(seed: bytes) -> bytes:
    if not isinstance(seed, bytes | bytearray) or len(seed) == 0:
        raise ValueError(f"rotation seed must be non-empty bytes, got {seed!r}")
    return bytes(seed)


def rotation_signs(seed: bytes, d_padded: int) -> np.ndarray:
    """The diagonal of D: ``d_padded`` signs (+-1.0) from the public ``seed``."""
    seed = _check_seed(seed)
    if padded_dimension(d_padded) != d_padded:
        raise ValueError(f"d_padded must be a power of two, got {d_padded!r}")
    key = hashlib.sha256(_DOMAIN + seed).digest()
    enc = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    raw = np.frombuffer(enc.update(bytes((d_padded + 7) // 8)), dtype=np.uint8)
    bits = np.unpackbits(raw, bitorder="little")[:d_padded]  # (d_padded,)
    return 1.0 - 2.0 * bits.astype(np.float64)


def hadamard_transform(x: np.ndarray) -> np.ndarray:
    """H x for the normalised Walsh-Hadamard matrix H (its own inverse), along the last axis.

    The length of the last axis must be a power of two. Returns a new float64 array.
    """
    y = np.array(x, dtype=np.float64)  # a copy: the butterfly works in place
    n = y.shape[-1]
    if n < 1 or padded_dimension(n) != n:
        raise ValueError(f"the last axis must have a power-of-two length, got {n}")
    lead = y.shape[:-1]
    h = 1
    while h < n:
        v = y.reshape(*lead, n // (2 * h), 2, h)  # pairs of blocks of length h
        a = v[..., 0, :].copy()
        b = v[..., 1, :]
        v[..., 0, :] += b
        v[..., 1, :] = a - b
        h *= 2
    return y / np.sqrt(n)


def rotate(x: np.ndarray, seed: bytes) -> np.ndarray:
    """U x = H D [x, 0...]: zero-pad the last axis to d' and rotate (float64).

    Raises
    ------
    ValueError
        For an empty last axis, non-finite values or a malformed seed.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"x must have a non-empty last axis, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x must be finite, got NaN or inf")
    d = x.shape[-1]
    dp = padded_dimension(d)
    padded = np.zeros((*x.shape[:-1], dp))  # (..., d')
    padded[..., :d] = x
    return hadamard_transform(padded * rotation_signs(seed, dp))


def unrotate(y: np.ndarray, seed: bytes, d: int) -> np.ndarray:
    """U^-1 y = D H y, truncated to the first ``d`` coordinates (float64)."""
    y = np.asarray(y, dtype=np.float64)
    dp = y.shape[-1] if y.ndim else 0
    if dp < 1 or padded_dimension(dp) != dp:
        raise ValueError(f"y must have a power-of-two last axis, got shape {y.shape}")
    if padded_dimension(d) != dp:
        raise ValueError(f"d must pad to {dp}, got {d!r}")
    return (hadamard_transform(y) * rotation_signs(seed, dp))[..., :d]
