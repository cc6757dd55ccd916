"""The audit's own epsilon for distributed-DP ledgers, written apart from the run's.

A run accounts its :class:`~fedpriv.privacy.events.DistributedNoiseEvent` with
:mod:`fedpriv.privacy.discrete.rdp` (numpy, vectorised, dp-accounting's conversion).
``fedpriv audit`` must not trust that code, and the PLD/PRV accountants have no form for
discrete sums, so this module recomputes the same published bounds from the papers, with
none of that code: scalar Python arithmetic per order, its own subsampling sum and its
own (epsilon, delta) conversion. It also evaluates the exact Renyi divergence of the
summed noise in one dimension (:func:`skellam_divergence_1d`, :func:`ddg_divergence_1d`),
which no bound may undercut; the tests use it to check the closed forms.

Bounds (integer orders alpha >= 2; all in the integer units of the sum):

- Skellam sum, Agarwal, Kairouz & Liu 2021 (NeurIPS, arXiv:2110.04995), Theorem 3.5:
  noise of variance mu per coordinate (n shares of variance V: mu = n V),
  ``alpha D2^2 / (2 mu) + min{((2 alpha - 1) D2^2 + 6 D1) / (4 mu^2), 3 D1 / (2 mu)}``.
- Distributed discrete Gaussian, Kairouz, Liu & Steinke 2021 (ICML, arXiv:2102.06387),
  Proposition 14: n shares of N_Z(0, s^2) in d dimensions (s >= 1/2), with
  ``tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 s^2 k / (k + 1))``, the least of
  ``alpha D2^2 / (2 n s^2) + tau d``,
  ``alpha / 2 (D2^2 / (n s^2) + 2 tau D1 / (sqrt(n) s) + tau^2 d)`` and
  ``alpha / 2 (D2 / (sqrt(n) s) + tau sqrt(d))^2``.
- Poisson sampling (q < 1): Zhu & Wang 2019 (ICML), Theorem 6, capped by the unsampled
  value. Gaussian events (a mixed ledger): Mironov, Talwar & Zhang 2019
  (arXiv:1908.10530), Section 3.3, the exact integer-order sum.
- Composition: Mironov 2017 (CSF), Proposition 1 (RDP adds); conversion: Canonne, Kamath
  & Steinke 2020 (arXiv:2004.00010v4), Proposition 12,
  ``eps = min_alpha rdp(alpha) + log(1 - 1/alpha) - (log delta + log alpha) / (alpha - 1)``.

Neighbouring relation, as in both papers: one client's update changes, the n noise shares
stay in the sum (zero-out).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
from scipy import stats
from scipy.special import logsumexp

from fedpriv.privacy.events import (
    DistributedNoiseEvent,
    DpEvent,
    DpSgdEvent,
    GaussianSumEvent,
    Mechanism,
)

__all__ = [
    "BOUNDS",
    "CONVERSION",
    "ORDERS",
    "ddg_divergence_1d",
    "independent_epsilon",
    "independent_rdp",
    "skellam_divergence_1d",
]

#: Integer Renyi orders evaluated (the bounds and Zhu & Wang need integers).
ORDERS: tuple[int, ...] = tuple(range(2, 257))

#: The bound used for each distributed mechanism, as the audit names it.
BOUNDS = {
    Mechanism.SKELLAM_SUM.value: "Agarwal, Kairouz & Liu 2021 (NeurIPS, arXiv:2110.04995), "
                                 "Theorem 3.5 (multi-dimensional Skellam)",
    Mechanism.DDG_SUM.value: "Kairouz, Liu & Steinke 2021 (ICML, arXiv:2102.06387), "
                             "Proposition 14 (sum of discrete Gaussians)",
}

#: How per-round RDP becomes the run's (epsilon, delta).
CONVERSION = ("RDP summed over rounds (Mironov 2017, Prop. 1), converted by Canonne, "
              "Kamath & Steinke 2020, Prop. 12, at integer orders 2..256")


def _skellam(alpha: int, d1: float, d2: float, mu: float) -> float:
    first = alpha * d2 * d2 / (2.0 * mu)
    tail_a = ((2 * alpha - 1) * d2 * d2 + 6.0 * d1) / (4.0 * mu * mu)
    tail_b = 3.0 * d1 / (2.0 * mu)
    return first + (tail_a if tail_a < tail_b else tail_b)


def _ddg(alpha: int, d1: float, d2: float, s2: float, n: int, dim: int) -> float:
    tau = 0.0
    for k in range(1, n):
        tau += math.exp(-2.0 * math.pi ** 2 * s2 * k / (k + 1.0))
    tau *= 10.0
    ns = n * s2
    one = alpha * d2 * d2 / (2.0 * ns) + tau * dim
    two = alpha / 2.0 * (d2 * d2 / ns + 2.0 * tau * d1 / math.sqrt(ns) + tau * tau * dim)
    three = alpha / 2.0 * (d2 / math.sqrt(ns) + tau * math.sqrt(dim)) ** 2
    return min(one, two, three)


def _zhu_wang(base: Callable[[int], float], q: float, alpha: int) -> float:
    """Zhu & Wang 2019, Theorem 6, at one integer order, capped by ``base(alpha)``."""
    if q >= 1.0:
        return base(alpha)
    logs = [(alpha - 1) * math.log1p(-q) + math.log1p((alpha - 1) * q)]
    for ell in range(2, alpha + 1):
        e = base(ell)
        if math.isinf(e):
            return base(alpha)
        log_comb = math.lgamma(alpha + 1) - math.lgamma(ell + 1) - math.lgamma(alpha - ell + 1)
        logs.append(log_comb + (0.0 if ell == 2 else math.log(3.0)) + ell * math.log(q)
                    + (alpha - ell) * math.log1p(-q) + (ell - 1) * e)
    top = max(logs)
    bound = (top + math.log(sum(math.exp(x - top) for x in logs))) / (alpha - 1)
    return min(bound, base(alpha))


def _gaussian(alpha: int, sigma: float, q: float) -> float:
    """Mironov, Talwar & Zhang 2019, Section 3.3: sampled Gaussian, integer alpha, exact."""
    if sigma == 0:
        return math.inf
    if q >= 1.0:
        return alpha / (2.0 * sigma * sigma)
    logs = [math.lgamma(alpha + 1) - math.lgamma(k + 1) - math.lgamma(alpha - k + 1)
            + (alpha - k) * math.log1p(-q) + k * math.log(q) + (k * k - k) / (2 * sigma * sigma)
            for k in range(alpha + 1)]
    top = max(logs)
    return (top + math.log(sum(math.exp(x - top) for x in logs))) / (alpha - 1)


def independent_rdp(event: DpEvent, alpha: int) -> float:
    """The RDP at integer order ``alpha`` of one ledger event, all its rounds included."""
    if isinstance(event, DistributedNoiseEvent):
        v, n = event.local_variance, event.clients
        d1, d2 = event.l1_sensitivity, event.l2_sensitivity
        if event.mechanism is Mechanism.SKELLAM_SUM:
            if v <= 0:
                return math.inf

            def base(a: int) -> float:
                return _skellam(a, d1, d2, n * v)
        else:
            if v < 0.25:  # outside Proposition 14 (sigma >= 1/2), and v = 0: no noise
                return math.inf

            def base(a: int) -> float:
                return _ddg(a, d1, d2, v, n, event.dimension)
        return event.rounds * _zhu_wang(base, event.sampling_rate, alpha)
    if isinstance(event, DpSgdEvent | GaussianSumEvent):
        if event.count == 0:
            return 0.0
        return event.count * _gaussian(alpha, event.noise_multiplier, event.sampling_rate)
    raise ValueError(f"event must be a fedpriv DP event, got {event!r}")


def independent_epsilon(events: Iterable[DpEvent], delta: float) -> float:
    """Epsilon at ``delta`` of the composed events, by this module's code alone.

    Returns 0 for no events and ``inf`` when every order diverges.
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    events = list(events)
    if not events:
        return 0.0
    best = math.inf
    for alpha in ORDERS:
        total = sum(independent_rdp(ev, alpha) for ev in events)
        if math.isinf(total):
            continue
        eps = (total + math.log1p(-1.0 / alpha)
               - (math.log(delta) + math.log(alpha)) / (alpha - 1))
        best = min(best, eps)
    return max(best, 0.0)


