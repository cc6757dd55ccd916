"""Adaptive clipping to a quantile of the update norms (Andrew et al. 2021).

Andrew, Thakkar, McMahan & Ramaswamy, "Differentially Private Learning with Adaptive
Clipping", NeurIPS 2021, Algorithm 1. Each client reports ``b_i = 1[||Delta_i|| <= C]``
(the update was *not* clipped); the server forms the noised fraction
``b_bar = (sum_i b_i + N(0, sigma_b^2)) / m`` and moves the clip geometrically,
``C <- C * exp(-eta_C * (b_bar - gamma))``: when more than a fraction gamma of updates are
unclipped, C shrinks; otherwise it grows, so C converges to the gamma-quantile of the
norms. (Flower's implementation counts *clipped* updates against gamma, which moves C the
wrong way; see the tests.) Noising the count costs privacy, paid for by raising the
update noise: Theorem 1 gives ``sigma_Delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)`` for a total
noise multiplier z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from fedpriv.privacy.noise import GaussianSource

__all__ = ["AdaptiveClip", "corrected_noise_multiplier"]


def corrected_noise_multiplier(z: float, sigma_b: float) -> float:
    """The update noise multiplier sigma_Delta so the round's total multiplier is z.

    Andrew et al. 2021, Theorem 1 (Section 3): releasing the clipped sum with multiplier
    sigma_Delta and the count with std sigma_b equals one Gaussian mechanism with
    ``z = (sigma_Delta^-2 + (2 sigma_b)^-2)^(-1/2)``.

    Raises
    ------
    ValueError
        When ``sigma_b <= z / 2`` (the count alone would spend the whole budget).
    """
    if not z > 0:
        raise ValueError(f"z must be > 0, got {z!r}")
    if not sigma_b > z / 2:
        raise ValueError(
            f"sigma_b must be > z / 2 = {z / 2:g} for the update noise to be finite, "
            f"got {sigma_b!r}; raise clip-count-stddev or the cohort size"
        )
    return (z ** -2 - (2 * sigma_b) ** -2) ** -0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptiveClip:
    """The state of the geometric clip update.

    Attributes
    ----------
    clip : float
        C, the current clip norm.
    target_quantile : float
        gamma in (0, 1).
    learning_rate : float
        eta_C (> 0).
    count_stddev : float
        sigma_b, std of the noise on the unclipped count (>= 0; 0 only for tests).
    """

    clip: float
    target_quantile: float
    learning_rate: float
    count_stddev: float

    def __post_init__(self) -> None:
        if not self.clip > 0 or not math.isfinite(self.clip):
            raise ValueError(f"clip must be in (0, inf), got {self.clip!r}")
        if not 0 < self.target_quantile < 1:
            raise ValueError(f"target_quantile must be in (0, 1), got {self.target_quantile!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not self.count_stddev >= 0:
            raise ValueError(f"count_stddev must be >= 0, got {self.count_stddev!r}")

    def update(self, unclipped: float, cohort: int, noise: GaussianSource
               ) -> tuple[AdaptiveClip, float]:
        """The state after a round where ``unclipped`` of ``cohort`` updates fit under C.

        Returns the new state and the noised unclipped fraction b_bar. An empty cohort
        leaves C unchanged.
        """
        if cohort < 0 or not 0 <= unclipped <= max(cohort, 0) + 1e-9:
            raise ValueError(f"unclipped must be in [0, cohort={cohort}], got {unclipped!r}")
        if cohort == 0:
            return self, float("nan")
        noised = unclipped + float(noise((1,), self.count_stddev)[0])
        b_bar = noised / cohort
        clip = self.clip * math.exp(-self.learning_rate * (b_bar - self.target_quantile))
        return replace(self, clip=clip), b_bar
