import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedpriv.secagg import (
    MaskedInput,
    Quantizer,
    RoundSetup,
    SecAggAbort,
    SecurityParams,
    ShareKind,
    SumLayout,
    UnmaskShares,
    drive_round,
    enrol,
    message_from_dict,
    run_round,
    share_from_bytes,
)

BITS = 40


def plain_sum(xs, ids, bits=BITS):
    return sum(xs[u] for u in ids) % np.uint64(1 << bits) if bits < 64 else sum(
        xs[u] for u in ids)


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 12), st.integers(0, 2**32), st.integers(8, 64), st.data())
def test_unmasked_sum_is_the_exact_integer_sum_over_random_configs(n, seed, bits, data):
    # Prepare: random public parameters, inputs and dropouts within the tolerated budget.
    rng = np.random.default_rng(seed)
    params = SecurityParams(
        threshold_fraction=data.draw(st.sampled_from([0.5, 0.6, 0.75])),
        corruption_rate=data.draw(st.sampled_from([0.0, 0.1, 0.2])),
        degree=data.draw(st.sampled_from([0, 2, 3, 4])),
        prg=data.draw(st.sampled_from(["aes128-ctr", "chacha20"])))
    ids = list(range(1, n + 1))
    d = data.draw(st.integers(1, 40))
    xs = {u: rng.integers(0, 1 << min(bits, 62), d, dtype=np.uint64) for u in ids}
    if params.cohort_problem(n):
        return  # refused up front (the config validator's job, tested elsewhere)
    en = enrol(ids, params=params)
    from fedpriv.secagg import derive_setup

    setup = derive_setup(params, round_id=seed % 1000, cohort=ids, modulus_bits=bits)
    k_min = min(len(v) for v in setup.neighbours.values())
    budget = min(k_min - setup.threshold, n - setup.min_survivors)
    drops: dict[int, set[int]] = {}
    for u in [int(u) for u in rng.permutation(ids)][: data.draw(st.integers(0, budget))]:
        drops.setdefault(data.draw(st.sampled_from([1, 2, 3, 4])), set()).add(u)
    # Execute
    total, tr = run_round(xs, enrolment=en, modulus_bits=bits, round_id=seed % 1000,
                          dropouts_after_stage=drops)
    # Assert: the survivors are those that sent y, and the sum is exact mod 2^b.
    survivors = [u for u in ids if u not in drops.get(1, set()) | drops.get(2, set())]
    assert list(tr.survivors) == survivors
    np.testing.assert_array_equal(total, plain_sum(xs, survivors, bits))


def test_honest_run_with_30_percent_dropouts_yields_the_exact_sum():
    rng = np.random.default_rng(11)
    ids = list(range(20))
    params = SecurityParams(dropout_rate=0.3)
    xs = {u: rng.integers(0, 1 << 40, 1000, dtype=np.uint64) for u in ids}
    drops = {1: {0, 1}, 2: {2, 3}, 3: {4}, 4: {5}}  # 6 of 20 vanish, at every stage
    total, tr = run_round(xs, params=params, modulus_bits=48, dropouts_after_stage=drops)
    assert tr.dropped == (2, 3) and len(tr.survivors) == 16
    np.testing.assert_array_equal(total, plain_sum(xs, tr.survivors, 48))


def test_list_inputs_and_signed_values_wrap_mod_2b():
    rng = np.random.default_rng(5)
    xs = [rng.integers(-1000, 1000, 30) for _ in range(6)]
    total, _ = run_round(xs, modulus_bits=32)
    signed = total.astype(np.int64)
    signed[signed >= 1 << 31] -= 1 << 32
    np.testing.assert_array_equal(signed, sum(xs))


def test_count_and_loss_ride_inside_the_sum_and_only_totals_come_out():
    rng = np.random.default_rng(1)
    layout = SumLayout(quantizer=Quantizer(clip_range=2.0, bits=16))
    n = 10
    bits = layout.modulus_bits(n)
    floats = [rng.normal(0, 1.0, 1000) for _ in range(n)]
    weights = [int(w) for w in rng.integers(1, 500, n)]
    losses = [float(v) for v in rng.uniform(0.1, 3.0, n)]
    enc = [layout.encode(x, weight=w, unclipped=1, loss=lo, rng=rng, bits=bits)
           for x, w, lo in zip(floats, weights, losses, strict=True)]
    total, tr = run_round(enc, modulus_bits=bits)
    got = layout.decode(total, n=n, bits=bits)
    want = sum(w * np.clip(x, -2, 2) for w, x in zip(weights, floats, strict=True))
    assert np.abs(got.update_sum - want).max() <= sum(weights) * layout.quantizer.step
    assert got.weight == sum(weights) and got.unclipped == n
    exact = sum(w * lo for w, lo in zip(weights, losses, strict=True))
    assert got.loss_sum == pytest.approx(exact, abs=n * 2.0 ** -16)
    assert got.mean_loss == pytest.approx(exact / sum(weights), rel=1e-6)
    for m in tr.received:  # the server never sees a count or loss in the clear
        if isinstance(m, MaskedInput):
            assert int(m.y[-3]) not in weights


