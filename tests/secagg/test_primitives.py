import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import fedpriv.secagg as sa
from fedpriv.secagg import (
    KeyPair,
    KeyPurpose,
    Quantizer,
    SecAggError,
    ShareAuthenticationError,
    aead_decrypt,
    aead_encrypt,
    associated_data,
    combine,
    default_degree,
    expand_mask,
    pair_key,
    regular_graph,
    share_from_bytes,
    share_to_bytes,
    split,
)


def test_every_exported_name_imports():
    for name in sa.__all__:
        assert getattr(sa, name) is not None, name
    assert len(set(sa.__all__)) == len(sa.__all__)


# ----------------------------------------------------------------------- Shamir
@settings(max_examples=20, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(2, 6), st.data())
def test_shamir_every_threshold_subset_reconstructs(secret, k, data):
    t = data.draw(st.integers(1, k))
    shares = split(secret, t, k)
    for subset in itertools.combinations(shares, t):
        assert combine(list(subset), t) == secret


@settings(max_examples=20, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(3, 7), st.data())
def test_shamir_below_threshold_is_detected_not_wrong(secret, k, data):
    t = data.draw(st.integers(2, k))
    shares = split(secret, t, k)
    few = shares[: t - 1]
    with pytest.raises(SecAggError, match="need"):
        combine(few, t)
    # Claiming a smaller threshold does not silently give a wrong secret either.
    with pytest.raises(SecAggError):
        combine(few, t - 1)


def test_shamir_extra_shares_catch_mixed_secrets():
    a, b = split(os.urandom(32), 2, 4), split(os.urandom(32), 2, 4)
    with pytest.raises(SecAggError):
        combine([a[0], a[1], b[2]], 2)
    with pytest.raises(SecAggError, match="two different shares"):
        combine([a[0], b[0], a[1]], 2)


def test_share_bytes_round_trip_and_bad_lengths():
    (sh,) = split(os.urandom(32), 1, 1)
    assert share_from_bytes(share_to_bytes(sh)) == sh
    with pytest.raises(SecAggError, match="68 bytes"):
        share_from_bytes(b"\x00" * 10)


# ----------------------------------------------------------------------- keys, AEAD
def test_key_agreement_is_symmetric_and_bound_to_context():
    a, b = KeyPair(), KeyPair()
    kab = pair_key(a.private, b.public, round_id=3, u=1, v=2, purpose=KeyPurpose.MASK)
    assert kab == pair_key(b.private, a.public, round_id=3, u=2, v=1,
                           purpose=KeyPurpose.MASK)
    assert len(kab) == 32
    for kw in ({"round_id": 4}, {"v": 5}, {"purpose": KeyPurpose.CHANNEL}):
        args = {"round_id": 3, "u": 1, "v": 2, "purpose": KeyPurpose.MASK, **kw}
        assert pair_key(a.private, b.public, **args) != kab
    assert KeyPair(a.private).public == a.public


def test_aead_round_trip_and_rejections():
    key, other = os.urandom(32), os.urandom(32)
    ad = associated_data(1, 2, 7, 2)
    ct = aead_encrypt(key, b"bundle", ad)
    assert aead_decrypt(key, ct, ad) == b"bundle"
    tampered = ct[:-1] + bytes([ct[-1] ^ 1])
    for k, c, a in ((key, tampered, ad), (other, ct, ad),
                    (key, ct, associated_data(2, 1, 7, 2)),
                    (key, ct, associated_data(1, 2, 8, 2)),
                    (key, ct, associated_data(1, 2, 7, 3))):
        with pytest.raises(ShareAuthenticationError, match="authentication"):
            aead_decrypt(k, c, a)
    with pytest.raises(ShareAuthenticationError, match="too short"):
        aead_decrypt(key, b"abc", ad)


# ----------------------------------------------------------------------- PRG
def test_prg_deterministic_and_seed_sensitive():
    s = os.urandom(32)
    a = expand_mask(s, 1000, 40)
    np.testing.assert_array_equal(a, expand_mask(s, 1000, 40))
    assert a.dtype == np.uint64 and a.max() < 1 << 40
    b = expand_mask(bytes([s[0] ^ 1]) + s[1:], 1000, 40)
    assert np.mean(a == b) < 0.01
    np.testing.assert_array_equal(expand_mask(s, 10, 64)[:5], expand_mask(s, 5, 64))


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["aes128-ctr", "chacha20"]), st.integers(0, 5000),
       st.sampled_from([8, 64, 1024]), st.integers(1, 3))
def test_chunked_threaded_accumulation_equals_whole_masks(prg, d, chunk, threads):
    # The keystream is random access: chunks and per-thread ranges that seek into it
    # must give exactly the masks expanded in one piece.
    seeds = [os.urandom(32) for _ in range(4)]
    whole = [expand_mask(sd, d, 64, prg) for sd in seeds]
    y = np.arange(d, dtype=np.uint64)
    got = sa.accumulate(np.zeros(d, np.uint64), plus=seeds[:3], minus=seeds[3:], adds=[y],
                        prg=prg, chunk_words=chunk, threads=threads)
    np.testing.assert_array_equal(got, whole[0] + whole[1] + whole[2] - whole[3] + y)


def test_aes_and_chacha_masks_differ_and_bad_arguments_are_refused():
    s = os.urandom(32)
    assert np.mean(expand_mask(s, 1000, 64, "aes128-ctr")
                   == expand_mask(s, 1000, 64, "chacha20")) < 0.01
    with pytest.raises(ValueError, match="prg must be"):
        expand_mask(s, 10, 64, "rc4")
    with pytest.raises(ValueError, match="multiple of 8"):
        sa.accumulate(np.zeros(10, np.uint64), plus=[s], chunk_words=12)
    with pytest.raises(ValueError, match="C-contiguous 1-D uint64"):
        sa.accumulate(np.zeros(10, np.int64), plus=[s])


