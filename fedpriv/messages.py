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

import threading
from collections import OrderedDict
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
    that are present are validated exactly as the server validated them. A run sends the
    same record every round and a ``RunConfig`` is frozen, so each distinct record is
    parsed once (~1.5 ms, ~60 keys) and its config kept (the last :data:`_KEPT`).
    Records are the same when every value has the same type and ``repr`` (``True``,
    ``1`` and ``1.0`` are equal in Python but not to the validation; so are ``-0.0`` and
    ``0.0``, and ``[1, 2]`` and ``[1.0, 2.0]``).
    """
    values = {k: v for k, v in record.items() if k not in _ROUND_KEYS}
    key = tuple((k, type(v).__name__, repr(v)) for k, v in values.items())
    with _PARSED_LOCK:
        cfg = _PARSED.get(key)
        if cfg is not None:
            _PARSED.move_to_end(key)
    if cfg is None:
        cfg = RunConfig.from_mapping(values, ignore_unknown=True)  # raises: nothing kept
        with _PARSED_LOCK:
            _PARSED[key] = cfg
            while len(_PARSED) > _KEPT:
                _PARSED.popitem(last=False)
    return cfg, int(record.get(SERVER_ROUND, 0))


#: Distinct config records whose parse a process keeps (least recently used dropped).
_KEPT = 32
_PARSED: OrderedDict[tuple[tuple[str, str, str], ...], RunConfig] = OrderedDict()
_PARSED_LOCK = threading.Lock()
