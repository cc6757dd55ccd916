"""RDP bounds against direct numerical Renyi divergences, hand values and dp-accounting."""

import itertools
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp as dp_rdp
from scipy import stats
from scipy.special import comb, logsumexp

from fedpriv.privacy.discrete import (
    RDP_ORDERS,
    ddg_rdp,
    ddg_tau,
    distributed_rdp,
    poisson_subsampled_rdp,
    rdp_to_epsilon,
    skellam_rdp,
)
from fedpriv.privacy.discrete.rdp import _zhu_wang
from fedpriv.privacy.events import Mechanism


def renyi(logp: np.ndarray, shift: int, alpha: int) -> float:
    """D_alpha(P(. - shift) || P) for a pmf given as logs on a centred integer grid."""
    a = logp[max(0, -shift):logp.size - max(0, shift)]  # ln p(k - shift)
    b = logp[max(0, shift):logp.size - max(0, -shift)]  # ln p(k)
    with np.errstate(invalid="ignore"):  # -inf + inf far in the tails: dropped below
        t = alpha * a + (1 - alpha) * b
    return float(logsumexp(t[np.isfinite(t)]) / (alpha - 1))


def skellam_logpmf(variance: float) -> np.ndarray:
    k = np.arange(-int(60 * math.sqrt(variance)) - 60, int(60 * math.sqrt(variance)) + 61)
    return stats.skellam.logpmf(k, variance / 2, variance / 2)


def ddg_sum_logpmf(sigma2: float, n: int) -> np.ndarray:
    """ln pmf of the sum of n i.i.d. N_Z(0, sigma2), convolved in log space (no underflow)."""
    half = int(30 * math.sqrt(sigma2)) + 10
    k = np.arange(-half, half + 1)
    one = -(k.astype(float) ** 2) / (2 * sigma2)
    one -= logsumexp(one)
    out = one
    for _ in range(n - 1):
        m = out.size + one.size - 1
        pairs = np.full((out.size, m), -np.inf)
        for i in range(out.size):
            pairs[i, i:i + one.size] = out[i] + one
        out = logsumexp(pairs, axis=0)
    return out


def shifts(dim: int, l2: float) -> list[tuple[int, ...]]:
    """Every integer vector with ||v||_2 <= l2 in `dim` dimensions."""
    r = int(math.floor(l2))
    return [v for v in itertools.product(range(-r, r + 1), repeat=dim)
            if math.fsum(x * x for x in v) <= l2 * l2 + 1e-9]


ALPHAS = [2, 3, 8, 16]


def test_skellam_bound_by_hand():
    # alpha = 2, Delta_1 = Delta_2 = 1, mu = 10: 2/20 + min((3 + 6)/400, 3/20)
    assert skellam_rdp([2], l1=1, l2=1, variance=10)[0] == pytest.approx(0.1225)
    # alpha = 5, Delta_2 = 3, Delta_1 = 9, mu = 50: 45/100 + min(135/10000, 27/100)
    assert skellam_rdp([5], l1=9, l2=3, variance=50)[0] == pytest.approx(0.4635)
    # small mu: the second branch 3 Delta_1 / (2 mu) wins: 2/4 + min(9/16, 3/4) vs ...
    assert skellam_rdp([2], l1=1, l2=1, variance=2)[0] == pytest.approx(0.5 + 9 / 16)
    assert skellam_rdp([40], l1=1, l2=1, variance=2)[0] == pytest.approx(10 + 0.75)


