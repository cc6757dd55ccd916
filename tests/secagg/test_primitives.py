import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedpriv.secagg import (
    KeyPair,
    Quantizer,
    SecAggError,
    aead_decrypt,
    aead_encrypt,
    agree,
    combine,
    default_degree,
    expand_mask,
    regular_graph,
    split,
)

secret32 = st.binary(min_size=32, max_size=32)


@settings(max_examples=30, deadline=None)
@given(secret32, st.integers(1, 5), st.integers(0, 3))
def test_shamir_reconstructs_from_every_threshold_subset(secret, t, extra):
    n = t + extra
    shares = split(secret, t, n)
    for subset in itertools.combinations(shares, t):
        assert combine(list(subset), t) == secret


def test_shamir_below_threshold_fails_and_hides_the_secret():
    secret = bytes(range(32))
    shares = split(secret, 3, 5)
    with pytest.raises(SecAggError, match="need 3 shares"):
        combine(shares[:2], 3)
    # t - 1 shares carry no information: the first share of two very different secrets
    # is distributed the same (uniform over GF(p)).
    a = [split(bytes(32), 2, 3)[0][1] >> 513 for _ in range(3000)]
    b = [split(b"\xff" * 32, 2, 3)[0][1] >> 513 for _ in range(3000)]
    table = np.array([np.bincount(a, minlength=256), np.bincount(b, minlength=256)])
    assert stats.chi2_contingency(table + 1).pvalue > 1e-4


def test_aead_round_trip_and_tampering():
    key = agree(KeyPair().private, KeyPair().public, b"info")
    ct = aead_encrypt(key, b"share bundle", b"ad-1")
    assert aead_decrypt(key, ct, b"ad-1") == b"share bundle"
    flipped = bytearray(ct)
    flipped[-1] ^= 1
    with pytest.raises(SecAggError, match="authentication"):
        aead_decrypt(key, bytes(flipped), b"ad-1")
    with pytest.raises(SecAggError, match="authentication"):
        aead_decrypt(key, ct, b"ad-2")  # another sender, round or stage
    with pytest.raises(SecAggError, match="authentication"):
        aead_decrypt(bytes(32), ct, b"ad-1")


def test_key_agreement_is_symmetric_and_bound_to_info():
    a, b = KeyPair(), KeyPair()
    assert agree(a.private, b.public, b"x") == agree(b.private, a.public, b"x")
    assert agree(a.private, b.public, b"x") != agree(a.private, b.public, b"y")
    with pytest.raises(SecAggError, match="32 bytes"):
        agree(a.private, b"short", b"x")


def test_mask_prg_is_deterministic_uniform_and_seed_sensitive():
    seed = bytes(range(32))
    a, b = expand_mask(seed, 100_000, 16), expand_mask(seed, 100_000, 16)
    np.testing.assert_array_equal(a, b)
    c = expand_mask(bytes(31) + b"\x01", 100_000, 16)
    assert np.mean(a == c) < 0.001
    counts = np.bincount((a >> np.uint64(8)).astype(np.int64), minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-4
    assert a.max() < 1 << 16


@pytest.mark.parametrize(("n", "k"), [(10, 3), (10, 4), (9, 3), (9, 4), (7, 6), (5, 10),
                                      (100, default_degree(100))])
def test_graph_is_regular_symmetric_without_self_loops(n, k):
    ids = list(range(100, 100 + n))
    g = regular_graph(ids, k, np.random.default_rng(0))
    degrees = {len(v) for v in g.values()}
    expected = min(n - 1, k + (n * k) % 2)
    assert degrees == {expected}
    for u, vs in g.items():
        assert u not in vs
        assert all(u in g[v] for v in vs)


def test_quantizer_is_unbiased_bounded_and_cannot_wrap():
    q = Quantizer(clip_range=1.0, bits=8)
    rng = np.random.default_rng(0)
    x = np.full(200_000, 0.123)
    enc = q.encode(x, rng)
    decoded = enc.astype(np.float64) * q.step - q.clip_range
    assert abs(decoded.mean() - 0.123) < 6 * q.step / np.sqrt(len(x))
    assert np.abs(decoded - 0.123).max() <= q.step
    n = 1000
    worst = np.full(3, q.levels, dtype=np.uint64) * np.uint64(n)
    assert int(worst.max()) < 1 << q.modulus_bits(n)
    assert q.decode_sum(q.encode(np.array([5.0, -5.0]), rng), 1).tolist() == [1.0, -1.0]
