"""Renyi DP of the distributed Skellam and discrete Gaussian sums; sampling; conversion.

All quantities are in integer units (after scaling and rounding) and all orders alpha are
integers >= 2, which every bound below requires or allows. Composition over rounds adds
RDP order by order (Mironov 2017, "Renyi Differential Privacy", CSF, Proposition 1).

- Skellam: Agarwal, Kairouz & Liu 2021 (NeurIPS; arXiv:2110.04995), Theorem 3.5 (the
  multi-dimensional Skellam mechanism): with noise of per-coordinate variance ``mu``
  (theirs: ``Sk`` with variance mu, i.e. Poisson(mu/2) - Poisson(mu/2)) and L1/L2
  sensitivities ``Delta_1, Delta_2``, for integer alpha > 1

      eps(alpha) <= alpha Delta_2^2 / (2 mu)
                    + min{ ((2 alpha - 1) Delta_2^2 + 6 Delta_1) / (4 mu^2),
                           3 Delta_1 / (2 mu) }.

  n clients' shares of Sk(mu_c, mu_c) (variance 2 mu_c each) sum to exactly one Skellam
  of variance ``mu = 2 n mu_c``, so the bound applies to the sum as is.
- Distributed discrete Gaussian: Kairouz, Liu & Steinke 2021 (ICML; arXiv:2102.06387),
  Proposition 14 (Theorem 1 is its concentrated-DP form): for n >= 1 shares of
  N_Z(0, sigma^2)^d with sigma >= 1/2 and
  ``tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k + 1))``,

      eps(alpha) <= min{ alpha Delta_2^2 / (2 n sigma^2) + tau d,
                         alpha/2 (Delta_2^2 / (n sigma^2) + 2 tau Delta_1 / (sqrt(n) sigma)
                                  + tau^2 d),
                         alpha/2 (Delta_2 / (sqrt(n) sigma) + tau sqrt(d))^2 }.

  (n = 1 gives tau = 0 and CKS20's alpha Delta_2^2 / (2 sigma^2).)
- Poisson sampling with rate q: Zhu & Wang 2019, "Poisson Subsampled Renyi Differential
  Privacy" (ICML), Theorem 6, the general upper bound for integer alpha >= 2:

      eps'(alpha) <= 1/(alpha-1) log{ (1-q)^(alpha-1) (alpha q - q + 1)
                     + C(alpha,2) q^2 (1-q)^(alpha-2) e^{eps(2)}
                     + 3 sum_{l=3}^{alpha} C(alpha,l) q^l (1-q)^(alpha-l) e^{(l-1) eps(l)} },

  taken order by order as the minimum with the unsampled eps(alpha) (subsampling never
  increases the Renyi divergence, by joint convexity).
- (eps, delta): dp-accounting's ``rdp.compute_epsilon``, the conversion of Canonne,
  Kamath & Steinke 2020 (arXiv:2004.00010v4), Proposition 12 (also Asoodeh et al. 2021,
  eq. 20): ``eps = min_alpha eps(alpha) + ln(1 - 1/alpha) - ln(delta alpha)/(alpha - 1)``.

Notes
-----
Neighbouring: as in both papers, one client's *update* changes by a vector of norm at
most Delta_2 while the noise shares in the sum stay those of the n clients that were
summed (the client is removed from the data, its share stays, i.e. zero-out
neighbouring). If a client's own share vanished with its data (add/remove of the
client), the noise variances of the two neighbours would differ, which these bounds do
not cover.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
from dp_accounting import rdp as dp_rdp
from scipy.special import gammaln

from fedpriv.privacy.events import DistributedNoiseEvent, Mechanism

__all__ = [
    "RDP_ORDERS",
    "ddg_rdp",
    "ddg_tau",
    "distributed_rdp",
    "event_rdp",
    "poisson_subsampled_rdp",
    "rdp_to_epsilon",
    "skellam_rdp",
]

#: The integer orders fedpriv evaluates (2..256): Zhu-Wang and the Skellam bound need
#: integers, and alpha = 256 reaches epsilons near 0.05 at delta = 1e-6.
RDP_ORDERS: tuple[int, ...] = tuple(range(2, 257))

RdpFunction = Callable[[np.ndarray], np.ndarray]


def _orders(orders: Sequence[int] | np.ndarray) -> np.ndarray:
    a = np.asarray(orders)
    if a.ndim != 1 or a.size == 0 or not np.all(np.equal(np.mod(a, 1), 0)) or np.any(a < 2):
        raise ValueError(f"orders must be a non-empty sequence of integers >= 2, got {orders!r}")
    return a.astype(np.int64)


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            0 < value < math.inf):
        raise ValueError(f"{name} must be in (0, inf), got {value!r}")
    return float(value)


def skellam_rdp(orders: Sequence[int] | np.ndarray, *, l1: float, l2: float,
                variance: float) -> np.ndarray:
    """Agarwal et al. 2021, Theorem 3.5: RDP of Skellam noise of total variance ``mu``.

    Parameters
    ----------
    orders : sequence of int
        alpha >= 2.
    l1, l2 : float
        Delta_1, Delta_2 > 0 in integer units.
    variance : float
        mu > 0, the per-coordinate variance of the noise in the sum (2 n mu_c for n
        shares of Sk(mu_c, mu_c)).
    """
    a = _orders(orders).astype(np.float64)
    l1, l2, mu = _positive("l1", l1), _positive("l2", l2), _positive("variance", variance)
    tail = np.minimum(((2 * a - 1) * l2 ** 2 + 6 * l1) / (4 * mu ** 2), 3 * l1 / (2 * mu))
    return a * l2 ** 2 / (2 * mu) + tail


def ddg_tau(sigma2: float, clients: int) -> float:
    """KLS21's tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k + 1)) (0 for n = 1)."""
    sigma2 = _positive("sigma2", sigma2)
    if isinstance(clients, bool) or not isinstance(clients, int) or clients < 1:
        raise ValueError(f"clients must be an integer >= 1, got {clients!r}")
    k = np.arange(1, clients, dtype=np.float64)
    return float(10 * np.sum(np.exp(-2 * math.pi ** 2 * sigma2 * k / (k + 1))))