def test_ddg_bound_by_hand():
    # n = 1: tau = 0 and the bound is CKS20's alpha Delta^2 / (2 sigma^2) = 3 * 4 / 8
    assert ddg_rdp([3], l1=2, l2=2, sigma2=4, clients=1, dim=5)[0] == pytest.approx(1.5)
    # n = 2, sigma = 1: tau = 10 e^{-pi^2}; the first term alpha/(2 n) + tau d wins
    tau = 10 * math.exp(-math.pi ** 2)
    assert ddg_tau(1.0, 2) == pytest.approx(tau)
    assert ddg_rdp([2], l1=1, l2=1, sigma2=1, clients=2, dim=1)[0] == pytest.approx(0.5 + tau)
    # large d: tau d = 517 is too much, the second term (the one with Delta_1) wins:
    # (alpha/2)(Delta_2^2/(n sigma^2) + 2 tau Delta_1/sqrt(n sigma^2) + tau^2 d)
    d = 10**6
    second = 0.5 + 2 * tau / math.sqrt(2) + tau ** 2 * d
    assert second < (1 / math.sqrt(2) + tau * math.sqrt(d)) ** 2 < 0.5 + tau * d
    assert ddg_rdp([2], l1=1, l2=1, sigma2=1, clients=2, dim=d)[0] == pytest.approx(second)


@pytest.mark.parametrize("variance", [2.0, 10.0, 100.0, 2000.0])
@pytest.mark.parametrize("delta", [1, 2, 5])
def test_skellam_bound_covers_the_exact_divergence_in_one_dimension(variance, delta):
    logp = skellam_logpmf(variance)
    for alpha in ALPHAS:
        exact = renyi(logp, delta, alpha)
        bound = skellam_rdp([alpha], l1=delta, l2=delta, variance=variance)[0]
        assert bound >= exact * (1 - 1e-9)
        if variance >= 25 * delta ** 2:  # the Gaussian-like regime: tight
            assert bound <= 1.1 * exact
        elif variance >= delta ** 2:  # noise std >= sensitivity: within a few times
            assert bound <= 5 * exact
        # (noise far below the sensitivity, where Skellam's Poisson tails make the
        # divergence grow like Delta log Delta, is not a regime calibration produces)


@pytest.mark.parametrize(("dim", "l2", "variance"), [(2, 2.0, 8.0), (3, 2.5, 40.0)])
def test_skellam_bound_covers_the_worst_shift_in_small_dimension(dim, l2, variance):
    logp = skellam_logpmf(variance)
    vs = shifts(dim, l2)
    l1 = max(sum(abs(x) for x in v) for v in vs)
    l2 = math.sqrt(max(sum(x * x for x in v) for v in vs))  # the attained integer norm
    assert l1 <= min(math.sqrt(dim) * l2, l2 * l2)  # the L1 bound the accounting uses
    for alpha in ALPHAS:
        worst = max(sum(renyi(logp, x, alpha) for x in v) for v in vs)  # product noise
        bound = skellam_rdp([alpha], l1=l1, l2=l2, variance=variance)[0]
        assert worst <= bound <= 3 * worst


@pytest.mark.parametrize(("sigma2", "n"), [(0.36, 4), (1.0, 3), (4.0, 6), (0.25, 2)])
def test_ddg_bound_covers_the_exact_divergence_of_the_sum_of_shares(sigma2, n):
    logp = ddg_sum_logpmf(sigma2, n)
    for delta, alpha in itertools.product([1, 2, 4], ALPHAS):
        exact = renyi(logp, delta, alpha)
        bound = ddg_rdp([alpha], l1=delta, l2=delta, sigma2=sigma2, clients=n, dim=1)[0]
        assert bound >= exact * (1 - 1e-9)
        assert bound <= 1.06 * exact + ddg_tau(sigma2, n)  # loose by ~tau d, no more


def test_ddg_bound_covers_the_worst_shift_in_two_dimensions():
    sigma2, n = 0.5, 3
    logp = ddg_sum_logpmf(sigma2, n)
    vs = shifts(2, 2.3)
    l1 = max(sum(abs(x) for x in v) for v in vs)
    l2 = math.sqrt(max(sum(x * x for x in v) for v in vs))
    for alpha in ALPHAS:
        worst = max(sum(renyi(logp, x, alpha) for x in v) for v in vs)
        bound = ddg_rdp([alpha], l1=l1, l2=l2, sigma2=sigma2, clients=n, dim=2)[0]
        assert worst <= bound <= 1.06 * worst + 2 * ddg_tau(sigma2, n)


