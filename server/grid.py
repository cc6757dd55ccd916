"""A Flower grid that collects replies as soon as they arrive.

Flower's deployment grid (``HttpGrid``, the ServerApp's link to the SuperLink) checks for
replies every 3 seconds in :meth:`send_and_receive`; a secure-aggregation round is five
exchanges, so that wait alone costs up to 15 s per round on a loopback deployment where
each exchange needs well under a second. The in-memory grid of Flower's simulation engine
pulls every 0.1 s: up to 0.5 s of a secure-aggregation round spent waiting.
:class:`PromptGrid` delegates everything to the grid it wraps and pulls on a backoff
instead: first after ``first`` seconds (5 ms), then each wait 1.5x the last, up to
``interval`` (0.1 s), and back to ``first`` whenever replies arrive (the rest of a cohort
tends to follow). An exchange that takes milliseconds is collected in milliseconds; a
minute of local training costs ~10 pulls more than polling at ``interval`` alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

__all__ = ["PromptGrid"]


class PromptGrid(Grid):
    """``grid`` whose :meth:`send_and_receive` polls after ``first`` s, up to ``interval``."""

    #: each wait without a reply is this times the last, up to ``interval``
    BACKOFF = 1.5

    def __init__(self, grid: Grid, interval: float = 0.1, first: float | None = None
                 ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        first = min(0.005, interval) if first is None else first
        if not 0 < first <= interval:
            raise ValueError(f"first must be in (0, interval={interval!r}] seconds, got "
                             f"{first!r}")
        self._grid = grid
        self.interval = interval
        self.first = first

    def set_run(self, run: Any) -> None:  # noqa: D102 (Flower's Grid API, delegated)
        self._grid.set_run(run)

    @property
    def run(self) -> Any:  # noqa: D102
        return self._grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:  # noqa: D102
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:  # noqa: D102
        return self._grid.get_node_ids()

    def get_nodes(self) -> Iterable[Any]:  # noqa: D102
        return self._grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:  # noqa: D102
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:  # noqa: D102
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        """Push ``messages``; pull their replies until all are in or ``timeout`` passes.

        The same contract as Flower's: ``timeout = None`` waits for every reply, and the
        replies that arrived in time are returned (a missing node is simply absent).
        """
        pending = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        step = 0.0
        while pending:
            got = list(self.pull_messages(pending))
            replies += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            step = (self.first if got or not step
                    else min(self.interval, step * self.BACKOFF))
            wait = step if deadline is None else min(
                step, max(0.0, deadline - time.monotonic()))
            time.sleep(wait)
        return replies

    def __getattr__(self, name: str) -> Any:
        """Anything else Flower's grids offer (``get_nodes``, ``node``, ...)."""
        return getattr(self._grid, name)
