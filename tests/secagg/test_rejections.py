"""The honest server's own checks: what a misbehaving client cannot slip past it."""

import dataclasses

import numpy as np
import pytest

from fedpriv.secagg import (
    AdvertiseKeys,
    MaskedInput,
    RoutedShares,
    SecAggError,
    ServerSecAgg,
    ShareKeys,
    enrol,
)

D, BITS = 16, 32


@pytest.fixture
def world():
    en = enrol(list(range(1, 7)), run_id=1)
    server = ServerSecAgg(round_id=5, params=en.params, modulus_bits=BITS, length=D)
    clients = {u: en.client(u, round_id=5, modulus_bits=BITS, max_cohort=6)
               for u in range(1, 7)}
    for c in clients.values():
        server.receive(c.advertise_keys())
    return server, clients


def _to_masking(server, clients):
    keys = {u: server.neighbour_keys(u) for u in clients}
    for u, c in clients.items():
        server.receive(c.share_keys(keys[u]))
    return {u: server.routed_shares(u) for u in clients}


def x():
    return np.arange(D, dtype=np.uint64)


def test_server_rejects_replay_wrong_round_and_wrong_stage_then_goes_on(world):
    server, clients = world
    adv = server.transcript[0]
    with pytest.raises(SecAggError, match="replayed"):
        server.receive(adv)
    with pytest.raises(SecAggError, match="round 6"):
        server.receive(dataclasses.replace(adv, round_id=6))
    with pytest.raises(SecAggError, match="out of order"):
        server.receive(MaskedInput(round_id=5, sender=1, y=x()))
    routed = _to_masking(server, clients)  # still usable
    with pytest.raises(SecAggError, match="not in this round's cohort"):
        server.receive(dataclasses.replace(adv, sender=99))
    with pytest.raises(SecAggError, match="closed"):
        server.receive(dataclasses.replace(adv, sender=2))
    for u, c in clients.items():
        server.receive(c.mask_input(routed[u], x()))
    for u, c in clients.items():
        server.receive(c.sign_survivors(server.consistency_request(u)))
    for u, c in clients.items():
        server.receive(c.reveal_shares(server.unmask_request_for(u)))
    total, survivors = server.finish()
    np.testing.assert_array_equal(total, x() * np.uint64(6))


def test_server_rejects_wrong_length_and_range(world):
    server, clients = world
    routed = _to_masking(server, clients)
    good = clients[1].mask_input(routed[1], x())
    with pytest.raises(SecAggError, match="shape"):
        server.receive(MaskedInput(round_id=5, sender=1, y=good.y[:-1]))
    with pytest.raises(SecAggError, match=r">= 2\^32"):
        server.receive(MaskedInput(round_id=5, sender=1, y=good.y | np.uint64(1 << 40)))
    server.receive(good)
    assert 1 in server.masked


def test_server_rejects_shares_to_non_neighbours(world):
    server, clients = world
    msg = clients[1].share_keys(server.neighbour_keys(1))
    bad = dataclasses.replace(msg, recipients=msg.recipients[:-1],
                              ciphertexts=msg.ciphertexts[:-1])
    with pytest.raises(SecAggError, match="exactly its neighbours"):
        server.receive(bad)
    server.receive(msg)


def test_client_rejects_bad_input_then_goes_on(world):
    server, clients = world
    routed = _to_masking(server, clients)
    c, msg = clients[1], routed[1]
    with pytest.raises(SecAggError, match="1-D uint64"):
        c.mask_input(msg, x().astype(np.float64))
    with pytest.raises(SecAggError, match=r"values >= 2\^32"):
        c.mask_input(msg, x() | np.uint64(1 << 33))
    server.receive(c.mask_input(msg, x()))  # still usable


def test_malformed_dicts_raise_secagg_error():
    with pytest.raises(SecAggError, match="missing fields"):
        AdvertiseKeys.from_dict({"round_id": 1})
    with pytest.raises(SecAggError, match="32 bytes"):
        AdvertiseKeys(round_id=1, sender=1, c_pk=b"x", s_pk=b"y" * 32, signature=b"s" * 64)
    with pytest.raises(SecAggError, match="signature must be 64 bytes"):
        AdvertiseKeys(round_id=1, sender=1, c_pk=b"x" * 32, s_pk=b"y" * 32, signature=b"")
    with pytest.raises(SecAggError, match="differ in length"):
        ShareKeys(round_id=1, sender=1, recipients=(2, 3), ciphertexts=(b"a",))
    with pytest.raises(SecAggError, match="1-D numpy array"):
        MaskedInput(round_id=1, sender=1, y=[1, 2])
    with pytest.raises(SecAggError, match="non-negative int"):
        RoutedShares(round_id=-1, recipient=1, senders=(), ciphertexts=())


def test_a_server_with_the_roster_drops_advertisements_under_another_id():
    en = enrol([1, 2, 3], run_id=4)
    server = ServerSecAgg(round_id=5, params=en.params, modulus_bits=BITS, length=D,
                          roster=en.roster, run_id=4)
    c2 = en.client(2, round_id=5, modulus_bits=BITS)
    adv = c2.advertise_keys()
    with pytest.raises(SecAggError, match="does not verify"):
        server.receive(dataclasses.replace(adv, sender=1))  # impersonating client 1
    with pytest.raises(SecAggError, match="not in the roster"):
        server.receive(dataclasses.replace(adv, sender=9))
    server.receive(adv)
    assert list(server.keys) == [2]
