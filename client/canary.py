"""Canary clients for the empirical privacy estimate (simulation, user-level DP only).

Andrew et al. 2024, "One-shot Empirical Privacy Estimation for Federated Learning"
(ICLR), Algorithm 1: a canary is a client whose update is always the same random unit
direction, scaled to the round's clip norm C, so its norm is exactly C and it is never
clipped. It holds no data and keeps no ledger. In simulation the nodes with partition-id
``clients .. clients + canaries - 1`` are canaries; the direction key lives in the run
directory (``canaries.json``), which only the canaries and the auditor read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MetricRecord

from fedpriv.config import RunConfig
from fedpriv.messages import (
    ARRAYS,
    CANARY_FILE,
    CLIENT_ID,
    METRICS,
    NODE_PARTITION_ID,
    PRIVACY,
    UNCLIPPED,
    UPDATE,
    UPDATE_WEIGHT,
)
from fedpriv.privacy.canary import canary_direction
from strategies.updates import numpy_record

__all__ = ["canary_key", "canary_reply", "is_canary"]


def is_canary(cfg: RunConfig, node_config: Mapping[str, Any]) -> bool:
    """Whether this simulated node is one of the run's canaries."""
    if cfg.privacy.canaries <= 0 or NODE_PARTITION_ID not in node_config:
        return False
    return int(node_config[NODE_PARTITION_ID]) >= cfg.training.clients


def canary_key(run_dir: str | Path) -> bytes:
    """The canaries' direction key from ``RUN_DIR/canaries.json``."""
    path = Path(run_dir) / CANARY_FILE
    try:
        return bytes.fromhex(json.loads(path.read_text())["key"])
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: no canary key ({err})") from err


def canary_reply(cfg: RunConfig, node_config: Mapping[str, Any], msg: Message,
                 clip: float) -> dict[str, Any]:
    """The canary's reply: ``C * c_j`` shaped like the model, unweighted, unclipped."""
    index = int(node_config[NODE_PARTITION_ID]) - cfg.training.clients
    arrays = msg.content[ARRAYS]
    # The direction is laid out over the parameters in sorted-name order (the auditor
    # flattens the saved model the same way); the reply keeps the model's own order.
    shapes = {k: arrays[k].numpy().shape for k in sorted(arrays.keys())}
    dim = sum(int(np.prod(s)) for s in shapes.values())
    direction = canary_direction(canary_key(cfg.deployment.run_dir), index, dim) * clip  # (dim,)
    parts, at = {}, 0
    for key, shape in shapes.items():
        size = int(np.prod(shape))
        parts[key] = direction[at:at + size].reshape(shape).astype(np.float32)
        at += size
    update = {key: parts[key] for key in arrays.keys()}
    return {
        UPDATE: numpy_record(update),
        METRICS: MetricRecord({UPDATE_WEIGHT: 1.0, UNCLIPPED: 1.0}),
        PRIVACY: ConfigRecord({CLIENT_ID: f"canary-{index}"}),
    }
