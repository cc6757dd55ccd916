"""A fedpriv server strategy around a wrapped one, on a tiny global model, for unit tests."""

import numpy as np
from flwr.app import Array, ArrayRecord

from server.sampling import CohortSampler, SamplingKind
from server.strategy import FedPrivStrategy


def around(wrapped, nodes: int = 4) -> tuple[FedPrivStrategy, ArrayRecord]:
    """``FedPrivStrategy`` over ``wrapped`` (a cohort of ``nodes``) and the global model it
    holds: ``0.weight`` (3, 2) and ``0.bias`` (3,), zeros, set as this round's reference."""
    strategy = FedPrivStrategy(wrapped, sampler=CohortSampler(SamplingKind.FIXED, size=nodes),
                               min_nodes=1)
    current = ArrayRecord({"0.weight": Array(np.zeros((3, 2), np.float32)),
                           "0.bias": Array(np.zeros(3, np.float32))})
    wrapped._current = current
    strategy.reference = current
    return strategy, current
