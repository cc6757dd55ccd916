"""Run one SecAgg+ round in memory: the reference driver for tests and benchmarks.

The Flower bindings (``server/secagg.py``, ``client/secagg.py``) drive the same state
machines over messages; this driver calls them directly, with optional dropouts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from fedpriv.secagg.graph import default_degree, regular_graph
from fedpriv.secagg.protocol import ClientSecAgg, RoundSetup
from fedpriv.secagg.server import ServerSecAgg

__all__ = ["make_setup", "run_round"]


def make_setup(ids: Sequence[int], *, round_id: int, length: int, modulus_bits: int,
               rng: np.random.Generator, degree: int = 0,
               threshold_fraction: float = 0.5) -> RoundSetup:
    """A round's public setup: a random k-regular graph and t = ceil(fraction * k)."""
    k = degree or default_degree(len(ids))
    graph = regular_graph(list(ids), k, rng)
    k_min = min(len(v) for v in graph.values())
    t = max(1, min(k_min, math.ceil(threshold_fraction * k_min)))
    return RoundSetup(round_id=round_id, neighbours=graph, threshold=t,
                      modulus_bits=modulus_bits, length=length)


def run_round(inputs: Mapping[int, np.ndarray], setup: RoundSetup, *,
              dropouts_after: Mapping[int, set[int]] | None = None
              ) -> tuple[np.ndarray, ServerSecAgg]:
    """Run the four stages; ``dropouts_after[s]`` vanish after completing stage ``s``.

    (``s = 0``: before advertising.) Returns the unmasked integer sum of the survivors'
    inputs and the server (whose ``transcript`` is everything it received).
    """
    drop = {s: set(v) for s, v in (dropouts_after or {}).items()}
    gone: set[int] = set()
    rid = setup.round_id
    server = ServerSecAgg(setup)
    clients = {u: ClientSecAgg(node_id=u, setup=setup) for u in inputs}

    def alive(stage_done: int) -> list[int]:
        gone.update(drop.get(stage_done, set()))
        return [u for u in clients if u not in gone]

    for u in alive(0):
        keys = clients[u].advertise()
        server.receive_advertise(u, rid, keys["c_pk"], keys["s_pk"])
    for u in alive(1):
        server.receive_shares(u, rid, clients[u].share(rid, server.keys_for(u)))
    for u in alive(2):
        server.receive_masked(u, rid, clients[u].mask(rid, server.shares_for(u), inputs[u]))
    for u in alive(3):
        survivors, dropped = server.unmask_request(u)
        server.receive_unmask(u, rid, clients[u].unmask(rid, survivors, dropped))
    total, _ = server.finish()
    return total, server