def gaussian_rdp(sigma):
    return lambda a: np.asarray(a, dtype=float) / (2 * sigma ** 2)


@pytest.mark.parametrize("sigma", [0.8, 2.0, 5.0])
@pytest.mark.parametrize("q", [0.01, 0.1, 0.5])
def test_amplification_is_sandwiched_between_exact_sampled_gaussian_and_no_sampling(sigma, q):
    orders = np.arange(2, 129)
    acc = dp_rdp.RdpAccountant(orders=[float(a) for a in orders])
    acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)))
    exact = acc.rdp  # Mironov, Talwar & Zhang 2019: tight for the sampled Gaussian
    ours = poisson_subsampled_rdp(gaussian_rdp(sigma), q, orders)
    assert np.all(ours >= exact * (1 - 1e-9))
    assert np.all(ours <= orders / (2 * sigma ** 2) + 1e-12)


def test_zhu_wang_bound_by_its_own_formula_and_it_really_amplifies():
    sigma, q = 2.0, 0.01
    orders = np.array([2, 3, 7, 32])
    eps = gaussian_rdp(sigma)(np.arange(2, 33))
    raw = _zhu_wang(eps, q, orders)
    for alpha, got in zip(orders, raw, strict=True):  # Theorem 6, term by term
        total = (1 - q) ** (alpha - 1) * (alpha * q - q + 1)
        total += comb(alpha, 2) * q ** 2 * (1 - q) ** (alpha - 2) * math.exp(eps[0])
        total += sum(3 * comb(alpha, ell) * q ** ell * (1 - q) ** (alpha - ell)
                     * math.exp((ell - 1) * eps[ell - 2]) for ell in range(3, alpha + 1))
        assert got == pytest.approx(math.log(total) / (alpha - 1), rel=1e-10)
    # uncapped, it is already far below the unsampled RDP: the amplification is real
    assert np.all(raw < 0.05 * eps[orders - 2])


def test_epsilon_conversion_is_dp_accountings():
    sigma = 1.3
    acc = dp_rdp.RdpAccountant(orders=[float(a) for a in RDP_ORDERS])
    acc.compose(dp_accounting.GaussianDpEvent(sigma), 10)
    ours = rdp_to_epsilon(RDP_ORDERS, 10 * gaussian_rdp(sigma)(RDP_ORDERS), 1e-5)
    assert ours == pytest.approx(acc.get_epsilon(1e-5), rel=1e-12)


def test_distributed_rdp_composes_rounds_and_refuses_uncovered_noise():
    kw = dict(l1=10.0, l2=4.0, clients=5, dim=64, sampling_rate=0.2)
    one = distributed_rdp(Mechanism.SKELLAM_SUM, local_variance=20.0, rounds=1, **kw)
    assert np.allclose(distributed_rdp(Mechanism.SKELLAM_SUM, local_variance=20.0,
                                       rounds=7, **kw), 7 * one)
    assert np.all(np.isinf(distributed_rdp(Mechanism.SKELLAM_SUM, local_variance=0.0,
                                           rounds=1, **kw)))
    assert np.all(np.isinf(distributed_rdp(Mechanism.DDG_SUM, local_variance=0.2, rounds=1,
                                           **kw)))  # sigma < 1/2: no theorem
    with pytest.raises(ValueError, match="sigma >= 1/2"):
        ddg_rdp([2], l1=1, l2=1, sigma2=0.2, clients=2, dim=1)
    with pytest.raises(ValueError, match="orders must be"):
        skellam_rdp([1.5], l1=1, l2=1, variance=1)
    with pytest.raises(ValueError, match="q must be in"):
        poisson_subsampled_rdp(gaussian_rdp(1.0), 0.0, [2])
