"""The run directory: everything a run leaves behind, written atomically.

Layout::

    RUN_DIR/
      config.toml      the resolved run configuration
      metrics.jsonl    one JSON object per completed round
      model.safetensors  the latest global model (replaced atomically each round)
      model-initial.safetensors  the round-0 model
      checkpoint.json  the round that model.safetensors holds
      summary.json     written when the run ends, however it ends
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
from safetensors.numpy import load_file, save_file

__all__ = ["RunDirectory", "default_run_dir"]


def default_run_dir(name: str, root: str | Path = "runs") -> Path:
    """``runs/<UTC timestamp>-<name>``, unique even within the same second."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{name}"
    path, i = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunDirectory:
    """Writes a run's files; each write is atomic or an fsync'd append."""

    CONFIG = "config.toml"
    METRICS = "metrics.jsonl"
    MODEL = "model.safetensors"
    INITIAL_MODEL = "model-initial.safetensors"
    CHECKPOINT = "checkpoint.json"
    SUMMARY = "summary.json"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        #: Set (by a signal handler) to stop the run before its next round.
        self.stop = threading.Event()
        #: Set by the running federation: writes the summary as "interrupted" (any thread).
        self.on_interrupt: Callable[[str], Any] | None = None

    def create(self) -> RunDirectory:
        """Create the directory; refuse one that already holds a run."""
        if (self.path / self.CONFIG).exists():
            raise FileExistsError(
                f"{self.path} already holds a run ({self.CONFIG} exists); choose another --out"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def write_config(self, flat: Mapping[str, Any], *, scenario: str) -> None:
        """Record the resolved configuration the run uses."""
        doc = {"scenario": scenario, "config": dict(flat)}
        _atomic_write(self.path / self.CONFIG, tomli_w.dumps(doc).encode())

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        """Append one round's metrics as a JSON line (flushed and fsync'd)."""
        with open(self.path / self.METRICS, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(record), sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def save_model(self, arrays: Mapping[str, np.ndarray], *, server_round: int) -> None:
        """Replace the saved global model, then record which round it is."""
        tensors = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".model.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"round": str(server_round)})
            os.replace(tmp, self.path / self.MODEL)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _atomic_write(
            self.path / self.CHECKPOINT, json.dumps({"round": server_round}).encode()
        )

    def save_initial_model(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Keep the round-0 model (the audit's canary estimate needs theta_T - theta_0)."""
        tensors = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".model-initial.", suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"round": "0"})
            os.replace(tmp, self.path / self.INITIAL_MODEL)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_model(self) -> dict[str, np.ndarray]:
        """The saved global model's arrays (safetensors: data only, no code)."""
        return load_file(self.path / self.MODEL)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json`` atomically."""
        _atomic_write(
            self.path / self.SUMMARY,
            (json.dumps(dict(summary), indent=2, sort_keys=True) + "\n").encode(),
        )

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every round's metrics written so far."""
        path = self.path / self.METRICS
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
