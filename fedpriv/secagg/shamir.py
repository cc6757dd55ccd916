"""t-of-k Shamir secret sharing of 32-byte secrets over GF(p), p = 2^521 - 1.

Shamir 1979, "How to Share a Secret"; used in Bonawitz et al. 2017 (CCS), Section 4
("SS.share / SS.recon") and Bell et al. 2020 (CCS), Algorithm 1, to share each client's
self-mask seed ``b_u`` and masking key ``s_sk_u`` among its k neighbours. The secret is
f(0) of a random polynomial of degree t - 1; share i is (i, f(i)). Any t shares give f(0)
by Lagrange interpolation; any t - 1 are consistent with every secret.

Choice of field: the Mersenne prime 2^521 - 1 exceeds every 256-bit secret, so one
polynomial carries the whole secret. Coefficients come from :mod:`secrets` (OS CSPRNG).

Detection of a wrong answer (instead of returning one silently):

1. fewer than ``threshold`` distinct shares -> :class:`SecAggError`;
2. redundancy: a genuine secret is < 2^256, while interpolating through shares of a
   polynomial of higher degree (too few shares for the real threshold, or shares of
   different secrets) gives f(0) + a uniform field element, which is >= 2^256 except with
   probability 2^-265 -> :class:`SecAggError`;
3. when more than ``threshold`` shares arrive, the secret is rebuilt from the first and
   from the last ``threshold`` of them and the two must agree.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence

from fedpriv.secagg.errors import SecAggError

__all__ = [
    "PRIME",
    "SHARE_BYTES",
    "Share",
    "combine",
    "share_from_bytes",
    "share_to_bytes",
    "split",
]

PRIME = (1 << 521) - 1
Share = tuple[int, int]  # (x, f(x))
_SECRET_BYTES = 32
_X_BYTES = 2
_Y_BYTES = 66  # ceil(521 / 8)
SHARE_BYTES = _X_BYTES + _Y_BYTES


def split(secret: bytes, threshold: int, num: int) -> list[Share]:
    """``num`` shares of ``secret``, any ``threshold`` of which reconstruct it.

    Share x-coordinates are 1..num.
    """
    if len(secret) != _SECRET_BYTES:
        raise ValueError(f"secret must be {_SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= num < 1 << (8 * _X_BYTES):
        raise ValueError(f"num must be in [1, 65535], got {num}")
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


@functools.lru_cache(maxsize=4096)
def _weights_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Lagrange basis values l_i(0) = prod_{j != i} x_j / (x_j - x_i) mod p.

    They depend only on the x-coordinates, which repeat across the secrets of a round
    (the same neighbours reveal for many owners), so they are computed once per set;
    one modular inverse per set (Montgomery's batch-inversion trick).
    """
    nums, dens = [], []
    for i in xs:
        num, den = 1, 1
        for j in xs:
            if j != i:
                num = num * j % PRIME
                den = den * (j - i) % PRIME
        nums.append(num)
        dens.append(den)
    prefix = [1]
    for den in dens:
        prefix.append(prefix[-1] * den % PRIME)
    inv = pow(prefix[-1], -1, PRIME)
    out = [0] * len(xs)
    for k in range(len(xs) - 1, -1, -1):
        out[k] = nums[k] * inv * prefix[k] % PRIME  # inv * prefix[k] = 1 / dens[k]
        inv = inv * dens[k] % PRIME
    return tuple(out)


def _interpolate_at_zero(pts: Sequence[Share]) -> int:
    weights = _weights_at_zero(tuple(x for x, _ in pts))
    return sum(w * y for w, (_, y) in zip(weights, pts, strict=True)) % PRIME


def combine(shares: Sequence[Share], threshold: int) -> bytes:
    """The secret from at least ``threshold`` shares (distinct x), by Lagrange at 0.

    Raises
    ------
    SecAggError
        With fewer than ``threshold`` distinct shares, conflicting shares for one x, or
        shares that fail the checks of the module docstring (too few for the real
        threshold, or from different secrets).
    """
    if threshold < 1:
        raise ValueError(f"threshold must be >= 1, got {threshold}")
    pts: dict[int, int] = {}
    for x, y in shares:
        if not (1 <= x < PRIME and 0 <= y < PRIME):
            raise SecAggError(f"share ({x}, ...) is outside the field")
        if pts.setdefault(x, y) != y:
            raise SecAggError(f"two different shares for x = {x}")
    if len(pts) < threshold:
        raise SecAggError(f"need {threshold} shares to reconstruct, got {len(pts)}")
    items = sorted(pts.items())
    secret = _interpolate_at_zero(items[:threshold])
    if len(items) > threshold and _interpolate_at_zero(items[-threshold:]) != secret:
        raise SecAggError("shares are inconsistent: two threshold subsets disagree "
                          "(shares of different secrets, or a higher threshold)")
    if secret >= 1 << (8 * _SECRET_BYTES):
        raise SecAggError("shares do not reconstruct a 32-byte secret (too few for the "
                          "polynomial's degree, or shares of different secrets)")
    return secret.to_bytes(_SECRET_BYTES, "big")


def share_to_bytes(share: Share) -> bytes:
    """Fixed-width encoding: x (2 bytes) || y (66 bytes), big-endian."""
    x, y = share
    if not (1 <= x < 1 << (8 * _X_BYTES) and 0 <= y < PRIME):
        raise SecAggError(f"share ({x}, ...) is outside the encodable range")
    return x.to_bytes(_X_BYTES, "big") + y.to_bytes(_Y_BYTES, "big")


def share_from_bytes(blob: bytes) -> Share:
    """Inverse of :func:`share_to_bytes`."""
    if len(blob) != SHARE_BYTES:
        raise SecAggError(f"a share must be {SHARE_BYTES} bytes, got {len(blob)}")
    x = int.from_bytes(blob[:_X_BYTES], "big")
    y = int.from_bytes(blob[_X_BYTES:], "big")
    if x < 1 or y >= PRIME:
        raise SecAggError("share is outside the field")
    return x, y
