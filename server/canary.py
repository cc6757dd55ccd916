"""The server's part in the empirical privacy estimate: the canaries' secret key.

The key is drawn from OS entropy once per run and written to ``RUN_DIR/canaries.json``
(see :mod:`client.canary` and :mod:`fedpriv.privacy.canary`).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from fedpriv.messages import CANARY_FILE

__all__ = ["write_canary_key"]


def write_canary_key(run_path: str | Path) -> Path:
    """Create ``canaries.json`` with a fresh 256-bit key (kept if it exists already)."""
    path = Path(run_path) / CANARY_FILE
    if path.exists():
        return path
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"key": secrets.token_bytes(32).hex()}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return path
