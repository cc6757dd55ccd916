"""The mask PRG: an AES-128-CTR (or ChaCha20) keystream keyed from the full 256-bit seed.

Bonawitz et al. 2017 (CCS), Section 4, "PRG": masks ``PRG(b_u)`` and ``PRG(s_uv)`` are
expanded from 32-byte seeds. The seed goes through HKDF-SHA256 (domain-separated by the
keystream kind) into the cipher key and initial counter block, so the whole 256-bit
secret keys the mask. AES-128-CTR runs at several GB/s with AES-NI; ChaCha20 (RFC 8439)
is the switch for devices without AES instructions. (Flower 1.41 seeds numpy's
``RandomState`` with 32 bits of the seed: not a cryptographic PRG.)

Speed: :func:`accumulate` adds many masks (and plain vectors) into one uint64 buffer
chunk by chunk: each chunk of keystream is written into one small preallocated buffer
that stays in cache and is added at once; no d-sized temporary is made per mask, and
nothing is reduced mod 2^b until the caller does it once at the end (2^b divides 2^64,
so sums of 64-bit words mod 2^64, reduced mod 2^b, are the sums mod 2^b). With
``threads > 1`` disjoint ranges of coordinates go to threads, each cipher seeking to
its range's counter (the keystream is random access).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["CHUNK_WORDS", "accumulate", "expand_mask"]

CHUNK_WORDS = 1 << 17  # 1 MiB of keystream per step: stays in L2 (fastest measured)
_ALIGN = 8  # words: one ChaCha20 block (64 bytes), four AES blocks


def _key_material(seed: bytes, prg: str) -> bytes:
    if len(seed) != 32:
        raise ValueError(f"seed must be 32 bytes, got {len(seed)}")
    if prg not in ("aes128-ctr", "chacha20"):
        raise ValueError(f"prg must be 'aes128-ctr' or 'chacha20', got {prg!r}")
    size = 32 if prg == "aes128-ctr" else 44
    return HKDF(algorithm=hashes.SHA256(), length=size, salt=None,
                info=b"fedpriv-secagg|mask-prg|" + prg.encode()).derive(seed)


def _encryptor(material: bytes, prg: str, start_word: int):  # noqa: ANN202
    """A keystream positioned at 64-bit word ``start_word`` (a multiple of 8)."""
    if prg == "aes128-ctr":
        ctr = (int.from_bytes(material[16:32], "big") + start_word // 2) % (1 << 128)
        return Cipher(algorithms.AES(material[:16]),
                      modes.CTR(ctr.to_bytes(16, "big"))).encryptor()
    counter = (int.from_bytes(material[32:36], "little") + start_word // 8) % (1 << 32)
    nonce = counter.to_bytes(4, "little") + material[36:44]
    return Cipher(algorithms.ChaCha20(material[:32], nonce + bytes(4)), mode=None
                  ).encryptor()


def _range(acc: np.ndarray, lo: int, hi: int, plus: Sequence[bytes],
           minus: Sequence[bytes], adds: Sequence[np.ndarray], prg: str,
           chunk: int) -> None:
    encs = [(_encryptor(m, prg, lo), True) for m in plus]
    encs += [(_encryptor(m, prg, lo), False) for m in minus]
    zeros = bytes(8 * chunk)
    raw = bytearray(8 * chunk + 16)  # update_into wants block-size slack
    words = np.frombuffer(raw, dtype="<u8", count=chunk)  # (chunk,) view, no copy
    for start in range(lo, hi, chunk):
        stop = min(start + chunk, hi)
        m = stop - start
        out = acc[start:stop]  # (m,) view
        for x in adds:
            np.add(out, x[start:stop], out=out)
        src = zeros if m == chunk else zeros[:8 * m]
        for enc, sign in encs:
            enc.update_into(src, raw)
            if sign:
                np.add(out, words[:m], out=out)
            else:
                np.subtract(out, words[:m], out=out)


def accumulate(acc: np.ndarray, *, plus: Sequence[bytes] = (), minus: Sequence[bytes] = (),
               adds: Sequence[np.ndarray] = (), prg: str = "aes128-ctr",
               chunk_words: int = CHUNK_WORDS, threads: int = 1) -> np.ndarray:
    """Add masks and vectors in place: acc += sum(adds) + sum PRG(plus) - sum PRG(minus).

    All mod 2^64; the caller reduces mod 2^b once.

    Parameters
    ----------
    acc : numpy.ndarray
        uint64, shape (d,), C-contiguous; updated in place and returned.
    plus, minus : sequence of bytes
        32-byte seeds whose masks are added / subtracted.
    adds : sequence of numpy.ndarray
        uint64 vectors of shape (d,) added as they are.
    prg : str
        ``aes128-ctr`` or ``chacha20``.
    chunk_words : int
        Words per step (a multiple of 8).
    threads : int
        Coordinate ranges worked on in parallel (the ciphers and numpy release the GIL
        for large buffers only partly; 2 helps on 2 cores).
    """
    if acc.dtype != np.uint64 or acc.ndim != 1 or not acc.flags.c_contiguous:
        raise ValueError(f"acc must be a C-contiguous 1-D uint64 array, got {acc.dtype} "
                         f"{acc.shape}")
    if chunk_words < _ALIGN or chunk_words % _ALIGN:
        raise ValueError(f"chunk_words must be a positive multiple of {_ALIGN}, got "
                         f"{chunk_words}")
    d = len(acc)
    for x in adds:
        if x.dtype != np.uint64 or x.shape != (d,):
            raise ValueError(f"adds must be uint64 arrays of shape ({d},), got {x.dtype} "
                             f"{x.shape}")
    pm = [_key_material(s, prg) for s in plus]
    mm = [_key_material(s, prg) for s in minus]
    if threads <= 1 or d < 2 * chunk_words:
        _range(acc, 0, d, pm, mm, adds, prg, chunk_words)
        return acc
    per = -(-d // threads)
    per += -per % _ALIGN
    bounds = [(lo, min(lo + per, d)) for lo in range(0, d, per)]
    with ThreadPoolExecutor(max_workers=len(bounds)) as pool:
        for f in [pool.submit(_range, acc, lo, hi, pm, mm, adds, prg, chunk_words)
                  for lo, hi in bounds]:
            f.result()
    return acc


def expand_mask(seed: bytes, length: int, bits: int, prg: str = "aes128-ctr") -> np.ndarray:
    """``length`` uniform integers mod 2^bits from the keystream keyed by ``seed``.

    Parameters
    ----------
    seed : bytes
        32-byte secret.
    length : int
        Number of words (>= 0).
    bits : int
        b in [1, 64]; words are reduced mod 2^b (uniform, since 2^b divides 2^64).
    prg : str
        ``aes128-ctr`` or ``chacha20``.

    Returns
    -------
    numpy.ndarray
        uint64 of shape ``(length,)``.
    """
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be in [1, 64], got {bits}")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    words = accumulate(np.zeros(length, np.uint64), plus=[seed], prg=prg)
    if bits < 64:
        words &= np.uint64((1 << bits) - 1)
    return words
