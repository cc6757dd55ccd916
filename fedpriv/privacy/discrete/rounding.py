"""Conditional randomised rounding to the integer grid, and the sensitivities it leaves.

Kairouz, Liu & Steinke 2021 (ICML; arXiv:2102.06387), Section 4.1 ("conditional
randomised rounding"; Proposition 22 in the arXiv version) and the sensitivity bound of
their Theorem 1, eq. (2). Each coordinate of the scaled, rotated vector ``x`` (norm at
most ``c``, here in integer units: ``c = gamma C`` with fedpriv's scale gamma, which is
KLS21's ``1 / gamma``) is rounded to ``floor(x_j)`` or ``floor(x_j) + 1`` with
``P[up] = x_j - floor(x_j)``, so ``E[round(x)] = x`` (unbiased), and the whole vector is
rounded again until ``||round(x)||_2 <= Delta_2``, where

    Delta_2^2 = min{ c^2 + d/4 + sqrt(2 ln(1/beta)) (c + sqrt(d)/2),  (c + sqrt(d))^2 }.

The second term holds for every rounding (each coordinate moves by less than 1); the
first holds with probability at least 1 - beta (KLS21, Theorem 1), so the expected
number of tries is at most 1 / (1 - beta) (beta = 0 keeps only the second term and never
retries). Delta_2 is the L2 sensitivity, in integer units, of what a client adds to the
sum. For integer vectors ``||v||_1 <= ||v||_2^2`` and always ``||v||_1 <= sqrt(d)
||v||_2``, so the L1 sensitivity is ``Delta_1 = min(sqrt(d) Delta_2, Delta_2^2)``
(Agarwal, Kairouz & Liu 2021, Section 4, use the same pair).

Conditioning costs a little bias. With rejection probability ``p <= beta`` and
``||round(x) - x||_2 < sqrt(d)``: ``||E[round(x) | accepted] - x||_2 <= p / (1 - p)
sqrt(d)`` (E[X | A] - E[X] = -E[(X - EX) 1_{not A}] / P[A]) — see
:func:`conditional_rounding_bias_bound`.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

__all__ = [
    "conditional_round",
    "conditional_rounding_bias_bound",
    "l1_sensitivity",
    "rounded_l2_bound",
    "stochastic_round",
]


def _check_dim(d: int) -> int:
    if isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 1:
        raise ValueError(f"d must be an integer >= 1, got {d!r}")
    return int(d)


def _check_beta(beta: float) -> float:
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    return float(beta)


def rounded_l2_bound(norm: float, d: int, beta: float) -> float:
    """Delta_2: the L2 norm after conditional rounding of a vector of norm <= ``norm``.

    KLS21, Theorem 1, eq. (2), in integer units (``norm`` is c = gamma C, already scaled).

    Parameters
    ----------
    norm : float
        c >= 0, the norm bound of the scaled vector before rounding.
    d : int
        Its dimension (the padded d' after rotation).
    beta : float
        In [0, 1): the probability bound on a rejected rounding; 0 for the
        unconditional bound ``c + sqrt(d)``.
    """
    if isinstance(norm, bool) or not isinstance(norm, int | float) or not (
            0 <= norm < math.inf):
        raise ValueError(f"norm must be in [0, inf), got {norm!r}")
    d, beta = _check_dim(d), _check_beta(beta)
    always = norm + math.sqrt(d)
    if beta == 0:
        return always
    whp_sq = norm ** 2 + d / 4 + math.sqrt(2 * math.log(1 / beta)) * (norm + math.sqrt(d) / 2)
    return min(always, math.sqrt(whp_sq))


def l1_sensitivity(l2: float, d: int) -> float:
    """Delta_1 = min(sqrt(d) Delta_2, Delta_2^2): an L1 bound for integer vectors."""
    d = _check_dim(d)
    if isinstance(l2, bool) or not isinstance(l2, int | float) or not 0 <= l2 < math.inf:
        raise ValueError(f"l2 must be in [0, inf), got {l2!r}")
    return min(math.sqrt(d) * l2, l2 * l2)


def stochastic_round(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``floor(x) + Bernoulli(x - floor(x))`` coordinate-wise, as int64: E[result] = x."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("x must be finite, got NaN or inf")
    if x.size and np.abs(x).max() >= 2.0 ** 62:
        raise ValueError(f"x must lie in (-2^62, 2^62), got max |x| = {np.abs(x).max():g}")
    low = np.floor(x)
    return (low + (rng.random(x.shape) < (x - low))).astype(np.int64)


def conditional_round(x: np.ndarray, bound: float, rng: np.random.Generator, *,
                      max_tries: int = 100) -> tuple[np.ndarray, int]:
    """Stochastic rounding, repeated until ``||result||_2 <= bound`` (KLS21, Section 4.1).

    Parameters
    ----------
    x : numpy.ndarray
        The scaled, rotated vector (finite floats).
    bound : float
        Delta_2 > 0 (usually :func:`rounded_l2_bound` of the norm bound of ``x``).
    rng : numpy.random.Generator
        The rounding coins. They need not be secret: the sensitivity holds for every
        accepted rounding, whatever the coins.
    max_tries : int
        The cap (>= 1). With ``||x|| <= c`` and ``bound = rounded_l2_bound(c, d, beta)``
        a rounding is rejected with probability at most beta, so hitting the cap has
        probability at most ``beta ** max_tries``.

    Returns
    -------
    tuple of (numpy.ndarray, int)
        The int64 rounded vector and the number of tries it took (>= 1).

    Raises
    ------
    ValueError
        For a non-positive bound or cap, non-finite x, or when ``max_tries`` roundings all
        exceed the bound (typically because ``||x||`` exceeds the norm the bound was
        computed for); the message gives both norms.
    """
    if isinstance(bound, bool) or not isinstance(bound, int | float) or not (
            0 < bound < math.inf):
        raise ValueError(f"bound must be in (0, inf), got {bound!r}")
    if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 1:
        raise ValueError(f"max_tries must be an integer >= 1, got {max_tries!r}")
    x = np.asarray(x, dtype=np.float64)
    bound_sq = float(bound) ** 2
    # ||v||^2 in float64 is off by at most ~(d + 2) 2^-52 relative (each square and the
    # sum are rounded); inside that band the test is redone in exact integer arithmetic,
    # so every accepted vector meets the bound exactly and Delta_2 is a true sensitivity.
    slack = 4 * (x.size + 2) * 2.0 ** -53
    norm_sq = math.inf
    for tries in range(1, max_tries + 1):
        rounded = stochastic_round(x, rng)
        as_float = rounded.astype(np.float64)
        norm_sq = float(np.dot(as_float, as_float))
        if norm_sq <= bound_sq * (1 - slack) or (
                norm_sq <= bound_sq * (1 + slack) and _exactly_within(rounded, bound)):
            return rounded, tries
    raise ValueError(
        f"conditional rounding exceeded the L2 bound {bound:g} in all {max_tries} tries "
        f"(last rounded norm {math.sqrt(norm_sq):g}, input norm {np.linalg.norm(x):g}); "
        "the input norm is above the one the bound was computed for, or beta is too small")


def _exactly_within(v: np.ndarray, bound: float) -> bool:
    """``sum v_j^2 <= bound^2`` in exact (integer and rational) arithmetic."""
    return sum(int(a) * int(a) for a in v.tolist()) <= Fraction(bound) ** 2


def conditional_rounding_bias_bound(d: int, reject_probability: float) -> float:
    """``p / (1 - p) sqrt(d)``: bound on ``||E[round(x) | accepted] - x||_2``."""
    d = _check_dim(d)
    p = _check_beta(reject_probability)
    return p / (1 - p) * math.sqrt(d)
