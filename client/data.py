"""Where a client's training data comes from: its simulation partition or its disk."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedpriv.config import DpMode, RunConfig
from fedpriv.messages import NODE_DATA_DIR, NODE_NUM_PARTITIONS, NODE_PARTITION_ID
from fedpriv.tasks import ArrayDataset, client_dataset, load_npz_dir, task_spec

__all__ = ["client_identity", "local_data", "node_overrides"]

#: Node-config keys a device owner sets that take precedence over the server's run config.
NODE_DEVICE = "device"
NODE_MAX_EPSILON = "client-max-epsilon"
#: A device owner's consent to seeded privacy randomness (``reproducible = true``).
NODE_REPRODUCIBLE = "reproducible"
#: The DP mode a device owner requires of every run (the server cannot change it).
NODE_DP_MODE = "dp-mode"
#: A device owner's consent to federated evaluation under DP (``evaluate = true``).
NODE_EVALUATE = "evaluate"

_log = logging.getLogger(__name__)


def simulated(node_config: Mapping[str, Any]) -> bool:
    """Whether this node is a simulation's: its server is the operator who runs it.

    The simulation engine names its partition, and it has no data directory of its own.
    """
    return NODE_PARTITION_ID in node_config and not node_config.get(NODE_DATA_DIR)


def node_overrides(cfg: RunConfig, node_config: Mapping[str, Any]) -> RunConfig:
    """The run config as this node applies it: its own device, budget and randomness.

    The budget is the stricter of the node's and the server's: a device owner's limit
    cannot be raised by the server. Under a DP mode the server cannot make a deployed
    node's sampling and noise predictable: ``reproducible = true`` from the server seeds
    them from the run's ``seed``, which the server chose, so that it could subtract the
    noise from the update. A deployed node keeps them secret (OS entropy) unless its own
    node config sets ``reproducible = true``; a simulated node, whose server is the
    operator running it, follows the run config.
    """
    values: dict[str, Any] = {}
    if NODE_DEVICE in node_config:
        values["device"] = node_config[NODE_DEVICE]
    if NODE_MAX_EPSILON in node_config:
        own = float(node_config[NODE_MAX_EPSILON])
        values["client-max-epsilon"] = min(own, cfg.privacy.client_max_epsilon)
    if (cfg.training.reproducible and cfg.privacy.dp_mode is not DpMode.NONE
            and not simulated(node_config) and not _consents(node_config, NODE_REPRODUCIBLE)):
        _log.warning("the server asked for reproducible (seeded) privacy randomness; this "
                     "node keeps its sampling and noise secret (set reproducible=true in "
                     "its node config to allow it)")
        values["reproducible"] = False
    return RunConfig.from_mapping(values, base=cfg) if values else cfg


def node_refusal(cfg: RunConfig, node_config: Mapping[str, Any]) -> str:
    """Why this node will not train under ``cfg`` at all (``""``: it may).

    The server chooses the run config, ``dp-mode`` included: without this a server could
    switch a device to ``dp-mode = none`` (the whole model back, unnoised, no ledger, the
    device's own budget never checked) or from distributed to user level (its clipped
    update in the clear). A node whose config pins ``dp-mode`` trains only under that
    mode; a node with a finite ``client-max-epsilon`` (a device that keeps a privacy
    budget) never trains without DP.
    """
    pinned = str(node_config.get(NODE_DP_MODE, "") or "")
    if pinned:
        allowed = [m.value for m in DpMode]
        if pinned not in allowed:
            raise ValueError(f"node config dp-mode must be one of {allowed}, got {pinned!r}")
        if pinned != cfg.privacy.dp_mode.value:
            return (f"this node's config pins dp-mode={pinned}; the run asks for "
                    f"dp-mode={cfg.privacy.dp_mode.value}")
    if cfg.privacy.dp_mode is DpMode.NONE and NODE_MAX_EPSILON in node_config:
        budget = float(node_config[NODE_MAX_EPSILON])
        if math.isfinite(budget):
            return (f"this node keeps a privacy budget (client-max-epsilon={budget:g}); the "
                    "run asks for dp-mode=none, which would send its model trained on local "
                    "data unnoised and unaccounted")
    return ""


def evaluation_refusal(cfg: RunConfig, node_config: Mapping[str, Any]) -> str:
    """Why this node will not answer an ``evaluate`` message (``""``: it will).

    Federated evaluation sends the loss and accuracy of the global model on the node's
    own data, unnoised: no epsilon covers them. Under a DP mode a deployed node answers
    only if its own node config sets ``evaluate = true``; a simulated node follows the
    run (its plan says ``unprotected_evaluation``).
    """
    refusal = node_refusal(cfg, node_config)
    if refusal:
        return refusal
    if (cfg.privacy.dp_mode is not DpMode.NONE and not simulated(node_config)
            and not _consents(node_config, NODE_EVALUATE)):
        return ("under DP, evaluation would send the loss and accuracy on this node's data "
                "unnoised, which no epsilon covers; set evaluate=true in its node config "
                "to allow it")
    return ""


def _consents(node_config: Mapping[str, Any], key: str) -> bool:
    value = node_config.get(key, False)
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


def local_data(cfg: RunConfig, node_config: Mapping[str, Any]) -> ArrayDataset:
    """The client's own training data.

    A deployed SuperNode names a directory of ``.npz`` files in its node config
    (``data-dir``); a simulated one gets ``partition-id`` / ``num-partitions`` from the
    simulation engine and loads its share of the shipped data set.
    """
    data_dir = str(node_config.get(NODE_DATA_DIR, "") or "")
    if data_dir:  # the device's own files, checked against the task's shape and range
        task = task_spec(cfg)
        return load_npz_dir(
            data_dir,
            feature_shape=task.feature_shape,
            num_classes=task.num_classes,
            feature_range=task.feature_range,
        )
    if NODE_PARTITION_ID not in node_config:
        raise ValueError(
            "the node config sets neither data-dir (deployment) nor partition-id "
            "(simulation); set data-dir to a directory of .npz files"
        )
    # Canary nodes (partition-id >= clients) hold no data: the real clients split the
    # data set among ``clients`` partitions whatever the engine's node count.
    partitions = int(node_config[NODE_NUM_PARTITIONS])
    if cfg.privacy.canaries > 0:
        partitions = cfg.training.clients
    return client_dataset(cfg, int(node_config[NODE_PARTITION_ID]), partitions)


def client_identity(node_config: Mapping[str, Any], node_id: int) -> str:
    """A stable, human-readable client id: ``client-<partition>`` in simulation."""
    if NODE_PARTITION_ID in node_config:
        return f"client-{int(node_config[NODE_PARTITION_ID])}"
    return f"node-{np.uint64(node_id)}"
