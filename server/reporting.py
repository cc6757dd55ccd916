"""How a run tells its user what is happening: a protocol and a plain-log reporter."""

from __future__ import annotations

from collections.abc import Mapping
from logging import INFO
from typing import Any, Protocol

from flwr.common.logger import log

__all__ = ["LogReporter", "Reporter"]


class Reporter(Protocol):
    """Receives a run's progress. ``fedpriv simulate`` shows it live; ``flwr run`` logs it."""

    def on_start(self, *, scenario: str, rounds: int, run_dir: str) -> None:
        """The run is about to start its first round."""

    def on_round(self, record: Mapping[str, Any]) -> None:
        """A round finished; ``record`` is the line written to metrics.jsonl."""

    def on_finish(self, summary: Mapping[str, Any]) -> None:
        """The run ended (completed, stopped or failed); ``summary`` is summary.json."""


class LogReporter:
    """Reports through Flower's logger (what ``flwr run`` shows)."""

    def on_start(self, *, scenario: str, rounds: int, run_dir: str) -> None:
        """Log the run's start."""
        log(INFO, "fedpriv: scenario %s, %d rounds, run directory %s", scenario, rounds, run_dir)

    def on_round(self, record: Mapping[str, Any]) -> None:
        """Log one round's line."""
        log(INFO, "fedpriv: round %d: train loss %.4f, test accuracy %.4f (%.1fs)",
            record["round"], record.get("train_loss", float("nan")),
            record["test_accuracy"], record["elapsed_seconds"])

    def on_finish(self, summary: Mapping[str, Any]) -> None:
        """Log the run's outcome."""
        log(INFO, "fedpriv: %s after %d rounds: final accuracy %.4f",
            summary["status"], summary["rounds"], summary["final_accuracy"])