def ddg_rdp(orders: Sequence[int] | np.ndarray, *, l1: float, l2: float, sigma2: float,
            clients: int, dim: int) -> np.ndarray:
    """KLS21, Proposition 14: RDP of the sum of n shares of N_Z(0, sigma^2)^d.

    Parameters
    ----------
    orders : sequence of int
        alpha >= 2.
    l1, l2 : float
        Delta_1, Delta_2 > 0 in integer units.
    sigma2 : float
        sigma^2 of each client's share; the proposition needs sigma >= 1/2.
    clients : int
        n >= 1, the shares in the sum.
    dim : int
        d >= 1, the dimension the noise is added in.

    Raises
    ------
    ValueError
        For sigma < 1/2 (outside the proposition) or an argument out of its domain.
    """
    a = _orders(orders).astype(np.float64)
    l1, l2 = _positive("l1", l1), _positive("l2", l2)
    if _positive("sigma2", sigma2) < 0.25:
        raise ValueError(f"sigma2 must be >= 1/4 (KLS21 Proposition 14 needs sigma >= 1/2), "
                         f"got {sigma2!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
    tau = ddg_tau(sigma2, clients)
    ns2 = clients * sigma2
    first = a * l2 ** 2 / (2 * ns2) + tau * dim
    second = a / 2 * (l2 ** 2 / ns2 + 2 * tau * l1 / math.sqrt(ns2) + tau ** 2 * dim)
    third = a / 2 * (l2 / math.sqrt(ns2) + tau * math.sqrt(dim)) ** 2
    return np.minimum(first, np.minimum(second, third))


def poisson_subsampled_rdp(base: RdpFunction, q: float,
                           orders: Sequence[int] | np.ndarray) -> np.ndarray:
    """Zhu & Wang 2019, Theorem 6, at each integer order, capped by the unsampled RDP.

    Parameters
    ----------
    base : callable
        alpha (int64 array) -> eps(alpha) of the mechanism run on the sample; evaluated at
        every integer 2..max(orders).
    q : float
        The Poisson sampling rate, in (0, 1]; q = 1 returns ``base(orders)``.
    orders : sequence of int
        alpha >= 2.
    """
    a = _orders(orders)
    if isinstance(q, bool) or not isinstance(q, int | float) or not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], got {q!r}")
    if q == 1:
        return np.asarray(base(a), dtype=np.float64)
    ells = np.arange(2, int(a.max()) + 1)
    eps = np.asarray(base(ells), dtype=np.float64)  # eps[l - 2]
    return np.minimum(_zhu_wang(eps, float(q), a), eps[a - 2])


