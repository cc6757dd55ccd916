"""Adaptive clipping to a quantile of the update norms (Andrew et al. 2021).

Andrew, Thakkar, McMahan & Ramaswamy, "Differentially Private Learning with Adaptive
Clipping", NeurIPS 2021, Algorithm 1. Each client reports ``b_i = 1[||Delta_i|| <= C]``
(the update was *not* clipped); the server forms the noised fraction of the *centred*
count over the *expected* cohort m, ``b_bar = 1/2 + (sum_i (b_i - 1/2) + N(0, sigma_b^2))
/ m``, and moves the clip geometrically,
``C <- C * exp(-eta_C * (b_bar - gamma))``: when more than a fraction gamma of updates are
unclipped, C shrinks; otherwise it grows, so C converges to the gamma-quantile of the
norms. (Flower's implementation counts *clipped* updates against gamma, which moves C the
wrong way; see the tests.) Noising the count costs privacy, paid for by raising the
update noise: Theorem 1 gives ``sigma_Delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)`` for a total
noise multiplier z.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace

from fedpriv.privacy.noise import GaussianSource

__all__ = [
    "AdaptiveClip",
    "combined_noise_multiplier",
    "corrected_noise_multiplier",
    "geometric_clip_update",
    "noised_unclipped_fraction",
]


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


def combined_noise_multiplier(update_noise_multiplier: float, count_stddev: float) -> float:
    """The single Gaussian mechanism's multiplier z of a round with adaptive clipping.

    Andrew et al. 2021, Theorem 1: releasing the clipped sum with multiplier
    ``z_Delta`` and the *centred* unclipped count ``sum_i (b_i - 1/2)`` (sensitivity 1/2)
    with noise std ``sigma_b`` is one Gaussian mechanism with
    ``z = (z_Delta^-2 + (2 sigma_b)^-2)^(-1/2)``. ``sigma_b = 0`` is allowed only as
    ``inf`` (no count released); it gives ``z = 0`` (no privacy).
    """
    if not update_noise_multiplier > 0:
        raise ValueError(
            f"update_noise_multiplier must be > 0, got {update_noise_multiplier!r}")
    if not count_stddev >= 0:
        raise ValueError(f"count_stddev must be >= 0, got {count_stddev!r}")
    if count_stddev == 0:
        return 0.0
    if math.isinf(count_stddev):
        return float(update_noise_multiplier)
    return float((update_noise_multiplier ** -2 + (2 * count_stddev) ** -2) ** -0.5)


def noised_unclipped_fraction(unclipped: float, count: int, expected_cohort: float,
                              count_stddev: float, noise: GaussianSource) -> float:
    """``b_bar = 1/2 + (sum_i (b_i - 1/2) + N(0, sigma_b^2)) / m``.

    Andrew et al. 2021, Algorithm 1 with the centred indicator of Section 3: each client
    contributes ``b_i - 1/2`` (so adding or removing one client moves the sum by at most
    1/2, which is what Theorem 1 charges for), the noise is added to the sum, and the sum
    is divided by the *expected* cohort size m, never by the number that replied (which
    would depend on who took part). With an empty cohort the release is noise only.

    Parameters
    ----------
    unclipped : float
        ``sum_i b_i``, how many of the round's updates had ``||Delta_i|| <= C``.
    count : int
        How many updates are in the sum (>= 0); the centring subtracts ``count / 2``.
    expected_cohort : float
        m, the expected number of clients per round (> 0; ``q N`` under Poisson sampling).
    count_stddev : float
        sigma_b, std of the noise on the count (>= 0).
    noise : GaussianSource
        Where the noise comes from (``SecureGaussian`` in production).
    """
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
        raise ValueError(f"count must be an integer >= 0, got {count!r}")
    if not 0 < expected_cohort < math.inf:
        raise ValueError(f"expected_cohort must be in (0, inf), got {expected_cohort!r}")
    if not 0 <= unclipped <= count + 1e-6:  # slack for a dequantised secure sum
        raise ValueError(f"unclipped must be in [0, count={count}], got {unclipped!r}")
    centred = unclipped - count / 2
    return 0.5 + (centred + float(noise((1,), count_stddev)[0])) / expected_cohort


def geometric_clip_update(clip: float, b_bar: float, target_quantile: float,
                          learning_rate: float) -> float:
    """``C * exp(-eta_C * (b_bar - gamma))``: Andrew et al. 2021, Section 2, eq. 4.

    The geometric step on the pinball loss of the gamma-quantile: too many unclipped
    updates (``b_bar > gamma``) shrink C, too few grow it.
    """
    return clip * math.exp(-learning_rate * (b_bar - target_quantile))


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
            raise ValueError(
                f"target_quantile must be in (0, 1), got {self.target_quantile!r}")
        if not 0 < self.learning_rate < math.inf:
            raise ValueError(
                f"learning_rate must be in (0, inf), got {self.learning_rate!r}")
        if not 0 <= self.count_stddev < math.inf:
            raise ValueError(f"count_stddev must be in [0, inf), got {self.count_stddev!r}")

    def update(self, unclipped: float, count: int, expected_cohort: float,
               noise: GaussianSource) -> tuple[AdaptiveClip, float]:
        """The state after a round where ``unclipped`` of ``count`` updates fit under C.

        Returns the new state (C moved by :func:`geometric_clip_update`) and the noised
        unclipped fraction b_bar (:func:`noised_unclipped_fraction`, centred and divided
        by the expected cohort ``m``). An empty round is still a release (noise only) and
        moves C like any other, as the mechanism that was accounted requires.
        """
        b_bar = noised_unclipped_fraction(unclipped, count, expected_cohort,
                                          self.count_stddev, noise)
        clip = geometric_clip_update(self.clip, b_bar, self.target_quantile,
                                     self.learning_rate)
        return replace(self, clip=clip), b_bar
