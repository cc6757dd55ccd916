"""Aggregation rules, built from Flower's strategy classes by name."""

from __future__ import annotations

from strategies.factory import build_strategy

__all__ = ["build_strategy"]
