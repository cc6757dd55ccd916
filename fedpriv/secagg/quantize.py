"""Fixed-point encoding of float updates for a sum mod 2^b that cannot wrap.

Each value is clipped to [-r, r], scaled to [0, 2^q - 1] and rounded stochastically
(unbiased: E[round(v)] = v); n such integers sum to at most n (2^q - 1), so a modulus
with ``b = q + ceil(log2 n) + 1`` bits never wraps. Per coordinate the dequantised sum
differs from the sum of the clipped values by at most n * step, step = 2r / (2^q - 1),
and by zero in expectation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Quantizer"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Quantizer:
    """Encode floats in [-clip_range, clip_range] with ``bits`` bits each.

    Attributes
    ----------
    clip_range : float
        r (> 0).
    bits : int
        q, bits per encoded value, in [2, 40].
    """

    clip_range: float
    bits: int

    def __post_init__(self) -> None:
        if not self.clip_range > 0 or not math.isfinite(self.clip_range):
            raise ValueError(f"clip_range must be in (0, inf), got {self.clip_range!r}")
        if not 2 <= self.bits <= 40:
            raise ValueError(f"bits must be in [2, 40], got {self.bits!r}")

    @property
    def levels(self) -> int:
        """2^q - 1, the largest encoded value."""
        return (1 << self.bits) - 1

    @property
    def step(self) -> float:
        """Width of one quantisation level."""
        return 2 * self.clip_range / self.levels

    def modulus_bits(self, n: int) -> int:
        """B such that n encoded values sum below 2^b."""
        return self.bits + max(1, math.ceil(math.log2(max(n, 2)))) + 1

    def encode(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Clip, shift, scale and stochastically round to uint64 in [0, 2^q - 1]."""
        v = (np.clip(np.asarray(x, np.float64), -self.clip_range, self.clip_range)
             + self.clip_range) / self.step  # (d,) in [0, levels]
        low = np.floor(v)
        up = rng.random(v.shape) < (v - low)
        return np.minimum(low + up, self.levels).astype(np.uint64)

    def decode_sum(self, total: np.ndarray, n: int) -> np.ndarray:
        """The float sum of n clients' values from the integer sum of their encodings."""
        return total.astype(np.float64) * self.step - n * self.clip_range
