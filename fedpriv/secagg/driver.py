"""Run one round in memory: the reference driver for tests and benchmarks.

The Flower bindings (``server/secagg.py``, ``client/secagg.py``) drive the same state
machines over Flower messages; this driver passes the message objects directly, with
optional dropouts, and keeps the server's view. :func:`enrol` makes the long-term
identities and the roster that in a real federation come out of band.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedpriv.secagg.client import ClientSecAgg
from fedpriv.secagg.errors import SecAggAbort
from fedpriv.secagg.identity import IdentityKey, Roster
from fedpriv.secagg.messages import Message
from fedpriv.secagg.params import SecurityParams
from fedpriv.secagg.server import ServerSecAgg
from fedpriv.secagg.setup import RoundSetup

__all__ = ["Enrolment", "Transcript", "drive_round", "enrol", "run_round"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Enrolment:
    """A federation's long-term identities (simulation: all on one machine).

    Attributes
    ----------
    run_id : int
        The run, bound into every signature.
    params : SecurityParams
        The public parameters.
    roster : Roster
        Every client's identity public key.
    identities : mapping of int to IdentityKey
        Every client's private signing key (each belongs on its own device).
    """

    run_id: int
    params: SecurityParams
    roster: Roster
    identities: Mapping[int, IdentityKey]

    def client(self, node: int, *, round_id: int, modulus_bits: int,
               max_cohort: int = 0, min_sum: int = 0, binding: bytes = b"") -> ClientSecAgg:
        """A fresh client state machine for ``node`` and round ``round_id``."""
        return ClientSecAgg(node_id=node, run_id=self.run_id, round_id=round_id,
                            params=self.params, identity=self.identities[node],
                            roster=self.roster, modulus_bits=modulus_bits,
                            max_cohort=max_cohort, min_sum=min_sum, binding=binding)


def enrol(ids: Sequence[int], *, params: SecurityParams | None = None,
          run_id: int = 0) -> Enrolment:
    """Fresh identities for ``ids`` and their roster."""
    identities = {int(u): IdentityKey() for u in ids}
    return Enrolment(run_id=run_id, params=params or SecurityParams(),
                     roster=Roster(keys={u: k.public for u, k in identities.items()}),
                     identities=identities)


@dataclass(frozen=True, slots=True, kw_only=True)
class Transcript:
    """The server's view of one round.

    Attributes
    ----------
    setup : RoundSetup
        The public setup.
    received : tuple of Message
        Every message the server accepted, in arrival order.
    sent : tuple of Message
        Every message the server sent.
    survivors : tuple of int
        Clients whose masked input is in the sum.
    dropped : tuple of int
        Clients that shared keys but sent no masked input (recovered from shares).
    """

    setup: RoundSetup
    received: tuple[Message, ...]
    sent: tuple[Message, ...]
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]

    def masked_input(self, node: int) -> np.ndarray:
        """The masked vector y of ``node`` as the server received it."""
        for m in self.received:
            if type(m).__name__ == "MaskedInput" and m.sender == node:  # type: ignore[union-attr]
                return m.y  # type: ignore[union-attr]
        raise KeyError(f"no masked input from node {node}")


def drive_round(inputs: Mapping[int, np.ndarray], *, enrolment: Enrolment, round_id: int,
                modulus_bits: int, dropouts_after_stage: Mapping[int, set[int]] | None = None,
                max_cohort: int = 0, min_sum: int = 0
                ) -> tuple[np.ndarray | SecAggAbort, ServerSecAgg, dict[int, ClientSecAgg],
                           list[Message]]:
    """Run the stages; return (sum or the abort, server, clients, messages sent).

    ``dropouts_after_stage[s]`` are clients that complete stage ``s`` and then vanish
    (s = 0: they never advertise; 3: they sent y but never sign the survivor set; 4:
    they signed but never reveal). A client that aborts counts as dropped from then on.
    ``max_cohort`` (default: the roster's size) is the largest cohort clients accept;
    ``min_sum`` the floor they put on any sum they help unmask (``ClientSecAgg.min_sum``).
    """
    drop = {s: set(v) for s, v in (dropouts_after_stage or {}).items()}
    gone: set[int] = set()
    d = len(next(iter(inputs.values())))
    server = ServerSecAgg(round_id=round_id, params=enrolment.params,
                          modulus_bits=modulus_bits, length=d,
                          population=len(enrolment.roster))
    clients = {u: enrolment.client(u, round_id=round_id, modulus_bits=modulus_bits,
                                   max_cohort=max_cohort, min_sum=min_sum) for u in inputs}
    sent: list[Message] = []

    def alive(stage_done: int, have: Mapping[int, object]) -> list[int]:
        gone.update(drop.get(stage_done, set()))
        return [u for u in clients if u not in gone and u in have]

    def step(u: int, request: Message | None, x: np.ndarray | None = None) -> None:
        if request is not None:
            sent.append(request)
        try:
            reply = (clients[u].advertise_keys() if request is None
                     else clients[u].handle(request, x))
        except SecAggAbort:
            gone.add(u)
            return
        server.receive(reply)

    total: np.ndarray | SecAggAbort
    try:
        for u in alive(0, clients):
            step(u, None)
        for u in alive(1, server.keys):
            step(u, server.neighbour_keys(u))
        for u in alive(2, server.routed):
            step(u, server.routed_shares(u), inputs[u])
        for u in alive(3, server.masked):
            step(u, server.consistency_request(u))
        for u in alive(4, server.signatures):
            step(u, server.unmask_request_for(u))
        total = server.finish()[0]
    except SecAggAbort as err:
        total = err
    return total, server, clients, sent


def run_round(inputs: Sequence[np.ndarray] | Mapping[int, np.ndarray], *,
              params: SecurityParams | None = None, modulus_bits: int = 64,
              round_id: int = 0, enrolment: Enrolment | None = None,
              dropouts_after_stage: Mapping[int, set[int]] | None = None
              ) -> tuple[np.ndarray, Transcript]:
    """One round end to end: the survivors' sum mod 2^b and the server's view.

    Parameters
    ----------
    inputs : sequence or mapping of integer arrays
        x_u for u = 1..n (a sequence) or ``{u: x_u}``; each of length d (signed ints
        are taken mod 2^b).
    params : SecurityParams, optional
        Public parameters (defaults when omitted); ignored with ``enrolment``.
    enrolment : Enrolment, optional
        Identities to use (fresh ones for the inputs' ids when omitted).
    dropouts_after_stage : mapping of int to set of int, optional
        See :func:`drive_round`.

    Raises
    ------
    SecAggAbort
        When the round cannot complete.
    """
    xs = dict(inputs) if isinstance(inputs, Mapping) else dict(enumerate(inputs, 1))
    enrolment = enrolment or enrol(sorted(xs), params=params)
    mask = np.uint64((1 << modulus_bits) - 1) if modulus_bits < 64 else None
    enc = {}
    for u, x in xs.items():
        x = np.asarray(x)
        if x.dtype.kind not in "iu":
            raise ValueError(f"inputs must be integer arrays, got {x.dtype} for client {u}")
        x = x.astype(np.uint64)  # two's complement: negatives wrap mod 2^64
        enc[u] = x & mask if mask is not None else x
    total, server, _, sent = drive_round(enc, enrolment=enrolment, round_id=round_id,
                                         modulus_bits=modulus_bits,
                                         dropouts_after_stage=dropouts_after_stage)
    if isinstance(total, SecAggAbort):
        raise total
    assert server.setup is not None
    survivors = tuple(sorted(server.masked))
    transcript = Transcript(setup=server.setup, received=tuple(server.transcript),
                            sent=tuple(sent), survivors=survivors,
                            dropped=tuple(sorted(set(server.routed) - set(survivors))))
    return total, transcript
