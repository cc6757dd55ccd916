"""The server as an attacker: it crafts every server -> client message.

Real client state machines against a server that chooses the threshold, splits the
survivor views, substitutes keys, replays, misroutes and fakes the graph. In every case
the client refuses (SecAggAbort or SecAggError) before revealing anything that would let
the server learn more than the sum of at least ``min_survivors`` clients.
"""

import dataclasses
import itertools

import numpy as np
import pytest

from fedpriv.secagg import (
    ConsistencyRequest,
    IdentityKey,
    KeyPair,
    NeighbourKeys,
    RoutedShares,
    SecAggAbort,
    SecAggError,
    SecurityParams,
    ServerSecAgg,
    ShareAuthenticationError,
    ShareKind,
    UnmaskRequest,
    UnmaskShares,
    advert_payload,
    components,
    consistency_payload,
    enrol,
)

N, D, BITS, ROUND = 10, 16, 32, 7


def x():
    return np.arange(D, dtype=np.uint64)


def world(params=None, n=N):
    en = enrol(list(range(n)), params=params or SecurityParams(), run_id=3)
    server = ServerSecAgg(round_id=ROUND, params=en.params, modulus_bits=BITS, length=D)
    clients = {u: en.client(u, round_id=ROUND, modulus_bits=BITS, max_cohort=n)
               for u in range(n)}
    for c in clients.values():
        server.receive(c.advertise_keys())
    return en, server, clients


def to_consistency(server, clients):
    keys = {u: server.neighbour_keys(u) for u in clients}
    for u, c in clients.items():
        server.receive(c.share_keys(keys[u]))
    routed = {u: server.routed_shares(u) for u in clients}
    for u, c in clients.items():
        server.receive(c.mask_input(routed[u], x()))


def test_parameters_the_clients_derive():
    en, server, clients = world()
    setup = server.close_advertising()
    # n = 10, c = floor(0.1 n) = 1: T = floor(11 / 2) + 1 = 6; t > k / 2.
    assert setup.consistency_threshold == 6 and setup.min_survivors == 6
    k = min(len(v) for v in setup.neighbours.values())
    assert setup.threshold == k // 2 + 1


def test_chosen_threshold_is_refused():
    en, server, clients = world()
    nk = server.neighbour_keys(0)
    with pytest.raises(SecAggAbort, match="announces threshold 1.*derives t=5"):
        clients[0].share_keys(dataclasses.replace(nk, threshold=1))


def test_substituted_keys_are_refused():
    en, server, clients = world()
    nk = server.neighbour_keys(0)
    mine = KeyPair()
    forged = dataclasses.replace(nk, c_pks=(mine.public, *nk.c_pks[1:]))
    with pytest.raises(SecAggAbort, match=f"node {nk.peers[0]} do not carry its signature"):
        clients[0].share_keys(forged)
    # Re-signed with a key the server made itself: still not the roster's key.
    v = nk.peers[0]
    fake = IdentityKey()
    sig = fake.sign(advert_payload(run_id=3, round_id=ROUND, sender=v, c_pk=mine.public,
                                   s_pk=nk.s_pks[0]))
    resigned = dataclasses.replace(nk, c_pks=(mine.public, *nk.c_pks[1:]),
                                   signatures=(sig, *nk.signatures[1:]))
    with pytest.raises(SecAggAbort, match="do not carry its signature"):
        clients[0].share_keys(resigned)


def test_withholding_honest_neighbours_keys_leaves_too_few_to_share_with():
    # The server passes the victim only its corrupt neighbours' keys (c = 1 of them),
    # hoping it shares its secrets with them alone: t > c, so the victim refuses.
    en, server, clients = world(SecurityParams(degree=4))
    nk = server.neighbour_keys(0)
    only = dataclasses.replace(nk, peers=nk.peers[:1], c_pks=nk.c_pks[:1],
                               s_pks=nk.s_pks[:1], signatures=nk.signatures[:1])
    with pytest.raises(SecAggAbort, match="only 1 neighbours advertised keys; the "
                                          "threshold is 3"):
        clients[0].share_keys(only)


