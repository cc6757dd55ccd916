import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.linalg import hadamard

from fedpriv.privacy.discrete import (
    hadamard_transform,
    padded_dimension,
    rotate,
    rotation_signs,
    unrotate,
)

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
vectors = arrays(np.float64, st.integers(1, 300), elements=finite)
seeds = st.binary(min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(vectors, seeds)
def test_rotation_preserves_the_norm_and_is_inverted(x, seed):
    y = rotate(x, seed)
    assert y.shape == (padded_dimension(x.size),)
    scale = 1.0 + float(np.linalg.norm(x))
    assert abs(np.linalg.norm(y) - np.linalg.norm(x)) <= 1e-12 * scale
    np.testing.assert_allclose(unrotate(y, seed, x.size), x, rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 64, 128])
def test_fast_transform_equals_the_sylvester_matrix(n):
    x = np.random.default_rng(n).normal(size=(3, n))
    expected = x @ (hadamard(n) / math.sqrt(n)).T
    np.testing.assert_allclose(hadamard_transform(x), expected, rtol=0, atol=1e-12)


def test_signs_are_a_fixed_function_of_the_seed():
    # Pinned: every client must derive the same D from the same public seed, in every
    # fedpriv version (ChaCha20 under SHA-256("fedpriv/ddp/rotation/v1" || seed)).
    pinned = [-1, 1, 1, 1, -1, -1, -1, 1, -1, 1, 1, -1, 1, -1, -1, -1]
    np.testing.assert_array_equal(rotation_signs(b"a", 16), pinned)
    np.testing.assert_array_equal(rotation_signs(b"a", 8), pinned[:8])
    assert not np.array_equal(rotation_signs(b"a", 1024), rotation_signs(b"b", 1024))
    signs = rotation_signs(b"round-7", 1 << 16)
    assert abs(signs.mean()) < 6 / math.sqrt(signs.size)  # fair signs, 6 sigma


def test_rotation_flattens_a_spike():
    # A basis vector becomes +-||x|| / sqrt(d') in every coordinate: nothing is left
    # for the modular sum to wrap on.
    x = np.zeros(1000)
    x[17] = 5.0
    y = rotate(x, b"seed")
    np.testing.assert_allclose(np.abs(y), 5.0 / math.sqrt(1024))


def test_batches_rotate_row_by_row_and_padding_is_to_a_power_of_two():
    x = np.random.default_rng(0).normal(size=(4, 37))
    np.testing.assert_allclose(rotate(x, b"s"), np.stack([rotate(r, b"s") for r in x]))
    assert [padded_dimension(d) for d in (1, 2, 3, 64, 65)] == [1, 2, 4, 64, 128]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: rotate(np.ones(3), b""), "seed must be non-empty bytes"),
    (lambda: rotate(np.ones(3), "text"), "seed must be non-empty bytes"),
    (lambda: rotate(np.array([1.0, np.nan]), b"s"), "finite"),
    (lambda: rotate(np.zeros(0), b"s"), "non-empty last axis"),
    (lambda: unrotate(np.ones(6), b"s", 6), "power-of-two"),
    (lambda: unrotate(np.ones(8), b"s", 3), "d must pad to 8"),
    (lambda: padded_dimension(0), "d must be an integer >= 1"),
])
def test_bad_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
