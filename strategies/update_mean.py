"""The example-weighted mean of client updates, for updates that arrive as a sum.

Under secure aggregation the server sees only ``sum_i n_i Delta_i`` and ``sum_i n_i``;
this wrapper turns that into ``w_global + sum_i n_i Delta_i / sum_i n_i`` (FedAvg's
weighted mean, McMahan et al. 2017, Algorithm 1) and hands it to the wrapped strategy,
so FedAvg, FedProx and FedAdam keep their own server step.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import Strategy

from strategies.delegation import KeepsGlobalModel
from strategies.updates import model_reply, numpy_record, sum_updates, train_loss

__all__ = ["UpdateMean"]


class UpdateMean(KeepsGlobalModel, Strategy):
    """Weighted mean of (summed) updates, then ``inner``'s step."""

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner
        self._current: ArrayRecord | None = None

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """``w + sum / weight``; an empty round or zero weight leaves the model as it was."""
        replies = list(replies)
        total = sum_updates(replies)
        if total is None or total.weight <= 0 or self._current is None:
            return None, None
        new = {}
        for key, acc in zip(total.keys, total.arrays, strict=True):
            base = self._current[key].numpy()
            new[key] = (base.astype(np.float64) + acc / total.weight).astype(base.dtype)
        template = next(m for m in replies if not m.has_error())
        reply = model_reply(template, numpy_record(new), weight=total.weight,
                            loss=train_loss(replies))
        return self.inner.aggregate_train(server_round, [reply])
