"""Statistical tests of the discrete samplers (fixed seeds; tolerances stated per test)."""

import math

import numpy as np
import pytest
from scipy import stats

from fedpriv.privacy.discrete import (
    MAX_POISSON_MEAN,
    MAX_SIGMA,
    SecureUniforms,
    SeededUniforms,
    discrete_gaussian,
    poisson,
    poisson_logpmf,
    skellam,
)

N = 200_000


def seeded(seed: int) -> SeededUniforms:
    return SeededUniforms(np.random.default_rng(seed))


def chi2_pvalue(samples: np.ndarray, support: np.ndarray, pmf: np.ndarray) -> float:
    """Pearson chi^2 p-value; cells with expectation < 5 are pooled into the two tails."""
    n = samples.size
    expected = n * pmf / pmf.sum()
    keep = expected >= 5
    lo, hi = support[keep].min(), support[keep].max()
    inner = (support >= lo) & (support <= hi)
    counts = np.array([np.count_nonzero(samples == k) for k in support[inner]])
    obs = np.concatenate([[np.count_nonzero(samples < lo)], counts,
                          [np.count_nonzero(samples > hi)]])
    exp = np.concatenate([[expected[support < lo].sum()], expected[inner],
                          [expected[support > hi].sum()]])
    exp = exp * n / exp.sum()
    nonzero = exp > 0
    return float(stats.chisquare(obs[nonzero], exp[nonzero]).pvalue)


def dg_pmf(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(-int(12 * sigma) - 3, int(12 * sigma) + 4)
    w = np.exp(-(k.astype(float) ** 2) / (2 * sigma ** 2))
    return k, w / w.sum()


@pytest.mark.parametrize("sigma", [0.4, 1.7, 25.0])
def test_discrete_gaussian_matches_its_pmf(sigma):
    x = discrete_gaussian((N,), sigma, seeded(1))
    k, pmf = dg_pmf(sigma)
    kf = k.astype(float)
    var, m4 = float(np.dot(kf ** 2, pmf)), float(np.dot(kf ** 4, pmf))  # mean 0
    assert x.dtype == np.int64
    assert abs(x.mean()) < 6 * math.sqrt(var / N)
    # the sample variance within 6 of its standard errors, sqrt((m4 - var^2) / N)
    assert abs(x.var() - var) < 6 * math.sqrt((m4 - var ** 2) / N)
    assert chi2_pvalue(x, k, pmf) > 1e-3


def test_chi2_detects_a_three_percent_wider_discrete_gaussian():
    # The shape test has power: samples of N_Z(0, 1.7^2) against sigma 1.75.
    x = discrete_gaussian((N,), 1.7, seeded(1))
    k, pmf = dg_pmf(1.75)
    assert chi2_pvalue(x, k, pmf) < 1e-6


@pytest.mark.parametrize(("mu", "shares"), [(3.3, 7), (40.0, 5)])
def test_sum_of_skellam_shares_is_skellam_with_the_summed_variance(mu, shares):
    # mu = 3.3 runs the inversion sampler, mu = 40 runs PTRS.
    src = seeded(2)
    total = sum(skellam((N,), mu, src) for _ in range(shares))
    m = shares * mu  # the sum is Sk(m, m): mean 0, variance 2m, 4th cumulant 2m
    var = 2 * m
    assert abs(total.mean()) < 6 * math.sqrt(var / N)
    assert abs(total.var() - var) < 6 * math.sqrt((2 * var ** 2 + var) / N)
    k = np.arange(-int(15 * math.sqrt(var)) - 5, int(15 * math.sqrt(var)) + 6)
    assert chi2_pvalue(total, k, stats.skellam.pmf(k, m, m)) > 1e-3
    # ...and the same samples are told apart from a Skellam with 6% more variance
    assert chi2_pvalue(total, k, stats.skellam.pmf(k, 1.06 * m, 1.06 * m)) < 1e-6


@pytest.mark.parametrize("mu", [0.7, 9.9, 10.0, 250.0])
def test_poisson_matches_its_pmf_on_both_sides_of_the_method_switch(mu):
    x = poisson((N,), mu, seeded(3))
    k = np.arange(0, int(mu + 15 * math.sqrt(mu)) + 15)
    assert chi2_pvalue(x, k, stats.poisson.pmf(k, mu)) > 1e-3


def test_poisson_with_a_huge_mean_has_the_right_moments():
    mu = 1e12
    x = poisson((N,), mu, seeded(4)).astype(np.float64)
    assert abs(x.mean() - mu) < 6 * math.sqrt(mu / N)
    assert abs(x.var() / mu - 1) < 6 * math.sqrt(2 / N)


def test_stable_poisson_logpmf_matches_scipy_where_scipy_is_accurate():
    k = np.arange(0, 200)
    np.testing.assert_allclose(poisson_logpmf(k, 37.5), stats.poisson.logpmf(k, 37.5),
                               rtol=0, atol=1e-11)
    assert poisson_logpmf(np.array([-1]), 5.0)[0] == -np.inf


def test_secure_source_draws_fresh_uniforms_in_the_open_unit_interval():
    src = SecureUniforms()
    u, v = src(100_000), src(100_000)
    assert u.shape == (100_000,) and u.dtype == np.float64
    assert 0 < u.min() and u.max() < 1
    assert not np.array_equal(u, v)
    # OS entropy, so not reproducible: a loose 8-sigma check on the mean
    assert abs(u.mean() - 0.5) < 8 * math.sqrt(1 / 12 / u.size)
    z = discrete_gaussian((50_000,), 3.0, src)
    assert abs(z.var() - 9.0) < 8 * 9.0 * math.sqrt(2 / z.size)  # N_Z(0, 9) ~ N(0, 9)


def test_seeded_sources_reproduce_and_zero_noise_consumes_nothing():
    a = skellam((1000,), 12.0, seeded(7))
    b = skellam((1000,), 12.0, seeded(7))
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(8)
    src = SeededUniforms(rng)
    before = rng.bit_generator.state
    assert not discrete_gaussian((5,), 0.0, src).any()
    assert not skellam((2, 3), 0.0, src).any()
    assert rng.bit_generator.state == before
    assert discrete_gaussian((2, 3), 1.0, seeded(1)).shape == (2, 3)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: discrete_gaussian((3,), -1.0, seeded(0)), "sigma must be in"),
    (lambda: discrete_gaussian((3,), 2 * MAX_SIGMA, seeded(0)), "sigma must be in"),
    (lambda: discrete_gaussian([3], 1.0, seeded(0)), "shape must be"),
    (lambda: skellam((3,), 2 * MAX_POISSON_MEAN, seeded(0)), "mu must be in"),
    (lambda: poisson((3,), math.nan, seeded(0)), "mu must be in"),
    (lambda: SecureUniforms()(-1), "n must be"),
    (lambda: SeededUniforms(np.random.RandomState(0)), "rng must be"),
])
def test_bad_arguments_are_refused_with_the_field_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
