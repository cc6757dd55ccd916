import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedpriv.secagg import (
    ClientSecAgg,
    Quantizer,
    SecAggAbort,
    SecAggError,
    ServerSecAgg,
    make_setup,
    run_round,
)

BITS = 40


def inputs_for(ids, d, rng, hi=1 << 20):
    return {u: rng.integers(0, hi, d, dtype=np.uint64) for u in ids}


def plain_sum(xs, ids):
    return sum(xs[u] for u in ids) % np.uint64(1 << BITS)


@settings(max_examples=25, deadline=None)
@given(st.integers(3, 12), st.integers(0, 10_000), st.data())
def test_unmasked_sum_equals_plaintext_sum_with_dropouts(n, seed, data):
    rng = np.random.default_rng(seed)
    ids = list(range(1, n + 1))
    setup = make_setup(ids, round_id=seed, length=17, modulus_bits=BITS, rng=rng)
    xs = inputs_for(ids, 17, rng)
    # Drop at most (k - t) clients in total so every needed secret keeps t shares.
    k = min(len(v) for v in setup.neighbours.values())
    budget = k - setup.threshold
    order = list(rng.permutation(ids))
    drops: dict[int, set[int]] = {}
    for u in order[: data.draw(st.integers(0, budget))]:
        drops.setdefault(data.draw(st.sampled_from([1, 2, 3])), set()).add(int(u))
    total, _ = run_round(xs, setup, dropouts_after=drops)
    gone_before_mask = drops.get(1, set()) | drops.get(2, set())
    np.testing.assert_array_equal(total, plain_sum(xs, [u for u in ids
                                                        if u not in gone_before_mask]))


def test_dequantised_sum_is_within_the_bound():
    rng = np.random.default_rng(1)
    q = Quantizer(clip_range=2.0, bits=16)
    ids = list(range(1, 11))
    floats = {u: rng.normal(0, 0.5, 1000) for u in ids}
    setup = make_setup(ids, round_id=1, length=1000, modulus_bits=q.modulus_bits(10),
                       rng=rng)
    enc = {u: q.encode(x, rng) for u, x in floats.items()}
    total, _ = run_round(enc, setup)
    got = q.decode_sum(total, len(ids))
    want = sum(np.clip(x, -2, 2) for x in floats.values())
    assert np.abs(got - want).max() <= len(ids) * q.step


def test_too_many_dropouts_abort_with_a_clear_message():
    rng = np.random.default_rng(2)
    ids = list(range(1, 8))
    setup = make_setup(ids, round_id=1, length=5, modulus_bits=BITS, rng=rng)
    xs = inputs_for(ids, 5, rng)
    with pytest.raises(SecAggAbort, match="threshold"):
        run_round(xs, setup, dropouts_after={2: set(ids[: len(ids) - 1])})


def test_server_view_reveals_nothing_about_one_client():
    rng = np.random.default_rng(3)
    ids = list(range(1, 11))
    d = 200_000
    setup = make_setup(ids, round_id=1, length=d, modulus_bits=32, rng=rng)
    xs = inputs_for(ids, d, rng, hi=4)  # low-entropy inputs: the mask must hide them
    total, server = run_round(xs, setup)
    y1 = next(y for node, stage, y in server.transcript if node == 1 and stage == 3)
    # The masked vector is indistinguishable from uniform mod 2^32 (top byte chi-square)...
    counts = np.bincount((y1 >> np.uint64(24)).astype(np.int64), minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-4
    # ...and is uncorrelated with the input.
    assert abs(np.corrcoef(y1.astype(np.float64), xs[1].astype(np.float64))[0, 1]) < 0.02
    # The same inputs with fresh client seeds: client 1's masked vector changes almost
    # everywhere, the sum does not.
    total2, server2 = run_round(xs, setup)
    y1b = next(y for node, stage, y in server2.transcript if node == 1 and stage == 3)
    assert np.mean(y1 == y1b) < 1e-3
    np.testing.assert_array_equal(total, total2)
    # No client's self-mask seed *and* masking key were both revealed.
    for _, stage, msg in server.transcript:
        if stage == 4:
            assert all(kind == "b" for _, kind in msg.values())  # nobody dropped


def test_dropped_clients_reveal_only_their_masking_key():
    rng = np.random.default_rng(4)
    ids = list(range(1, 11))
    setup = make_setup(ids, round_id=1, length=8, modulus_bits=BITS, rng=rng)
    _, server = run_round(inputs_for(ids, 8, rng), setup, dropouts_after={2: {4}})
    for _, stage, msg in server.transcript:
        if stage == 4:
            assert all(kind == "s" for v, (_, kind) in msg.items() if v == 4)
            assert all(kind == "b" for v, (_, kind) in msg.items() if v != 4)


def fresh(n=5):
    rng = np.random.default_rng(5)
    ids = list(range(1, n + 1))
    setup = make_setup(ids, round_id=9, length=4, modulus_bits=BITS, rng=rng)
    server = ServerSecAgg(setup)
    clients = {u: ClientSecAgg(node_id=u, setup=setup) for u in ids}
    for u, c in clients.items():
        k = c.advertise()
        server.receive_advertise(u, 9, k["c_pk"], k["s_pk"])
    return setup, server, clients


def test_replayed_wrong_round_wrong_stage_and_malformed_messages_are_rejected():
    setup, server, clients = fresh()
    c1 = clients[1]
    with pytest.raises(SecAggError, match="replayed"):
        server.receive_advertise(1, 9, *server.keys[1])
    with pytest.raises(SecAggError, match="round 8"):
        server.receive_shares(1, 8, {})
    with pytest.raises(SecAggError, match="stage 3"):
        c1.mask(9, {}, np.zeros(4, np.uint64))
    with pytest.raises(SecAggError, match="not in this round"):
        server.receive_advertise(99, 9, bytes(32), bytes(range(32)))
    shares = c1.share(9, server.keys_for(1))
    server.receive_shares(1, 9, shares)
    with pytest.raises(SecAggError, match="replayed"):
        server.receive_shares(1, 9, shares)
    for u in (2, 3, 4, 5):
        server.receive_shares(u, 9, clients[u].share(9, server.keys_for(u)))
    with pytest.raises(SecAggError, match="uint64 of shape"):
        c1.mask(9, server.shares_for(1), np.zeros(3, np.uint64))
    with pytest.raises(SecAggError, match="uint64 of shape"):
        c1.mask(9, server.shares_for(1), np.zeros(4, np.float32))
    tampered = dict(server.shares_for(1))
    v = next(iter(tampered))
    tampered[v] = tampered[v][:-1] + bytes([tampered[v][-1] ^ 1])
    with pytest.raises(SecAggError, match="authentication"):
        c1.mask(9, tampered, np.zeros(4, np.uint64))
    # Still usable after every rejection: the honest message goes through.
    y = c1.mask(9, server.shares_for(1), np.ones(4, np.uint64))
    with pytest.raises(SecAggError, match="uint64 of shape"):
        server.receive_masked(1, 9, y[:2])
    with pytest.raises(SecAggError, match=r">= 2\^40"):
        server.receive_masked(1, 9, np.full(4, 1 << 41, np.uint64))
    server.receive_masked(1, 9, y)
    with pytest.raises(SecAggError, match="both survivor and dropped"):
        c1.unmask(9, [1, 2], [2])
