"""Edge client: resident memory and round time, fedpriv's ClientApp vs a minimal Flower one.

Every figure comes from a fresh process (imports counted) that runs one recorded
``train`` message through the app, as a SuperNode's ClientApp process does
(:mod:`bench.edge`); the ratio is fedpriv's figure over the minimal Flower + torch
client's (:mod:`bench.edge_minimal`), measured in the same run.
"""

from __future__ import annotations

from typing import Any

from bench.edge import measure


def run(quick: bool) -> dict[str, Any]:
    """Peak RSS, RSS after imports and train-round seconds per configuration."""
    return measure(examples=200 if quick else 719, repeats=1 if quick else 3)
