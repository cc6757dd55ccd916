"""What every fedpriv strategy wrapper passes straight through to the strategy it wraps.

Wrap, don't subclass: fedpriv's wrappers (cohort sampling, DP-FedAvg, the update mean,
secure aggregation) change how a *training* round is configured and aggregated and
leave federated evaluation and the summary to the Flower strategy inside. This mixin
holds that delegation once. It is a mixin, not a base class: a wrapper is declared
``class Wrapper(Delegating, Strategy)`` and stays one level under Flower's ABC.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

__all__ = ["Delegating", "KeepsGlobalModel", "innermost"]


class Delegating:
    """Delegate evaluation and the summary to ``self.inner``.

    A wrapper sets ``self.inner`` to the strategy it wraps and may override
    :meth:`describe` to log one line about itself before the inner summary.
    """

    inner: Strategy

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord,
                           config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Delegate to the inner strategy."""
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        """Delegate to the inner strategy."""
        return self.inner.aggregate_evaluate(server_round, replies)

    def describe(self) -> None:
        """Log this wrapper's settings (nothing by default)."""

    def summary(self) -> None:
        """Log the wrapper's line, then the inner strategy's summary."""
        self.describe()
        self.inner.summary()


class KeepsGlobalModel(Delegating):
    """Delegating, and keeping the round's global model for :meth:`aggregate_train`.

    For wrappers whose aggregate is a step from the model sent out this round (the
    update mean, server momentum): :meth:`configure_train` keeps ``arrays`` as
    ``self._current`` and delegates.
    """

    _current: ArrayRecord | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Remember the global model ``w_t``; delegate."""
        self._current = arrays
        return self.inner.configure_train(server_round, arrays, config, grid)


def innermost(strategy: Any) -> Any:
    """The Flower strategy at the bottom of a chain of wrappers."""
    while hasattr(strategy, "inner"):
        strategy = strategy.inner
    return strategy