def test_keys_from_another_round_or_run_are_refused():
    en, server, clients = world()
    old = en.client(1, round_id=ROUND - 1, modulus_bits=BITS, max_cohort=N)
    adv = old.advertise_keys()  # a valid signature, for round 6
    nk = server.neighbour_keys(0)
    at = nk.peers.index(1)
    replay = dataclasses.replace(
        nk, c_pks=nk.c_pks[:at] + (adv.c_pk,) + nk.c_pks[at + 1:],
        s_pks=nk.s_pks[:at] + (adv.s_pk,) + nk.s_pks[at + 1:],
        signatures=nk.signatures[:at] + (adv.signature,) + nk.signatures[at + 1:])
    with pytest.raises(SecAggAbort, match="node 1"):
        clients[0].share_keys(replay)
    other_run = dataclasses.replace(en.client(0, round_id=ROUND, modulus_bits=BITS,
                                              max_cohort=N), run_id=4)
    other_run.advertise_keys()
    with pytest.raises(SecAggAbort, match="signature"):
        other_run.share_keys(nk)


def test_fake_graph_and_cohort_are_refused():
    en, server, clients = world(SecurityParams(degree=4))
    nk = server.neighbour_keys(0)
    stranger = next(v for v in range(N) if v not in nk.peers and v != 0)
    fake = dataclasses.replace(nk, peers=(*nk.peers[:-1], stranger))
    with pytest.raises(SecAggAbort, match=f"keys from \\[{stranger}\\], not neighbours"):
        clients[0].share_keys(fake)
    tiny = dataclasses.replace(nk, cohort=(0, nk.peers[0]), peers=(), c_pks=(), s_pks=(),
                               signatures=())
    # Victim plus one (possibly colluding) client: c = floor(0.1 x 10 enrolled) = 1
    # colluder is counted whatever cohort the server shows.
    with pytest.raises(SecAggAbort, match="cohort of 2 cannot have the 3 survivors"):
        clients[0].share_keys(dataclasses.replace(tiny, threshold=1))
    with pytest.raises(SecAggAbort, match="outside the roster"):
        clients[0].share_keys(dataclasses.replace(nk, cohort=(*nk.cohort, 99)))
    with pytest.raises(SecAggAbort, match="leaves this client out"):
        clients[0].share_keys(dataclasses.replace(nk, cohort=nk.cohort[1:]))


def test_split_cohort_views_cannot_exchange_shares_or_signatures():
    # Prepare: the server shows client 0 the cohort without client 5 (another graph,
    # thresholds and T), everyone else the real cohort, hoping to run two "worlds" whose
    # consistency checks do not see each other.
    en, server, clients = world()
    keys = {u: server.neighbour_keys(u) for u in clients}
    view = tuple(u for u in range(N) if u != 5)
    at = keys[0].peers.index(5)
    drop5 = lambda t: t[:at] + t[at + 1:]  # noqa: E731
    other = dataclasses.replace(keys[0], cohort=view, threshold=5,
                                peers=drop5(keys[0].peers), c_pks=drop5(keys[0].c_pks),
                                s_pks=drop5(keys[0].s_pks),
                                signatures=drop5(keys[0].signatures))
    sent = {u: c.share_keys(other if u == 0 else keys[u]) for u, c in clients.items()}

    def routed(v, skip=()):  # the malicious server routes bundles whatever the views
        src = [(u, m.ciphertexts[m.recipients.index(v)]) for u, m in sorted(sent.items())
               if v in m.recipients and u not in skip]
        return RoutedShares(round_id=ROUND, recipient=v, senders=tuple(u for u, _ in src),
                            ciphertexts=tuple(ct for _, ct in src))

    # Execute / Assert: shares sealed under one view do not open under the other.
    with pytest.raises(ShareAuthenticationError):
        clients[1].mask_input(routed(1), x())  # holds client 0's bundle
    with pytest.raises(ShareAuthenticationError):
        clients[0].mask_input(routed(0, skip={5}), x())  # 5 is not in its view
    # And a signature of S made under one view does not count under the other.
    payload = consistency_payload(run_id=3, round_id=ROUND, cohort=view, survivors=view)
    sig = en.identities[0].sign(payload)
    assert not en.roster.verify(0, consistency_payload(
        run_id=3, round_id=ROUND, cohort=range(N), survivors=view), sig)


