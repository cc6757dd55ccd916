import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedpriv.privacy.discrete import (
    DEFAULT_BETA,
    conditional_round,
    conditional_rounding_bias_bound,
    l1_sensitivity,
    rounded_l2_bound,
    stochastic_round,
)


def test_rounded_bounds_by_hand():
    # KLS21 Theorem 1, eq. (2), c = 3, d = 16, beta = e^-1/2 (so sqrt(2 ln 1/beta) = 1):
    # min(9 + 16/4 + 1 * (3 + 4/2), (3 + 4)^2) = min(18, 49)
    assert rounded_l2_bound(3.0, 16, DEFAULT_BETA) == pytest.approx(math.sqrt(18))
    assert rounded_l2_bound(3.0, 16, 0.0) == pytest.approx(7.0)  # c + sqrt(d)
    # c = 0, d = 1, beta = 1/2: min(1/4 + sqrt(2 ln 2) / 2, 1) = 0.8387 < 1
    assert rounded_l2_bound(0.0, 1, 0.5) == pytest.approx(math.sqrt(0.25 + math.sqrt(
        2 * math.log(2)) / 2))
    assert l1_sensitivity(math.sqrt(18), 16) == pytest.approx(4 * math.sqrt(18))
    assert l1_sensitivity(2.0, 16) == pytest.approx(4.0)  # Delta_2^2 < sqrt(d) Delta_2


def test_stochastic_rounding_is_unbiased():
    rng = np.random.default_rng(0)
    x = rng.uniform(-5, 5, size=64)
    reps = 20_000
    mean = np.mean([stochastic_round(x, rng) for _ in range(reps)], axis=0)
    # each coordinate is floor(x) + Bernoulli(p): std <= 1/2, so 6 sigma is 3 / sqrt(reps)
    assert np.abs(mean - x).max() < 3 / math.sqrt(reps)
    np.testing.assert_array_equal(stochastic_round(np.array([2.0, -3.0]), rng), [2, -3])


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 200), st.floats(0.0, 50.0), st.sampled_from([0.0, 1e-3, DEFAULT_BETA]),
       st.integers(0, 2**32 - 1))
def test_conditional_rounding_respects_the_bound(d, c, beta, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=d)
    x *= c / max(np.linalg.norm(x), 1e-300)
    bound = rounded_l2_bound(c, d, beta)
    rounded, tries = conditional_round(x, bound, rng)
    assert np.linalg.norm(rounded) <= bound
    assert np.all(np.abs(rounded - x) < 1)
    assert tries >= 1 and (beta > 0 or tries == 1)


def test_retries_stay_within_the_expected_1_over_1_minus_beta():
    # Worst case for the norm: every fractional part 1/2 (maximal rounding variance).
    d, beta = 256, DEFAULT_BETA
    x = np.full(d, 0.5) + np.arange(d) % 3
    bound = rounded_l2_bound(float(np.linalg.norm(x)), d, beta)
    rng = np.random.default_rng(1)
    tries = [conditional_round(x, bound, rng)[1] for _ in range(2000)]
    # mean of a geometric count with success probability >= 1 - beta: <= 1/(1 - beta),
    # plus 6 standard errors (its std is sqrt(beta) / (1 - beta))
    assert np.mean(tries) <= 1 / (1 - beta) + 6 * math.sqrt(beta) / (1 - beta) / math.sqrt(2000)


def test_conditional_rounding_is_unbiased_where_it_is_used():
    # The calibrated regime: ||x|| = c and Delta_2 = rounded_l2_bound(c, d', e^-1/2). The
    # mean of the accepted roundings is x up to the documented conditioning bias
    # p / (1 - p) sqrt(d) (p the observed rejection rate) plus 6 standard errors.
    d, c, reps = 64, 6.0, 20_000
    rng = np.random.default_rng(3)
    x = rng.normal(size=d)
    x *= c / np.linalg.norm(x)
    bound = rounded_l2_bound(c, d, DEFAULT_BETA)
    draws = [conditional_round(x, bound, rng) for _ in range(reps)]
    mean = np.mean([r for r, _ in draws], axis=0)
    p = 1 - 1 / np.mean([t for _, t in draws])
    assert np.abs(mean - x).max() < 3 / math.sqrt(reps) + conditional_rounding_bias_bound(d, p)


def test_an_unreachable_bound_fails_after_the_cap():
    with pytest.raises(ValueError, match="in all 5 tries"):
        conditional_round(np.full(9, 3.0), 1.0, np.random.default_rng(0), max_tries=5)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: rounded_l2_bound(-1.0, 4, 0.1), "norm must be in"),
    (lambda: rounded_l2_bound(1.0, 0, 0.1), "d must be an integer"),
    (lambda: rounded_l2_bound(1.0, 4, 1.0), "beta must be in"),
    (lambda: conditional_round(np.ones(3), 0.0, np.random.default_rng(0)), "bound must be"),
    (lambda: conditional_round(np.ones(3), 9.0, np.random.default_rng(0), max_tries=0),
     "max_tries"),
    (lambda: stochastic_round(np.array([np.inf]), np.random.default_rng(0)), "finite"),
])
def test_bad_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_norm_test_is_exact_at_the_boundary():
    # Integer inputs round to themselves: a norm exactly at the bound is accepted, one a
    # hair above it is refused, even where float64 squares cannot tell them apart.
    v = np.array([2.0 ** 40, 3.0, 0.0])
    exact = math.sqrt(2.0 ** 80 + 9)  # as a float, already rounded
    rng = np.random.default_rng(0)
    within = float(np.nextafter(exact, math.inf))
    rounded, tries = conditional_round(v, within, rng)
    assert tries == 1 and rounded.tolist() == [2**40, 3, 0]
    # ||v||^2 = 2^80 + 9 > 2^80 = bound^2, though in float64 both squares are 2^80
    assert float(np.dot(v, v)) == (2.0 ** 40) ** 2
    with pytest.raises(ValueError, match="in all 3 tries"):
        conditional_round(v, 2.0 ** 40, rng, max_tries=3)
    assert conditional_round(np.array([3.0, 4.0]), 5.0, rng)[0].tolist() == [3, 4]
