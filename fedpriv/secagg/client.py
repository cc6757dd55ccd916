"""The client's SecAgg+ state machine, secure against a malicious server. No I/O.

Bell et al. 2020 (CCS), Algorithm 1, client side, with the active-adversary additions of
Bonawitz et al. 2017 (CCS), Section 4 and Figure 4: signed key advertisements and a
ConsistencyCheck round. See :mod:`fedpriv.secagg.protocol` for the stages. Order::

    c = ClientSecAgg(node_id=u, run_id=..., round_id=r, params=..., identity=...,
                     roster=..., modulus_bits=b, max_cohort=n)
    adv = c.advertise_keys()               # -> AdvertiseKeys (signed)
    sk = c.share_keys(neighbour_keys)      # NeighbourKeys -> ShareKeys
    y = c.mask_input(routed_shares, x)     # RoutedShares, x -> MaskedInput
    sig = c.sign_survivors(request)        # ConsistencyRequest -> ConsistencySignature
    rev = c.reveal_shares(unmask_request)  # UnmaskRequest -> UnmaskShares

What the client never takes from the server: the threshold, the graph, the minimum
cohort and survivors (all derived by :func:`fedpriv.secagg.params.derive_setup`), the
neighbours' identity keys (the roster, out of band). Two kinds of refusal:

- :class:`SecAggError`: a message that is not due (replayed, another round or stage,
  addressed to another client, malformed, a share that fails authentication). The
  client is unchanged and can go on.
- :class:`SecAggAbort`: evidence that the round cannot be run safely (a forged or
  substituted key, a threshold or graph other than the derived one, a survivor set that
  differs from the one signed, too few signatures or survivors). The client stops for
  this round; it has revealed nothing that lets the server learn more than the sum.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedpriv.secagg.aead import aead_decrypt, aead_encrypt, associated_data
from fedpriv.secagg.errors import SecAggAbort, SecAggError
from fedpriv.secagg.graph import components
from fedpriv.secagg.identity import (
    IdentityKey,
    Roster,
    advert_payload,
    cohort_digest,
    consistency_payload,
)
from fedpriv.secagg.keys import KeyPair, KeyPurpose, pair_key
from fedpriv.secagg.messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    MaskedInput,
    NeighbourKeys,
    RoutedShares,
    ShareKeys,
    ShareKind,
    UnmaskRequest,
    UnmaskShares,
)
from fedpriv.secagg.params import SecurityParams, derive_setup
from fedpriv.secagg.prg import accumulate
from fedpriv.secagg.setup import RoundSetup, Stage
from fedpriv.secagg.shamir import SHARE_BYTES, share_to_bytes, split

__all__ = ["ClientSecAgg"]


def _unpack_bundle(blob: bytes) -> tuple[bytes, bytes]:
    if len(blob) != 2 * SHARE_BYTES:
        raise SecAggError(f"share bundle must be {2 * SHARE_BYTES} bytes, got {len(blob)}")
    return blob[:SHARE_BYTES], blob[SHARE_BYTES:]


@dataclass
class ClientSecAgg:
    """One client's side of one round.

    Parameters
    ----------
    node_id : int
        This client's id in the roster.
    run_id, round_id : int
        Bound into every signature; ``round_id`` into every key and message.
    params : SecurityParams
        The run's public parameters (from the client's own configuration).
    identity : IdentityKey
        This client's long-term signing key; its public half must be
        ``roster.keys[node_id]``.
    roster : Roster
        Every client's identity key, obtained out of band; its size is the population
        the colluding clients are counted on, c = floor(gamma * len(roster)).
    modulus_bits : int
        b, computed by the client from the run's layout and ``max_cohort``.
    max_cohort : int
        The largest cohort the modulus was sized for (0: the roster's size).
    min_sum : int
        A floor its owner puts on how many clients' inputs any sum it helps unmask holds
        (0: none beyond the protocol's ``min_survivors``). Distributed DP sizes each
        client's noise share for ``n_min`` survivors and charges its ledger for that sum,
        so the client refuses a cohort smaller than ``n_min`` (stage 2) and signs no
        survivor set, or component of one, smaller (stage 4): a server that names a small
        cohort cannot unmask a sum with fewer shares than every ledger records.
    binding : bytes
        What every member of the round must agree on (the distributed-DP plan's digest):
        signed into this client's key advertisement and required in its neighbours'
        (:func:`fedpriv.secagg.identity.advert_payload`), so a server cannot size some
        members' noise shares by another plan than others' (the floor counts shares,
        and each must carry the variance the plan says).

    Notes
    -----
    Secrets (``_c``, ``_s`` key pairs, self-mask seed ``_b``) are fresh per round from the
    OS CSPRNG. ``_stage`` is the last stage this client completed.
    """

    node_id: int
    run_id: int
    round_id: int
    params: SecurityParams
    identity: IdentityKey
    roster: Roster
    modulus_bits: int
    max_cohort: int = 0
    min_sum: int = 0
    binding: bytes = b""
    setup: RoundSetup | None = None
    _c: KeyPair = field(default_factory=KeyPair)
    _s: KeyPair = field(default_factory=KeyPair)
    _b: bytes = field(default_factory=lambda: os.urandom(32))
    _stage: int = Stage.SETUP
    _peer_keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    _received: dict[int, bytes] = field(default_factory=dict)
    _survivors: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.node_id not in self.roster:
            raise SecAggAbort(f"node {self.node_id} is not in the roster")
        if self.roster.keys[self.node_id] != self.identity.public:
            raise SecAggAbort(f"node {self.node_id}: its identity key is not the roster's "
                              "key for this id")
        if not 1 <= self.modulus_bits <= 64:
            raise SecAggError(f"modulus_bits must be in [1, 64], got {self.modulus_bits}")
        if self.min_sum < 0:
            raise SecAggError(f"min_sum must be >= 0, got {self.min_sum}")

    # ------------------------------------------------------------ state as plain values
    def export(self) -> dict[str, Any]:
        """The round's secret state as plain values, to keep on the client's node.

        The identity key, roster and parameters are not included: the client reloads
        them from its own files and configuration.
        """
        peers = sorted(self._peer_keys)
        recv = sorted(self._received)
        out: dict[str, Any] = {
            "node": self.node_id, "run": self.run_id, "round": self.round_id,
            "bits": self.modulus_bits, "max-cohort": self.max_cohort,
            "min-sum": self.min_sum, "binding": self.binding,
            "c-sk": self._c.private, "s-sk": self._s.private, "b": self._b,
            "stage": int(self._stage), "peers": peers,
            "peer-c": [self._peer_keys[v][0] for v in peers],
            "peer-s": [self._peer_keys[v][1] for v in peers],
            "recv": recv, "recv-ct": [self._received[v] for v in recv],
            "survivors": list(self._survivors), "cohort": [],
        }
        if self.setup is not None:
            out["cohort"] = list(self.setup.cohort)
        return out

    @classmethod
    def restore(cls, state: dict[str, Any], *, params: SecurityParams,
                identity: IdentityKey, roster: Roster) -> ClientSecAgg:
        """Rebuild a client from :meth:`export` output (the setup is derived again)."""
        try:
            client = cls(node_id=int(state["node"]), run_id=int(state["run"]),
                         round_id=int(state["round"]), params=params, identity=identity,
                         roster=roster, modulus_bits=int(state["bits"]),
                         max_cohort=int(state["max-cohort"]),
                         min_sum=int(state["min-sum"]), binding=bytes(state["binding"]),
                         _c=KeyPair(bytes(state["c-sk"])), _s=KeyPair(bytes(state["s-sk"])),
                         _b=bytes(state["b"]), _stage=Stage(int(state["stage"])))
            client._peer_keys = {int(v): (bytes(c), bytes(s_)) for v, c, s_ in zip(
                state["peers"], state["peer-c"], state["peer-s"], strict=True)}
            client._received = {int(v): bytes(ct) for v, ct in zip(
                state["recv"], state["recv-ct"], strict=True)}
            client._survivors = tuple(int(v) for v in state["survivors"])
            cohort = [int(v) for v in state["cohort"]]
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, SecAggError):
                raise
            raise SecAggError(f"malformed client state: {err!r}") from None
        if cohort:
            client.setup = derive_setup(params, round_id=client.round_id, cohort=cohort,
                                        modulus_bits=client.modulus_bits,
                                        population=len(roster))
        return client

    @property
    def neighbours(self) -> tuple[int, ...]:
        """The neighbours of this client in the derived graph (empty before stage 2)."""
        return self.setup.neighbours[self.node_id] if self.setup is not None else ()

    def _check(self, msg: Any, step: Stage) -> None:
        """Reject ``msg`` (which triggers client step ``step``) unless it is due now."""
        if msg.round_id != self.round_id:
            raise SecAggError(f"node {self.node_id}: message for round {msg.round_id}, "
                              f"this is round {self.round_id}")
        if msg.recipient != self.node_id:
            raise SecAggError(f"node {self.node_id}: message addressed to node "
                              f"{msg.recipient} (misrouted)")
        if msg.stage != msg.STAGE:
            raise SecAggError(f"node {self.node_id}: {type(msg).__name__} must carry stage "
                              f"{int(msg.STAGE)}, got {msg.stage}")
        want = self._stage + 1
        if step < want:
            raise SecAggError(f"node {self.node_id}: stage {int(step)} already done "
                              f"(replayed or late {type(msg).__name__})")
        if step > want:
            raise SecAggError(f"node {self.node_id}: out of order: {type(msg).__name__} "
                              f"starts stage {int(step)}, but this client is due for stage "
                              f"{want}")

    def _channel_key(self, v: int) -> bytes:
        return pair_key(self._c.private, self._peer_keys[v][0], round_id=self.round_id,
                        u=self.node_id, v=v, purpose=KeyPurpose.CHANNEL)

    # ------------------------------------------------------------ stage 1
    def advertise_keys(self) -> AdvertiseKeys:
        """Stage 1: the fresh public keys (c_pk, s_pk), signed with the identity key.

        Two key pairs because the channel key encrypts shares while s_sk itself is
        Shamir-shared: sharing the key that also protects the shares would let the
        server, once it rebuilt a dropped client's s_sk, read that client's mail.
        """
        if self._stage != Stage.SETUP:
            raise SecAggError(f"node {self.node_id}: keys already advertised")
        sig = self.identity.sign(advert_payload(
            run_id=self.run_id, round_id=self.round_id, sender=self.node_id,
            c_pk=self._c.public, s_pk=self._s.public, binding=self.binding))
        self._stage = Stage.ADVERTISE
        return AdvertiseKeys(round_id=self.round_id, sender=self.node_id,
                             c_pk=self._c.public, s_pk=self._s.public, signature=sig)

    # ------------------------------------------------------------ stage 2
    def share_keys(self, msg: NeighbourKeys) -> ShareKeys:
        """Stage 2: derive the setup, verify the neighbours' keys, share b_u and s_sk_u.

        Refuses (:class:`SecAggAbort`) a cohort outside the roster or too large for the
        modulus, a threshold other than the derived one, keys from clients that are not
        neighbours in the derived graph, and any key whose signature does not verify
        against the roster. Shares are t-of-k, one AEAD bundle per neighbour.
        """
        self._check(msg, Stage.SHARE)
        me = self.node_id
        cohort = sorted(msg.cohort)
        if me not in cohort:
            raise SecAggAbort(f"node {me}: the cohort the server names leaves this client "
                              "out")
        strangers = [v for v in cohort if v not in self.roster]
        if strangers:
            raise SecAggAbort(f"node {me}: cohort names clients outside the roster "
                              f"{strangers}")
        cap = self.max_cohort or len(self.roster)
        if len(cohort) > cap:
            raise SecAggAbort(f"node {me}: cohort of {len(cohort)} exceeds the {cap} the "
                              "modulus was sized for")
        if len(cohort) < self.min_sum:
            raise SecAggAbort(f"node {me}: cohort of {len(cohort)}, fewer than the "
                              f"{self.min_sum} clients every sum this client helps unmask "
                              "must hold")
        setup = derive_setup(self.params, round_id=self.round_id, cohort=cohort,
                             modulus_bits=self.modulus_bits, population=len(self.roster))
        if msg.threshold != setup.threshold:
            raise SecAggAbort(f"node {me}: the server announces threshold {msg.threshold}; "
                              f"from the public parameters this client derives "
                              f"t={setup.threshold}")
        nbrs = set(setup.neighbours[me])
        fake = sorted(set(msg.peers) - nbrs)
        if fake:
            raise SecAggAbort(f"node {me}: keys from {fake}, not neighbours in the graph "
                              f"derived for this round and cohort")
        for v, c, s, sig in zip(msg.peers, msg.c_pks, msg.s_pks, msg.signatures,
                                strict=True):
            payload = advert_payload(run_id=self.run_id, round_id=self.round_id, sender=v,
                                     c_pk=c, s_pk=s, binding=self.binding)
            if not self.roster.verify(v, payload, sig):
                raise SecAggAbort(f"node {me}: the keys given for node {v} do not carry its "
                                  "signature (substituted or forged keys, another run or "
                                  "round, or a member shown another plan)")
        keys = dict(zip(msg.peers, zip(msg.c_pks, msg.s_pks, strict=True), strict=True))
        t = setup.threshold
        if len(keys) < t:
            raise SecAggAbort(f"node {me}: only {len(keys)} neighbours advertised keys; the "
                              f"threshold is {t}")
        peers = sorted(keys)
        b_shares = split(self._b, t, len(peers))
        s_shares = split(self._s.private, t, len(peers))
        cts = []
        for v, bs, ss in zip(peers, b_shares, s_shares, strict=True):
            key = pair_key(self._c.private, keys[v][0], round_id=self.round_id, u=me, v=v,
                           purpose=KeyPurpose.CHANNEL)
            cts.append(aead_encrypt(key, share_to_bytes(bs) + share_to_bytes(ss),
                                    associated_data(me, v, self.round_id, Stage.SHARE,
                                                    cohort_digest(setup.cohort))))
        self.setup = setup
        self._peer_keys = keys
        self._stage = Stage.SHARE
        return ShareKeys(round_id=self.round_id, sender=me, recipients=tuple(peers),
                         ciphertexts=tuple(cts))

    # ------------------------------------------------------------ stage 3
    def mask_input(self, msg: RoutedShares, x: np.ndarray) -> MaskedInput:
        """Stage 3: y_u = x_u + PRG(b_u) + sum_{v in U2 cap N(u)} +-PRG(s_uv) mod 2^b.

        The pairwise masks (+ when u < v, - otherwise) cancel in the sum; the self mask
        b_u protects x_u should the server rebuild u's pairwise masks (double masking,
        Bonawitz et al. 2017, Section 4). Shares are authenticated first, so forged or
        misrouted bundles are refused before the client commits to a masked input.
        """
        self._check(msg, Stage.MASK)
        assert self.setup is not None  # stage 2 done
        bad = set(msg.senders) - set(self._peer_keys)
        if bad:
            raise SecAggError(f"node {self.node_id}: shares from clients that are not "
                              f"neighbours with keys: {sorted(bad)}")
        t = self.setup.threshold
        if len(msg.senders) < t:
            raise SecAggAbort(f"node {self.node_id}: only {len(msg.senders)} neighbours "
                              f"shared keys; the threshold is {t}")
        bits = self.modulus_bits
        if not isinstance(x, np.ndarray) or x.dtype != np.uint64 or x.ndim != 1:
            raise SecAggError(f"node {self.node_id}: input must be a 1-D uint64 array, got "
                              f"{getattr(x, 'dtype', type(x).__name__)} "
                              f"{getattr(x, 'shape', '')}")
        if bits < 64 and len(x) and int(x.max()) >> bits:
            raise SecAggError(f"node {self.node_id}: input has values >= 2^{bits}")
        for v, ct in zip(msg.senders, msg.ciphertexts, strict=True):
            _unpack_bundle(aead_decrypt(self._channel_key(v), ct, associated_data(
                v, self.node_id, self.round_id, Stage.SHARE,
                cohort_digest(self.setup.cohort))))
        plus: list[bytes] = [self._b]
        minus: list[bytes] = []
        for v in sorted(msg.senders):
            seed = pair_key(self._s.private, self._peer_keys[v][1], round_id=self.round_id,
                            u=self.node_id, v=v, purpose=KeyPurpose.MASK)
            (plus if self.node_id < v else minus).append(seed)
        y = accumulate(x.copy(), plus=plus, minus=minus, prg=self.setup.prg)  # (d,)
        if bits < 64:
            y &= np.uint64((1 << bits) - 1)
        self._received = dict(zip(msg.senders, msg.ciphertexts, strict=True))
        self._stage = Stage.MASK
        return MaskedInput(round_id=self.round_id, sender=self.node_id, y=y)

    # ------------------------------------------------------------ stage 4
    def sign_survivors(self, msg: ConsistencyRequest) -> ConsistencySignature:
        """Stage 4 (ConsistencyCheck): sign the survivor set S once, if it is acceptable.

        S must lie in the cohort, include this client, hold at least ``min_survivors``
        clients (and ``min_sum``, if larger), and so must every connected component of the
        graph restricted to S
        (the server can learn the sum of each component, nothing finer); at least
        ``min_neighbours`` of the neighbours that shared with this client must be in S
        (so c colluders among them cannot cut it off from every honest client).
        """
        self._check(msg, Stage.CONSISTENCY)
        assert self.setup is not None
        me, s = self.node_id, tuple(sorted(msg.survivors))
        outside = sorted(set(s) - set(self.setup.cohort))
        if outside:
            raise SecAggAbort(f"node {me}: survivor set names clients outside the cohort "
                              f"{outside}")
        if me not in s:
            raise SecAggAbort(f"node {me}: survivor set leaves out this client, which sent "
                              "its masked input")
        need = max(self.setup.min_survivors, self.min_sum)
        if len(s) < need:
            raise SecAggAbort(f"node {me}: {len(s)} survivors; at least {need} are needed "
                              "so the sum covers enough honest clients")
        live = len(set(s) & set(self._received))
        if live < self.setup.min_neighbours:
            raise SecAggAbort(f"node {me}: only {live} of its neighbours that shared with it "
                              f"are survivors; {self.setup.min_neighbours} are needed so "
                              "that colluding clients cannot isolate it")
        small = [c for c in components(self.setup.neighbours, s) if len(c) < need]
        if small:
            raise SecAggAbort(f"node {me}: the survivors' graph splits into a component of "
                              f"{len(small[0])} clients {small[0]}; each needs >= {need}")
        sig = self.identity.sign(consistency_payload(
            run_id=self.run_id, round_id=self.round_id, cohort=self.setup.cohort,
            survivors=s))
        self._survivors = s
        self._stage = Stage.CONSISTENCY
        return ConsistencySignature(round_id=self.round_id, sender=me, signature=sig)

    # ------------------------------------------------------------ stage 5
    def reveal_shares(self, msg: UnmaskRequest) -> UnmaskShares:
        """Stage 5: after T signatures of the signed S, shares of b_v or s_sk_v.

        For each neighbour v that shared with this client: b_v's share if v is in S,
        s_sk_v's if not - never both, and every honest client reveals against the same
        S (at most one set can gather T > (n + c) / 2 signatures).
        """
        self._check(msg, Stage.UNMASK)
        assert self.setup is not None
        me, s = self.node_id, tuple(sorted(msg.survivors))
        if s != self._survivors:
            raise SecAggAbort(f"node {me}: the unmask request names a survivor set other "
                              "than the one this client signed")
        if len(set(msg.signers)) != len(msg.signers):
            raise SecAggAbort(f"node {me}: a signer is listed twice")
        payload = consistency_payload(run_id=self.run_id, round_id=self.round_id,
                                      cohort=self.setup.cohort, survivors=s)
        for v, sig in zip(msg.signers, msg.signatures, strict=True):
            if v not in s or not self.roster.verify(v, payload, sig):
                raise SecAggAbort(f"node {me}: node {v}'s consistency signature does not "
                                  "verify for this survivor set")
        need = self.setup.consistency_threshold
        if len(msg.signers) < need:
            raise SecAggAbort(f"node {me}: {len(msg.signers)} clients signed the survivor "
                              f"set; {need} are needed before any share is revealed")
        live = (set(s) & set(self._received)) | {me}
        if len(live) < self.setup.threshold:
            raise SecAggAbort(f"node {me}: only {len(live)} surviving clients in its "
                              f"neighbourhood; the threshold is {self.setup.threshold}")
        owners, kinds, shares = [], [], []
        for v in sorted(self._received):
            b_share, s_share = _unpack_bundle(aead_decrypt(
                self._channel_key(v), self._received[v],
                associated_data(v, me, self.round_id, Stage.SHARE,
                                cohort_digest(self.setup.cohort))))
            owners.append(v)
            kinds.append(ShareKind.SELF_MASK if v in s else ShareKind.MASK_KEY)
            shares.append(b_share if v in s else s_share)
        self._stage = Stage.UNMASK
        return UnmaskShares(round_id=self.round_id, sender=me, owners=tuple(owners),
                            kinds=tuple(kinds), shares=tuple(shares))

    def handle(self, msg: Any, x: np.ndarray | None = None) -> Any:
        """Dispatch a server message to its stage (``x`` is needed for RoutedShares)."""
        if isinstance(msg, NeighbourKeys):
            return self.share_keys(msg)
        if isinstance(msg, RoutedShares):
            if x is None:
                raise SecAggError("RoutedShares needs the input vector x")
            return self.mask_input(msg, x)
        if isinstance(msg, ConsistencyRequest):
            return self.sign_survivors(msg)
        if isinstance(msg, UnmaskRequest):
            return self.reveal_shares(msg)
        raise SecAggError(f"a client does not accept {type(msg).__name__} messages")