def test_split_survivor_views_cannot_both_gather_signatures():
    # Prepare: the server shows the victim as a survivor to group A and as dropped to
    # group B, and controls one corrupt client (c = 1) that signs both views.
    en, server, clients = world()
    to_consistency(server, clients)
    victim, corrupt = 9, 8
    everyone = tuple(range(N))
    s_a, s_b = everyone, tuple(u for u in everyone if u != victim)
    group_a, group_b = [0, 1, 2, 3, 4], [5, 6, 7]

    def sign(u, s):
        return clients[u].sign_survivors(ConsistencyRequest(round_id=ROUND, recipient=u,
                                                            survivors=s)).signature

    sigs_a = {u: sign(u, s_a) for u in group_a}
    sigs_b = {u: sign(u, s_b) for u in group_b}
    for s, sigs in ((s_a, sigs_a), (s_b, sigs_b)):
        sigs[corrupt] = en.identities[corrupt].sign(consistency_payload(
            run_id=3, round_id=ROUND, cohort=range(N), survivors=s))
    reveals = []
    for s, sigs, group in ((s_a, sigs_a, group_a), (s_b, sigs_b, group_b)):
        signers = tuple(sorted(sigs))
        for u in group:
            req = UnmaskRequest(round_id=ROUND, recipient=u, survivors=s, signers=signers,
                                signatures=tuple(sigs[v] for v in signers))
            try:
                reveals.append(clients[u].reveal_shares(req))
            except SecAggAbort as err:
                assert "6 are needed" in str(err)
    # Assert: at most one view reached T = 6 signatures (A: 5 honest + 1 corrupt), so
    # every share the server holds of the victim is of one kind only.
    assert {r.sender for r in reveals} == set(group_a)
    kinds = {k for r in reveals for v, k in zip(r.owners, r.kinds, strict=True)
             if v == victim}
    assert kinds == {ShareKind.SELF_MASK}


def test_signatures_of_another_set_or_a_changed_set_are_refused():
    en, server, clients = world()
    to_consistency(server, clients)
    s = tuple(range(N))
    sigs = {u: clients[u].sign_survivors(ConsistencyRequest(
        round_id=ROUND, recipient=u, survivors=s)).signature for u in range(N)}
    signers = tuple(range(N))
    good = UnmaskRequest(round_id=ROUND, recipient=0, survivors=s, signers=signers,
                         signatures=tuple(sigs[v] for v in signers))
    with pytest.raises(SecAggAbort, match="other than the one this client signed"):
        clients[0].reveal_shares(dataclasses.replace(good, survivors=s[:-1]))
    swapped = dataclasses.replace(good, signatures=(sigs[1], sigs[0], *good.signatures[2:]))
    with pytest.raises(SecAggAbort, match="does not verify"):
        clients[0].reveal_shares(swapped)
    with pytest.raises(SecAggError, match="signers has duplicates"):
        dataclasses.replace(good, signers=(0, 0), signatures=(sigs[0], sigs[0]))
    few = dataclasses.replace(good, signers=signers[:5], signatures=good.signatures[:5])
    with pytest.raises(SecAggAbort, match="5 clients signed.*6 are needed"):
        clients[0].reveal_shares(few)
    out = clients[0].reveal_shares(good)  # the honest request still works
    assert isinstance(out, UnmaskShares) and set(out.kinds) == {ShareKind.SELF_MASK}


def test_too_small_or_disconnected_survivor_sets_are_refused():
    en, server, clients = world(SecurityParams(degree=4))
    to_consistency(server, clients)
    setup = server.setup
    with pytest.raises(SecAggAbort, match="at least 6 are needed"):
        clients[0].sign_survivors(ConsistencyRequest(round_id=ROUND, recipient=0,
                                                     survivors=(0, 1, 2)))
    # A survivor set that cuts client 0 off from all of its neighbours.
    cut = tuple(sorted(set(range(N)) - set(setup.neighbours[0])))
    with pytest.raises(SecAggAbort, match="only 0 of its neighbours.*2 are needed"):
        clients[0].sign_survivors(ConsistencyRequest(round_id=ROUND, recipient=0,
                                                     survivors=cut))
    # One that keeps two of its neighbours but splits the graph into small components
    # (the server would learn the sum of each).
    split = next(s for s in itertools.combinations(range(N), 6) if 0 in s
                 and len(set(s) & set(setup.neighbours[0])) >= 2
                 and min(len(c) for c in components(setup.neighbours, s)) < 6)
    with pytest.raises(SecAggAbort, match="component of"):
        clients[0].sign_survivors(ConsistencyRequest(round_id=ROUND, recipient=0,
                                                     survivors=split))
    with pytest.raises(SecAggAbort, match="leaves out this client"):
        clients[0].sign_survivors(ConsistencyRequest(round_id=ROUND, recipient=0,
                                                     survivors=tuple(range(1, N))))


