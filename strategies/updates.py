"""Aggregating client *updates* rather than client models.

With user-level DP or secure aggregation a client replies with its update
``Delta = w_local - w_global`` (clipped, or weighted by its example count) instead of its
model, and the server works on the cohort's sum. This module turns replies, or a sum a
secure-aggregation layer already computed, into one :class:`UpdateSum`, and hands the
wrapped Flower strategy a single synthetic reply carrying the new global model, so that
FedAvg, FedProx and FedAdam apply their own server step unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, Message, Metadata, MetricRecord, RecordDict

from fedpriv.messages import (
    ARRAYS,
    METRICS,
    NUM_EXAMPLES,
    SUM_COUNT,
    SUM_UNCLIPPED,
    SUM_WEIGHT,
    TRAIN_LOSS,
    UNCLIPPED,
    UPDATE,
    UPDATE_SUM,
    UPDATE_WEIGHT,
)

__all__ = [
    "UpdateSum",
    "model_reply",
    "numpy_record",
    "sum_updates",
    "synthetic_reply",
    "train_loss",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateSum:
    """The cohort's summed updates and what travelled with them.

    Attributes
    ----------
    keys : tuple[str, ...]
        Parameter names, in the order of ``arrays``.
    arrays : list[numpy.ndarray]
        ``sum_i Delta_i`` per parameter (weighted by ``w_i`` if the clients weighted).
    weight : float
        ``sum_i w_i``: example counts, or the number of clients when unweighted.
    count : int
        Clients whose updates are in the sum.
    unclipped : float
        ``sum_i b_i``, clients whose update was within the clip (adaptive clipping).
    """

    keys: tuple[str, ...]
    arrays: list[np.ndarray]
    weight: float
    count: int
    unclipped: float = 0.0

    def __post_init__(self) -> None:
        if len(self.keys) != len(self.arrays):
            raise ValueError(
                f"keys and arrays must have the same length, got {len(self.keys)} "
                f"and {len(self.arrays)}"
            )
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")


def numpy_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    """An ArrayRecord of named numpy arrays (order kept)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def _valid(replies: Iterable[Message]) -> list[Message]:
    return [m for m in replies if not m.has_error() and UPDATE in m.content.array_records]


def sum_updates(replies: Iterable[Message]) -> UpdateSum | None:
    """Sum plaintext updates, or unwrap a sum a secure-aggregation layer produced.

    Returns ``None`` when no reply carries an update (an empty round).
    """
    replies = list(replies)
    for m in replies:
        if not m.has_error() and UPDATE_SUM in m.content.array_records:
            rec = m.content[UPDATE_SUM]
            meta = m.content[METRICS]
            return UpdateSum(
                keys=tuple(rec.keys()),
                arrays=[a.numpy().astype(np.float64) for a in rec.values()],
                weight=float(meta[SUM_WEIGHT]), count=int(meta[SUM_COUNT]),
                unclipped=float(meta.get(SUM_UNCLIPPED, 0.0)),
            )
    valid = _valid(replies)
    if not valid:
        return None
    first = valid[0].content[UPDATE]
    keys = tuple(first.keys())
    total = [np.zeros(first[k].numpy().shape, dtype=np.float64) for k in keys]
    weight = unclipped = 0.0
    for m in valid:
        rec = m.content[UPDATE]
        if tuple(rec.keys()) != keys:
            raise ValueError(f"update keys differ between clients: {tuple(rec.keys())}")
        for acc, k in zip(total, keys, strict=True):
            acc += rec[k].numpy()
        metrics = m.content[METRICS]
        weight += float(metrics.get(UPDATE_WEIGHT, 1.0))
        unclipped += float(metrics.get(UNCLIPPED, 0.0))
    return UpdateSum(keys=keys, arrays=total, weight=weight, count=len(valid),
                     unclipped=unclipped)


def train_loss(replies: Sequence[Message]) -> float | None:
    """Example-weighted mean train loss of the replies that report one."""
    num = den = 0.0
    for m in replies:
        if m.has_error() or METRICS not in m.content.metric_records:
            continue
        metrics = m.content[METRICS]
        if TRAIN_LOSS in metrics and NUM_EXAMPLES in metrics:
            num += float(metrics[TRAIN_LOSS]) * float(metrics[NUM_EXAMPLES])
            den += float(metrics[NUM_EXAMPLES])
    return num / den if den > 0 else None


def model_reply(template: Message | None, arrays: ArrayRecord, *, weight: float,
                loss: float | None) -> Message:
    """A reply, as if from one client, carrying the new global model for the inner strategy.

    ``template`` is any real reply of the round (for its run id and message type), or
    ``None`` when nobody replied (a noise-only DP round).
    """
    metrics: dict[str, float] = {NUM_EXAMPLES: float(weight)}
    if loss is not None:
        metrics[TRAIN_LOSS] = loss
    return synthetic_reply(template, RecordDict({ARRAYS: arrays,
                                                 METRICS: MetricRecord(metrics)}))


def synthetic_reply(template: Message | None, content: RecordDict) -> Message:
    """A reply made on the server, with ``template``'s metadata (a real reply of the round).

    Built with explicit Metadata: the runtime only sets it for messages that travel.
    Without a template (nobody replied) the metadata is a train reply from no node.
    """
    if template is None:
        return Message(content=content, metadata=Metadata(
            run_id=0, message_id="", src_node_id=0, dst_node_id=0, reply_to_message_id="",
            group_id="", created_at=time.time(), ttl=0.0, message_type="train"))
    md = template.metadata
    return Message(
        content=content,
        metadata=Metadata(
            run_id=md.run_id, message_id="", src_node_id=md.src_node_id,
            dst_node_id=md.dst_node_id, reply_to_message_id=md.reply_to_message_id,
            group_id=md.group_id, created_at=time.time(), ttl=md.ttl,
            message_type=md.message_type,
        ),
    )
