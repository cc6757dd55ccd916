"""Exactly-once releases across a resumed run: a client's last reply, kept until replaced.

A client records a round's DP event in its ledger *before* its update leaves the device.
If the server then dies before it checkpoints that round, a resumed run asks for the same
round again from the same global model. Training again would release a second, different
update computed from the same data, which must be charged a second time; sending the
update already released costs nothing more (post-processing of a released value,
Dwork & Roth 2014, Proposition 2.1). So the client keeps the plaintext payload of its last
charged round next to its ledger and replays it, uncharged, when the same run asks for the
same round with the same global model. Anything else (another model, a lost payload) is
refused rather than charged twice.

The payload is written atomically *before* the ledger entry, so after any crash either
the round was not charged (the payload is discarded and the round trained afresh) or it
was charged and the payload is there. Files: ``<dir>/<scope>.safetensors`` (one per
scope: the last round only), data only (safetensors, no code).

The payload is what the client released *before* any noise the server adds or any
masking: as sensitive as what the server sees. A device keeps it next to its own ledger
(``<ledger dir>/replay``), on the device. A simulated client keeps it in a private
state directory outside the run directory (:func:`fedpriv.durable.private_dir`), which
the server removes when the run completes; and every client drops it as soon as the same
run asks for a later round (the server committed the round: it never asks for it again).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedpriv import durable

__all__ = ["Payload", "ReplayCache", "model_digest"]


def model_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the global model's names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Payload:
    """What a client released in one round, before any masking.

    ``kind`` is ``"arrays"`` (the local model) or ``"update"`` (the clipped or plain
    update); ``info`` holds the scalars the reply needs (metrics, weight, clip bit, the
    DP event and the epsilon reported).
    """

    kind: str
    arrays: dict[str, np.ndarray]
    info: dict[str, Any]


class ReplayCache:
    """The last charged round's payload of one client in one run."""

    def __init__(self, ledger_path: str | Path, scope: str, *,
                 directory: str | Path | None = None) -> None:
        where = Path(directory) if directory is not None else Path(ledger_path).parent / "replay"
        self.path = where / f"{scope}.safetensors"

    def discard_before(self, *, run_id: str, server_round: int) -> None:
        """Drop the kept payload if it is this run's and from a round before ``server_round``.

        A server asking for a later round has committed the earlier one and will never
        ask for it again, so the copy would only be a sensitive file left lying around.
        """
        from safetensors import safe_open

        if not self.path.is_file():
            return
        try:
            with safe_open(str(self.path), framework="numpy") as fh:
                meta = fh.metadata() or {}
            stale = meta.get("run_id") == run_id and int(meta["round"]) < server_round
        except (OSError, ValueError, KeyError):
            stale = True  # unreadable: no replay could use it
        if stale:
            self.path.unlink(missing_ok=True)

    def save(self, *, run_id: str, server_round: int, model: str, payload: Payload) -> None:
        """Keep ``payload`` as this run's ``server_round``, replacing the last (durably).

        The directory is made readable by its owner only (0700), as the file is.
        """
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path.parent.chmod(0o700)
        meta = {"run_id": run_id, "round": str(server_round), "model": model,
                "kind": payload.kind, "info": json.dumps(payload.info, sort_keys=True)}
        durable.write_tensors(self.path, payload.arrays, meta)  # the rename synced too

    def load(self, *, run_id: str, server_round: int, model: str) -> Payload | None:
        """The payload kept for exactly this run, round and global model, else None."""
        from safetensors import safe_open

        if not self.path.is_file():
            return None
        try:
            with safe_open(str(self.path), framework="numpy") as fh:
                meta = fh.metadata() or {}
            if (meta.get("run_id") != run_id or meta.get("round") != str(server_round)
                    or meta.get("model") != model):
                return None
            from safetensors.numpy import load_file

            return Payload(kind=meta["kind"], arrays=load_file(self.path),
                           info=json.loads(meta["info"]))
        except (OSError, ValueError, KeyError):
            return None