def test_server_and_a_colluder_cannot_isolate_a_victim():
    # The server keeps only the colluding neighbour of the victim in S (its other
    # neighbours "dropped"): the victim's y would then be unmasked against the colluder
    # alone, whose pairwise keys the server knows. The victim refuses to sign.
    en, server, clients = world(SecurityParams(degree=4))
    to_consistency(server, clients)
    nbrs = server.setup.neighbours[0]
    colluder = nbrs[0]
    s = tuple(u for u in range(N) if u not in nbrs[1:])
    assert len(s) >= server.setup.min_survivors
    with pytest.raises(SecAggAbort, match="only 1 of its neighbours"):
        clients[0].sign_survivors(ConsistencyRequest(round_id=ROUND, recipient=0,
                                                     survivors=s))
    assert colluder in s


def test_replays_misrouting_and_cross_round_messages_are_refused_then_the_round_completes():
    en, server, clients = world()
    keys = {u: server.neighbour_keys(u) for u in clients}
    with pytest.raises(SecAggError, match="addressed to node 1"):
        clients[0].share_keys(keys[1])  # misrouted
    with pytest.raises(SecAggError, match="round 8"):
        clients[0].share_keys(dataclasses.replace(keys[0], round_id=ROUND + 1))
    for u, c in clients.items():
        server.receive(c.share_keys(keys[u]))
    with pytest.raises(SecAggError, match="already done"):
        clients[0].share_keys(keys[0])  # replayed
    routed = {u: server.routed_shares(u) for u in clients}
    msg = routed[0]
    swapped = dataclasses.replace(msg, ciphertexts=msg.ciphertexts[::-1])
    with pytest.raises(ShareAuthenticationError):
        clients[0].mask_input(swapped, x())  # bundles relabelled: AD names the sender
    with pytest.raises(SecAggError, match="not neighbours with keys: \\[0\\]"):
        clients[0].mask_input(dataclasses.replace(routed[1], recipient=0), x())
    for u, c in clients.items():
        server.receive(c.mask_input(routed[u], x()))
    reqs = {u: server.consistency_request(u) for u in clients}
    for u, c in clients.items():
        server.receive(c.sign_survivors(reqs[u]))
    with pytest.raises(SecAggError, match="already done"):
        clients[0].sign_survivors(reqs[0])  # a second signature is never given
    for u, c in clients.items():
        server.receive(c.reveal_shares(server.unmask_request_for(u)))
    total, survivors = server.finish()
    np.testing.assert_array_equal(total, x() * np.uint64(N))
    assert survivors == list(range(N))


def test_a_client_whose_key_is_not_the_rosters_refuses_to_start():
    en = enrol(list(range(4)))
    with pytest.raises(SecAggAbort, match="not the roster's key"):
        dataclasses.replace(en.client(0, round_id=1, modulus_bits=BITS),
                            identity=IdentityKey())


def test_neighbour_keys_message_carries_signatures_of_the_right_length():
    with pytest.raises(SecAggError, match="64-byte"):
        NeighbourKeys(round_id=1, recipient=0, cohort=(0, 1), threshold=1, peers=(1,),
                      c_pks=(b"a" * 32,), s_pks=(b"b" * 32,), signatures=(b"s",))


