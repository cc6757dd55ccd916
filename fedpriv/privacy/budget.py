"""Privacy budgets: refuse a release *before* it would spend more than allowed.

A budget is a ceiling ``epsilon_max`` at a fixed ``delta`` for one scope (a client or the
federation). The check is a dry run, as dp-accounting's ``PrivacyAccountant`` does before
composing: epsilon of everything spent plus the next event, compared with the ceiling;
only a release that passes is run and recorded. The comparison is strict and has no
slack (projected epsilon > epsilon_max refuses), so a run that passes its own checks
also passes the audit's (which allows 1e-9 for rounding).
"""

from __future__ import annotations

from collections.abc import Iterable

from fedpriv.privacy.accounting import Accountant, epsilon
from fedpriv.privacy.events import DpEvent

__all__ = ["projected_epsilon"]


def projected_epsilon(spent_events: Iterable[DpEvent], next_event: DpEvent, delta: float,
                      accountant: Accountant = Accountant.PLD) -> float:
    """Epsilon at ``delta`` after composing ``next_event`` with everything spent."""
    return epsilon([*spent_events, next_event], delta, accountant)
