"""The mean update of a distributed-DP round: the clients' noise is already in the sum.

Kairouz, Liu & Steinke 2021 (ICML, arXiv:2102.06387), Algorithm 1, and Agarwal, Kairouz
& Liu 2021 (NeurIPS, arXiv:2110.04995), Algorithm 1: the secure-aggregation layer
(:class:`server.secagg.SecAggStrategy`) unmasks the sum of the surviving clients'
encodings, each already carrying its client's discrete noise share, and decodes it to
``n * estimate of the mean clipped update`` with n the survivors summed. This wrapper
takes the mean, steps ``w_global + mean`` and hands the wrapped Flower strategy the new
model, as :class:`strategies.update_mean.UpdateMean` does; it adds no noise of its own
(the server is not trusted to), and it notes the round's ledger event: the noise of the
n shares actually in the sum (fewer survivors, less noise, a larger epsilon).

Unlike DP-FedAvg's fixed denominator, dividing by the survivors n is post-processing
here: n is public to the server (it chose whom to unmask) and the event records it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from logging import INFO

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedpriv.ddp_plan import DistributedPlan
from fedpriv.privacy.events import DistributedNoiseEvent
from strategies.delegation import Delegating
from strategies.updates import model_reply, numpy_record, sum_updates

__all__ = ["DistributedDpMean", "DistributedRound"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DistributedRound:
    """What one distributed-DP round released: the noise of ``clients`` shares."""

    clients: int
    event: DistributedNoiseEvent


class DistributedDpMean(Delegating, Strategy):
    """``w + mean`` from a decoded distributed-DP sum, then ``inner``'s step.

    Parameters
    ----------
    inner : Strategy
        The Flower strategy that receives the new model (FedAvg, FedProx, FedAdam).
    plan : DistributedPlan
        The run's parameters (for the event; decoding happens in the secure layer).
    """

    def __init__(self, inner: Strategy, plan: DistributedPlan) -> None:
        self.inner = inner
        self.plan = plan
        self._current: ArrayRecord | None = None
        self.last_round: DistributedRound | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Remember the global model, forget the last round's release; delegate."""
        self._current = arrays
        self.last_round = None
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """``w + sum / n`` for the n survivors summed; an empty sum keeps the model."""
        replies = list(replies)
        total = sum_updates(replies)
        if total is None or total.count < 1 or self._current is None:
            return None, None
        n = total.count
        new = {}
        for key, acc in zip(total.keys, total.arrays, strict=True):
            base = self._current[key].numpy()
            new[key] = (base.astype(np.float64) + acc / n).astype(base.dtype)
        self.last_round = DistributedRound(clients=n, event=self.plan.event(n))
        template = next(m for m in replies if not m.has_error())
        reply = model_reply(template, numpy_record(new), weight=float(n), loss=None)
        return self.inner.aggregate_train(server_round, [reply])

    def describe(self) -> None:
        """Log the distributed-DP settings."""
        p = self.plan.params
        log(INFO, "\t├──> distributed DP: %s shares of variance %.6g at scale %.6g, "
            "%d bits, sized for %d survivors (z=%.4g), no server noise",
            p.mechanism.value, p.local_variance, p.scale, p.bits, self.plan.min_clients,
            self.plan.noise_multiplier)
