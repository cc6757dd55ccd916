import math

import numpy as np
import pytest

from fedpriv.privacy.discrete import (
    DistributedDpParams,
    SeededUniforms,
    add_mod,
    centre_mod,
    decode,
    encode,
)
from fedpriv.privacy.events import Mechanism

SEED = b"round-1"


def params(**over):
    base = dict(mechanism=Mechanism.SKELLAM_SUM, clip=1.0, dimension=100, scale=300.0,
                local_variance=0.0, bits=20)
    base.update(over)
    return DistributedDpParams(**base)


def updates(n=6, d=100, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=0.3, size=(n, d))
    x[0] = 0.0  # a zero update
    x[1] *= 20  # far over the clip
    return x


def clipped_mean(x, clip=1.0):
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x * np.minimum(1, clip / np.maximum(norms, 1e-300))).mean(axis=0)


def run(p, x, rng, src=None, seed=SEED):
    encs = np.stack([encode(u, p, seed, rng, source=src) for u in x])
    return decode(add_mod(encs, p.bits), p, len(x), seed)


def test_round_trip_without_noise_is_within_the_stated_error():
    p, x = params(), updates()
    err = run(p, x, np.random.default_rng(1)) - clipped_mean(x)
    assert np.linalg.norm(err) < p.mean_error_bound()  # deterministic bound
    assert np.linalg.norm(err) < 4 * p.mean_rounding_rms(len(x))  # and its typical size


def test_without_noise_the_decoded_sum_is_unbiased():
    p, x, reps = params(), updates(), 400
    rng = np.random.default_rng(2)
    truth = len(x) * clipped_mean(x)
    mean_sum = np.mean([len(x) * run(p, x, rng) for _ in range(reps)], axis=0)
    # per coordinate the sum's rounding error has variance <= n / (4 gamma^2)
    tol = 6 * math.sqrt(len(x) / 4 / reps) / p.scale
    assert np.abs(mean_sum - truth).max() < tol


@pytest.mark.parametrize("mechanism", [Mechanism.SKELLAM_SUM, Mechanism.DDG_SUM])
def test_noise_adds_the_stated_variance(mechanism):
    p = params(mechanism=mechanism, dimension=1000, scale=100.0, local_variance=400.0,
               bits=24)
    x = updates(n=5, d=1000)
    err = run(p, x, np.random.default_rng(3), SeededUniforms(np.random.default_rng(4)))
    err -= clipped_mean(x)
    noise_var = p.mean_noise_std(5) ** 2  # 400 / (5 * 100^2)
    rounding_var = 1 / (4 * 5 * p.scale ** 2)
    assert abs(err.mean()) < 6 * math.sqrt((noise_var + rounding_var) / err.size)
    assert noise_var * (1 - 6 * math.sqrt(2 / err.size)) < err.var() < (
        noise_var + rounding_var) * (1 + 6 * math.sqrt(2 / err.size))


def test_negative_sums_and_full_64_bit_words_decode():
    x = -np.tile(np.linspace(0.1, 1, 100), (4, 1)) / 10  # every coordinate negative
    for bits in (20, 64):
        p = params(bits=bits)
        got = run(p, x, np.random.default_rng(5))
        assert np.linalg.norm(got - clipped_mean(x)) < p.mean_error_bound()


def test_encodings_are_words_mod_2_to_the_b_and_reproducible():
    p = params(local_variance=50.0, bits=12)
    u = updates()[2]
    a = encode(u, p, SEED, np.random.default_rng(6), source=SeededUniforms(
        np.random.default_rng(7)))
    b = encode(u, p, SEED, np.random.default_rng(6), source=SeededUniforms(
        np.random.default_rng(7)))
    assert a.dtype == np.uint64 and a.shape == (128,) and int(a.max()) < 2 ** 12
    np.testing.assert_array_equal(a, b)
    c = encode(u, p, SEED, np.random.default_rng(6))  # secure noise by default
    assert not np.array_equal(a, c)


def test_modular_helpers_by_hand():
    words = np.array([[2**64 - 1, 5], [3, 2**63]], dtype=np.uint64)
    np.testing.assert_array_equal(add_mod(words, 64), np.array([2, 2**63 + 5], np.uint64))
    np.testing.assert_array_equal(add_mod(words, 4), [2, 5])
    np.testing.assert_array_equal(
        centre_mod(np.array([0, 7, 8, 15], dtype=np.uint64), 4), [0, 7, -8, -1])


def test_a_wrapped_sum_is_off_by_a_multiple_of_the_modulus():
    # Too few bits for the scale: the bound says a wrap is certain, and the centred sum
    # differs from the exact one by whole multiples of 2^b in the rotated domain.
    p = params(scale=3000.0, bits=64)
    x = np.tile(np.eye(100)[7], (2, 1))  # rotated: +-3000 / sqrt(128) ~ +-265 each
    encs = np.stack([encode(u, p, SEED, np.random.default_rng(9)) for u in x])
    exact = centre_mod(add_mod(encs, 64), 64)
    wrapped = centre_mod(add_mod(encs, 9), 9)  # the same words, summed mod 2^9
    diff = exact - wrapped
    assert np.all(diff % 512 == 0) and np.any(diff != 0)
    assert params(scale=3000.0, bits=9).wrap_probability(2) == 1.0


@pytest.mark.parametrize(("call", "message"), [
    (lambda: encode(np.ones(99), params(), SEED, np.random.default_rng(0)), "shape"),
    (lambda: encode(np.full(100, np.nan), params(), SEED, np.random.default_rng(0)),
     "finite"),
    (lambda: decode(np.zeros(100, np.uint64), params(), 1, SEED), "sum_mod must be"),
    (lambda: decode(np.zeros(128, np.uint64), params(), 0, SEED), "n must be"),
    (lambda: params(scale=0.0), r"scale must be in \(0, inf\)"),
    (lambda: params(bits=65), r"bits must be an integer in \[2, 64\]"),
    (lambda: params(local_variance=-1.0), "local_variance must be in"),
    (lambda: params(mechanism=Mechanism.DP_SGD), "mechanism must be one of"),
    (lambda: params(scale=1e20), "below 2\\^62"),
])
def test_bad_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
