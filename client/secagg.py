"""The client's side of secure aggregation on Flower messages.

Drives :class:`fedpriv.secagg.ClientSecAgg` through the stages the server sends
(``train.secagg_advertise``, ``train.secagg_share``, then the train message itself, then
``train.secagg_unmask``), keeping the round's secret state in the node's own
``Context.state`` between messages (the process may change from one message to the next).
"""

from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict

from fedpriv.config import RunConfig
from fedpriv.messages import NODE_PARTITION_ID, SECAGG, SECAGG_STATE
from fedpriv.secagg import ClientSecAgg, Quantizer, SecAggError, setup_from_dict

__all__ = [
    "SimulatedDropout",
    "advertise",
    "encode_update",
    "mask",
    "maybe_vanish",
    "share",
    "unmask",
]

#: Largest example count a client may put in the secure sum (sizes the modulus).
MAX_WEIGHT_BITS = 20


class SimulatedDropout(RuntimeError):
    """The client vanishes mid-round (``dropout-rate`` in simulation)."""


def maybe_vanish(cfg: RunConfig, server_round: int, node_config: dict, stage: int) -> None:
    """Vanish at ``stage`` with probability ``dropout-rate`` (seeded, per client and round).

    A dropping client picks one of stages 2 (share), 3 (masked input) and 4 (unmask).
    """
    if cfg.dropout_rate <= 0 or NODE_PARTITION_ID not in node_config:
        return
    part = int(node_config[NODE_PARTITION_ID])
    rng = np.random.default_rng([cfg.seed, server_round, part, 0xD20])
    drops, at = rng.random() < cfg.dropout_rate, int(rng.integers(2, 5))
    if drops and at == stage:
        raise SimulatedDropout(f"client {part} vanished before secure-aggregation stage "
                               f"{stage} of round {server_round} (dropout-rate)")


def _position(rec: ConfigRecord, node_id: int) -> int:
    nodes = [str(n) for n in rec["nodes"]]  # type: ignore[union-attr]
    try:
        return nodes.index(str(node_id)) + 1
    except ValueError:
        raise SecAggError(f"node {node_id} is not in this round's cohort") from None


_CLIENT = SECAGG_STATE + "-client"


def _save(context: Context, client: ClientSecAgg, rec: ConfigRecord) -> None:
    """Keep the round's public setup and the client's secret state in the node's state."""
    context.state[SECAGG_STATE] = ConfigRecord(dict(rec))
    context.state[_CLIENT] = ConfigRecord(client.export())


def _load(context: Context, round_id: int) -> tuple[ClientSecAgg, ConfigRecord]:
    if SECAGG_STATE not in context.state.config_records:
        raise SecAggError("no secure-aggregation state: this client missed the earlier stages")
    rec = context.state[SECAGG_STATE]
    if int(rec["round-id"]) != round_id:  # type: ignore[call-overload]
        raise SecAggError(f"message for round {round_id}, but this client's state is for "
                          f"round {rec['round-id']}")
    client = ClientSecAgg.restore(setup_from_dict(dict(rec)), dict(context.state[_CLIENT]))
    return client, rec


def advertise(msg: Message, context: Context) -> RecordDict:
    """Stage 1: fresh key pairs for the round; reply with the public halves."""
    rec = msg.content[SECAGG]
    setup = setup_from_dict(dict(rec))
    client = ClientSecAgg(node_id=_position(rec, context.node_id), setup=setup)
    keys = client.advertise()
    _save(context, client, rec)
    return RecordDict({SECAGG: ConfigRecord({"round-id": setup.round_id, **keys})})


def share(msg: Message, context: Context) -> RecordDict:
    """Stage 2: encrypted shares of b_u and s_sk_u for each neighbour."""
    rec = msg.content[SECAGG]
    round_id = int(rec["round-id"])  # type: ignore[call-overload]
    client, state = _load(context, round_id)
    keys = {int(v): (bytes(c), bytes(s)) for v, c, s in zip(
        rec["peers"], rec["peer-c"], rec["peer-s"], strict=True)}  # type: ignore[call-overload]
    cts = client.share(round_id, keys)
    _save(context, client, state)
    to = sorted(cts)
    return RecordDict({SECAGG: ConfigRecord({"round-id": round_id, "to": to,
                                             "cts": [cts[v] for v in to]})})


def encode_update(update: dict[str, np.ndarray], keys: list[str], *, weight: int,
                  unclipped: int, quantizer: Quantizer, rng: np.random.Generator
                  ) -> np.ndarray:
    """``[w * enc(Delta) ..., w, b]`` as uint64: the weight travels inside the secure sum."""
    if not 0 <= weight < 1 << MAX_WEIGHT_BITS:
        raise SecAggError(f"weight must be in [0, 2^{MAX_WEIGHT_BITS}), got {weight}")
    flat = np.concatenate([np.asarray(update[k], np.float64).ravel() for k in keys])
    enc = quantizer.encode(flat, rng) * np.uint64(weight)  # (d,)
    return np.concatenate([enc, np.array([weight, unclipped], dtype=np.uint64)])


def mask(msg: Message, context: Context, x: np.ndarray) -> np.ndarray:
    """Stage 3: the masked vector of ``x`` (called from the train handler)."""
    rec = msg.content[SECAGG]
    round_id = int(rec["round-id"])  # type: ignore[call-overload]
    client, state = _load(context, round_id)
    cts = {int(u): bytes(ct) for u, ct in zip(rec["from"], rec["cts"], strict=True)}  # type: ignore[call-overload]
    y = client.mask(round_id, cts, x)
    _save(context, client, state)
    return y


def unmask(msg: Message, context: Context) -> RecordDict:
    """Stage 4: shares of survivors' b and dropped clients' s_sk, never both for one."""
    rec = msg.content[SECAGG]
    round_id = int(rec["round-id"])  # type: ignore[call-overload]
    client, state = _load(context, round_id)
    out = client.unmask(round_id, [int(v) for v in rec["survivors"]],  # type: ignore[union-attr]
                        [int(v) for v in rec["dropped"]])  # type: ignore[union-attr]
    del context.state[SECAGG_STATE]  # the round's secrets are not needed any more
    del context.state[_CLIENT]
    ids = sorted(out)
    return RecordDict({SECAGG: ConfigRecord({
        "round-id": round_id, "ids": ids, "kinds": [out[v][1] for v in ids],
        "x": [out[v][0][0] for v in ids],
        "y": [out[v][0][1].to_bytes(66, "big") for v in ids],
    })})
