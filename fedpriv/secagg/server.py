"""The server's SecAgg+ state machine: route, collect, reconstruct, unmask. No I/O.

Bell et al. 2020 (CCS), Algorithm 1, server side, with the ConsistencyCheck round of
Bonawitz et al. 2017 (CCS), Figure 4. An honest server runs this; the protocol does not
rely on it (clients check everything the server tells them). It sees signed public
keys, ciphertexts it cannot open, masked vectors, signatures and - for each client -
shares of its self-mask seed b (it survived) or of its masking key s_sk (it dropped),
never both. Order of calls::

    server = ServerSecAgg(round_id=r, params=..., modulus_bits=b, length=d, population=N)
    server.receive(AdvertiseKeys) ...             # stage 1
    server.neighbour_keys(u) -> NeighbourKeys     # closes stage 1, derives the setup
    server.receive(ShareKeys) ...                 # stage 2
    server.routed_shares(u) -> RoutedShares       # closes stage 2
    server.receive(MaskedInput) ...               # stage 3
    server.consistency_request(u)                 # closes stage 3: S fixed
    server.receive(ConsistencySignature) ...      # stage 4
    server.unmask_request_for(u)                  # closes stage 4
    server.receive(UnmaskShares) ...              # stage 5
    total, survivors = server.finish()            # sum mod 2^b

Emitting the first message of the next stage closes collection of the previous one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedpriv.secagg.errors import SecAggAbort, SecAggError
from fedpriv.secagg.graph import components
from fedpriv.secagg.identity import Roster, advert_payload
from fedpriv.secagg.keys import KeyPair, KeyPurpose, pair_key
from fedpriv.secagg.messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencySignature,
    MaskedInput,
    Message,
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
from fedpriv.secagg.shamir import Share, combine, share_from_bytes

__all__ = ["ServerSecAgg"]


@dataclass
class ServerSecAgg:
    """The server's side of one round (see the module docstring for the call order).

    Attributes
    ----------
    keys : dict
        U1: ``{u: (c_pk, s_pk, signature)}`` of clients that advertised.
    routed : dict
        U2: ``{u: {v: ciphertext}}`` of clients that shared.
    masked : dict
        U3: ``{u: y_u}`` of clients that sent a masked input (the survivors S).
    signatures : dict
        U4: ``{u: signature of S}``.
    roster, run_id, binding : optional
        When given, advertisements are checked against the roster (see
        :meth:`on_advertise`), with the round's ``binding`` (as the clients check them).
    reveals : dict
        U5: ``{u: {v: ((x, y), "b" | "s")}}``, the shares each survivor revealed.
    transcript : list
        Every accepted message, in arrival order (the server's view).
    """

    round_id: int
    params: SecurityParams
    modulus_bits: int
    length: int
    population: int = 0
    threads: int = 2
    roster: Roster | None = None
    binding: bytes = b""
    run_id: int | None = None
    setup: RoundSetup | None = None
    keys: dict[int, tuple[bytes, bytes, bytes]] = field(default_factory=dict)
    routed: dict[int, dict[int, bytes]] = field(default_factory=dict)
    masked: dict[int, np.ndarray] = field(default_factory=dict)
    signatures: dict[int, bytes] = field(default_factory=dict)
    reveals: dict[int, dict[int, tuple[Share, str]]] = field(default_factory=dict)
    transcript: list[Message] = field(default_factory=list)
    phase: Stage = Stage.ADVERTISE

    def _expect(self, msg: Any, done: dict[int, Any], prior: dict[int, Any] | None) -> None:
        node, stage = msg.sender, Stage(msg.STAGE)
        if msg.round_id != self.round_id:
            raise SecAggError(f"node {node}: message for round {msg.round_id}, this is "
                              f"round {self.round_id}")
        if msg.stage != msg.STAGE:
            raise SecAggError(f"node {node}: {type(msg).__name__} must carry stage "
                              f"{int(msg.STAGE)}, got {msg.stage}")
        if self.setup is not None and node not in self.setup.neighbours:
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

    def receive(self, msg: Any) -> None:
        """Accept a client message (dispatch on its type); :class:`SecAggError` if not."""
        handler: Any = {AdvertiseKeys: self.on_advertise, ShareKeys: self.on_share_keys,
                   MaskedInput: self.on_masked_input,
                   ConsistencySignature: self.on_consistency,
                   UnmaskShares: self.on_unmask_shares}.get(type(msg))
        if handler is None:
            raise SecAggError(f"the server does not accept {type(msg).__name__} messages")
        handler(msg)

    # ---------------------------------------------------------------- stage 1
    def on_advertise(self, msg: AdvertiseKeys) -> None:
        """Record a client's signed public keys (stage 1).

        With a ``roster`` (and ``run_id``) the server drops advertisements from unknown
        ids or with a bad signature, which honest clients would refuse anyway: one
        client cannot make its neighbours abort by advertising under another's id.
        """
        self._expect(msg, self.keys, None)
        if self.roster is not None:
            if msg.sender not in self.roster:
                raise SecAggError(f"node {msg.sender} is not in the roster")
            payload = advert_payload(run_id=self.run_id or 0, round_id=self.round_id,
                                     sender=msg.sender, c_pk=msg.c_pk, s_pk=msg.s_pk,
                                     binding=self.binding)
            if self.run_id is not None and not self.roster.verify(msg.sender, payload,
                                                                  msg.signature):
                raise SecAggError(f"node {msg.sender}: advertisement signature does not "
                                  "verify against the roster")
        self.transcript.append(msg)
        self.keys[msg.sender] = (msg.c_pk, msg.s_pk, msg.signature)

    def close_advertising(self) -> RoundSetup:
        """Derive the setup over the advertisers (as every client will); idempotent."""
        if self.setup is None:
            self._advance(Stage.SHARE)
            self.setup = derive_setup(self.params, round_id=self.round_id,
                                      cohort=sorted(self.keys),
                                      modulus_bits=self.modulus_bits, length=self.length,
                                      population=self.population)
        return self.setup

    def neighbour_keys(self, node: int) -> NeighbourKeys:
        """Stage 1 reply: the cohort and the signed keys of ``node``'s neighbours."""
        if node not in self.keys:
            raise SecAggError(f"node {node} advertised no keys")
        setup = self.close_advertising()
        peers = tuple(v for v in setup.neighbours[node] if v in self.keys)
        return NeighbourKeys(round_id=self.round_id, recipient=node, cohort=setup.cohort,
                             threshold=setup.threshold, peers=peers,
                             c_pks=tuple(self.keys[v][0] for v in peers),
                             s_pks=tuple(self.keys[v][1] for v in peers),
                             signatures=tuple(self.keys[v][2] for v in peers))

    # ---------------------------------------------------------------- stage 2
    def on_share_keys(self, msg: ShareKeys) -> None:
        """Record a client's sealed share bundles, addressed to its neighbours (stage 2)."""
        setup = self.close_advertising()
        self._expect(msg, self.routed, self.keys)
        allowed = {v for v in setup.neighbours[msg.sender] if v in self.keys}
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
        return RoutedShares(round_id=self.round_id, recipient=node, senders=src,
                            ciphertexts=tuple(self.routed[u][node] for u in src))

    # ---------------------------------------------------------------- stage 3
    def on_masked_input(self, msg: MaskedInput) -> None:
        """Record a masked input vector (stage 3)."""
        self._expect(msg, self.masked, self.routed)
        d, bits = self.length, self.modulus_bits
        if msg.y.shape != (d,):
            raise SecAggError(f"node {msg.sender}: masked vector must have shape ({d},), "
                              f"got {msg.y.shape}")
        if bits < 64 and d and int(msg.y.max()) >> bits:
            raise SecAggError(f"node {msg.sender}: masked vector has values >= 2^{bits}")
        self.transcript.append(msg)
        self.masked[msg.sender] = np.ascontiguousarray(msg.y, dtype=np.uint64)

    @property
    def survivors(self) -> tuple[int, ...]:
        """S: the clients whose masked input arrived."""
        return tuple(sorted(self.masked))

    def consistency_request(self, node: int) -> ConsistencyRequest:
        """Stage 4 request: S, the same for every survivor.

        Raises
        ------
        SecAggAbort
            When S is too small or splits the graph into too small components: the
            clients would refuse it.
        """
        if node not in self.masked:
            raise SecAggError(f"node {node} sent no masked input")
        setup = self.close_advertising()
        if self.phase < Stage.CONSISTENCY:
            s = self.survivors
            if len(s) < setup.min_survivors:
                raise SecAggAbort(f"only {len(s)} clients sent masked inputs; at least "
                                  f"{setup.min_survivors} must survive")
            small = [c for c in components(setup.neighbours, s)
                     if len(c) < setup.min_survivors]
            if small:
                raise SecAggAbort(f"the survivors' graph has a component of {len(small[0])}"
                                  f" clients; each needs >= {setup.min_survivors}")
        self._advance(Stage.CONSISTENCY)
        return ConsistencyRequest(round_id=self.round_id, recipient=node,
                                  survivors=self.survivors)

    # ---------------------------------------------------------------- stage 4
    def on_consistency(self, msg: ConsistencySignature) -> None:
        """Record a survivor's signature of S (stage 4)."""
        self._expect(msg, self.signatures, self.masked)
        self.transcript.append(msg)
        self.signatures[msg.sender] = msg.signature

    def unmask_request_for(self, node: int) -> UnmaskRequest:
        """Stage 5 request: S and every signature of it collected."""
        if node not in self.signatures:
            raise SecAggError(f"node {node} did not sign the survivor set")
        self._advance(Stage.UNMASK)
        signers = tuple(sorted(self.signatures))
        return UnmaskRequest(round_id=self.round_id, recipient=node,
                             survivors=self.survivors, signers=signers,
                             signatures=tuple(self.signatures[v] for v in signers))

    # ---------------------------------------------------------------- stage 5
    def on_unmask_shares(self, msg: UnmaskShares) -> None:
        """Record the shares a survivor reveals (stage 5)."""
        self._expect(msg, self.reveals, self.signatures)
        s = set(self.masked)
        got: dict[int, tuple[Share, str]] = {}
        for v, kind, blob in zip(msg.owners, msg.kinds, msg.shares, strict=True):
            ok = (v in s) if kind == ShareKind.SELF_MASK else (v in self.routed
                                                              and v not in s)
            if not ok or msg.sender not in self.routed.get(v, {}):
                raise SecAggError(f"node {msg.sender}: unexpected {ShareKind(kind).name} "
                                  f"share for node {v}")
            got[v] = (share_from_bytes(blob), "b" if kind == ShareKind.SELF_MASK else "s")
        self.transcript.append(msg)
        self.reveals[msg.sender] = got

    def _secret(self, v: int, kind: str, t: int) -> bytes:
        shares = [rev[v][0] for rev in self.reveals.values()
                  if v in rev and rev[v][1] == kind]
        what = "self-mask seed b" if kind == "b" else "masking key s_sk"
        if len(shares) < t:
            raise SecAggAbort(f"cannot recover node {v}'s {what}: {len(shares)} shares "
                              f"arrived, the threshold is {t}")
        try:
            return combine(shares, t)
        except SecAggError as err:
            raise SecAggAbort(f"cannot recover node {v}'s {what}: {err}") from None

    def finish(self) -> tuple[np.ndarray, list[int]]:
        """The integer sum mod 2^b of the survivors' inputs, and the survivors.

        sum_u y_u - sum_u PRG(b_u) -/+ sum_{v dropped, u ~ v} PRG(s_uv)  (mod 2^b),
        accumulated chunk by chunk in uint64 (:func:`fedpriv.secagg.prg.accumulate`) and
        reduced once.

        Raises
        ------
        SecAggAbort
            When too few clients survived or a needed secret lacks shares; the caller
            leaves the global model unchanged.
        """
        setup = self.close_advertising()
        if len(self.masked) < setup.min_survivors:
            raise SecAggAbort(f"only {len(self.masked)} clients sent masked inputs; at "
                              f"least {setup.min_survivors} must survive")
        self._advance(Stage.UNMASK)
        t, rid = setup.threshold, self.round_id
        self_seeds = [self._secret(u, "b", t) for u in sorted(self.masked)]
        dropped = sorted(set(self.routed) - set(self.masked))
        plus: list[bytes] = []
        minus: list[bytes] = list(self_seeds)
        for v in dropped:  # dangling pairwise masks of clients that shared, then vanished
            s_sk = self._secret(v, "s", t)
            if KeyPair(s_sk).public != self.keys[v][1]:  # s_pk_v commits to s_sk_v
                raise SecAggAbort(f"node {v}'s rebuilt masking key does not match its s_pk")
            for u in setup.neighbours[v]:
                if u in self.masked and u in self.routed[v]:
                    seed = pair_key(s_sk, self.keys[u][1], round_id=rid, u=u, v=v,
                                    purpose=KeyPurpose.MASK)
                    (minus if u < v else plus).append(seed)  # u added +PRG when u < v
        total = np.zeros(self.length, dtype=np.uint64)  # (d,)
        accumulate(total, plus=plus, minus=minus, adds=list(self.masked.values()),
                   prg=setup.prg, threads=self.threads)
        if self.modulus_bits < 64:
            total &= np.uint64((1 << self.modulus_bits) - 1)
        return total, sorted(self.masked)
