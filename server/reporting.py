"""How a run tells its user what is happening: a protocol and a plain-log reporter."""

from __future__ import annotations

from collections.abc import Mapping
from logging import INFO, WARNING
from typing import Any, Protocol

from flwr.common.logger import log

__all__ = ["LogReporter", "Reporter", "idle_rounds"]


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
        log(INFO, "fedpriv: round %d: train loss %s, test accuracy %.4f (%.1fs)%s",
            record["round"], _num(record.get("train_loss")), record["test_accuracy"],
            record["elapsed_seconds"], _privacy(record))

    def on_finish(self, summary: Mapping[str, Any]) -> None:
        """Log the run's outcome."""
        log(INFO, "fedpriv: %s after %d rounds: final accuracy %s%s",
            summary["status"], summary["rounds"], _num(summary.get("final_accuracy")),
            f" ({summary['reason']})" if summary.get("reason") else "")
        idle = idle_rounds(summary)
        if idle:
            log(WARNING, "fedpriv: %s", idle)


def idle_rounds(summary: Mapping[str, Any]) -> str:
    """A warning when some rounds changed nothing ("": every round aggregated)."""
    done, rounds = summary.get("rounds_aggregated"), summary.get("rounds") or 0
    if done is None or done >= rounds:
        return ""
    return (f"only {done} of {rounds} rounds aggregated an update; the others were "
            "skipped, aborted or got no usable reply (metrics.jsonl says why: missing, "
            "failed, rejected, skipped, secagg.aborted)")


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _privacy(record: Mapping[str, Any]) -> str:
    eps = record.get("epsilon")
    return "" if eps is None else f", epsilon {eps:.3f}"
