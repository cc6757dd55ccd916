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

from collections.abc import Mapping
from typing import Any

from fedpriv.config import RunConfig

__all__ = [
    "ARRAYS",
    "CONFIG",
    "EVAL_ACCURACY",
    "EVAL_LOSS",
    "METRICS",
    "NODE_DATA_DIR",
    "NODE_NUM_PARTITIONS",
    "NODE_PARTITION_ID",
    "NUM_EXAMPLES",
    "SERVER_ROUND",
    "TRAIN_LOSS",
    "config_from_record",
]

# Record names inside a message's RecordDict.
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"

# Keys the server adds to the run configuration it sends.
SERVER_ROUND = "server-round"

# Metric keys.
NUM_EXAMPLES = "num-examples"  # Flower strategies weight by this key
TRAIN_LOSS = "train-loss"
EVAL_LOSS = "eval-loss"
EVAL_ACCURACY = "eval-accuracy"

# Node-config keys a SuperNode sets (the simulation engine sets the first two).
NODE_PARTITION_ID = "partition-id"
NODE_NUM_PARTITIONS = "num-partitions"
NODE_DATA_DIR = "data-dir"

_ROUND_KEYS = frozenset({SERVER_ROUND})


def config_from_record(record: Mapping[str, Any]) -> tuple[RunConfig, int]:
    """Parse a received ``CONFIG`` record into the run config and the server round.

    Keys a newer server adds are ignored, so that older clients keep working; the keys
    that are present are validated exactly as the server validated them.
    """
    values = {k: v for k, v in record.items() if k not in _ROUND_KEYS}
    cfg = RunConfig.from_mapping(values, ignore_unknown=True)
    return cfg, int(record.get(SERVER_ROUND, 0))
