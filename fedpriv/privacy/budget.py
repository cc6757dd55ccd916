"""Privacy budgets: refuse a release *before* it would spend more than allowed.

A budget is a ceiling ``epsilon_max`` at a fixed ``delta`` for one scope (a client or the
federation). The check is a dry run, as dp-accounting's ``PrivacyAccountant`` does before
composing: epsilon of everything spent plus the next event, compared with the ceiling;
only a release that passes is run and recorded. The comparison is strict and has no
slack (projected epsilon > epsilon_max refuses), so a run that passes its own checks
also passes the audit's (which allows 1e-9 for rounding).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from fedpriv.privacy.accounting import Accountant, epsilon
from fedpriv.privacy.events import DpEvent

__all__ = ["Budget", "projected_epsilon", "would_exceed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    """An (epsilon_max, delta) budget.

    Attributes
    ----------
    max_epsilon : float
        epsilon_max, in (0, inf]; ``math.inf`` means unlimited (still accounted).
    delta : float
        In (0, 1); every epsilon of the scope is computed at this delta.
    """

    max_epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if isinstance(self.max_epsilon, bool) or not self.max_epsilon > 0:
            raise ValueError(f"max_epsilon must be in (0, inf], got {self.max_epsilon!r}")
        if isinstance(self.delta, bool) or not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta!r}")

    @property
    def unlimited(self) -> bool:
        """``max_epsilon`` is infinite."""
        return math.isinf(self.max_epsilon)

    def remaining(self, spent_events: Iterable[DpEvent],
                  accountant: Accountant = Accountant.PLD) -> float:
        """``epsilon_max - epsilon(spent)``: negative once exceeded, inf if unlimited."""
        if self.unlimited:
            return math.inf
        return self.max_epsilon - epsilon(spent_events, self.delta, accountant)


def projected_epsilon(spent_events: Iterable[DpEvent], next_event: DpEvent, delta: float,
                      accountant: Accountant = Accountant.PLD) -> float:
    """Epsilon at ``delta`` after composing ``next_event`` with everything spent."""
    return epsilon([*spent_events, next_event], delta, accountant)


def would_exceed(budget: Budget, spent_events: Iterable[DpEvent], next_event: DpEvent,
                 accountant: Accountant = Accountant.PLD) -> bool:
    """Whether releasing ``next_event`` would take the scope above ``budget``.

    An unlimited budget is never exceeded (no accounting is done); otherwise the
    projected epsilon (:func:`projected_epsilon`) must stay ``<= max_epsilon``.
    """
    if budget.unlimited:
        return False
    return projected_epsilon(spent_events, next_event, budget.delta, accountant) > (
        budget.max_epsilon)
