"""t-of-n Shamir secret sharing of 32-byte secrets over GF(p), p = 2^521 - 1.

Shamir 1979, "How to Share a Secret": the secret is f(0) of a random polynomial of degree
t - 1; share i is (i, f(i)). Any t shares give f(0) by Lagrange interpolation; any t - 1
are consistent with every secret (information-theoretically hiding). The Mersenne prime
2^521 - 1 exceeds every 256-bit secret, so one polynomial carries the whole secret.
Coefficients come from ``secrets`` (the OS CSPRNG).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from fedpriv.secagg.errors import SecAggError

__all__ = ["PRIME", "Share", "combine", "split"]

PRIME = (1 << 521) - 1
Share = tuple[int, int]  # (x, f(x))
_SECRET_BYTES = 32


def split(secret: bytes, threshold: int, num: int) -> list[Share]:
    """``num`` shares of ``secret``, any ``threshold`` of which reconstruct it.

    Share x-coordinates are 1..num.
    """
    if len(secret) != _SECRET_BYTES:
        raise ValueError(f"secret must be {_SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= num:
        raise ValueError(f"threshold must be in [1, num={num}], got {threshold}")
    coeffs = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME)
                                                for _ in range(threshold - 1)]
    shares = []
    for x in range(1, num + 1):
        y = 0
        for c in reversed(coeffs):  # Horner
            y = (y * x + c) % PRIME
        shares.append((x, y))
    return shares


def combine(shares: Sequence[Share], threshold: int) -> bytes:
    """The secret from at least ``threshold`` shares (distinct x), by Lagrange at 0.

    Raises
    ------
    SecAggError
        With fewer than ``threshold`` distinct shares (the secret is undetermined), or a
        result that is not a 32-byte secret (shares from different secrets).
    """
    pts = dict(shares)
    if len(pts) < threshold:
        raise SecAggError(f"need {threshold} shares to reconstruct, got {len(pts)}")
    xs = list(pts)[:threshold]
    secret = 0
    for i in xs:
        num, den = 1, 1
        for j in xs:
            if j != i:
                num = num * (-j) % PRIME
                den = den * (i - j) % PRIME
        secret = (secret + pts[i] * num * pow(den, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * _SECRET_BYTES):
        raise SecAggError("shares do not reconstruct a 32-byte secret (inconsistent shares)")
    return secret.to_bytes(_SECRET_BYTES, "big")
