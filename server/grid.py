"""A Flower grid that collects replies as soon as they arrive.

Flower's deployment grid (``HttpGrid``, the ServerApp's link to the SuperLink) checks for
replies every 3 seconds in :meth:`send_and_receive`; a secure-aggregation round is five
exchanges, so that wait alone costs up to 15 s per round on a loopback deployment where
each exchange needs well under a second. :class:`PromptGrid` delegates everything to the
grid it wraps and pulls every ``interval`` seconds instead: one ``PullMessages`` call to
the SuperLink per interval, cheap next to what it saves. The in-memory grid of Flower's
simulation engine already pulls every 0.1 s and is unaffected.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

__all__ = ["PromptGrid"]


class PromptGrid(Grid):
    """``grid`` with :meth:`send_and_receive` polling every ``interval`` seconds."""

    def __init__(self, grid: Grid, interval: float = 0.1) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self._grid = grid
        self.interval = interval

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
        while pending:
            got = list(self.pull_messages(pending))
            replies += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            if not pending or (deadline is not None and time.monotonic() >= deadline):
                break
            wait = self.interval if deadline is None else min(
                self.interval, max(0.0, deadline - time.monotonic()))
            time.sleep(wait)
        return replies

    def __getattr__(self, name: str) -> Any:
        """Anything else Flower's grids offer (``get_nodes``, ``node``, ...)."""
        return getattr(self._grid, name)
