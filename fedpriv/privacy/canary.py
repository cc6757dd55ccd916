"""Canary clients and the one-shot empirical privacy estimate of a user-level run.

Andrew, Kairouz, Oh, Oprea, McMahan & Suriyakumar, "One-shot Empirical Privacy
Estimation for Federated Learning" (ICLR 2024), Algorithm 1 and Section 3: k canary
clients each send a fixed random unit direction ``c_j`` (scaled to the round's clip norm)
whenever they are sampled. After training, the cosine between the final model delta
``Delta = theta_T - theta_0`` and each *inserted* canary's direction is compared with the
cosines of directions that were *never* inserted (which, in dimension d, are
approximately ``N(0, 1/d)``). Fitting a Gaussian to each set, the estimate is the epsilon
at delta that separates the two Gaussians (the privacy profile of the pair; their
eq. (2) for the final-model variant). A correct DP mechanism keeps the estimate at or
below the accounted epsilon; a mechanism that adds too little noise shows up as an
estimate above it.

Notes
-----
The directions come from a key that only the canaries and the auditor hold (a random
256-bit value in the run directory), so the server cannot single them out.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "canary_direction",
    "cosines",
    "empirical_epsilon",
    "gaussian_pair_epsilon",
]


def canary_direction(key: bytes, index: int, dim: int) -> np.ndarray:
    """Unit direction ``c_index`` in R^dim derived from ``key`` (uniform on the sphere).

    A standard normal vector from a generator seeded with SHA-256(key, index), divided
    by its norm; float64, shape ``(dim,)``.
    """
    if len(key) < 16:
        raise ValueError(f"key must be at least 16 bytes, got {len(key)}")
    if index < 0 or dim < 1:
        raise ValueError(f"index must be >= 0 and dim >= 1, got {index} and {dim}")
    seed = hashlib.sha256(key + index.to_bytes(8, "big")).digest()
    rng = np.random.default_rng(np.frombuffer(seed, dtype=np.uint32))
    v = rng.standard_normal(dim)  # (dim,)
    return v / np.linalg.norm(v)


def cosines(delta: np.ndarray, key: bytes, indices: Sequence[int]) -> np.ndarray:
    """cos(Delta, c_j) for each canary index j."""
    flat = np.asarray(delta, dtype=np.float64).ravel()
    norm = float(np.linalg.norm(flat))
    if norm == 0 or not math.isfinite(norm):
        raise ValueError(f"the model delta must have a finite, non-zero norm, got {norm}")
    return np.array([float(flat @ canary_direction(key, j, flat.size)) / norm
                     for j in indices])


def _normal_logpdf(x: np.ndarray, mu: float, sd: float) -> np.ndarray:
    """The log-density of N(mu, sd^2) at ``x``.

    numpy only: a deployed ClientApp imports this module, and scipy.stats would add a
    second of start-up to every message it handles.
    """
    z = (x - mu) / sd
    return -0.5 * z * z - math.log(sd) - 0.5 * math.log(2 * math.pi)


def _delta_of(eps: float, mu_p: float, sd_p: float, mu_q: float, sd_q: float) -> float:
    """``sup_S P(S) - e^eps Q(S)`` for P = N(mu_p, sd_p^2), Q = N(mu_q, sd_q^2)."""
    lo = min(mu_p - 40 * sd_p, mu_q - 40 * sd_q)
    hi = max(mu_p + 40 * sd_p, mu_q + 40 * sd_q)
    x = np.linspace(lo, hi, 100_001)
    log_p = _normal_logpdf(x, mu_p, sd_p)
    log_q = _normal_logpdf(x, mu_q, sd_q)
    # P(x) - e^eps Q(x) where positive, in a numerically safe form
    diff = np.exp(log_p) * -np.expm1(np.minimum(eps + log_q - log_p, 0.0))
    return float(np.trapezoid(diff, x))


def gaussian_pair_epsilon(mu_p: float, sd_p: float, mu_q: float, sd_q: float,
                          delta: float) -> float:
    """The smallest epsilon with both hockey-stick divergences of the pair <= delta.

    With equal standard deviations this is the analytic Gaussian mechanism's epsilon
    for sensitivity ``|mu_p - mu_q| / sd`` (Balle & Wang 2018), which the tests check.
    """
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if not (sd_p > 0 and sd_q > 0):
        raise ValueError(f"standard deviations must be > 0, got {sd_p!r} and {sd_q!r}")

    def worst(eps: float) -> float:
        return max(_delta_of(eps, mu_p, sd_p, mu_q, sd_q),
                   _delta_of(eps, mu_q, sd_q, mu_p, sd_p))

    if worst(0.0) <= delta:
        return 0.0
    lo, hi = 0.0, 1.0
    while worst(hi) > delta:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            return math.inf
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if worst(mid) > delta else (lo, mid)
    return hi


def empirical_epsilon(observed: np.ndarray, unobserved: np.ndarray, delta: float, *,
                      z: float = 0.0) -> float:
    """Andrew et al. 2024's estimate from the two sets of cosines.

    Parameters
    ----------
    observed : numpy.ndarray
        cos(Delta, c_j) for the k inserted canaries (k >= 2).
    unobserved : numpy.ndarray
        cos(Delta, c_j) for directions never inserted (>= 2).
    delta : float
        The run's delta.
    z : float
        0 for the point estimate. With z > 0 the observed mean is first moved z standard
        errors (``sd / sqrt(k)``) towards the unobserved mean: a one-sided lower
        confidence bound on the estimate (z = 1.645: 95 %), which is what an auditor
        should compare with a claim before calling it false.
    """
    observed = np.asarray(observed, dtype=np.float64)
    unobserved = np.asarray(unobserved, dtype=np.float64)
    if observed.size < 2 or unobserved.size < 2:
        raise ValueError("need at least 2 observed and 2 unobserved canary cosines, got "
                         f"{observed.size} and {unobserved.size}")
    mu_p, sd_p = float(np.mean(observed)), float(np.std(observed, ddof=1))
    mu_q, sd_q = float(np.mean(unobserved)), float(np.std(unobserved, ddof=1))
    if z > 0:
        shift = z * sd_p / math.sqrt(observed.size)
        gap = mu_p - mu_q
        mu_p = mu_q + math.copysign(max(abs(gap) - shift, 0.0), gap)
    floor = 1e-12 + 1e-9 * max(abs(mu_p), abs(mu_q))
    # The Gaussian noise is isotropic, so an inserted canary's cosine has the same
    # spread as a never-inserted direction's; the null's spread, estimated from many
    # directions, is used for both (with a few canaries, their own sample spread would
    # make the two fitted variances differ by chance, and unequal variances inflate
    # epsilon without bound).
    sd = max(sd_q, floor)
    return gaussian_pair_epsilon(mu_p, sd, mu_q, sd, delta)