def _divergence(alpha: float, log_p: np.ndarray, log_q: np.ndarray) -> float:
    """D_alpha(P || Q) = log sum P^alpha Q^(1 - alpha) / (alpha - 1).

    Summed where both log-pmfs are finite (far tails underflow to -inf). Dropping
    terms only lowers the sum, so the result is a lower bound on the exact divergence:
    a bound that falls below it is wrong.
    """
    keep = np.isfinite(log_p) & np.isfinite(log_q)
    return float(logsumexp(alpha * log_p[keep] + (1 - alpha) * log_q[keep])) / (alpha - 1)


def skellam_divergence_1d(alpha: float, shift: int, mu: float) -> float:
    """Exact D_alpha(Sk + shift || Sk) for Skellam noise of variance mu (numerically).

    ``Sk = Poisson(mu/2) - Poisson(mu/2)``; summed over the support within
    ``|shift| + 40 sqrt(mu) + 50`` of 0 (the mass outside is far below float precision).
    """
    reach = abs(int(shift)) + int(40 * math.sqrt(mu)) + 50
    k = np.arange(-reach, reach + 1)  # (K,)
    noise = stats.skellam(mu / 2, mu / 2)
    return _divergence(alpha, noise.logpmf(k - int(shift)), noise.logpmf(k))


def ddg_divergence_1d(alpha: float, shift: int, sigma2: float, clients: int) -> float:
    """Exact D_alpha(S + shift || S) for S the sum of n draws of N_Z(0, sigma^2).

    The pmf of one share is normalised on ``|k| <= 40 sigma + 10`` and convolved n times.
    """
    half = int(40 * math.sqrt(sigma2)) + 10
    k = np.arange(-half, half + 1)
    one = np.exp(-k.astype(np.float64) ** 2 / (2 * sigma2))
    one /= one.sum()
    pmf = one
    for _ in range(clients - 1):
        pmf = np.convolve(pmf, one)
    pmf = np.pad(pmf, abs(int(shift)))  # room for the shift on both sides
    shifted = np.roll(pmf, int(shift))
    with np.errstate(divide="ignore"):
        return _divergence(alpha, np.log(shifted), np.log(pmf))
