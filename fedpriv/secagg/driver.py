"""Run one SecAgg+ round in memory: the reference driver for tests and benchmarks.

The Flower bindings (``server/secagg.py``, ``client/secagg.py``) drive the same state
machines over Flower messages; this driver passes the message objects directly, with
optional dropouts, and keeps the server's view.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedpriv.secagg.client import ClientSecAgg
from fedpriv.secagg.errors import SecAggAbort
from fedpriv.secagg.graph import default_degree, regular_graph
from fedpriv.secagg.messages import Message
from fedpriv.secagg.server import ServerSecAgg
from fedpriv.secagg.setup import RoundSetup

__all__ = ["Transcript", "drive_round", "make_setup", "run_round"]


def make_setup(ids: Sequence[int], *, round_id: int, length: int, modulus_bits: int,
               rng: np.random.Generator, degree: int = 0,
               threshold_fraction: float = 0.5) -> RoundSetup:
    """A round's public setup: a random k-regular graph and t = floor(fraction * k) + 1.

    With the default fraction 1/2 the threshold is a strict majority of each
    neighbourhood, so no minority of a client's neighbours can rebuild its secrets.
    ``degree = 0`` takes :func:`default_degree`.
    """
    if not 0 <= threshold_fraction < 1:
        raise ValueError(f"threshold_fraction must be in [0, 1), got {threshold_fraction}")
    if len(ids) < 2:
        raise ValueError(f"a round needs >= 2 clients, got {len(ids)}")
    k = degree or default_degree(len(ids))
    graph = regular_graph(list(ids), k, rng)
    k_min = min(len(v) for v in graph.values())
    t = max(1, min(k_min, math.floor(threshold_fraction * k_min) + 1))
    return RoundSetup(round_id=round_id, threshold=t,
                      neighbours={u: tuple(v) for u, v in graph.items()},
                      modulus_bits=modulus_bits, length=length)


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
        Every message the server sent (setup excluded).
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


def drive_round(inputs: Mapping[int, np.ndarray], setup: RoundSetup, *,
                dropouts_after_stage: Mapping[int, set[int]] | None = None
                ) -> tuple[np.ndarray | SecAggAbort, ServerSecAgg, dict[int, ClientSecAgg],
                           list[Message]]:
    """Run the stages; return (sum or the abort, server, clients, messages sent).

    ``dropouts_after_stage[s]`` are clients that complete stage ``s`` and then vanish
    (s = 0: they got the setup but never advertise; s = 3: they sent a masked input but
    do not answer the unmask request). A client that aborts itself (too few live
    neighbours) counts as dropped from then on.
    """
    drop = {s: set(v) for s, v in (dropouts_after_stage or {}).items()}
    gone: set[int] = set()
    server = ServerSecAgg(setup)
    clients = {u: ClientSecAgg(node_id=u, setup=setup) for u in inputs}
    sent: list[Message] = []

    def alive(stage_done: int) -> list[int]:
        gone.update(drop.get(stage_done, set()))
        return [u for u in clients if u not in gone]

    def step(u: int, request: Message | None, x: np.ndarray | None = None) -> None:
        if request is not None:
            sent.append(request)
        try:
            reply = (clients[u].advertise_keys() if request is None
                     else clients[u].handle(request, x))  # type: ignore[arg-type]
        except SecAggAbort:
            gone.add(u)
            return
        server.receive(reply)

    for u in alive(0):
        step(u, None)
    for u in [u for u in alive(1) if u in server.keys]:
        step(u, server.neighbour_keys(u))
    for u in [u for u in alive(2) if u in server.routed]:
        step(u, server.routed_shares(u), inputs[u])
    for u in [u for u in alive(3) if u in server.masked]:
        step(u, server.unmask_request_for(u))
    try:
        total: np.ndarray | SecAggAbort = server.finish()[0]
    except SecAggAbort as err:
        total = err
    return total, server, clients, sent


def run_round(inputs: Sequence[np.ndarray] | Mapping[int, np.ndarray], *,
              rng: np.random.Generator | None = None, setup: RoundSetup | None = None,
              modulus_bits: int = 64, degree: int = 0, threshold_fraction: float = 0.5,
              round_id: int = 0,
              dropouts_after_stage: Mapping[int, set[int]] | None = None
              ) -> tuple[np.ndarray, Transcript]:
    """One SecAgg+ round end to end: the survivors' sum mod 2^b and the server's view.

    Parameters
    ----------
    inputs : sequence or mapping of integer arrays
        x_u for u = 1..n (a sequence) or ``{u: x_u}``; each of length d, values in
        [0, 2^b) (signed ints are taken mod 2^b).
    rng : numpy.random.Generator, optional
        Draws the communication graph; required unless ``setup`` is given.
    setup : RoundSetup, optional
        A ready setup (then ``modulus_bits``, ``degree``, ``threshold_fraction`` and
        ``round_id`` are ignored).
    dropouts_after_stage : mapping of int to set of int, optional
        See :func:`drive_round`.

    Raises
    ------
    SecAggAbort
        When too few clients remain to unmask.
    """
    xs = dict(inputs) if isinstance(inputs, Mapping) else dict(enumerate(inputs, 1))
    if setup is None:
        if rng is None:
            raise ValueError("rng must be given when setup is not")
        d = len(next(iter(xs.values())))
        setup = make_setup(sorted(xs), round_id=round_id, length=d,
                           modulus_bits=modulus_bits, rng=rng, degree=degree,
                           threshold_fraction=threshold_fraction)
    mask = np.uint64((1 << setup.modulus_bits) - 1) if setup.modulus_bits < 64 else None
    enc = {}
    for u, x in xs.items():
        x = np.asarray(x)
        if x.dtype.kind not in "iu":
            raise ValueError(f"inputs must be integer arrays, got {x.dtype} for client {u}")
        x = x.astype(np.uint64)  # two's complement: negatives wrap mod 2^64
        enc[u] = x & mask if mask is not None else x
    total, server, _, sent = drive_round(enc, setup,
                                         dropouts_after_stage=dropouts_after_stage)
    if isinstance(total, SecAggAbort):
        raise total
    survivors = tuple(sorted(server.masked))
    transcript = Transcript(setup=setup, received=tuple(server.transcript),
                            sent=tuple(sent),
                            survivors=survivors,
                            dropped=tuple(sorted(set(server.routed) - set(survivors))))
    return total, transcript
