"""fedpriv's Flower ClientApp: local training, and (later) privacy and masking."""

from __future__ import annotations

__all__: list[str] = []
