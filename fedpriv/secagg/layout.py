"""What a client puts into the secure sum, and how big the modulus must be to hold it.

The masked vector of client u is (Bonawitz et al. 2017, CCS, Section 3: inputs are
integer vectors summed mod R; Bell et al. 2020, Section 2)::

    x_u = [ w_u * enc(Delta_u) + z_u  (d coordinates) , w_u , unclipped_u , L_u ]

- enc: the stochastic fixed-point encoding of :class:`~fedpriv.secagg.quantize.Quantizer`
  (q bits, values in [0, 2^q - 1]);
- w_u: the client's example count (< 2^w_bits), so the server learns only sum_u w_u;
- unclipped_u: 1 when user-level clipping left the update unclipped (adaptive clipping);
- L_u = round(w_u * min(loss_u, loss_max) * 2^f): the example-weighted training loss in
  fixed point, so the server learns only sum_u w_u loss_u (and the mean loss from it);
- z_u: an optional integer noise share (distributed DP, Kairouz et al. 2021, Section 4),
  |z_u| <= noise_bound per coordinate.

Modulus: the n survivors' sum of every slot lies in [-n Z, n M] (M the largest value a
client may put in any slot, Z = noise_bound), an interval of n (M + 2Z) + 1 integers, so
with 2^b > n (M + 2Z) the sum mod 2^b determines the integer sum exactly:

    b = bit_length(n * max(levels * (2^w_bits - 1) + 2 Z,  ceil(loss_max 2^f)(2^w_bits - 1))).

Nothing is clamped: a layout that needs more than 64 bits is refused
(:meth:`SumLayout.modulus_bits`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedpriv.secagg.quantize import Quantizer

__all__ = ["META_SLOTS", "DecodedSum", "SumLayout", "layout_for"]

META_SLOTS = 3  # weight, unclipped, loss


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodedSum:
    """The server's view of a round: totals only.

    Attributes
    ----------
    update_sum : numpy.ndarray
        sum_u w_u Delta_u (float64, shape (d,)), plus the noise shares when present.
    weight : int
        sum_u w_u.
    unclipped : int
        sum_u unclipped_u.
    loss_sum : float
        sum_u w_u loss_u (to 2^-f per client).
    """

    update_sum: np.ndarray
    weight: int
    unclipped: int
    loss_sum: float

    @property
    def mean_loss(self) -> float | None:
        """sum_u w_u loss_u / sum_u w_u, or None for zero weight."""
        return self.loss_sum / self.weight if self.weight > 0 else None


@dataclass(frozen=True, slots=True, kw_only=True)
class SumLayout:
    """The slots of the masked vector and the modulus they need.

    Attributes
    ----------
    quantizer : Quantizer
        q bits per update coordinate, range [-r, r].
    weight_bits : int
        w_bits in [0, 32]: example counts must be < 2^w_bits.
    loss_max : float
        Losses are clipped to [0, loss_max] (> 0) before encoding.
    loss_frac_bits : int
        f in [0, 32]: fixed-point fraction bits of the loss.
    noise_bound : int
        Z >= 0: the largest |z_u| a client's integer noise share may have.
    """

    quantizer: Quantizer
    weight_bits: int = 20
    loss_max: float = 64.0
    loss_frac_bits: int = 16
    noise_bound: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.weight_bits <= 32:
            raise ValueError(f"weight_bits must be in [0, 32], got {self.weight_bits!r}")
        if not (self.loss_max > 0 and math.isfinite(self.loss_max)):
            raise ValueError(f"loss_max must be in (0, inf), got {self.loss_max!r}")
        if not 0 <= self.loss_frac_bits <= 32:
            raise ValueError(f"loss_frac_bits must be in [0, 32], got "
                             f"{self.loss_frac_bits!r}")
        if self.noise_bound < 0:
            raise ValueError(f"noise_bound must be >= 0, got {self.noise_bound!r}")

    # ------------------------------------------------------------------ sizes
    @property
    def max_weight(self) -> int:
        """2^w_bits - 1, the largest example count (1 when w_bits = 0)."""
        return max(1, (1 << self.weight_bits) - 1)

    @property
    def max_update(self) -> int:
        """Largest weighted update coordinate of one client: levels * max_weight."""
        return self.quantizer.levels * self.max_weight

    @property
    def max_loss(self) -> int:
        """Largest loss slot of one client: ceil(loss_max * 2^f) * max_weight."""
        return math.ceil(self.loss_max * (1 << self.loss_frac_bits)) * self.max_weight

    def span(self, n: int) -> int:
        """The sum's range minus one: n * max(M_update + 2Z, M_loss, max_weight)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        return n * max(self.max_update + 2 * self.noise_bound, self.max_loss,
                       self.max_weight)

    def modulus_bits(self, n: int, *, check: bool = True) -> int:
        """Modulus bits b = bit_length(span(n)), so 2^b > span(n) and no sum wraps.

        Raises
        ------
        ValueError
            With ``check`` when b > 64, naming the numbers.
        """
        b = self.span(n).bit_length()
        if check and b > 64:
            raise ValueError(f"the exact sum needs {b} bits ({self.explain(n)}), more than "
                             "the 64-bit words masked sums are held in")
        return b

    def explain(self, n: int) -> str:
        """The modulus arithmetic in words, for error messages and docs."""
        noise = f" + 2 x noise bound {self.noise_bound}" if self.noise_bound else ""
        return (f"{n} clients x ((2^{self.quantizer.bits} - 1) levels x (2^"
                f"{self.weight_bits} - 1) example weight{noise}) = {self.span(n):,} "
                f">= 2^{self.span(n).bit_length() - 1}")

    def with_bits(self, bits: int) -> SumLayout:
        """A copy of the layout with q = ``bits``."""
        return dataclasses.replace(self, quantizer=Quantizer(
            clip_range=self.quantizer.clip_range, bits=bits))

    def length(self, d: int) -> int:
        """The masked vector's length for d update coordinates: d + 3."""
        return d + META_SLOTS

    # --------------------------------------------------------------- encoding
    def encode(self, flat: np.ndarray, *, weight: int, unclipped: int, loss: float,
               rng: np.random.Generator, bits: int, noise: np.ndarray | None = None
               ) -> np.ndarray:
        """x_u as uint64 values in [0, 2^bits) (see the module docstring).

        Parameters
        ----------
        flat : numpy.ndarray
            The update Delta_u, flattened (finite).
        weight : int
            w_u in [0, 2^w_bits).
        unclipped : int
            0 or 1.
        loss : float
            The client's mean training loss (finite, clipped to [0, loss_max]).
        rng : numpy.random.Generator
            Stochastic rounding.
        bits : int
            b, the round's modulus bits.
        noise : numpy.ndarray, optional
            Integer noise share z_u, shape (d,), |z_u| <= noise_bound.
        """
        if isinstance(weight, bool) or not 0 <= int(weight) <= self.max_weight or (
                self.weight_bits == 0 and weight != 1):
            raise ValueError(f"weight must be in [0, {self.max_weight}], got {weight!r}")
        if unclipped not in (0, 1):
            raise ValueError(f"unclipped must be 0 or 1, got {unclipped!r}")
        if not math.isfinite(loss):
            raise ValueError(f"loss must be finite, got {loss!r}")
        if not 1 <= bits <= 64:
            raise ValueError(f"bits must be in [1, 64], got {bits!r}")
        enc = self.quantizer.encode(flat, rng) * np.uint64(weight)  # (d,)
        if noise is not None:
            z = np.asarray(noise)
            if z.shape != enc.shape or z.dtype.kind not in "iu":
                raise ValueError(f"noise must be an integer array of shape {enc.shape}, got "
                                 f"{z.dtype} {z.shape}")
            if z.size and int(np.abs(z.astype(np.int64)).max()) > self.noise_bound:
                raise ValueError(f"noise share exceeds noise_bound {self.noise_bound}")
            enc = enc + z.astype(np.int64).astype(np.uint64)  # two's complement: mod 2^64
        scaled = min(max(float(loss), 0.0), self.loss_max) * (1 << self.loss_frac_bits)
        loss_fixed = round(scaled * int(weight))
        x = np.concatenate([enc, np.array([int(weight), int(unclipped), loss_fixed],
                                          dtype=np.uint64)])  # (d + 3,)
        if bits < 64:
            x &= np.uint64((1 << bits) - 1)
        return x

    def decode(self, total: np.ndarray, *, n: int, bits: int) -> DecodedSum:
        """The totals from the sum mod 2^bits of at most n clients' vectors."""
        total = np.asarray(total, dtype=np.uint64)
        if total.ndim != 1 or len(total) < META_SLOTS:
            raise ValueError(f"total must be 1-D with >= {META_SLOTS} slots, got "
                             f"{total.shape}")
        top = n * (self.max_update + self.noise_bound)  # larger values are negative
        upd = total[:-META_SLOTS]
        vals = upd.astype(np.float64)  # (d,)
        if self.noise_bound and top < (1 << bits) - 1:
            neg = upd > np.uint64(top)
            vals[neg] -= float(1 << bits)
        weight, unclipped, loss_fixed = (int(v) for v in total[-META_SLOTS:])
        q = self.quantizer
        update_sum = vals * q.step - weight * q.clip_range
        return DecodedSum(update_sum=update_sum, weight=weight, unclipped=unclipped,
                          loss_sum=loss_fixed / (1 << self.loss_frac_bits))


def layout_for(section: Any) -> SumLayout:
    """The layout of a secure-aggregation config section.

    Duck-typed (:class:`fedpriv.config.SecAggConfig`): ``clip_range`` and ``bits``;
    ``noise_bound`` when the section has one.
    """
    return SumLayout(quantizer=Quantizer(clip_range=float(section.clip_range),
                                         bits=int(section.bits)),
                     noise_bound=int(getattr(section, "noise_bound", 0)))
