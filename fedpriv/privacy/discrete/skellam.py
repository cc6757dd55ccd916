"""Poisson and Skellam noise from uniforms: Sk(mu, mu) = Poisson(mu) - Poisson(mu).

Agarwal, Kairouz & Liu 2021, "The Skellam Mechanism for Differentially Private Federated
Learning" (NeurIPS; arXiv:2110.04995), Section 3: the symmetric Skellam variable is the
difference of two independent Poisson(mu) variables; it has mean 0, variance 2 mu and
``P[X = k] = exp(-2 mu) I_|k|(2 mu)`` (I the modified Bessel function, as in
``scipy.stats.skellam(mu, mu)``), and it is closed under summation: n shares of
Sk(mu, mu) sum to exactly Sk(n mu, n mu). Its moment generating function is
``E[exp(lambda X)] = exp(2 mu (cosh lambda - 1))``, which the wrap-around bound uses.

How the Poisson variable is drawn from the uniforms (both methods are exact in real
arithmetic; see the precision note of :mod:`fedpriv.privacy.discrete.discrete_gaussian`,
which applies here too):

- mu < 10: inversion by sequential search — ``K`` is the least k with
  ``u <= F(k) = sum_{j<=k} exp(-mu) mu^j / j!``, the CDF built by the recurrence
  ``p(k) = p(k-1) mu / k`` (Devroye 1986, "Non-Uniform Random Variate Generation",
  Section X.3.2); about mu + 1 steps, vectorised over all draws.
- mu >= 10: Hormann's transformed rejection with squeeze, PTRS (W. Hormann 1993, "The
  transformed rejection method for generating Poisson random variables", Insurance:
  Mathematics and Economics 12, Algorithm PTRS) — two uniforms per proposal, over 90 %
  accepted — the algorithm numpy's ``Generator.poisson`` uses in the same range. The
  acceptance test compares with the Poisson log-pmf in Loader's form
  ``-stirlerr(k) - bd0(k, mu) - log(2 pi k) / 2`` (C. Loader 2000, "Fast and accurate
  computation of binomial probabilities"), which stays accurate for mu up to
  ``MAX_POISSON_MEAN`` where ``-mu + k ln mu - ln k!`` would cancel catastrophically.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln

from fedpriv.privacy.discrete.discrete_gaussian import _check_shape
from fedpriv.privacy.discrete.uniform import UniformSource

__all__ = ["MAX_POISSON_MEAN", "poisson", "poisson_logpmf", "skellam"]

#: Largest Poisson mean sampled: draws (about mu + 40 sqrt(mu)) stay exact in float64.
MAX_POISSON_MEAN = float(2**50)
_INVERSION_BELOW = 10.0
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _check_mu(mu: float) -> float:
    if isinstance(mu, bool) or not isinstance(mu, int | float) or not (
            0 <= mu <= MAX_POISSON_MEAN):
        raise ValueError(f"mu must be in [0, {MAX_POISSON_MEAN:g}], got {mu!r}")
    return float(mu)


def _stirlerr(k: np.ndarray) -> np.ndarray:
    """Stirling's error ln k! - ((k + 1/2) ln k - k + ln(2 pi) / 2), for k >= 1."""
    k = np.asarray(k, np.float64)
    small = k < 16
    ks = np.where(small, k, 16.0)
    direct = gammaln(ks + 1) - (ks + 0.5) * np.log(ks) + ks - _HALF_LOG_2PI
    kl = np.where(small, 16.0, k)
    series = (1 / 12 - (1 / 360 - (1 / 1260 - 1 / (1680 * kl * kl)) / (kl * kl)) / (kl * kl)
              ) / kl
    return np.where(small, direct, series)


def poisson_logpmf(k: np.ndarray, mu: float) -> np.ndarray:
    """The log-pmf ln P[Poisson(mu) = k] in Loader's stable form (-inf for k < 0).

    ``bd0(k, mu) = k ln(k / mu) + mu - k = mu f((k - mu) / mu)`` with
    ``f(x) = (1 + x) log1p(x) - x``: absolute error about 1e-16 |k - mu|.
    """
    k = np.asarray(k, np.float64)
    kk = np.maximum(k, 1.0)
    x = (kk - mu) / mu
    bd0 = mu * ((1 + x) * np.log1p(x) - x)
    out = -_stirlerr(kk) - bd0 - _HALF_LOG_2PI - 0.5 * np.log(kk)
    out = np.where(k == 0, -mu, out)
    return np.where(k < 0, -np.inf, out)


def _poisson_inversion(n: int, mu: float, source: UniformSource) -> np.ndarray:
    u = source(n)  # (n,)
    k = np.zeros(n, dtype=np.int64)
    p = np.full(n, math.exp(-mu))
    cdf = p.copy()
    active = u > cdf
    for _ in range(400):  # P[K > 400] < 1e-300 for mu < 10
        if not active.any():
            break
        k[active] += 1
        p[active] *= mu / k[active]
        cdf[active] += p[active]
        active &= u > cdf
    return k


def _poisson_ptrs(n: int, mu: float, source: UniformSource) -> np.ndarray:
    smu = math.sqrt(mu)
    b = 0.931 + 2.53 * smu
    a = -0.059 + 0.02483 * b
    log_inv_alpha = math.log(1.1239 + 1.1328 / (b - 3.4))
    vr = 0.9277 - 3.6224 / (b - 2)
    out = np.zeros(n, dtype=np.int64)
    filled = 0
    while filled < n:
        batch = int((n - filled) * 1.15) + 16
        u = source(2 * batch)
        big_u, v = u[:batch] - 0.5, u[batch:]  # (batch,) each; big_u in (-1/2, 1/2)
        us = 0.5 - np.abs(big_u)
        k = np.floor((2 * a / us + b) * big_u + mu + 0.43)
        quick = (us >= 0.07) & (v <= vr)
        test = ~quick & (k >= 0) & ~((us < 0.013) & (v > us))
        lhs = np.log(v) + log_inv_alpha - np.log(a / (us * us) + b)
        accept = quick | (test & (lhs <= poisson_logpmf(k, mu)))
        got = k[accept][: n - filled]
        out[filled:filled + got.size] = got.astype(np.int64)
        filled += got.size
    return out


def poisson(shape: tuple[int, ...], mu: float, source: UniformSource) -> np.ndarray:
    """I.i.d. Poisson(mu) draws as int64 (inversion below mu = 10, PTRS above).

    Raises
    ------
    ValueError
        For mu outside [0, MAX_POISSON_MEAN] or a malformed shape.
    """
    n = _check_shape(shape)
    mu = _check_mu(mu)
    if mu == 0 or n == 0:
        return np.zeros(shape, dtype=np.int64)
    draw = _poisson_inversion if mu < _INVERSION_BELOW else _poisson_ptrs
    return draw(n, mu, source).reshape(shape)


def skellam(shape: tuple[int, ...], mu: float, source: UniformSource) -> np.ndarray:
    """I.i.d. Sk(mu, mu) = Poisson(mu) - Poisson(mu) draws (variance 2 mu), as int64.

    Parameters
    ----------
    shape : tuple of int
        Output shape.
    mu : float
        The mean of each Poisson, in [0, MAX_POISSON_MEAN]; 0 gives zeros.
    source : UniformSource
        Uniforms in (0, 1) (secure or seeded).
    """
    return poisson(shape, mu, source) - poisson(shape, mu, source)
