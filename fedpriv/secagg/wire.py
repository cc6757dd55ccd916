"""The masked vector on the wire: each coordinate in the bytes its modulus needs.

A masked vector ``y`` holds values in ``[0, 2^b)`` (``b`` the run's modulus bits, 46 for
a default run of 10 clients, 14 under a typical distributed-DP plan), computed in
uint64. Sent as uint64 it would carry ``64 - b`` zero bits per coordinate; sent as its
``k = ceil(b / 8)`` low bytes, little-endian (a 1-D uint8 array of ``d * k`` bytes), it
carries at most 7. For b = 46 that is 6 bytes instead of 8, for b = 14 two.

The server knows ``b`` and the vector's length ``d`` before any reply arrives, so a
reply of any other size or dtype, or with a coordinate of ``2^b`` or more (possible only
when ``b`` is not a multiple of 8), is refused as :class:`SecAggError`: it is not a
masked vector of this round, whatever its metadata says.
"""

from __future__ import annotations

import numpy as np

from fedpriv.secagg.errors import SecAggError

__all__ = ["pack", "unpack", "word_bytes"]


def word_bytes(bits: int) -> int:
    """Bytes per coordinate for modulus bits ``bits`` in [1, 64]: ceil(bits / 8)."""
    if not 1 <= bits <= 64:
        raise ValueError(f"modulus bits must be in [1, 64], got {bits}")
    return (bits + 7) // 8


def pack(y: np.ndarray, bits: int) -> np.ndarray:
    """``y`` (1-D uint64, each value < 2^bits) as ``len(y) * word_bytes(bits)`` bytes.

    Raises
    ------
    ValueError
        For another dtype or shape, or a value of 2^bits or more (a caller's bug: the
        masked vector is reduced mod 2^bits before it is sent).
    """
    k = word_bytes(bits)
    if not isinstance(y, np.ndarray) or y.dtype != np.uint64 or y.ndim != 1:
        raise ValueError(f"pack takes a 1-D uint64 array, got "
                         f"{getattr(y, 'dtype', type(y).__name__)} of shape "
                         f"{getattr(y, 'shape', None)}")
    if bits < 64 and y.size and int(y.max()) >> bits:
        raise ValueError(f"a value of {int(y.max())} does not fit {bits} bits")
    little = y.astype("<u8", copy=False)
    return np.ascontiguousarray(little.view(np.uint8).reshape(-1, 8)[:, :k]).reshape(-1)


def unpack(data: np.ndarray, bits: int, length: int) -> np.ndarray:
    """The uint64 vector of ``length`` coordinates that :func:`pack` made ``data`` from.

    Raises
    ------
    SecAggError
        When ``data`` is not a 1-D uint8 array of exactly ``length * word_bytes(bits)``
        bytes, or holds a coordinate of 2^bits or more.
    """
    k = word_bytes(bits)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 1:
        raise SecAggError(f"a masked vector travels as 1-D uint8, got "
                          f"{getattr(data, 'dtype', type(data).__name__)} of shape "
                          f"{getattr(data, 'shape', None)}")
    if data.size != length * k:
        raise SecAggError(f"a masked vector of {length} coordinates of {bits} bits is "
                          f"{length * k} bytes, got {data.size}")
    words = np.zeros((length, 8), np.uint8)
    words[:, :k] = data.reshape(length, k)
    y = words.reshape(-1).view("<u8").astype(np.uint64, copy=False)
    if bits < 64 and y.size and int(y.max()) >> bits:
        raise SecAggError(f"a masked coordinate of {int(y.max())} does not fit the "
                          f"modulus 2^{bits}")
    return y
