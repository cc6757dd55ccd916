"""The wire contract between ``server/`` and ``client/``.

The two sides run on different machines and meet only through Flower messages. This
module names every record, config key and metric they exchange, so neither side has to
import the other.

A train or evaluate message from the server carries:

- ``ARRAYS`` (ArrayRecord): the global model's ``state_dict``;
- ``CONFIG`` (ConfigRecord): the run configuration (every key of
  :class:`fedpriv.config.RunConfig`, kebab-case) plus ``SERVER_ROUND``.

A client's reply carries ``ARRAYS`` (its local model after training) and ``METRICS``
(MetricRecord) with at least ``NUM_EXAMPLES`` and ``TRAIN_LOSS`` (train) or
``EVAL_LOSS`` and ``EVAL_ACCURACY`` (evaluate).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from fedpriv.config import RunConfig

__all__ = [
    "ARRAYS",
    "CANARY_FILE",
    "CONFIG",
    "EVAL_ACCURACY",
    "EVAL_LOSS",
    "METRICS",
    "NODE_DATA_DIR",
    "NODE_NUM_PARTITIONS",
    "NODE_PARTITION_ID",
    "NUM_EXAMPLES",
    "MASKED",
    "PRIVACY",
    "SECAGG",
    "SECAGG_ADVERTISE",
    "SECAGG_CONSISTENCY",
    "SECAGG_SHARE",
    "SECAGG_STATE",
    "SECAGG_UNMASK",
    "REFUSED",
    "REFUSED_REASON",
    "ROUND_CLIP_NORM",
    "SERVER_ROUND",
    "SIGNER_ID",
    "SUM_COUNT",
    "SUM_UNCLIPPED",
    "SUM_WEIGHT",
    "TRAIN_LOSS",
    "UNCLIPPED",
    "UPDATE",
    "UPDATE_SUM",
    "UPDATE_WEIGHT",
    "CLIENT_ID",
    "CLIENT_EPSILON",
    "DP_EVENT",
    "LEDGER_HEAD",
    "LEDGER_IN_RUN_DIR",
    "LEDGER_SIGNATURE",
    "config_from_record",
]

# Record names inside a message's RecordDict.
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"

# With user-level DP or secure aggregation a client sends its update instead of its model.
UPDATE = "update"  # ArrayRecord: Delta = w_local - w_global (clipped / weighted)
UPDATE_SUM = "update-sum"  # ArrayRecord: a cohort's sum, produced by secure aggregation
PRIVACY = "privacy"  # ConfigRecord in a train reply: the client's privacy bookkeeping
SECAGG = "secagg"  # ConfigRecord: a secure-aggregation stage's payload (both ways)
MASKED = "masked"  # ArrayRecord in a secagg train reply: {"y": uint64 masked vector}
SECAGG_STATE = "secagg-state"  # the client's own round state in its Context.state

# Message types of the secure-aggregation stages (the train message is stage 3).
SECAGG_ADVERTISE = "train.secagg_advertise"
SECAGG_SHARE = "train.secagg_share"
SECAGG_UNMASK = "train.secagg_unmask"
SECAGG_CONSISTENCY = "train.secagg_consistency"  # signed survivor sets (before unmask)

# Keys the server adds to the run configuration it sends.
SERVER_ROUND = "server-round"
ROUND_CLIP_NORM = "round-clip-norm"  # user-level DP: this round's clip C (adaptive)

# Metric keys.
NUM_EXAMPLES = "num-examples"  # Flower strategies weight by this key
TRAIN_LOSS = "train-loss"
EVAL_LOSS = "eval-loss"
EVAL_ACCURACY = "eval-accuracy"
UPDATE_WEIGHT = "update-weight"  # w_i the update was multiplied by (1 when unweighted)
UNCLIPPED = "unclipped"  # b_i = 1 if ||Delta_i|| <= C (Andrew et al. 2021)
SUM_WEIGHT = "sum-weight"
SUM_COUNT = "sum-count"
SUM_UNCLIPPED = "sum-unclipped"

# Keys of the PRIVACY ConfigRecord.
CLIENT_ID = "client-id"
REFUSED = "refused"  # True: the client's budget does not allow this round
REFUSED_REASON = "reason"
CLIENT_EPSILON = "epsilon"  # the client's own epsilon after this round (PLD)
DP_EVENT = "event"  # JSON of the DP event the client recorded this round
LEDGER_HEAD = "ledger-head"  # "<seq>:<sha256>" of the client's ledger after this round
LEDGER_IN_RUN_DIR = "ledger-in-run-dir"  # True: RUN_DIR/clients/<id>/ledger.sqlite
LEDGER_SIGNATURE = "ledger-signature"  # hex Ed25519 signature of the head (identity key)
SIGNER_ID = "signer-id"  # the roster id whose key made LEDGER_SIGNATURE

# Files in the run directory that the server writes and simulated clients read.
CANARY_FILE = "canaries.json"  # {"key": hex}: the canaries' direction key (simulation)

# Node-config keys a SuperNode sets (the simulation engine sets the first two).
NODE_PARTITION_ID = "partition-id"
NODE_NUM_PARTITIONS = "num-partitions"
NODE_DATA_DIR = "data-dir"

_ROUND_KEYS = frozenset({SERVER_ROUND, ROUND_CLIP_NORM})


def config_from_record(record: Mapping[str, Any]) -> tuple[RunConfig, int]:
    """Parse a received ``CONFIG`` record into the run config and the server round.

    Keys a newer server adds are ignored, so that older clients keep working; the keys
    that are present are validated exactly as the server validated them.
    """
    values = tuple((k, type(v), tuple(v) if isinstance(v, list) else v)
                   for k, v in record.items() if k not in _ROUND_KEYS)
    return _parse_config(values), int(record.get(SERVER_ROUND, 0))


@functools.lru_cache(maxsize=32)
def _parse_config(values: tuple[tuple[str, type, Any], ...]) -> RunConfig:
    """The config of a record's items, parsed once per distinct record.

    A run sends the same record every round, and a ``RunConfig`` is frozen, so one parse
    (~1.5 ms, ~60 keys) serves them all. Each value's type is part of the key:
    ``True == 1 == 1.0`` in Python, but not to the validation.
    """
    return RunConfig.from_mapping({k: list(v) if kind is list else v
                                   for k, kind, v in values}, ignore_unknown=True)
