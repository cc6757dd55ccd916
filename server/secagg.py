"""The server's side of secure aggregation: SecAgg+ around any update aggregator.

:class:`SecAggStrategy` wraps the strategy that turns a sum of updates into a model
(:class:`strategies.update_mean.UpdateMean` or :class:`strategies.dp_fedavg.DpFedAvg`).
Within one Flower round it drives the stages of :mod:`fedpriv.secagg` over the grid:
``configure_train`` runs stages 1-2 (keys, shares) and returns the train messages, which
carry each client's encrypted shares (stage 3: train and mask); ``aggregate_train``
collects the masked vectors, runs stage 4 (unmask), and hands the wrapped strategy one
reply holding only the cohort's sum. Each stage waits at most ``round-timeout``; a
client that fails or times out counts as dropped; below the threshold the round is
abandoned and the global model stays as it was.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedpriv.config import RunConfig
from fedpriv.messages import (
    CONFIG,
    MASKED,
    METRICS,
    NUM_EXAMPLES,
    SECAGG,
    SECAGG_ADVERTISE,
    SECAGG_SHARE,
    SECAGG_UNMASK,
    SERVER_ROUND,
    SUM_COUNT,
    SUM_UNCLIPPED,
    SUM_WEIGHT,
    TRAIN_LOSS,
    UPDATE_SUM,
)
from fedpriv.secagg import (
    Quantizer,
    SecAggAbort,
    SecAggError,
    ServerSecAgg,
    make_setup,
    setup_to_dict,
)
from strategies.updates import numpy_record, synthetic_reply, train_loss

__all__ = ["SecAggStrategy"]

#: Bits for the example counts inside the sum (clients refuse larger weights).
WEIGHT_BITS = 20


class SecAggStrategy(Strategy):
    """Secure aggregation around ``inner`` (which must accept an update sum)."""

    def __init__(self, inner: Strategy, cfg: RunConfig, rng: np.random.Generator) -> None:
        self.inner = inner
        self.cfg = cfg
        self.rng = rng
        self.quantizer = Quantizer(clip_range=cfg.secagg_clip_range, bits=cfg.secagg_bits)
        self.server: ServerSecAgg | None = None
        self._grid: Grid | None = None
        self._nodes: list[int] = []
        self._shapes: dict[str, tuple[tuple[int, ...], Any]] = {}
        self._config: ConfigRecord | None = None
        self.last_round: dict[str, Any] = {}

    # ----------------------------------------------------------------- helpers
    def _modulus_bits(self, n: int) -> int:
        return min(64, self.quantizer.modulus_bits(n) + WEIGHT_BITS)

    def _send(self, stage_type: str, payloads: dict[int, dict[str, Any]]) -> dict[int, Message]:
        assert self._grid is not None and self._config is not None
        msgs = [self._grid.create_message(
            content=RecordDict({CONFIG: self._config, SECAGG: ConfigRecord(payload)}),
            message_type=stage_type, dst_node_id=self._nodes[pos - 1],
            group_id=str(self.server.setup.round_id) if self.server else "")
            for pos, payload in payloads.items()]
        replies = self._grid.send_and_receive(msgs, timeout=self.cfg.round_timeout)
        pos_of = {node: i + 1 for i, node in enumerate(self._nodes)}
        out = {}
        for r in replies:
            pos = pos_of.get(r.metadata.src_node_id)
            if pos is None:
                log(WARNING, "secagg: reply from node %s outside the cohort ignored",
                    r.metadata.src_node_id)
            elif r.has_error():
                log(INFO, "secagg: client %d dropped at %s (%s)", pos, stage_type,
                    r.error.reason)
            else:
                out[pos] = r
        return out

    # ----------------------------------------------------------------- stages
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Stages 1-2 over the grid, then the train messages carrying the shares."""
        t0 = time.monotonic()
        self._grid = grid
        self._config = ConfigRecord({**dict(config), SERVER_ROUND: server_round})
        self._nodes = sorted(grid.get_node_ids())
        self._shapes = {k: (tuple(a.shape), a.numpy().dtype) for k, a in arrays.items()}
        length = sum(int(np.prod(s)) for s, _ in self._shapes.values()) + 2
        setup = make_setup(list(range(1, len(self._nodes) + 1)), round_id=server_round,
                           length=length, modulus_bits=self._modulus_bits(len(self._nodes)),
                           rng=self.rng, degree=self.cfg.secagg_degree,
                           threshold_fraction=self.cfg.secagg_threshold)
        self.server = server = ServerSecAgg(setup)
        self.last_round = {"secagg": True, "cohort": len(self._nodes),
                           "threshold": setup.threshold,
                           "degree": min(len(v) for v in setup.neighbours.values())}
        wire = {**setup_to_dict(setup), "nodes": [str(n) for n in self._nodes]}
        for pos, r in self._send(SECAGG_ADVERTISE, {p: wire for p in setup.neighbours}).items():
            rec = r.content[SECAGG]
            self._accept(server.receive_advertise, pos, int(rec["round-id"]),
                         bytes(rec["c_pk"]), bytes(rec["s_pk"]))
        payloads = {}
        for pos in server.keys:
            peers = server.keys_for(pos)
            ids = sorted(peers)
            payloads[pos] = {"round-id": server_round, "peers": ids,
                             "peer-c": [peers[v][0] for v in ids],
                             "peer-s": [peers[v][1] for v in ids]}
        for pos, r in self._send(SECAGG_SHARE, payloads).items():
            rec = r.content[SECAGG]
            cts = {int(v): bytes(ct) for v, ct in zip(rec["to"], rec["cts"], strict=True)}
            self._accept(server.receive_shares, pos, int(rec["round-id"]), cts)
        if len(server.routed) < setup.threshold:
            log(WARNING, "secagg: round %d abandoned before training: %d client(s) shared "
                "keys, the threshold is %d", server_round, len(server.routed), setup.threshold)
            self.last_round["aborted"] = "too few clients completed the key stages"
            return []
        ready = [self._nodes[p - 1] for p in sorted(server.routed)]
        view = _NodesView(grid, ready)
        messages = list(self.inner.configure_train(server_round, arrays, config, view))
        pos_of = {node: i + 1 for i, node in enumerate(self._nodes)}
        for msg in messages:
            pos = pos_of[msg.metadata.dst_node_id]
            shares = server.shares_for(pos)
            src = sorted(shares)
            # Flower strategies give every message the same RecordDict: copy, then add.
            msg.content = RecordDict({**dict(msg.content), SECAGG: ConfigRecord(
                {"round-id": server_round, "from": src, "cts": [shares[u] for u in src]})})
        self.last_round["setup_seconds"] = time.monotonic() - t0
        return messages

    def _accept(self, fn: Any, pos: int, *args: Any) -> None:
        try:
            fn(pos, *args)
        except SecAggError as err:
            log(WARNING, "secagg: rejected a message from client %d: %s", pos, err)
        except (KeyError, TypeError, ValueError) as err:
            log(WARNING, "secagg: malformed message from client %d rejected: %s", pos, err)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Collect masked vectors, run stage 4, hand ``inner`` the unmasked sum."""
        replies = list(replies)
        server = self.server
        if server is None:
            return None, None
        pos_of = {node: i + 1 for i, node in enumerate(self._nodes)}
        plain = []
        for r in replies:
            pos = pos_of.get(r.metadata.src_node_id)
            if pos is None or r.has_error() or MASKED not in r.content.array_records:
                continue
            self._accept(server.receive_masked, pos, server_round,
                         r.content[MASKED]["y"].numpy())
            if pos in server.masked:
                plain.append(r)
        payloads = {}
        for pos in server.masked:
            survivors, dropped = server.unmask_request(pos)
            payloads[pos] = {"round-id": server_round, "survivors": survivors,
                             "dropped": dropped}
        for pos, r in self._send(SECAGG_UNMASK, payloads).items():
            rec = r.content[SECAGG]
            shares = {int(v): ((int(x), int.from_bytes(bytes(y), "big")), str(k))
                      for v, k, x, y in zip(rec["ids"], rec["kinds"], rec["x"], rec["y"],
                                            strict=True)}
            self._accept(server.receive_unmask, pos, int(rec["round-id"]), shares)
        dropped = sorted(set(server.routed) - set(server.masked))
        self.last_round.update(survivors=len(server.masked), dropped=len(dropped),
                               dropped_before_share=len(self._nodes) - len(server.routed))
        try:
            total, survivors = server.finish()
        except SecAggAbort as err:
            log(WARNING, "secagg: round %d abandoned, global model unchanged: %s",
                server_round, err)
            self.last_round["aborted"] = str(err)
            return None, None
        if dropped:
            log(INFO, "secagg: round %d recovered %d dropped client(s) from shares",
                server_round, len(dropped))
        return self.inner.aggregate_train(server_round, [self._sum_reply(total, plain)])

    def _sum_reply(self, total: np.ndarray, plain: list[Message]) -> Message:
        """One reply holding the dequantised sum, the summed weight and unclipped count."""
        weight, unclipped = float(total[-2]), float(total[-1])
        d = len(total) - 2
        s = total[:d].astype(np.float64) * self.quantizer.step - weight * self.quantizer.clip_range
        arrays, at = {}, 0
        for key, (shape, _) in self._shapes.items():
            size = int(np.prod(shape))
            arrays[key] = s[at:at + size].reshape(shape)
            at += size
        loss = train_loss(plain)
        metrics = {SUM_WEIGHT: weight, SUM_COUNT: float(len(plain)),
                   SUM_UNCLIPPED: unclipped, NUM_EXAMPLES: weight}
        if loss is not None:
            metrics[TRAIN_LOSS] = loss
        return synthetic_reply(plain[0], RecordDict({UPDATE_SUM: numpy_record(arrays),
                                                     METRICS: MetricRecord(metrics)}))

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Delegate to the inner strategy."""
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        """Delegate to the inner strategy."""
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        """Log the secure-aggregation settings, then the inner strategy's summary."""
        log(INFO, "\t├──> secure aggregation: SecAgg+ (quantisation %d bits, range ±%g)",
            self.quantizer.bits, self.quantizer.clip_range)
        self.inner.summary()


class _NodesView:
    """A grid that shows only ``nodes`` (those that completed the key stages)."""

    def __init__(self, grid: Grid, nodes: list[int]) -> None:
        self._grid, self._nodes = grid, nodes

    def get_node_ids(self) -> list[int]:
        return list(self._nodes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)
