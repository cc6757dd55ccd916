"""fedpriv's Flower ServerApp: rounds, sampling, aggregation, run directory."""

from __future__ import annotations

__all__: list[str] = []
