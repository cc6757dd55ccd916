"""Fixed-point encoding of float updates for a sum mod 2^b that cannot wrap.

Bonawitz et al. 2017 (CCS), Section 3 and Bell et al. 2020, Section 2 sum integer vectors
mod R; floats are mapped there by clipping and stochastic rounding (as in Kairouz et al.
2021, "The Distributed Discrete Gaussian Mechanism", Section 4.1, without the rotation).

Each value is clipped to [-r, r], shifted and scaled to [0, 2^q - 1] and rounded
stochastically: ``floor(v) + Bernoulli(v - floor(v))``, so E[round(v)] = v (unbiased).
Each client may also scale its encoding by an integer weight w < 2^w_bits (its example
count). n such integers sum to at most n (2^q - 1)(2^w_bits - 1) < 2^b for

    b = q + w_bits + ceil(log2 n) + 1,

so the sum mod 2^b equals the integer sum (no wrap). The masked vector of a round also
carries the weight, the clip bit and the loss, and may carry a noise share: its modulus
is :meth:`fedpriv.secagg.layout.SumLayout.modulus_bits`, computed exactly from all of
them. Error bound: per coordinate the
dequantised sum differs from the sum of the clipped values by less than n * step,
step = 2r / (2^q - 1), and by zero in expectation.
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
        """Width of one quantisation level, 2r / (2^q - 1)."""
        return 2 * self.clip_range / self.levels

    def modulus_bits(self, n: int, weight_bits: int = 0) -> int:
        """B = q + w_bits + ceil(log2 n) + 1: n weighted encodings sum below 2^b.

        Raises
        ------
        ValueError
            For n < 1, negative ``weight_bits``, or b > 64 (the sum would not fit uint64).
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if weight_bits < 0:
            raise ValueError(f"weight_bits must be >= 0, got {weight_bits}")
        b = self.bits + weight_bits + max(1, math.ceil(math.log2(max(n, 2)))) + 1
        if b > 64:
            raise ValueError(f"modulus bits must be in [1, 64], got {b} for n={n}, "
                             f"q={self.bits}, weight_bits={weight_bits}")
        return b

    def error_bound(self, n: int) -> float:
        """Per-coordinate bound on |dequantised sum - sum of clipped values|: n * step."""
        return n * self.step

    def encode(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Clip, shift, scale and stochastically round to uint64 in [0, 2^q - 1].

        Non-finite values are rejected (NaN would encode as an arbitrary integer).
        """
        x = np.asarray(x, np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("x must be finite, got NaN or inf")
        v = (np.clip(x, -self.clip_range, self.clip_range)
             + self.clip_range) / self.step  # (d,) in [0, levels]
        low = np.floor(v)
        up = rng.random(v.shape) < (v - low)
        return np.minimum(low + up, self.levels).astype(np.uint64)

    quantize = encode

    def decode_sum(self, total: np.ndarray, n: int, weight: int | None = None
                   ) -> np.ndarray:
        """The float sum of n clients' values from the integer sum of their encodings.

        With ``weight`` (the sum W of the clients' integer weights, when each encoding
        was multiplied by its weight) the result is the weighted sum sum_u w_u x_u.
        """
        scale = n if weight is None else weight
        return np.asarray(total).astype(np.float64) * self.step - scale * self.clip_range

    dequantize_sum = decode_sum
