"""The run directory: everything a run leaves behind, written atomically.

Layout::

    RUN_DIR/
      config.toml      the resolved run configuration
      metrics.jsonl    one JSON object per completed round
      model.safetensors  the latest global model (replaced atomically each round)
      model-initial.safetensors  the round-0 model
      checkpoint.safetensors  the last committed round's model and strategy state
      checkpoint-next.safetensors  the same for a round not yet committed (see below)
      checkpoint.json  the committed round, its signed ledger head and server state
      summary.json     written when the run ends, however it ends
      attempts/        summaries of earlier attempts of a resumed run

A round is checkpointed in two steps after its ledger commit, so that a run resumed
after any crash charges no round twice and never holds two noised releases of one sum
(``fedpriv simulate --resume``): once the round's DP events are appended to the ledger
the aggregate is written to ``checkpoint-next.safetensors``, then renamed to
``checkpoint.safetensors`` and ``checkpoint.json`` records the round with the ledger
head, signed. On resume a pending checkpoint (its round charged) is promoted (the
round's result is kept); a charged round without one is not run again (its result is
lost; see :mod:`server.checkpoint`); one the ledger never charged (an older version's)
is discarded and the round runs again.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
from safetensors.numpy import load_file

from fedpriv import durable

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


class RunDirectory:
    """Writes a run's files; each write is atomic or an fsync'd append."""

    CONFIG = "config.toml"
    METRICS = "metrics.jsonl"
    MODEL = "model.safetensors"
    INITIAL_MODEL = "model-initial.safetensors"
    CHECKPOINT = "checkpoint.json"
    STATE = "checkpoint.safetensors"
    PENDING = "checkpoint-next.safetensors"
    #: The ledger heads clients reported in the round in flight, written before its charge
    #: (public values: hashes, signatures, epsilons), so a stop cannot lose them.
    HEADS = "checkpoint-next-heads.json"
    SUMMARY = "summary.json"
    ATTEMPTS = "attempts"

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

    def reopen(self) -> RunDirectory:
        """An existing run directory, to resume: it must hold a run's config."""
        if not (self.path / self.CONFIG).is_file():
            raise FileNotFoundError(f"{self.path} holds no run ({self.CONFIG} is missing)")
        return self

    def read_config(self) -> tuple[str, dict[str, Any]]:
        """``(scenario, flat config)`` as the run recorded them."""
        import tomllib

        doc = tomllib.loads((self.path / self.CONFIG).read_text())
        return str(doc.get("scenario", "resumed")), dict(doc.get("config", {}))

    def archive_summary(self) -> Path | None:
        """Move an earlier attempt's summary under ``attempts/`` (resuming)."""
        src = self.path / self.SUMMARY
        if not src.exists():
            return None
        (self.path / self.ATTEMPTS).mkdir(exist_ok=True)
        n = len(list((self.path / self.ATTEMPTS).glob("summary-*.json"))) + 1
        dst = self.path / self.ATTEMPTS / f"summary-{n}.json"
        os.replace(src, dst)
        return dst

    # -------------------------------------------------------------- checkpoints
    def save_pending(self, server_round: int, model: Mapping[str, np.ndarray],
                     state: Mapping[str, np.ndarray], info: Mapping[str, Any]) -> None:
        """Write a round's aggregate before its ledger commit (``checkpoint-next``)."""
        tensors = {f"model/{k}": v for k, v in model.items()}
        tensors.update({f"state/{k}": v for k, v in state.items()})
        meta = {"round": str(server_round), "info": json.dumps(dict(info), sort_keys=True)}
        durable.write_tensors(self.path / self.PENDING, tensors, meta)

    def commit_checkpoint(self, server_round: int, record: Mapping[str, Any]) -> None:
        """After the ledger commit: the pending checkpoint becomes the checkpoint."""
        pending = self.path / self.PENDING
        if pending.exists():
            durable.replace(pending, self.path / self.STATE)
        durable.write_bytes(self.path / self.CHECKPOINT,
                            json.dumps({**dict(record), "round": server_round}, indent=1,
                                       sort_keys=True).encode())
        (self.path / self.HEADS).unlink(missing_ok=True)

    def save_heads(self, server_round: int, heads: Mapping[str, Any]) -> None:
        """Keep the clients' reported ledger heads of the round in flight (:data:`HEADS`)."""
        durable.write_bytes(self.path / self.HEADS, json.dumps(
            {**dict(heads), "round": server_round}, sort_keys=True).encode())

    def read_heads(self, server_round: int) -> dict[str, Any]:
        """:data:`HEADS` if it is ``server_round``'s (then removed), else ``{}``."""
        path = self.path / self.HEADS
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        path.unlink(missing_ok=True)
        if not isinstance(data, dict) or data.pop("round", None) != server_round:
            return {}
        return data

    def read_checkpoint(self) -> dict[str, Any] | None:
        """``checkpoint.json`` (None if absent)."""
        path = self.path / self.CHECKPOINT
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("round"), int):
            raise ValueError(f"{path} is not a checkpoint record")
        return data

    def read_state(self, name: str) -> tuple[int, dict[str, np.ndarray],
                                             dict[str, np.ndarray], dict[str, Any]] | None:
        """``(round, model, state arrays, info)`` of ``STATE`` or ``PENDING``, if present."""
        from safetensors import safe_open

        path = self.path / name
        if not path.exists():
            return None
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(path)
        model = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
        state = {k[6:]: v for k, v in tensors.items() if k.startswith("state/")}
        return int(meta["round"]), model, state, json.loads(meta.get("info", "{}"))

    def discard_pending(self) -> None:
        """Drop a pending checkpoint the ledger never charged."""
        (self.path / self.PENDING).unlink(missing_ok=True)

    def keep_metrics_through(self, server_round: int) -> list[dict[str, Any]]:
        """Drop metrics lines of rounds after ``server_round`` (resuming); the rest."""
        kept = [r for r in self.read_metrics() if int(r.get("round", 0)) <= server_round]
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
        durable.write_bytes(self.path / self.METRICS, text.encode())
        return kept

    def write_config(self, flat: Mapping[str, Any], *, scenario: str) -> None:
        """Record the resolved configuration the run uses."""
        doc = {"scenario": scenario, "config": dict(flat)}
        durable.write_bytes(self.path / self.CONFIG, tomli_w.dumps(doc).encode())

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        """Append one round's metrics as a JSON line (flushed and fsync'd)."""
        with open(self.path / self.METRICS, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(record), sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def save_model(self, arrays: Mapping[str, np.ndarray], *, server_round: int) -> None:
        """Replace the saved global model (its metadata names the round)."""
        durable.write_tensors(self.path / self.MODEL, arrays, {"round": str(server_round)})

    def save_initial_model(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Keep the round-0 model (the audit's canary estimate needs theta_T - theta_0)."""
        durable.write_tensors(self.path / self.INITIAL_MODEL, arrays, {"round": "0"})

    def load_model(self) -> dict[str, np.ndarray]:
        """The saved global model's arrays (safetensors: data only, no code)."""
        return load_file(self.path / self.MODEL)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json`` atomically."""
        durable.write_bytes(
            self.path / self.SUMMARY,
            (json.dumps(dict(summary), indent=2, sort_keys=True) + "\n").encode(),
        )

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every round's metrics written so far."""
        path = self.path / self.METRICS
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # a line torn by a crash mid-append: not a record
                continue
        return out
