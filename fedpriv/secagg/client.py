"""The client's SecAgg+ state machine. No I/O; see :mod:`fedpriv.secagg.protocol`.

Bell et al. 2020 (CCS), Algorithm 1, client side (after Bonawitz et al. 2017, Figure 4).
Order of calls for one round::

    client = ClientSecAgg(node_id=u, setup=setup)      # stage 0: RoundSetup received
    adv = client.advertise_keys()                      # -> AdvertiseKeys
    sk = client.share_keys(neighbour_keys)             # NeighbourKeys -> ShareKeys
    y = client.mask_input(routed_shares, x)            # RoutedShares, x -> MaskedInput
    rev = client.reveal_shares(unmask_request)         # UnmaskRequest -> UnmaskShares

(:meth:`ClientSecAgg.handle` dispatches on the message type.) Every method validates
before it changes state, so a rejected message (:class:`SecAggError`) leaves the client
exactly as it was.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedpriv.secagg.aead import aead_decrypt, aead_encrypt, associated_data
from fedpriv.secagg.errors import SecAggAbort, SecAggError
from fedpriv.secagg.keys import KeyPair, KeyPurpose, pair_key
from fedpriv.secagg.messages import (
    AdvertiseKeys,
    MaskedInput,
    NeighbourKeys,
    RoutedShares,
    ShareKeys,
    ShareKind,
    UnmaskRequest,
    UnmaskShares,
)
from fedpriv.secagg.prg import expand_mask
from fedpriv.secagg.setup import RoundSetup, Stage
from fedpriv.secagg.shamir import (
    SHARE_BYTES,
    Share,
    share_from_bytes,
    share_to_bytes,
    split,
)

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
        This client's id in ``setup.neighbours``.
    setup : RoundSetup
        The stage-0 message.

    Notes
    -----
    Secrets (``_c``, ``_s`` key pairs, self-mask seed ``_b``) are fresh per round from the
    OS CSPRNG. ``_stage`` is the last stage this client completed.
    """

    node_id: int
    setup: RoundSetup
    _c: KeyPair = field(default_factory=KeyPair)
    _s: KeyPair = field(default_factory=KeyPair)
    _b: bytes = field(default_factory=lambda: os.urandom(32))
    _stage: int = Stage.SETUP
    _peer_keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    _received: dict[int, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.node_id not in self.setup.neighbours:
            raise SecAggError(f"node {self.node_id} is not in this round's graph")

    # ------------------------------------------------------------ state as plain values
    def export(self) -> dict[str, bytes | int | list[int] | list[bytes]]:
        """The client's secret state as plain values, to keep between messages.

        A deployed or simulated client may be a fresh process for every message; the
        state (private keys and seeds included) must stay on the client's node.
        """
        peers = sorted(self._peer_keys)
        recv = sorted(self._received)
        return {
            "node": self.node_id, "c-sk": self._c.private, "s-sk": self._s.private,
            "b": self._b, "stage": int(self._stage),
            "peers": peers, "peer-c": [self._peer_keys[v][0] for v in peers],
            "peer-s": [self._peer_keys[v][1] for v in peers],
            "recv": recv, "recv-ct": [self._received[v] for v in recv],
        }

    @classmethod
    def restore(cls, setup: RoundSetup, state: dict[str, Any]) -> ClientSecAgg:
        """Rebuild a client from :meth:`export` output."""
        try:
            client = cls(node_id=int(state["node"]), setup=setup,
                         _c=KeyPair(bytes(state["c-sk"])), _s=KeyPair(bytes(state["s-sk"])),
                         _b=bytes(state["b"]), _stage=Stage(int(state["stage"])))
            client._peer_keys = {int(v): (bytes(c), bytes(s_)) for v, c, s_ in zip(
                state["peers"], state["peer-c"], state["peer-s"], strict=True)}
            client._received = {int(v): bytes(ct) for v, ct in zip(
                state["recv"], state["recv-ct"], strict=True)}
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, SecAggError):
                raise
            raise SecAggError(f"malformed client state: {err!r}") from None
        return client

    @property
    def neighbours(self) -> tuple[int, ...]:
        """The neighbours of this client in the graph."""
        return self.setup.neighbours[self.node_id]

    def _check(self, msg: Any, step: Stage) -> None:
        """Reject ``msg`` (which triggers client step ``step``) unless it is due now."""
        rid = self.setup.round_id
        if msg.round_id != rid:
            raise SecAggError(f"node {self.node_id}: message for round {msg.round_id}, "
                              f"this is round {rid}")
        if msg.recipient != self.node_id:
            raise SecAggError(f"node {self.node_id}: message addressed to node "
                              f"{msg.recipient}")
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
        return pair_key(self._c.private, self._peer_keys[v][0],
                        round_id=self.setup.round_id, u=self.node_id, v=v,
                        purpose=KeyPurpose.CHANNEL)

    # ------------------------------------------------------------ stage 1
    def advertise_keys(self) -> AdvertiseKeys:
        """Stage 1: the fresh public keys (c_pk, s_pk).

        Two key pairs because the channel key encrypts shares while s_sk itself is
        Shamir-shared: sharing the key that also protects the shares would let the
        server, once it rebuilt a dropped client's s_sk, read that client's mail.
        """
        if self._stage != Stage.SETUP:
            raise SecAggError(f"node {self.node_id}: keys already advertised")
        self._stage = Stage.ADVERTISE
        return AdvertiseKeys(round_id=self.setup.round_id, sender=self.node_id,
                             c_pk=self._c.public, s_pk=self._s.public)

    # ------------------------------------------------------------ stage 2
    def share_keys(self, msg: NeighbourKeys) -> ShareKeys:
        """Stage 2: t-of-k shares of b_u and s_sk_u, one AEAD bundle per neighbour.

        Shares make a dropout recoverable (its s_sk) and a survivor unmaskable (its b);
        the AEAD keeps them from the server, which only routes them.
        """
        self._check(msg, Stage.SHARE)
        keys = dict(zip(msg.peers, zip(msg.c_pks, msg.s_pks, strict=True), strict=True))
        unknown = set(keys) - set(self.neighbours)
        if unknown:
            raise SecAggError(f"node {self.node_id}: keys from non-neighbours "
                              f"{sorted(unknown)}")
        if len(keys) < self.setup.threshold:
            raise SecAggAbort(f"node {self.node_id}: only {len(keys)} neighbours "
                              f"advertised keys; the threshold is {self.setup.threshold}")
        rid, t = self.setup.round_id, self.setup.threshold
        peers = sorted(keys)
        b_shares = split(self._b, t, len(peers))
        s_shares = split(self._s.private, t, len(peers))
        cts = []
        for v, bs, ss in zip(peers, b_shares, s_shares, strict=True):
            key = pair_key(self._c.private, keys[v][0], round_id=rid, u=self.node_id, v=v,
                           purpose=KeyPurpose.CHANNEL)
            cts.append(aead_encrypt(key, share_to_bytes(bs) + share_to_bytes(ss),
                                    associated_data(self.node_id, v, rid, Stage.SHARE)))
        self._peer_keys = keys
        self._stage = Stage.SHARE
        return ShareKeys(round_id=rid, sender=self.node_id, recipients=tuple(peers),
                         ciphertexts=tuple(cts))

    # ------------------------------------------------------------ stage 3
    def mask_input(self, msg: RoutedShares, x: np.ndarray) -> MaskedInput:
        """Stage 3: y_u = x_u + PRG(b_u) + sum_{v in U2 cap N(u)} +-PRG(s_uv) mod 2^b.

        The pairwise masks (+ when u < v, - otherwise) cancel in the sum; the self mask
        b_u protects x_u should the server rebuild u's pairwise masks (double masking,
        Bonawitz et al. 2017, Section 4). Shares are authenticated now, so forgeries are
        rejected before the client commits to a masked input.
        """
        self._check(msg, Stage.MASK)
        bad = set(msg.senders) - set(self._peer_keys)
        if bad:
            raise SecAggError(f"node {self.node_id}: shares from clients that are not "
                              f"neighbours with keys: {sorted(bad)}")
        if len(msg.senders) < self.setup.threshold:
            raise SecAggAbort(f"node {self.node_id}: only {len(msg.senders)} neighbours "
                              f"shared keys; the threshold is {self.setup.threshold}")
        d, bits, rid = self.setup.length, self.setup.modulus_bits, self.setup.round_id
        if not isinstance(x, np.ndarray) or x.dtype != np.uint64 or x.shape != (d,):
            raise SecAggError(f"node {self.node_id}: input must be a uint64 array of shape "
                              f"({d},), got {getattr(x, 'dtype', type(x).__name__)} "
                              f"{getattr(x, 'shape', '')}")
        if bits < 64 and d and int(x.max()) >> bits:
            raise SecAggError(f"node {self.node_id}: input has values >= 2^{bits}")
        for v, ct in zip(msg.senders, msg.ciphertexts, strict=True):
            _unpack_bundle(aead_decrypt(self._channel_key(v), ct,
                                        associated_data(v, self.node_id, rid, Stage.SHARE)))
        y = x + expand_mask(self._b, d, bits)  # (d,) self mask, wraps mod 2^64
        for v in sorted(msg.senders):
            seed = pair_key(self._s.private, self._peer_keys[v][1], round_id=rid,
                            u=self.node_id, v=v, purpose=KeyPurpose.MASK)
            m = expand_mask(seed, d, bits)  # (d,)
            if self.node_id < v:
                y += m
            else:
                y -= m
        if bits < 64:
            y &= np.uint64((1 << bits) - 1)
        self._received = dict(zip(msg.senders, msg.ciphertexts, strict=True))
        self._stage = Stage.MASK
        return MaskedInput(round_id=rid, sender=self.node_id, y=y)

    # ------------------------------------------------------------ stage 4
    def reveal_shares(self, msg: UnmaskRequest) -> UnmaskShares:
        """Stage 4: shares of b_v for surviving and of s_sk_v for dropped neighbours.

        Never both for one v (the request is rejected if it names v in both lists):
        with b_v and s_sk_v the server could strip every mask from y_v.
        """
        self._check(msg, Stage.UNMASK)
        s_set, d_set = set(msg.survivors), set(msg.dropped)
        if self.node_id not in s_set:
            raise SecAggError(f"node {self.node_id}: this client is not among the "
                              "survivors")
        outside = (s_set | d_set) - set(self.neighbours) - {self.node_id}
        if outside:
            raise SecAggError(f"node {self.node_id}: survivor/dropped lists name "
                              f"non-neighbours {sorted(outside)}")
        live = (s_set & set(self._received)) | {self.node_id}
        if len(live) < self.setup.threshold:
            raise SecAggAbort(f"node {self.node_id}: only {len(live)} surviving clients in "
                              f"its neighbourhood; the threshold is {self.setup.threshold}")
        rid = self.setup.round_id
        owners, kinds, shares = [], [], []
        for v in sorted(self._received):
            if v not in s_set and v not in d_set:
                continue
            b_share, s_share = _unpack_bundle(aead_decrypt(
                self._channel_key(v), self._received[v],
                associated_data(v, self.node_id, rid, Stage.SHARE)))
            owners.append(v)
            kinds.append(ShareKind.SELF_MASK if v in s_set else ShareKind.MASK_KEY)
            shares.append(b_share if v in s_set else s_share)
        self._stage = Stage.UNMASK
        return UnmaskShares(round_id=rid, sender=self.node_id, owners=tuple(owners),
                            kinds=tuple(kinds), shares=tuple(shares))

    def handle(self, msg: NeighbourKeys | RoutedShares | UnmaskRequest,
               x: np.ndarray | None = None) -> ShareKeys | MaskedInput | UnmaskShares:
        """Dispatch a server message to its stage (``x`` is needed for RoutedShares)."""
        if isinstance(msg, NeighbourKeys):
            return self.share_keys(msg)
        if isinstance(msg, RoutedShares):
            if x is None:
                raise SecAggError("RoutedShares needs the input vector x")
            return self.mask_input(msg, x)
        if isinstance(msg, UnmaskRequest):
            return self.reveal_shares(msg)
        raise SecAggError(f"a client does not accept {type(msg).__name__} messages")

    # ------------------------------------------------------------ dict-based API
    def advertise(self) -> dict[str, bytes]:
        """:meth:`advertise_keys` as ``{"c_pk": ..., "s_pk": ...}``."""
        msg = self.advertise_keys()
        return {"c_pk": msg.c_pk, "s_pk": msg.s_pk}

    def share(self, round_id: int, keys: dict[int, tuple[bytes, bytes]]
              ) -> dict[int, bytes]:
        """:meth:`share_keys` on ``{v: (c_pk, s_pk)}``; returns ``{v: ciphertext}``."""
        peers = sorted(keys)
        out = self.share_keys(NeighbourKeys(
            round_id=round_id, recipient=self.node_id, peers=tuple(peers),
            c_pks=tuple(keys[v][0] for v in peers), s_pks=tuple(keys[v][1] for v in peers)))
        return dict(zip(out.recipients, out.ciphertexts, strict=True))

    def mask(self, round_id: int, ciphertexts: dict[int, bytes], x: np.ndarray
             ) -> np.ndarray:
        """:meth:`mask_input` on ``{v: ciphertext}``; returns y."""
        src = sorted(ciphertexts)
        return self.mask_input(RoutedShares(
            round_id=round_id, recipient=self.node_id, senders=tuple(src),
            ciphertexts=tuple(ciphertexts[v] for v in src)), x).y

    def unmask(self, round_id: int, survivors: list[int], dropped: list[int]
               ) -> dict[int, tuple[Share, str]]:
        """:meth:`reveal_shares`; returns ``{v: ((x, y), "b" | "s")}``."""
        out = self.reveal_shares(UnmaskRequest(round_id=round_id, recipient=self.node_id,
                                               survivors=tuple(survivors),
                                               dropped=tuple(dropped)))
        return {v: (share_from_bytes(sh), "b" if k == ShareKind.SELF_MASK else "s")
                for v, k, sh in zip(out.owners, out.kinds, out.shares, strict=True)}
