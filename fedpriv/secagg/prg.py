"""The mask PRG: a ChaCha20 keystream keyed by the full 256-bit seed.

Bonawitz et al. 2017 (CCS), Section 4, "PRG": masks ``PRG(b_u)`` and ``PRG(s_uv)`` are
expanded from 32-byte seeds. Here the seed is the ChaCha20 key (RFC 8439, 256 bits) and
the 16-byte nonce/counter block is fixed at zero, which is safe because each seed keys
exactly one mask. (Flower 1.41 seeds numpy's ``RandomState`` with 32 bits of the seed:
not a cryptographic PRG.) Vectorised: one keystream call and one ``frombuffer``.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = ["expand_mask"]

_NONCE = bytes(16)


def expand_mask(seed: bytes, length: int, bits: int) -> np.ndarray:
    """``length`` uniform integers mod 2^bits from a ChaCha20 keystream keyed by ``seed``.

    Parameters
    ----------
    seed : bytes
        32-byte key.
    length : int
        Number of words (>= 0).
    bits : int
        b in [1, 64]; words are reduced mod 2^b (uniform, since 2^b divides 2^64).

    Returns
    -------
    numpy.ndarray
        uint64 of shape ``(length,)``.
    """
    if len(seed) != 32:
        raise ValueError(f"seed must be 32 bytes, got {len(seed)}")
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be in [1, 64], got {bits}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    enc = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    buf = bytearray(8 * length)  # zeros: encrypting them yields the raw keystream
    enc.update_into(bytes(buf), buf)
    words = np.frombuffer(buf, dtype="<u8")  # (length,) writable view, no copy
    if bits < 64:
        words &= np.uint64((1 << bits) - 1)
    return words.astype(np.uint64, copy=False)