@pytest.mark.parametrize("prg", ["aes128-ctr", "chacha20"])
@pytest.mark.parametrize("bits", [8, 20, 64])
def test_prg_residues_are_uniform(bits, prg):
    x = expand_mask(os.urandom(32), 200_000, bits, prg)
    top = (x >> np.uint64(bits - 8)).astype(np.int64)  # top byte
    counts = np.bincount(top, minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-4
    low = np.bincount((x & np.uint64(255)).astype(np.int64), minlength=256)
    assert stats.chisquare(low).pvalue > 1e-4


# ----------------------------------------------------------------------- graph
@settings(max_examples=40, deadline=None)
@given(st.integers(2, 40), st.integers(1, 45), st.integers(0, 2**32))
def test_graph_regular_symmetric_no_self_loops(n, k, seed):
    ids = list(range(10, 10 + n))
    g = regular_graph(ids, k, np.random.default_rng(seed))
    want = n - 1 if k >= n - 1 else k + (n * k) % 2
    assert set(g) == set(ids)
    for u, vs in g.items():
        assert u not in vs and len(set(vs)) == len(vs) == want
        assert all(u in g[v] for v in vs)


def test_default_degree_is_logarithmic():
    assert default_degree(2) == 1 and default_degree(10) == 9
    assert default_degree(100) == 15 and default_degree(1000) == 21


# ----------------------------------------------------------------------- quantisation
def test_stochastic_rounding_is_unbiased():
    q = Quantizer(clip_range=1.0, bits=4)
    rng = np.random.default_rng(0)
    x = np.full(200_000, 0.123456)
    err = q.decode_sum(q.encode(x, rng), 1) - x  # per-value error
    # mean error within 6 standard errors of 0 (std <= step / 2)
    assert abs(err.mean()) < 6 * (q.step / 2) / np.sqrt(x.size)
    assert np.abs(err).max() < q.step


def test_quantisation_error_bound_and_no_wrap_at_max_range():
    n, q = 50, Quantizer(clip_range=3.0, bits=16)
    rng = np.random.default_rng(1)
    xs = [rng.uniform(-5, 5, 2000) for _ in range(n)] + [np.full(2000, 9.0)]
    n = len(xs)
    b = q.modulus_bits(n, weight_bits=4)
    total = sum(q.encode(x, rng) * np.uint64(15) for x in xs)  # max weight 2^4 - 1
    assert int(total.max()) < 1 << b  # the sum at maximal range and weight fits
    got = q.dequantize_sum(total, n, weight=15 * n) / 15
    want = sum(np.clip(x, -3, 3) for x in xs)
    assert np.abs(got - want).max() <= q.error_bound(n)


def test_quantizer_validation_names_field():
    with pytest.raises(ValueError, match="clip_range must be in"):
        Quantizer(clip_range=0.0, bits=8)
    with pytest.raises(ValueError, match="modulus bits"):
        Quantizer(clip_range=1.0, bits=40).modulus_bits(10**6, weight_bits=20)
    with pytest.raises(ValueError, match="finite"):
        Quantizer(clip_range=1.0, bits=8).encode(np.array([np.nan]),
                                                 np.random.default_rng(0))


@settings(max_examples=200, deadline=None)
@given(bits=st.integers(1, 64), data=st.data())
def test_a_masked_vector_packs_to_its_modulus_bytes_and_back(bits, data):
    from fedpriv.secagg import pack, unpack, word_bytes

    d = data.draw(st.integers(0, 40))
    y = np.array(data.draw(st.lists(st.integers(0, 2 ** bits - 1), min_size=d, max_size=d)),
                 dtype=np.uint64)
    wire = pack(y, bits)
    assert wire.dtype == np.uint8 and wire.shape == (d * word_bytes(bits),)
    assert word_bytes(bits) == -(-bits // 8)
    np.testing.assert_array_equal(unpack(wire, bits, d), y)


def test_a_packed_vector_of_the_wrong_size_type_or_range_is_refused():
    from fedpriv.secagg import pack, unpack

    y = np.array([0, 1, 2 ** 44 - 1], np.uint64)
    wire = pack(y, 44)  # 6 bytes each
    with pytest.raises(SecAggError, match="is 18 bytes, got 17"):
        unpack(wire[:-1], 44, 3)
    with pytest.raises(SecAggError, match="travels as 1-D uint8"):
        unpack(y, 44, 3)
    over = wire.copy()
    over[5] = 0x10  # coordinate 0 becomes 2^44
    with pytest.raises(SecAggError, match="does not fit the modulus 2"):
        unpack(over, 44, 3)
    with pytest.raises(ValueError, match="does not fit 44 bits"):
        pack(np.array([2 ** 44], np.uint64), 44)
    with pytest.raises(ValueError, match="1-D uint64"):
        pack(y.astype(np.int64), 44)
    with pytest.raises(ValueError, match=r"\[1, 64\]"):
        pack(y, 65)


def test_wire_size_counts_a_masked_vector_as_it_travels():
    from fedpriv.secagg import MaskedInput, wire_size

    msg = MaskedInput(round_id=1, sender=2, y=np.zeros(10, np.uint64))
    assert wire_size(msg) == 3 * 8 + 10 * 8  # round, sender, stage; y as uint64 words
    assert wire_size(msg, bits=40) == 3 * 8 + 10 * 5
    assert wire_size(msg, bits=14) == 3 * 8 + 10 * 2
