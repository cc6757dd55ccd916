"""The parameters one round of distributed DP runs with, and what follows from them.

Symbols (KLS21 = Kairouz, Liu & Steinke 2021, arXiv:2102.06387; AKL21 = Agarwal, Kairouz &
Liu 2021, arXiv:2110.04995): C the clip norm, d the update's length and d' = 2^ceil(log2
d) the rotated length, gamma the scale (real units -> integer units; KLS21 call the
grid's step "granularity gamma", which is 1 / gamma here; AKL21's scale s is gamma),
beta the conditional-rounding parameter (KLS21, Theorem 1), b the modulus bits, and the
local variance V of one client's noise share: ``V = 2 mu`` for Sk(mu, mu), ``V = sigma^2``
for N_Z(0, sigma^2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedpriv.privacy.discrete.discrete_gaussian import MAX_SIGMA
from fedpriv.privacy.discrete.rotation import padded_dimension
from fedpriv.privacy.discrete.rounding import l1_sensitivity, rounded_l2_bound
from fedpriv.privacy.discrete.skellam import MAX_POISSON_MEAN
from fedpriv.privacy.discrete.wraparound import wrap_probability
from fedpriv.privacy.events import DistributedNoiseEvent, Mechanism

__all__ = ["DEFAULT_BETA", "DistributedDpParams"]

#: KLS21's choice in their experiments (Section 6): beta = exp(-1/2).
DEFAULT_BETA = math.exp(-0.5)
_MAX_INT_NORM = 2.0 ** 62


def _real(obj: object, name: str, lo: float, hi: float, *, lo_open: bool = False) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) or (
            value < lo or value >= hi or (lo_open and value == lo)):
        left = "(" if lo_open else "["
        raise ValueError(f"{name} must be in {left}{lo:g}, {hi:g}), got {value!r}")
    object.__setattr__(obj, name, float(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class DistributedDpParams:
    """One configuration of the distributed mechanism (what every client encodes with).

    Attributes
    ----------
    mechanism : Mechanism
        ``SKELLAM_SUM`` or ``DDG_SUM``.
    clip : float
        C in (0, inf), the L2 clip of each update.
    dimension : int
        d >= 1, the length of the flat update.
    scale : float
        gamma in (0, inf): integer units per real unit.
    local_variance : float
        V in [0, inf): one client's noise share per coordinate (2 mu or sigma^2); 0 turns
        noise off (epsilon = inf; for tests and for measuring the rounding error alone).
    bits : int
        b in [2, 64]: the secure sum is taken mod 2^b.
    beta : float
        beta in [0, 1), the conditional-rounding parameter (0: unconditional bound).
    """

    mechanism: Mechanism
    clip: float
    dimension: int
    scale: float
    local_variance: float
    bits: int
    beta: float = DEFAULT_BETA

    def __post_init__(self) -> None:
        if self.mechanism not in (Mechanism.SKELLAM_SUM, Mechanism.DDG_SUM):
            raise ValueError(f"mechanism must be one of {{{Mechanism.SKELLAM_SUM.value}, "
                             f"{Mechanism.DDG_SUM.value}}}, got {self.mechanism!r}")
        _real(self, "clip", 0.0, math.inf, lo_open=True)
        if isinstance(self.dimension, bool) or not isinstance(self.dimension, int) or (
                self.dimension < 1):
            raise ValueError(f"dimension must be an integer >= 1, got {self.dimension!r}")
        _real(self, "scale", 0.0, math.inf, lo_open=True)
        top = (MAX_SIGMA ** 2 if self.mechanism is Mechanism.DDG_SUM
               else 2 * MAX_POISSON_MEAN)
        _real(self, "local_variance", 0.0, top * (1 + 1e-15))
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not (
                2 <= self.bits <= 64):
            raise ValueError(f"bits must be an integer in [2, 64], got {self.bits!r}")
        _real(self, "beta", 0.0, 1.0)
        if self.l2_sensitivity >= _MAX_INT_NORM:
            raise ValueError(f"scale * clip must keep the rounded norm below 2^62, got scale "
                             f"{self.scale!r} and clip {self.clip!r}")

    @property
    def padded_dimension(self) -> int:
        """The encoded length d' = 2^ceil(log2 d)."""
        return padded_dimension(self.dimension)

    @property
    def scaled_clip(self) -> float:
        """The scaled clip gamma C: a client's norm bound in integer units, unrounded."""
        return self.scale * self.clip

    @property
    def l2_sensitivity(self) -> float:
        """Delta_2 after conditional rounding (KLS21, Theorem 1, eq. 2), integer units."""
        return rounded_l2_bound(self.scaled_clip, self.padded_dimension, self.beta)

    @property
    def l1_sensitivity(self) -> float:
        """Delta_1 = min(sqrt(d') Delta_2, Delta_2^2), integer units."""
        return l1_sensitivity(self.l2_sensitivity, self.padded_dimension)

    def wrap_probability(self, clients: int) -> float:
        """Bound on P[the sum of ``clients`` encodings wraps mod 2^b] (see wraparound)."""
        return wrap_probability(self.mechanism, scaled_clip=self.scaled_clip,
                                local_variance=self.local_variance, clients=clients,
                                dim=self.padded_dimension, bits=self.bits)

    def mean_error_bound(self) -> float:
        """Deterministic L2 bound on |decoded mean - clipped mean| without noise or wrap.

        Each client's rounding moves its rotated, scaled vector by less than sqrt(d')
        (every coordinate by less than 1), rotation preserves norms, so the mean of n
        decoded updates is off by less than ``sqrt(d') / gamma`` whatever n is.
        """
        return math.sqrt(self.padded_dimension) / self.scale

    def mean_rounding_rms(self, clients: int) -> float:
        """``sqrt(d' / (4 n)) / gamma``: the RMS (L2) rounding error of the decoded mean.

        Unconditional stochastic rounding has per-coordinate variance at most 1/4 and is
        independent across clients; conditioning on the norm changes this by the bias of
        :func:`~fedpriv.privacy.discrete.rounding.conditional_rounding_bias_bound`.
        """
        return math.sqrt(self.padded_dimension / (4 * clients)) / self.scale

    def mean_noise_std(self, clients: int) -> float:
        """Per-coordinate std of the noise in the decoded mean: ``sqrt(n V) / (n gamma)``.

        Exact for Skellam; an upper bound for the discrete Gaussian (variance <= sigma^2).
        """
        return math.sqrt(clients * self.local_variance) / (clients * self.scale)

    def event(self, *, clients: int, sampling_rate: float, rounds: int = 1
              ) -> DistributedNoiseEvent:
        """The ledger event for ``rounds`` sums of ``clients`` encodings made with these."""
        return DistributedNoiseEvent(
            mechanism=self.mechanism, l1_sensitivity=self.l1_sensitivity,
            l2_sensitivity=self.l2_sensitivity, local_variance=self.local_variance,
            clients=clients, dimension=self.padded_dimension, sampling_rate=sampling_rate,
            bits=self.bits, rounds=rounds)