@functools.lru_cache(maxsize=16)
def _log_coefficients(orders: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Log of C(alpha, l) (times 3 for l >= 3), -inf for l > alpha; and l = 2..max."""
    ells = np.arange(2, max(orders) + 1, dtype=np.float64)  # (L,)
    af = np.asarray(orders, dtype=np.float64)[:, None]  # (orders, 1)
    with np.errstate(invalid="ignore"):
        log_comb = gammaln(af + 1) - gammaln(ells + 1) - gammaln(af - ells + 1)
    log_comb += np.where(ells == 2, 0.0, math.log(3))
    log_comb = np.where(ells <= af, log_comb, -np.inf)  # (orders, L): l runs over 2..alpha
    log_comb.setflags(write=False)
    return log_comb, ells


def _zhu_wang(eps: np.ndarray, q: float, a: np.ndarray) -> np.ndarray:
    """The uncapped bound of Zhu & Wang's Theorem 6 (eps[l - 2] = eps(l))."""
    log_comb, ells = _log_coefficients(tuple(a.tolist()))
    af = a.astype(np.float64)
    log1mq, logq = math.log1p(-q), math.log(q)
    with np.errstate(invalid="ignore"):  # -inf + inf where l > alpha and eps(l) = inf
        terms = (log_comb + ells * logq + (af[:, None] - ells) * log1mq
                 + (ells - 1) * eps)  # (orders, L)
    terms = np.where(np.isnan(terms), -np.inf, terms)
    first = (af - 1) * log1mq + np.log1p((af - 1) * q)  # finite
    top = np.maximum(first, terms.max(axis=1))  # (orders,), finite or +inf
    with np.errstate(invalid="ignore", over="ignore"):
        total = top + np.log(np.exp(first - top) + np.exp(terms - top[:, None]).sum(axis=1))
    return np.where(np.isinf(top), np.inf, total) / (af - 1)


def rdp_to_epsilon(orders: Sequence[int] | np.ndarray, rdp: np.ndarray, delta: float
                   ) -> float:
    """Epsilon at ``delta`` from RDP at ``orders`` (CKS20 Prop. 12, via dp-accounting)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    a = _orders(orders)
    values = np.asarray(rdp, dtype=np.float64)
    if values.shape != a.shape or np.any(np.isnan(values)):
        raise ValueError(f"rdp must be {a.size} numbers (no NaN), got shape {values.shape}")
    eps, _ = dp_rdp.compute_epsilon([int(x) for x in a], [float(x) for x in values], delta)
    return float(eps)


def distributed_rdp(mechanism: Mechanism, *, l1: float, l2: float, local_variance: float,
                    clients: int, dim: int, sampling_rate: float, rounds: int,
                    orders: Sequence[int] | np.ndarray = RDP_ORDERS) -> np.ndarray:
    """RDP of ``rounds`` Poisson-sampled rounds of a distributed Skellam or DDG sum.

    ``local_variance`` is one client's share: 2 mu_c for Sk(mu_c, mu_c), sigma^2 for
    N_Z(0, sigma^2). No noise (0), or a DDG share with sigma < 1/2 (outside KLS21's
    Proposition 14), gives infinity at every order.
    """
    a = _orders(orders)
    if mechanism is Mechanism.SKELLAM_SUM:
        covered = local_variance > 0
    elif mechanism is Mechanism.DDG_SUM:
        covered = local_variance >= 0.25
    else:
        raise ValueError(f"mechanism must be {Mechanism.SKELLAM_SUM.value} or "
                         f"{Mechanism.DDG_SUM.value}, got {mechanism!r}")
    if not covered:
        return np.full(a.shape, math.inf)

    def base(alpha: np.ndarray) -> np.ndarray:
        if mechanism is Mechanism.SKELLAM_SUM:
            return skellam_rdp(alpha, l1=l1, l2=l2, variance=clients * local_variance)
        return ddg_rdp(alpha, l1=l1, l2=l2, sigma2=local_variance, clients=clients, dim=dim)

    return poisson_subsampled_rdp(base, sampling_rate, a) * rounds


def event_rdp(event: DistributedNoiseEvent,
              orders: Sequence[int] | np.ndarray = RDP_ORDERS) -> np.ndarray:
    """The RDP (at ``orders``) that a :class:`DistributedNoiseEvent` records."""
    return distributed_rdp(event.mechanism, l1=event.l1_sensitivity,
                           l2=event.l2_sensitivity, local_variance=event.local_variance,
                           clients=event.clients, dim=event.dimension,
                           sampling_rate=event.sampling_rate, rounds=event.rounds,
                           orders=orders)