def test_noise_share_is_summed_exactly_and_sized_into_the_modulus():
    rng = np.random.default_rng(2)
    layout = SumLayout(quantizer=Quantizer(clip_range=1.0, bits=8), noise_bound=1000)
    n, d = 6, 50
    bits = layout.modulus_bits(n)
    update_slot = 255 * (2**20 - 1) + 2 * 1000
    loss_slot = 64 * 2**16 * (2**20 - 1)
    assert bits == (n * max(update_slot, loss_slot)).bit_length()
    zero = np.zeros(d)
    noise = [rng.integers(-1000, 1001, d) for _ in range(n)]
    enc = [layout.encode(zero, weight=1, unclipped=0, loss=0.0, rng=rng, bits=bits,
                         noise=z) for z in noise]
    total, _ = run_round(enc, modulus_bits=bits)
    got = layout.decode(total, n=n, bits=bits)
    step = layout.quantizer.step  # 0 encodes as level 127 or 128 (stochastic rounding)
    np.testing.assert_allclose(got.update_sum, sum(noise) * step, rtol=0, atol=n * step)
    assert np.abs(sum(noise)).max() * step > n * step  # the noise is visible in the sum
    with pytest.raises(ValueError, match="noise_bound"):
        layout.encode(zero, weight=1, unclipped=0, loss=0.0, rng=rng, bits=bits,
                      noise=np.full(d, 1001))


def test_too_many_dropouts_abort_with_a_clear_message():
    rng = np.random.default_rng(2)
    ids = list(range(1, 9))
    xs = {u: rng.integers(0, 9, 5, dtype=np.uint64) for u in ids}
    with pytest.raises(SecAggAbort, match="must survive"):
        run_round(xs, modulus_bits=BITS, dropouts_after_stage={2: {1, 2, 3, 4}})


def test_server_view_masked_vector_is_uniform_and_hides_the_input():
    rng = np.random.default_rng(3)
    n, d = 10, 200_000
    xs = {u: rng.integers(0, 4, d, dtype=np.uint64) for u in range(1, n + 1)}
    en = enrol(list(xs))
    total, tr = run_round(xs, enrolment=en, modulus_bits=32)
    y1 = tr.masked_input(1)
    top = np.bincount((y1 >> np.uint64(24)).astype(np.int64), minlength=256)
    assert stats.chisquare(top).pvalue > 1e-4  # top byte uniform despite x in {0..3}
    low = np.bincount((y1 & np.uint64(255)).astype(np.int64), minlength=256)
    assert stats.chisquare(low).pvalue > 1e-4
    total2, tr2 = run_round(xs, enrolment=en, modulus_bits=32, round_id=1)
    assert np.mean(tr2.masked_input(1) == y1) < 1e-3  # fresh seeds every round
    np.testing.assert_array_equal(total, total2)
    np.testing.assert_array_equal(total, plain_sum(xs, list(xs), 32))


def test_server_view_never_holds_both_secrets_of_a_client():
    rng = np.random.default_rng(4)
    ids = list(range(1, 11))
    en = enrol(ids, params=SecurityParams(degree=6))
    xs = {u: rng.integers(0, 1 << 20, 64, dtype=np.uint64) for u in ids}
    total, server, clients, _ = drive_round(xs, enrolment=en, round_id=9,
                                            modulus_bits=BITS,
                                            dropouts_after_stage={2: {3}})
    assert not isinstance(total, Exception)
    survivors, dropped = set(server.masked), {3}
    reveal = [m for m in server.transcript if isinstance(m, UnmaskShares)]
    assert reveal
    for m in reveal:
        for v, kind in zip(m.owners, m.kinds, strict=True):
            assert (v in survivors) == (kind == ShareKind.SELF_MASK)
            assert (v in dropped) == (kind == ShareKind.MASK_KEY)
            assert v in server.setup.neighbours[m.sender]
    blob = b"".join(
        b"".join(v if isinstance(v, bytes) else v.tobytes() if isinstance(v, np.ndarray)
                 else b"".join(x for x in v if isinstance(x, bytes)) if isinstance(v, list)
                 else b"" for v in m.to_dict().values())
        for m in server.transcript)
    for u, c in clients.items():
        assert c._s.private not in blob and c._b not in blob, u
        assert en.identities[u].private_bytes() not in blob, u
    s_shares = [share_from_bytes(sh) for m in reveal
                for v, k, sh in zip(m.owners, m.kinds, m.shares, strict=True) if v == 3]
    assert len(s_shares) >= server.setup.threshold


def test_messages_round_trip_through_plain_dicts():
    rng = np.random.default_rng(6)
    xs = [rng.integers(0, 100, 8) for _ in range(5)]
    _, tr = run_round(xs, modulus_bits=BITS, dropouts_after_stage={2: {5}})
    kinds = {type(m).__name__ for m in (*tr.received, *tr.sent)}
    assert len(kinds) == 9  # every message type of the five stages
    for m in (*tr.received, *tr.sent):
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
    assert RoundSetup.from_dict(tr.setup.to_dict()).same_terms(tr.setup)
