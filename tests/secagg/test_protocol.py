import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedpriv.secagg import (
    MaskedInput,
    Quantizer,
    SecAggAbort,
    ShareKind,
    UnmaskShares,
    drive_round,
    make_setup,
    message_from_dict,
    run_round,
    share_from_bytes,
)

BITS = 40


def plain_sum(xs, ids, bits=BITS):
    return sum(xs[u] for u in ids) % np.uint64(1 << bits)


@settings(max_examples=30, deadline=None)
@given(st.integers(3, 12), st.integers(0, 2**32), st.integers(0, 4), st.data())
def test_unmasked_sum_equals_plaintext_sum_with_dropouts(n, seed, extra_k, data):
    rng = np.random.default_rng(seed)
    ids = list(range(1, n + 1))
    k = min(n - 1, data.draw(st.integers(2, 4)) + extra_k)
    setup = make_setup(ids, round_id=seed % 1000, length=17, modulus_bits=BITS, rng=rng,
                       degree=k)
    xs = {u: rng.integers(0, 1 << 30, 17, dtype=np.uint64) for u in ids}
    # Drop at most k - t clients in total so every neighbourhood keeps t live members.
    k_min = min(len(v) for v in setup.neighbours.values())
    budget = k_min - setup.threshold
    order = [int(u) for u in rng.permutation(ids)]
    drops: dict[int, set[int]] = {}
    for u in order[: data.draw(st.integers(0, budget))]:
        drops.setdefault(data.draw(st.sampled_from([1, 2, 3])), set()).add(u)
    total, tr = run_round(xs, setup=setup, dropouts_after_stage=drops)
    gone_before_mask = drops.get(1, set()) | drops.get(2, set())
    survivors = [u for u in ids if u not in gone_before_mask]
    assert list(tr.survivors) == survivors
    np.testing.assert_array_equal(total, plain_sum(xs, survivors))


def test_list_inputs_and_signed_values_wrap_mod_2b():
    rng = np.random.default_rng(5)
    xs = [rng.integers(-1000, 1000, 30) for _ in range(6)]
    total, _ = run_round(xs, rng=rng, modulus_bits=32)
    signed = total.astype(np.int64)
    signed[signed >= 1 << 31] -= 1 << 32
    np.testing.assert_array_equal(signed, sum(xs))


def test_dequantised_sum_is_within_the_bound():
    rng = np.random.default_rng(1)
    q = Quantizer(clip_range=2.0, bits=16)
    n = 10
    floats = [rng.normal(0, 1.0, 1000) for _ in range(n)]
    enc = [q.encode(x, rng) for x in floats]
    total, _ = run_round(enc, rng=rng, modulus_bits=q.modulus_bits(n))
    got = q.dequantize_sum(total, n)
    want = sum(np.clip(x, -2, 2) for x in floats)
    assert np.abs(got - want).max() <= q.error_bound(n)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_too_many_dropouts_abort_with_a_clear_message(stage):
    rng = np.random.default_rng(2)
    ids = list(range(1, 8))
    setup = make_setup(ids, round_id=1, length=5, modulus_bits=BITS, rng=rng)
    xs = {u: np.arange(5, dtype=np.uint64) for u in ids}
    gone = set(ids[: len(ids) - setup.threshold + 1])  # t - 1 remain
    with pytest.raises(SecAggAbort, match="threshold"):
        run_round(xs, setup=setup, dropouts_after_stage={stage: gone})


def test_server_view_masked_vector_is_uniform_and_hides_the_input():
    rng = np.random.default_rng(3)
    n, d = 10, 200_000
    setup = make_setup(list(range(1, n + 1)), round_id=1, length=d, modulus_bits=32,
                       rng=rng)
    xs = {u: rng.integers(0, 4, d, dtype=np.uint64) for u in setup.neighbours}
    total, tr = run_round(xs, setup=setup)
    y1 = tr.masked_input(1)
    top = np.bincount((y1 >> np.uint64(24)).astype(np.int64), minlength=256)
    assert stats.chisquare(top).pvalue > 1e-4  # top byte uniform despite x in {0..3}
    low = np.bincount((y1 & np.uint64(255)).astype(np.int64), minlength=256)
    assert stats.chisquare(low).pvalue > 1e-4
    # Fresh seeds (a new run with the same inputs): y_1 changes almost everywhere,
    # the sum does not.
    total2, tr2 = run_round(xs, setup=setup)
    assert np.mean(tr2.masked_input(1) == y1) < 1e-3
    np.testing.assert_array_equal(total, total2)
    np.testing.assert_array_equal(total, plain_sum(xs, list(xs), 32))


def test_server_view_never_holds_both_secrets_of_a_client():
    rng = np.random.default_rng(4)
    ids = list(range(1, 11))
    setup = make_setup(ids, round_id=9, length=64, modulus_bits=BITS, rng=rng, degree=6)
    xs = {u: rng.integers(0, 1 << 20, 64, dtype=np.uint64) for u in ids}
    total, server, clients, _ = drive_round(xs, setup, dropouts_after_stage={2: {3}})
    assert not isinstance(total, Exception)
    survivors, dropped = set(server.masked), {3}
    reveal = [m for m in server.transcript if isinstance(m, UnmaskShares)]
    assert reveal
    for m in reveal:
        for v, kind in zip(m.owners, m.kinds, strict=True):
            assert (v in survivors) == (kind == ShareKind.SELF_MASK)
            assert (v in dropped) == (kind == ShareKind.MASK_KEY)
            assert v in setup.neighbours[m.sender]
    # No secret appears in plaintext anywhere in what the server received.
    blob = b"".join(
        b"".join(v if isinstance(v, bytes) else v.tobytes() if isinstance(v, np.ndarray)
                 else b"".join(x for x in v if isinstance(x, bytes)) if isinstance(v, list)
                 else b"" for v in m.to_dict().values())
        for m in server.transcript)
    for u, c in clients.items():
        assert c._s.private not in blob and c._b not in blob, u
    # The server can rebuild the dropped client's s_sk, and survivors' b, only.
    s_shares = [share_from_bytes(sh) for m in reveal
                for v, k, sh in zip(m.owners, m.kinds, m.shares, strict=True) if v == 3]
    assert len(s_shares) >= setup.threshold


def test_messages_round_trip_through_plain_dicts():
    rng = np.random.default_rng(6)
    xs = [rng.integers(0, 100, 8) for _ in range(5)]
    _, tr = run_round(xs, rng=rng, modulus_bits=BITS)
    for m in (*tr.received, *tr.sent, tr.setup):
        d = m.to_dict()
        for v in d.values():
            assert isinstance(v, int | bytes | list | np.ndarray)
            if isinstance(v, list):
                assert all(type(x) in (int, bytes) for x in v)
        back = message_from_dict(type(m).__name__, d)
        if isinstance(m, MaskedInput):
            np.testing.assert_array_equal(back.y, m.y)
        else:
            assert back == m
