import dataclasses

import numpy as np
import pytest

from fedpriv.secagg import (
    AdvertiseKeys,
    ClientSecAgg,
    MaskedInput,
    NeighbourKeys,
    RoutedShares,
    SecAggError,
    ServerSecAgg,
    ShareAuthenticationError,
    ShareKeys,
    UnmaskRequest,
    make_setup,
)

D, BITS = 16, 32


@pytest.fixture
def world():
    setup = make_setup(list(range(1, 7)), round_id=5, length=D, modulus_bits=BITS,
                       rng=np.random.default_rng(0), degree=5)
    server = ServerSecAgg(setup)
    clients = {u: ClientSecAgg(node_id=u, setup=setup) for u in setup.neighbours}
    for c in clients.values():
        server.receive(c.advertise_keys())
    return setup, server, clients


def _to_masking(setup, server, clients):
    keys = {u: server.neighbour_keys(u) for u in clients}
    for u, c in clients.items():
        server.receive(c.share_keys(keys[u]))
    return {u: server.routed_shares(u) for u in clients}


def x():
    return np.arange(D, dtype=np.uint64)


def test_server_rejects_replay_wrong_round_and_wrong_stage_then_goes_on(world):
    setup, server, clients = world
    adv = server.transcript[0]
    with pytest.raises(SecAggError, match="replayed"):
        server.receive(adv)
    with pytest.raises(SecAggError, match="round 6"):
        server.receive(dataclasses.replace(adv, round_id=6))
    early = MaskedInput(round_id=5, sender=1, y=x())
    with pytest.raises(SecAggError, match="out of order"):
        server.receive(early)
    with pytest.raises(SecAggError, match="not in this round's cohort"):
        server.receive(dataclasses.replace(adv, sender=99))
    routed = _to_masking(setup, server, clients)  # still usable
    with pytest.raises(SecAggError, match="closed"):
        server.receive(dataclasses.replace(adv, sender=2))
    for u, c in clients.items():
        server.receive(c.mask_input(routed[u], x()))
    reqs = {u: server.unmask_request_for(u) for u in clients}
    for u, c in clients.items():
        server.receive(c.reveal_shares(reqs[u]))
    total, survivors = server.finish()
    np.testing.assert_array_equal(total, x() * np.uint64(6))


def test_server_rejects_wrong_length_dtype_and_range(world):
    setup, server, clients = world
    routed = _to_masking(setup, server, clients)
    good = clients[1].mask_input(routed[1], x())
    with pytest.raises(SecAggError, match="shape"):
        server.receive(MaskedInput(round_id=5, sender=1, y=good.y[:-1]))
    with pytest.raises(SecAggError, match="dtype uint64"):
        server.receive_masked(1, 5, good.y.astype(np.int64))
    with pytest.raises(SecAggError, match=r">= 2\^32"):
        server.receive(MaskedInput(round_id=5, sender=1, y=good.y | np.uint64(1 << 40)))
    server.receive(good)
    assert 1 in server.masked


def test_server_rejects_shares_to_non_neighbours(world):
    setup, server, clients = world
    msg = clients[1].share_keys(server.neighbour_keys(1))
    bad = dataclasses.replace(msg, recipients=msg.recipients[:-1],
                              ciphertexts=msg.ciphertexts[:-1])
    with pytest.raises(SecAggError, match="exactly its neighbours"):
        server.receive(bad)
    server.receive(msg)


def test_client_rejects_replay_wrong_round_stage_and_non_neighbours(world):
    setup, server, clients = world
    c = clients[1]
    keys = server.neighbour_keys(1)
    with pytest.raises(SecAggError, match="round 4"):
        c.share_keys(dataclasses.replace(keys, round_id=4))
    with pytest.raises(SecAggError, match="addressed to node 2"):
        c.share_keys(dataclasses.replace(keys, recipient=2))
    with pytest.raises(SecAggError, match="out of order"):
        c.handle(UnmaskRequest(round_id=5, recipient=1, survivors=(1,), dropped=()))
    with pytest.raises(SecAggError, match="stage must be 1, got 3"):
        NeighbourKeys.from_dict({**keys.to_dict(), "stage": 3})
    stranger = dataclasses.replace(keys, peers=(*keys.peers[:-1], 77))
    with pytest.raises(SecAggError, match="non-neighbours"):
        c.share_keys(stranger)
    c.share_keys(keys)  # still usable
    with pytest.raises(SecAggError, match="already done"):
        c.share_keys(keys)


def test_client_rejects_tampered_share_and_bad_input_then_goes_on(world):
    setup, server, clients = world
    routed = _to_masking(setup, server, clients)
    c, msg = clients[1], routed[1]
    ct = msg.ciphertexts[0]
    tampered = dataclasses.replace(
        msg, ciphertexts=(ct[:20] + bytes([ct[20] ^ 1]) + ct[21:], *msg.ciphertexts[1:]))
    with pytest.raises(ShareAuthenticationError, match="authentication"):
        c.mask_input(tampered, x())
    swapped = dataclasses.replace(msg, ciphertexts=msg.ciphertexts[::-1])
    with pytest.raises(ShareAuthenticationError):
        c.mask_input(swapped, x())  # misrouted: AD names another sender
    with pytest.raises(SecAggError, match=r"shape \(16,\)"):
        c.mask_input(msg, x()[:-1])
    with pytest.raises(SecAggError, match="uint64"):
        c.mask_input(msg, x().astype(np.float64))
    y = c.mask_input(msg, x())  # still usable
    server.receive(y)


def test_client_refuses_to_reveal_both_shares_of_one_neighbour(world):
    with pytest.raises(SecAggError, match="both survivor and dropped"):
        UnmaskRequest(round_id=5, recipient=1, survivors=(1, 2), dropped=(2,))


def test_malformed_dicts_raise_secagg_error():
    with pytest.raises(SecAggError, match="missing fields"):
        AdvertiseKeys.from_dict({"round_id": 1})
    with pytest.raises(SecAggError, match="32 bytes"):
        AdvertiseKeys(round_id=1, sender=1, c_pk=b"x", s_pk=b"y" * 32)
    with pytest.raises(SecAggError, match="differ in length"):
        ShareKeys(round_id=1, sender=1, recipients=(2, 3), ciphertexts=(b"a",))
    with pytest.raises(SecAggError, match="1-D numpy array"):
        MaskedInput(round_id=1, sender=1, y=[1, 2])
    with pytest.raises(SecAggError, match="non-negative int"):
        RoutedShares(round_id=-1, recipient=1, senders=(), ciphertexts=())
