import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from fedpriv.privacy import (
    AdaptiveClip,
    SecureGaussian,
    SeededGaussian,
    clip_by_l2,
    corrected_noise_multiplier,
    l2_norm,
)

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)
vectors = st.lists(arrays(np.float32, st.integers(1, 20), elements=finite), min_size=1,
                   max_size=4)


@settings(max_examples=200, deadline=None)
@given(vectors, st.floats(1e-3, 1e3))
def test_clipped_norm_is_at_most_c(update, clip):
    clipped, norm, unclipped = clip_by_l2(update, clip)
    assert l2_norm(clipped) <= clip * (1 + 1e-5)
    assert norm == pytest.approx(l2_norm(update))
    assert unclipped == (norm <= clip)


@settings(max_examples=200, deadline=None)
@given(vectors)
def test_clip_is_identity_within_the_ball(update):
    clip = l2_norm(update) + 1.0
    clipped, _, unclipped = clip_by_l2(update, clip)
    assert unclipped
    for a, b in zip(update, clipped, strict=True):
        np.testing.assert_array_equal(a, b)


def test_zero_update_does_not_divide_by_zero():
    clipped, norm, unclipped = clip_by_l2([np.zeros(5), np.zeros((2, 2))], 1.0)
    assert norm == 0.0 and unclipped
    assert all(not a.any() for a in clipped)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_clip_norm_domain(bad):
    with pytest.raises(ValueError, match="clip must be in"):
        clip_by_l2([np.ones(2)], bad)


@pytest.mark.parametrize("source", [SeededGaussian(np.random.default_rng(0)),
                                    SecureGaussian()], ids=["seeded", "secure"])
@pytest.mark.parametrize("sigma", [0.5, 3.0])
def test_noise_std_and_shape(source, sigma):
    n = 200_000
    x = source((n,), sigma)
    # Sample std within 6 sigma / sqrt(2n) of sigma; the mean within 6 sigma / sqrt(n).
    assert abs(x.std() - sigma) < 6 * sigma / math.sqrt(2 * n)
    assert abs(x.mean()) < 6 * sigma / math.sqrt(n)
    assert stats.kstest(x / sigma, "norm").pvalue > 1e-4


def test_noise_edge_cases():
    src = SecureGaussian()
    assert not src((3, 2), 0.0).any()
    assert src((3, 2), 1.0).shape == (3, 2)
    assert src((0,), 1.0).shape == (0,)
    with pytest.raises(ValueError, match="std must be in"):
        src((2,), -1.0)
    a, b = src((1000,), 1.0), src((1000,), 1.0)
    assert not np.allclose(a, b)  # fresh OS entropy every call


def test_corrected_noise_multiplier_theorem_1():
    z, sb = 1.0, 5.0
    sd = corrected_noise_multiplier(z, sb)
    assert sd > z
    assert (sd ** -2 + (2 * sb) ** -2) ** -0.5 == pytest.approx(z)
    with pytest.raises(ValueError, match="sigma_b must be > z / 2"):
        corrected_noise_multiplier(1.0, 0.5)


def _run_adaptive(target, rounds=1500, cohort=100, count_clipped=False, seed=0):
    rng = np.random.default_rng(seed)
    noise = SeededGaussian(np.random.default_rng(seed + 1))
    state = AdaptiveClip(clip=0.1, target_quantile=target, learning_rate=0.2,
                         count_stddev=cohort / 20)
    for _ in range(rounds):
        norms = rng.lognormal(mean=0.0, sigma=0.5, size=cohort)
        unclipped = float(np.sum(norms <= state.clip))
        if count_clipped:  # Flower's counting: clipped updates compared against gamma
            unclipped = cohort - unclipped
        state, _ = state.update(unclipped, cohort, cohort, noise)
    return state.clip


@pytest.mark.parametrize("target", [0.3, 0.5, 0.8])
def test_adaptive_clip_converges_to_the_target_quantile(target):
    true_quantile = math.exp(0.5 * stats.norm.ppf(target))  # lognormal(0, 0.5) quantile
    assert _run_adaptive(target) == pytest.approx(true_quantile, rel=0.08)


def test_counting_clipped_updates_moves_the_clip_the_wrong_way():
    # Target 0.5: the right clip is the median (1.0). Counting clipped updates turns the
    # feedback positive: a too-small C clips more, which shrinks C further, to nothing.
    assert _run_adaptive(0.5) == pytest.approx(1.0, rel=0.08)
    assert _run_adaptive(0.5, count_clipped=True) < 1e-3


def test_adaptive_clip_empty_cohort_is_a_noise_only_release():
    # Poisson sampling can draw nobody: the release is still 1/2 + N(0, sb^2)/m, and C
    # moves with it (skipping would make the output depend on who was sampled).
    state = AdaptiveClip(clip=1.0, target_quantile=0.5, learning_rate=0.2, count_stddev=2.0)
    noise = SeededGaussian(np.random.default_rng(3))
    fracs = []
    for _ in range(20_000):
        _, frac = state.update(0, 0, 10.0, noise)
        fracs.append(frac)
    fracs = np.array(fracs)
    assert np.mean(fracs) == pytest.approx(0.5, abs=6 * 0.2 / np.sqrt(len(fracs)))
    assert np.std(fracs) == pytest.approx(2.0 / 10.0, rel=0.05)


def test_adaptive_count_is_centred_and_divided_by_the_expected_cohort():
    # Andrew et al. 2021, Alg. 1: b_bar = 1/2 + (sum (b_i - 1/2) + noise) / m, with m the
    # *expected* cohort: 3 unclipped of 4 replies with m = 8 gives 1/2 + (3 - 2)/8.
    state = AdaptiveClip(clip=1.0, target_quantile=0.5, learning_rate=0.2, count_stddev=0.0)
    _, frac = state.update(3, 4, 8.0, SecureGaussian())
    assert frac == pytest.approx(0.625)
    with pytest.raises(ValueError, match="unclipped must be in"):
        state.update(5, 4, 8.0, SecureGaussian())
    with pytest.raises(ValueError, match="expected_cohort"):
        state.update(1, 1, 0.0, SecureGaussian())


def test_adaptive_clip_domain():
    state = AdaptiveClip(clip=1.0, target_quantile=0.5, learning_rate=0.2, count_stddev=0.0)
    assert state.clip == 1.0
    with pytest.raises(ValueError, match="target_quantile"):
        AdaptiveClip(clip=1.0, target_quantile=1.0, learning_rate=0.2, count_stddev=0.0)
