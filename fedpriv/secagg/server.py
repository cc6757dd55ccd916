"""The server's SecAgg+ state machine: route, collect, reconstruct, unmask. No I/O.

Bell et al. 2020 (CCS), Algorithm 1, server side, for an honest-but-curious server. It
sees public keys, ciphertexts it cannot open, masked vectors and - for each client -
shares of its self-mask seed b (it survived) or of its masking key s_sk (it dropped),
never both; ``transcript`` records every message it received. Order of calls::

    server = ServerSecAgg(setup)                  # broadcast setup (RoundSetup)
    server.receive(AdvertiseKeys)  ...            # stage 1, from each client
    server.neighbour_keys(u) -> NeighbourKeys     # closes stage 1; one per advertiser
    server.receive(ShareKeys)  ...                # stage 2
    server.routed_shares(u) -> RoutedShares       # closes stage 2; one per sharer
    server.receive(MaskedInput)  ...              # stage 3
    server.unmask_request(u) -> UnmaskRequest     # closes stage 3; one per survivor
    server.receive(UnmaskShares)  ...             # stage 4
    total, survivors = server.finish()            # closes stage 4; sum mod 2^b

Emitting the first message of the next stage closes collection of the previous one: a
late masked input after unmask requests went out would let the server learn both
shares of one client, so it is rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedpriv.secagg.errors import SecAggAbort, SecAggError
from fedpriv.secagg.keys import KeyPair, KeyPurpose, pair_key
from fedpriv.secagg.messages import (
    AdvertiseKeys,
    MaskedInput,
    Message,
    NeighbourKeys,
    RoutedShares,
    ShareKeys,
    ShareKind,
    UnmaskRequest,
    UnmaskShares,
)
from fedpriv.secagg.prg import expand_mask
from fedpriv.secagg.setup import RoundSetup, Stage
from fedpriv.secagg.shamir import Share, combine, share_from_bytes, share_to_bytes

__all__ = ["ServerSecAgg"]

_KIND = {"b": ShareKind.SELF_MASK, "s": ShareKind.MASK_KEY}


@dataclass
class ServerSecAgg:
    """The server's side of one round (see the module docstring for the call order).

    Attributes
    ----------
    keys : dict
        U1: ``{u: (c_pk, s_pk)}`` of clients that advertised.
    routed : dict
        U2: ``{u: {v: ciphertext}}`` of clients that shared.
    masked : dict
        U3: ``{u: y_u}`` of clients that sent a masked input (the survivors).
    reveals : dict
        U4: ``{u: {v: ((x, y), "b" | "s")}}``, the shares each survivor revealed.
    transcript : list
        Every accepted message, in arrival order (the server's view).
    """

    setup: RoundSetup
    keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    routed: dict[int, dict[int, bytes]] = field(default_factory=dict)
    masked: dict[int, np.ndarray] = field(default_factory=dict)
    reveals: dict[int, dict[int, tuple[Share, str]]] = field(default_factory=dict)
    transcript: list[Message] = field(default_factory=list)
    phase: Stage = Stage.ADVERTISE

    def _expect(self, msg: Any, done: dict[int, Any], prior: dict[int, Any] | None) -> None:
        node, stage = msg.sender, Stage(msg.STAGE)
        if msg.round_id != self.setup.round_id:
            raise SecAggError(f"node {node}: message for round {msg.round_id}, this is "
                              f"round {self.setup.round_id}")
        if msg.stage != msg.STAGE:
            raise SecAggError(f"node {node}: {type(msg).__name__} must carry stage "
                              f"{int(msg.STAGE)}, got {msg.stage}")
        if node not in self.setup.neighbours:
            raise SecAggError(f"node {node} is not in this round's cohort")
        if stage < self.phase:
            raise SecAggError(f"node {node}: stage {int(stage)} is closed (late or "
                              f"replayed {type(msg).__name__})")
        if stage > self.phase:
            raise SecAggError(f"node {node}: out of order: {type(msg).__name__} is stage "
                              f"{int(stage)}, the server is collecting stage "
                              f"{int(self.phase)}")
        if node in done:
            raise SecAggError(f"node {node}: replayed stage {int(stage)} message")
        if prior is not None and node not in prior:
            raise SecAggError(f"node {node}: stage {int(stage)} message without a stage "
                              f"{int(stage) - 1} message")

    def _advance(self, to: Stage) -> None:
        if self.phase > to:
            raise SecAggError(f"stage {int(to) - 1} is closed; the server is at stage "
                              f"{int(self.phase)}")
        self.phase = to

    def receive(self, msg: AdvertiseKeys | ShareKeys | MaskedInput | UnmaskShares) -> None:
        """Accept a client message (dispatch on its type); :class:`SecAggError` if not."""
        handler = {AdvertiseKeys: self.on_advertise, ShareKeys: self.on_share_keys,
                   MaskedInput: self.on_masked_input, UnmaskShares: self.on_unmask_shares
                   }.get(type(msg))
        if handler is None:
            raise SecAggError(f"the server does not accept {type(msg).__name__} messages")
        handler(msg)  # type: ignore[operator]

    # ---------------------------------------------------------------- stage 1
    def on_advertise(self, msg: AdvertiseKeys) -> None:
        """Record a client's public keys (stage 1)."""
        self._expect(msg, self.keys, None)
        self.transcript.append(msg)
        self.keys[msg.sender] = (msg.c_pk, msg.s_pk)

    def neighbour_keys(self, node: int) -> NeighbourKeys:
        """Stage 1 reply: the keys of ``node``'s neighbours that advertised."""
        if node not in self.keys:
            raise SecAggError(f"node {node} advertised no keys")
        self._advance(Stage.SHARE)
        peers = tuple(v for v in self.setup.neighbours[node] if v in self.keys)
        return NeighbourKeys(round_id=self.setup.round_id, recipient=node, peers=peers,
                             c_pks=tuple(self.keys[v][0] for v in peers),
                             s_pks=tuple(self.keys[v][1] for v in peers))

    # ---------------------------------------------------------------- stage 2
    def on_share_keys(self, msg: ShareKeys) -> None:
        """Record a client's sealed share bundles, addressed to its neighbours (stage 2)."""
        self._expect(msg, self.routed, self.keys)
        allowed = {v for v in self.setup.neighbours[msg.sender] if v in self.keys}
        if set(msg.recipients) != allowed:
            raise SecAggError(f"node {msg.sender}: shares must go to exactly its "
                              f"neighbours with keys {sorted(allowed)}, got "
                              f"{sorted(msg.recipients)}")
        self.transcript.append(msg)
        self.routed[msg.sender] = dict(zip(msg.recipients, msg.ciphertexts, strict=True))

    def routed_shares(self, node: int) -> RoutedShares:
        """Stage 2 reply: the bundles addressed to ``node`` by clients that shared."""
        if node not in self.routed:
            raise SecAggError(f"node {node} sent no shares")
        self._advance(Stage.MASK)
        src = tuple(sorted(u for u, cts in self.routed.items() if node in cts))
        return RoutedShares(round_id=self.setup.round_id, recipient=node, senders=src,
                            ciphertexts=tuple(self.routed[u][node] for u in src))

    # ---------------------------------------------------------------- stage 3
    def on_masked_input(self, msg: MaskedInput) -> None:
        """Record a masked input vector (stage 3)."""
        self._expect(msg, self.masked, self.routed)
        d, bits = self.setup.length, self.setup.modulus_bits
        if msg.y.shape != (d,):
            raise SecAggError(f"node {msg.sender}: masked vector must have shape ({d},), "
                              f"got {msg.y.shape}")
        if bits < 64 and int(msg.y.max()) >> bits:
            raise SecAggError(f"node {msg.sender}: masked vector has values >= 2^{bits}")
        self.transcript.append(msg)
        self.masked[msg.sender] = msg.y.copy()

    def _lists(self, node: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        nbrs = set(self.setup.neighbours[node]) | {node}
        survivors = tuple(sorted(nbrs & set(self.masked)))
        dropped = tuple(sorted((nbrs & set(self.routed)) - set(self.masked)))
        return survivors, dropped

    def unmask_request_for(self, node: int) -> UnmaskRequest:
        """Stage 4 request: ``node``'s surviving and dropped neighbours."""
        if node not in self.masked:
            raise SecAggError(f"node {node} sent no masked input")
        self._advance(Stage.UNMASK)
        survivors, dropped = self._lists(node)
        return UnmaskRequest(round_id=self.setup.round_id, recipient=node,
                             survivors=survivors, dropped=dropped)

    # ---------------------------------------------------------------- stage 4
    def on_unmask_shares(self, msg: UnmaskShares) -> None:
        """Record the shares a survivor reveals (stage 4)."""
        self._expect(msg, self.reveals, self.masked)
        survivors, dropped = self._lists(msg.sender)
        got: dict[int, tuple[Share, str]] = {}
        for v, kind, blob in zip(msg.owners, msg.kinds, msg.shares, strict=True):
            ok = v in survivors if kind == ShareKind.SELF_MASK else v in dropped
            if not ok or msg.sender not in self.routed.get(v, {}):
                raise SecAggError(f"node {msg.sender}: unexpected {ShareKind(kind).name} share for "
                                  f"node {v}")
            got[v] = (share_from_bytes(blob), "b" if kind == ShareKind.SELF_MASK else "s")
        self.transcript.append(msg)
        self.reveals[msg.sender] = got

    def _secret(self, v: int, kind: str) -> bytes:
        shares = [rev[v][0] for rev in self.reveals.values()
                  if v in rev and rev[v][1] == kind]
        what = "self-mask seed b" if kind == "b" else "masking key s_sk"
        if len(shares) < self.setup.threshold:
            raise SecAggAbort(f"cannot recover node {v}'s {what}: {len(shares)} shares "
                              f"arrived, the threshold is {self.setup.threshold}")
        try:
            return combine(shares, self.setup.threshold)
        except SecAggError as err:
            raise SecAggAbort(f"cannot recover node {v}'s {what}: {err}") from None

    def finish(self) -> tuple[np.ndarray, list[int]]:
        """The integer sum mod 2^b of the survivors' inputs, and the survivors.

        sum_u y_u - sum_u PRG(b_u) -/+ sum_{v dropped, u ~ v} PRG(s_uv)  (mod 2^b).

        Raises
        ------
        SecAggAbort
            When fewer than ``threshold`` clients survived, or a needed secret lacks
            shares; the caller leaves the global model unchanged.
        """
        if len(self.masked) < self.setup.threshold:
            raise SecAggAbort(f"only {len(self.masked)} clients sent masked inputs; the "
                              f"threshold is {self.setup.threshold}")
        self._advance(Stage.UNMASK)
        d, bits, rid = self.setup.length, self.setup.modulus_bits, self.setup.round_id
        self_seeds = {u: self._secret(u, "b") for u in self.masked}
        dropped = sorted(set(self.routed) - set(self.masked))
        keys_of_dropped = {v: self._secret(v, "s") for v in dropped}
        for v, s_sk in keys_of_dropped.items():  # s_pk_v commits to s_sk_v
            if KeyPair(s_sk).public != self.keys[v][1]:
                raise SecAggAbort(f"node {v}'s rebuilt masking key does not match its s_pk")
        total = np.zeros(d, dtype=np.uint64)  # (d,)
        for y in self.masked.values():
            total += y
        for seed in self_seeds.values():
            total -= expand_mask(seed, d, bits)
        for v, s_sk in keys_of_dropped.items():  # dangling pairwise masks
            for u in self.setup.neighbours[v]:
                if u in self.masked and u in self.routed[v]:
                    seed = pair_key(s_sk, self.keys[u][1], round_id=rid, u=u, v=v,
                                    purpose=KeyPurpose.MASK)
                    if u < v:
                        total -= expand_mask(seed, d, bits)  # u added +PRG(s_uv)
                    else:
                        total += expand_mask(seed, d, bits)
        if bits < 64:
            total &= np.uint64((1 << bits) - 1)
        return total, sorted(self.masked)

    # ---------------------------------------------------------------- dict-based API
    def receive_advertise(self, node: int, round_id: int, c_pk: bytes, s_pk: bytes) -> None:
        """:meth:`on_advertise` from plain values."""
        self.on_advertise(AdvertiseKeys(round_id=round_id, sender=node, c_pk=c_pk,
                                        s_pk=s_pk))

    def keys_for(self, node: int) -> dict[int, tuple[bytes, bytes]]:
        """:meth:`neighbour_keys` as ``{v: (c_pk, s_pk)}``."""
        msg = self.neighbour_keys(node)
        return dict(zip(msg.peers, zip(msg.c_pks, msg.s_pks, strict=True), strict=True))

    def receive_shares(self, node: int, round_id: int, cts: dict[int, bytes]) -> None:
        """:meth:`on_share_keys` from ``{v: ciphertext}``."""
        to = sorted(cts)
        self.on_share_keys(ShareKeys(round_id=round_id, sender=node, recipients=tuple(to),
                                     ciphertexts=tuple(cts[v] for v in to)))

    def shares_for(self, node: int) -> dict[int, bytes]:
        """:meth:`routed_shares` as ``{u: ciphertext}``."""
        msg = self.routed_shares(node)
        return dict(zip(msg.senders, msg.ciphertexts, strict=True))

    def receive_masked(self, node: int, round_id: int, y: np.ndarray) -> None:
        """:meth:`on_masked_input` from plain values."""
        self.on_masked_input(MaskedInput(round_id=round_id, sender=node, y=np.asarray(y)))

    def unmask_request(self, node: int) -> tuple[list[int], list[int]]:
        """:meth:`unmask_request_for` as ``(survivors, dropped)`` lists."""
        msg = self.unmask_request_for(node)
        return list(msg.survivors), list(msg.dropped)

    def receive_unmask(self, node: int, round_id: int,
                       shares: dict[int, tuple[Share, str]]) -> None:
        """:meth:`on_unmask_shares` from ``{v: ((x, y), "b" | "s")}``."""
        owners = sorted(shares)
        try:
            kinds = tuple(_KIND[shares[v][1]] for v in owners)
        except KeyError as err:
            raise SecAggError(f"node {node}: share kind must be 'b' or 's', "
                              f"got {err}") from None
        self.on_unmask_shares(UnmaskShares(
            round_id=round_id, sender=node, owners=tuple(owners), kinds=kinds,
            shares=tuple(share_to_bytes(shares[v][0]) for v in owners)))
