"""Server momentum on the aggregate step (FedAvgM), around any aggregation rule.

Hsu, Qi & Brown 2019, "Measuring the Effects of Non-Identical Data Distribution for
Federated Visual Classification" (arXiv:1909.06335), Section 3 (FedAvgM): the server
treats the round's aggregate step as a pseudo-gradient and applies heavy-ball momentum,

    v_t = beta * v_{t-1} + Delta_t,        w_{t+1} = w_t + eta * v_t,

with ``Delta_t = w_agg - w_t`` the step the wrapped rule took this round. With
``beta = 0`` and ``eta = 1`` it is the wrapped rule itself. Under label skew the clients'
few local steps point different ways; momentum keeps the component they agree on across
rounds, so many short rounds behave like a long run of momentum SGD (the effective step
is ``eta / (1 - beta)``).

The wrapper sees only the model the wrapped chain returns, so it composes with every
DP mode and with secure aggregation unchanged: the aggregate it steps on is already
clipped, noised and unmasked; what it adds is post-processing of a released model and
costs no privacy (Dwork & Roth 2014, Proposition 2.1).
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp.strategy import Strategy

from strategies.delegation import KeepsGlobalModel
from strategies.updates import numpy_record

__all__ = ["ServerMomentum"]


class ServerMomentum(KeepsGlobalModel, Strategy):
    """Heavy-ball momentum on the step of the wrapped aggregation rule (FedAvgM).

    Parameters
    ----------
    inner : Strategy
        The aggregation chain (FedAvg, its DP or secure-aggregation wrappers, ...).
    momentum : float
        beta, in [0, 1).
    learning_rate : float
        eta, the server learning rate, > 0.

    Notes
    -----
    Hsu et al. 2019, Section 3: ``v_t = beta v_{t-1} + Delta_t``, ``w_{t+1} = w_t + eta
    v_t``. ``velocity`` (``v``, one float64 array per parameter) is the state a
    checkpoint keeps. A round the wrapped rule skips (it returns no model) leaves ``w``
    and ``v`` as they were. A parameter that is not floating point (a counter) takes the
    wrapped rule's value unchanged.
    """

    def __init__(self, inner: Strategy, *, momentum: float, learning_rate: float = 1.0
                 ) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not learning_rate > 0.0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        self.inner = inner
        self.momentum = momentum
        self.learning_rate = learning_rate
        self.velocity: dict[str, np.ndarray] = {}
        self._current: ArrayRecord | None = None

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The wrapped rule's model ``w_agg``, then ``w_t + eta * v_t``."""
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        if arrays is None or self._current is None:
            return arrays, metrics
        return self.step(self._current, arrays), metrics

    def step(self, current: ArrayRecord, aggregate: ArrayRecord) -> ArrayRecord:
        """Update ``velocity`` with ``aggregate - current`` and return the new model."""
        new: dict[str, np.ndarray] = {}
        for key in aggregate.keys():
            agg = aggregate[key].numpy()
            if not np.issubdtype(agg.dtype, np.floating):
                new[key] = agg
                continue
            base = current[key].numpy().astype(np.float64)
            delta = agg.astype(np.float64) - base  # Delta_t
            v = self.momentum * self.velocity[key] + delta if key in self.velocity else delta
            self.velocity[key] = v
            new[key] = (base + self.learning_rate * v).astype(agg.dtype)
        return numpy_record(new)

    def describe(self) -> None:
        """Log beta and eta."""
        log(INFO, "\t├──> server momentum (FedAvgM): beta=%g, eta=%g", self.momentum,
            self.learning_rate)
