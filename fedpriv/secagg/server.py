"""The server's SecAgg+ state machine: route, collect, reconstruct, unmask. No I/O.

See :mod:`fedpriv.secagg.protocol` for the stages. The server sees public keys,
ciphertexts it cannot open, masked vectors, and - for each client - either shares of its
self-mask seed (it survived) or of its masking key (it dropped), never both; ``transcript``
records every message it received, for tests of what it can learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedpriv.secagg.crypto import agree, expand_mask
from fedpriv.secagg.errors import SecAggAbort, SecAggError
from fedpriv.secagg.protocol import RoundSetup, Stage, _info
from fedpriv.secagg.shamir import Share, combine

__all__ = ["ServerSecAgg"]


@dataclass
class ServerSecAgg:
    """The server's side of one round."""

    setup: RoundSetup
    keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # U1
    routed: dict[int, dict[int, bytes]] = field(default_factory=dict)  # U2: sender -> cts
    masked: dict[int, np.ndarray] = field(default_factory=dict)  # U3
    reveals: dict[int, dict[int, tuple[Share, str]]] = field(default_factory=dict)  # U4
    transcript: list[tuple[int, int, Any]] = field(default_factory=list)

    def _expect(self, node: int, round_id: int, stage: int, done: dict[int, Any],
                prior: dict[int, Any] | None) -> None:
        if round_id != self.setup.round_id:
            raise SecAggError(f"node {node}: message for round {round_id}, this is round "
                              f"{self.setup.round_id}")
        if node not in self.setup.neighbours:
            raise SecAggError(f"node {node} is not in this round's cohort")
        if node in done:
            raise SecAggError(f"node {node}: replayed stage {stage} message")
        if prior is not None and node not in prior:
            raise SecAggError(f"node {node}: stage {stage} message before stage {stage - 1}")

    # ---------------------------------------------------------------- stage 1
    def receive_advertise(self, node: int, round_id: int, c_pk: bytes, s_pk: bytes) -> None:
        """Record a client's public keys."""
        self._expect(node, round_id, Stage.ADVERTISE, self.keys, None)
        if len(c_pk) != 32 or len(s_pk) != 32 or c_pk == s_pk:
            raise SecAggError(f"node {node}: public keys must be two distinct 32-byte keys")
        self.transcript.append((node, Stage.ADVERTISE, (c_pk, s_pk)))
        self.keys[node] = (c_pk, s_pk)

    def keys_for(self, node: int) -> dict[int, tuple[bytes, bytes]]:
        """The neighbours' public keys to send ``node`` (those that advertised)."""
        return {v: self.keys[v] for v in self.setup.neighbours[node] if v in self.keys}

    # ---------------------------------------------------------------- stage 2
    def receive_shares(self, node: int, round_id: int, cts: dict[int, bytes]) -> None:
        """Record a client's encrypted shares, addressed to its neighbours."""
        self._expect(node, round_id, Stage.SHARE, self.routed, self.keys)
        allowed = set(self.keys_for(node))
        if set(cts) != allowed:
            raise SecAggError(f"node {node}: shares must go to exactly its neighbours with "
                              f"keys {sorted(allowed)}, got {sorted(cts)}")
        self.transcript.append((node, Stage.SHARE, dict(cts)))
        self.routed[node] = dict(cts)

    def shares_for(self, node: int) -> dict[int, bytes]:
        """Ciphertexts addressed to ``node`` from clients that completed stage 2."""
        return {u: cts[node] for u, cts in self.routed.items() if node in cts}

    # ---------------------------------------------------------------- stage 3
    def receive_masked(self, node: int, round_id: int, y: np.ndarray) -> None:
        """Record a masked input vector."""
        self._expect(node, round_id, Stage.MASK, self.masked, self.routed)
        y = np.asarray(y)
        if y.dtype != np.uint64 or y.shape != (self.setup.length,):
            raise SecAggError(f"node {node}: masked vector must be uint64 of shape "
                              f"({self.setup.length},), got {y.dtype} {y.shape}")
        bits = self.setup.modulus_bits
        if bits < 64 and y.size and int(y.max()) >= 1 << bits:
            raise SecAggError(f"node {node}: masked vector has values >= 2^{bits}")
        self.transcript.append((node, Stage.MASK, y.copy()))
        self.masked[node] = y.copy()

    def unmask_request(self, node: int) -> tuple[list[int], list[int]]:
        """(surviving, dropped) neighbours of ``node`` to send it in stage 4."""
        nbrs = set(self.setup.neighbours[node]) | {node}
        survivors = sorted(nbrs & set(self.masked))
        dropped = sorted((nbrs & set(self.routed)) - set(self.masked))
        return survivors, dropped

    # ---------------------------------------------------------------- stage 4
    def receive_unmask(self, node: int, round_id: int,
                       shares: dict[int, tuple[Share, str]]) -> None:
        """Record the shares a survivor reveals."""
        self._expect(node, round_id, Stage.UNMASK, self.reveals, self.masked)
        survivors, dropped = self.unmask_request(node)
        for v, (_, kind) in shares.items():
            if (kind, v in survivors, v in dropped) not in {("b", True, False),
                                                             ("s", False, True)}:
                raise SecAggError(f"node {node}: unexpected {kind!r} share for node {v}")
        self.transcript.append((node, Stage.UNMASK, dict(shares)))
        self.reveals[node] = dict(shares)

    def _secret(self, v: int, kind: str) -> bytes:
        shares = [sh for rev in self.reveals.values() if v in rev
                  for sh, k in [rev[v]] if k == kind]
        if len(shares) < self.setup.threshold:
            raise SecAggAbort(
                f"cannot recover node {v}'s {'self mask' if kind == 'b' else 'masking key'}: "
                f"{len(shares)} shares arrived, the threshold is {self.setup.threshold}")
        return combine(shares, self.setup.threshold)

    def finish(self) -> tuple[np.ndarray, list[int]]:
        """The integer sum mod 2^b of the survivors' inputs, and the survivors.

        Raises
        ------
        SecAggAbort
            When fewer than ``threshold`` clients survived, or a needed secret lacks
            shares; the caller leaves the global model unchanged.
        """
        if len(self.masked) < self.setup.threshold:
            raise SecAggAbort(f"only {len(self.masked)} clients sent masked inputs; the "
                              f"threshold is {self.setup.threshold}")
        bits, n, rid = self.setup.modulus_bits, self.setup.length, self.setup.round_id
        total = np.zeros(n, dtype=np.uint64)
        for y in self.masked.values():
            total += y
        for u in self.masked:  # remove survivors' self masks
            total -= expand_mask(self._secret(u, "b"), n, bits)
        for v in set(self.routed) - set(self.masked):  # dangling pairwise masks of dropped v
            s_sk = self._secret(v, "s")
            for u in self.setup.neighbours[v]:
                if u in self.masked and v in self.routed and u in self.routed[v]:
                    seed = agree(s_sk, self.keys[u][1], _info(rid, u, v, b"mask"))
                    m = expand_mask(seed, n, bits)
                    total = total - m if u < v else total + m  # undo what u added
        if bits < 64:
            total &= np.uint64((1 << bits) - 1)
        return total, sorted(self.masked)