def test_a_survivor_floor_holds_against_a_small_cohort_and_small_survivor_sets():
    # Distributed DP sizes each noise share for n_min survivors and charges every ledger
    # for that sum; the clients put that floor on the protocol (min_sum). A server that
    # names a smaller cohort, or gathers fewer survivors than the floor, unmasks nothing.
    from fedpriv.secagg import drive_round

    en = enrol(list(range(20)), params=SecurityParams(), run_id=3)
    small = {u: x() for u in range(5)}  # the server names 5 of the 20 enrolled
    total, _, clients, _ = drive_round(small, enrolment=en, round_id=ROUND,
                                       modulus_bits=BITS, max_cohort=20, min_sum=12)
    assert isinstance(total, SecAggAbort)
    assert all(c.setup is None for c in clients.values())  # nobody shared a key
    server = ServerSecAgg(round_id=ROUND, params=en.params, modulus_bits=BITS, length=D,
                          population=20)
    five = {u: en.client(u, round_id=ROUND, modulus_bits=BITS, max_cohort=20, min_sum=12)
            for u in range(5)}
    for c in five.values():
        server.receive(c.advertise_keys())
    with pytest.raises(SecAggAbort, match="cohort of 5, fewer than the 12"):
        five[0].share_keys(server.neighbour_keys(0))
    # without the floor the same round unmasks a sum of 4 (one client dropped after
    # sharing): the protocol's own minimum for a cohort of 5
    total, server, _, _ = drive_round(small, enrolment=en, round_id=ROUND,
                                      modulus_bits=BITS, max_cohort=20,
                                      dropouts_after_stage={2: {4}})
    assert isinstance(total, np.ndarray) and len(server.masked) == 4
    # a cohort of 12 of which 11 send a masked input: refused at stage 4
    twelve = {u: x() for u in range(12)}
    total, _, clients, _ = drive_round(twelve, enrolment=en, round_id=ROUND,
                                       modulus_bits=BITS, max_cohort=20, min_sum=12,
                                       dropouts_after_stage={2: {11}})
    assert isinstance(total, SecAggAbort)  # the server recovers nothing
    assert all(not c._survivors for c in clients.values())
    total, _, _, _ = drive_round(twelve, enrolment=en, round_id=ROUND, modulus_bits=BITS,
                                 max_cohort=20, min_sum=12)
    assert isinstance(total, np.ndarray)  # all twelve survive: the sum holds 12 shares


def test_the_floor_survives_the_clients_state_between_messages():
    en = enrol(list(range(6)), params=SecurityParams(), run_id=3)
    c = en.client(0, round_id=ROUND, modulus_bits=BITS, min_sum=5)
    c.advertise_keys()
    back = type(c).restore(c.export(), params=en.params, identity=en.identities[0],
                           roster=en.roster)
    assert back.min_sum == 5
    with pytest.raises(SecAggError, match="min_sum must be >= 0"):
        en.client(0, round_id=ROUND, modulus_bits=BITS, min_sum=-1)


def test_members_shown_different_plans_cannot_share_keys():
    # Red-team F-B: the floor counts shares, so a server that sizes most members' noise
    # shares by a weaker plan (another noise multiplier, the same n_min) would unmask a sum
    # with far less noise than the victim's ledger assumes. Each advertisement signs the
    # plan the client derived (binding) and each client checks its neighbours' with its
    # own: one member shown another plan makes the round fail at stage 2.
    en = enrol(list(range(6)), params=SecurityParams(), run_id=3)
    server = ServerSecAgg(round_id=ROUND, params=en.params, modulus_bits=BITS, length=D)
    plans = {u: (b"plan-victim" if u == 0 else b"plan-weak") for u in range(6)}
    clients = {u: en.client(u, round_id=ROUND, modulus_bits=BITS, max_cohort=6,
                            binding=plans[u]) for u in range(6)}
    for c in clients.values():
        server.receive(c.advertise_keys())
    keys = {u: server.neighbour_keys(u) for u in clients}
    with pytest.raises(SecAggAbort, match="shown another plan"):
        clients[0].share_keys(keys[0])  # the victim refuses the others' keys
    for u in range(1, 6):  # and every other member refuses the victim's
        if 0 in keys[u].peers:
            with pytest.raises(SecAggAbort, match="node 0 do not carry its signature"):
                clients[u].share_keys(keys[u])
    # the same plan everywhere: the round goes through, and the binding survives restore
    same = {u: en.client(u, round_id=ROUND + 1, modulus_bits=BITS, max_cohort=6,
                         binding=b"plan") for u in range(6)}
    server = ServerSecAgg(round_id=ROUND + 1, params=en.params, modulus_bits=BITS, length=D)
    for c in same.values():
        server.receive(c.advertise_keys())
    for u, c in same.items():
        server.receive(c.share_keys(server.neighbour_keys(u)))
    back = type(same[0]).restore(same[0].export(), params=en.params,
                                 identity=en.identities[0], roster=en.roster)
    assert back.binding == b"plan"
    # a server holding the roster checks advertisements with the round's binding too
    strict = ServerSecAgg(round_id=ROUND, params=en.params, modulus_bits=BITS, length=D,
                          roster=en.roster, run_id=3, binding=b"plan-weak")
    with pytest.raises(SecAggError, match="does not verify"):
        strict.receive(en.client(0, round_id=ROUND, modulus_bits=BITS,
                                 binding=b"plan-victim").advertise_keys())
