"""The server's side of secure aggregation: SecAgg+ around any update aggregator.

:class:`SecAggStrategy` wraps the strategy that turns a sum of updates into a model
(:class:`strategies.update_mean.UpdateMean` or :class:`strategies.dp_fedavg.DpFedAvg`).
Within one Flower round it drives the stages of :mod:`fedpriv.secagg` over the grid:
``configure_train`` lets the inner strategy pick the cohort, runs stages 1-2 (signed
keys, shares) with it and returns the train messages carrying each client's encrypted
shares (stage 3: train and mask); ``aggregate_train`` collects the masked vectors, runs
stages 4 (ConsistencyCheck) and 5 (unmask), and hands the wrapped strategy one reply
holding only the cohort's totals: the update sum, the example count, the unclipped
count and the example-weighted loss (the clients' replies carry no count or loss).
Each stage waits at most ``round-timeout``; a client that fails or times out counts as
dropped; when too few remain the round is abandoned and the global model stays as it
was.

Under distributed DP (``plan`` given) each client's vector is its noised encoding
(:func:`client.secagg.encode_distributed`), the modulus is the plan's 2^b, and the
unmasked sum, the only aggregate the server ever holds, already carries the survivors'
noise shares: it is centred mod 2^b, un-rotated with the round's public seed and
rescaled (:func:`fedpriv.privacy.discrete.decode`), and the wrapped
:class:`strategies.distributed_dp.DistributedDpMean` steps from it.

In a simulation the server also makes each client's identity key in
``RUN_DIR/identities`` (all clients run on this machine); deployed clients hold their
own (``fedpriv certs node``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedpriv.certs import ensure_identities
from fedpriv.config import DpMode, RunConfig
from fedpriv.ddp_plan import DistributedPlan, rotation_seed
from fedpriv.messages import (
    CONFIG,
    MASKED,
    METRICS,
    NUM_EXAMPLES,
    SECAGG,
    SECAGG_ADVERTISE,
    SECAGG_CONSISTENCY,
    SECAGG_SHARE,
    SECAGG_UNMASK,
    SERVER_ROUND,
    SUM_COUNT,
    SUM_UNCLIPPED,
    SUM_WEIGHT,
    TRAIN_LOSS,
    UPDATE_SUM,
)
from fedpriv.privacy.discrete import decode as ddp_decode
from fedpriv.secagg import (
    AdvertiseKeys,
    ConsistencySignature,
    DecodedSum,
    MaskedInput,
    SecAggAbort,
    SecAggError,
    ServerSecAgg,
    ShareKeys,
    UnmaskShares,
    layout_for,
    params_for,
    unpack,
)
from fedpriv.secagg.layout import META_SLOTS
from strategies.delegation import Delegating
from strategies.updates import numpy_record, synthetic_reply

__all__ = ["SecAggStrategy"]


def _bytes_of(record: ArrayRecord) -> np.ndarray:
    """The masked-vector bytes of a reply's record; anything else is :class:`SecAggError`."""
    if list(record.keys()) != ["y"]:
        raise SecAggError(f"a masked reply holds one array 'y', got {list(record.keys())}")
    try:
        return record["y"].numpy()
    except Exception as err:  # noqa: BLE001 (a client's bytes: any parse failure)
        raise SecAggError(f"unreadable masked vector: {type(err).__name__}: {err}") from None


class SecAggStrategy(Delegating, Strategy):
    """Secure aggregation around ``inner`` (which must accept an update sum)."""

    def __init__(self, inner: Strategy, cfg: RunConfig, rng: np.random.Generator,
                 plan: DistributedPlan | None = None) -> None:
        self.inner = inner
        self.cfg = cfg
        self.rng = rng  # kept for the caller's interface; the graph is derived publicly
        self.params = params_for(cfg.secagg)
        self.layout = layout_for(cfg.secagg)
        self.plan = plan  # distributed DP: what every client encodes with
        self.modulus_bits = (plan.params.bits if plan is not None
                             # Poisson cohorts vary: room for every client
                             else self.layout.modulus_bits(cfg.training.clients))
        if cfg.deployment.run_dir:  # simulation: every client's identity, on this machine
            ensure_identities(Path(cfg.deployment.run_dir) / "identities",
                              list(range(cfg.training.clients)))
        self.server: ServerSecAgg | None = None
        self._grid: Grid | None = None
        self._node_of: dict[int, int] = {}  # secagg id -> Flower node id
        self._shapes: dict[str, tuple[tuple[int, ...], Any]] = {}
        self._config: ConfigRecord | None = None
        self.last_round: dict[str, Any] = {}

    # ----------------------------------------------------------------- helpers
    def _send(self, stage_type: str, payloads: dict[int, dict[str, Any]]
              ) -> dict[int, dict[str, Any]]:
        """Send each Flower node its payload; return ``{node: reply SECAGG record}``."""
        assert self._grid is not None and self._config is not None
        msgs = [Message(  # Flower 1.42 deprecates Grid.create_message
            content=RecordDict({CONFIG: self._config, SECAGG: ConfigRecord(payload)}),
            message_type=stage_type, dst_node_id=node,
            group_id=str(self.server.round_id) if self.server else "")
            for node, payload in payloads.items()]
        replies = self._grid.send_and_receive(msgs, timeout=self.cfg.deployment.round_timeout)
        out = {}
        for r in replies:
            node = r.metadata.src_node_id
            if node not in payloads:
                log(WARNING, "secagg: reply from node %s outside the cohort ignored", node)
            elif r.has_error():
                log(INFO, "secagg: node %s dropped at %s (%s)", node, stage_type,
                    r.error.reason)
            elif SECAGG in r.content.config_records:
                out[node] = dict(r.content[SECAGG])
        return out

    def _accept(self, node: int, cls: Any, rec: dict[str, Any]) -> None:
        """Parse and record a client message; the sender must be that node's id."""
        assert self.server is not None
        try:
            msg = cls.from_dict(rec)
            if self._node_of.get(msg.sender, node) != node:
                raise SecAggError(f"node {node} sends as secagg id {msg.sender}, which "
                                  f"belongs to node {self._node_of[msg.sender]}")
            self.server.receive(msg)
            self._node_of.setdefault(msg.sender, node)
        except SecAggError as err:
            log(WARNING, "secagg: rejected a message from node %s: %s", node, err)
        except (KeyError, TypeError, ValueError) as err:
            log(WARNING, "secagg: malformed message from node %s rejected: %s", node, err)

    def _abandon(self, server_round: int, why: str) -> None:
        log(WARNING, "secagg: round %d abandoned, global model unchanged: %s",
            server_round, why)
        self.last_round["aborted"] = why

    # ----------------------------------------------------------------- stages
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """The inner strategy's cohort; stages 1-2 with it; its train messages + shares."""
        t0 = time.monotonic()
        self._grid = grid
        self._config = ConfigRecord({**dict(config), SERVER_ROUND: server_round})
        self._node_of = {}
        self._shapes = {k: (tuple(a.shape), a.numpy().dtype) for k, a in arrays.items()}
        d = sum(int(np.prod(s)) for s, _ in self._shapes.values())
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        cohort_nodes = [m.metadata.dst_node_id for m in messages]
        length = self.layout.length(d)
        if self.plan is not None:
            length = self.plan.params.padded_dimension + META_SLOTS
        self.server = server = ServerSecAgg(
            round_id=server_round, params=self.params, modulus_bits=self.modulus_bits,
            length=length, population=self.cfg.training.clients)
        self.last_round = {"secagg": True, "cohort": len(cohort_nodes), "threshold": None,
                           "degree": None}
        if self.plan is not None and d != self.plan.params.dimension:
            self._abandon(server_round, f"before training: the model has {d} parameters, "
                          f"the distributed-DP plan {self.plan.params.dimension}")
            return []
        hello: dict[str, Any] = {"round_id": server_round}
        if self.plan is not None:  # each client checks it derived the same plan
            hello["ddp_plan"] = self.plan.digest
        for node, rec in self._send(SECAGG_ADVERTISE, dict.fromkeys(cohort_nodes,
                                                                     hello)).items():
            self._accept(node, AdvertiseKeys, rec)
        try:
            setup = server.close_advertising()
            payloads = {self._node_of[u]: server.neighbour_keys(u).to_dict()
                        for u in sorted(server.keys)}
        except SecAggAbort as err:
            self._abandon(server_round, f"before training: {err}")
            return []
        self.last_round.update(threshold=setup.threshold,
                               degree=min(len(v) for v in setup.neighbours.values()),
                               consistency_threshold=setup.consistency_threshold,
                               modulus_bits=self.modulus_bits)
        for node, rec in self._send(SECAGG_SHARE, payloads).items():
            self._accept(node, ShareKeys, rec)
        if len(server.routed) < setup.min_survivors:
            self._abandon(server_round, f"before training: {len(server.routed)} client(s) "
                          f"shared keys, at least {setup.min_survivors} must survive")
            return []
        ready = {self._node_of[u]: u for u in server.routed}
        out = []
        for msg in messages:
            u = ready.get(msg.metadata.dst_node_id)
            if u is None:
                continue
            routed = server.routed_shares(u).to_dict()
            # Flower strategies give every message the same RecordDict: copy, then add.
            msg.content = RecordDict({**dict(msg.content), SECAGG: ConfigRecord(routed)})
            out.append(msg)
        self.last_round["setup_seconds"] = time.monotonic() - t0
        return out

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Collect masked vectors, run stages 4-5, hand ``inner`` the unmasked totals."""
        replies = list(replies)
        server = self.server
        if server is None or server.setup is None or "aborted" in self.last_round:
            return None, None
        id_of = {node: u for u, node in self._node_of.items()}
        plain = []
        for r in replies:
            u = id_of.get(r.metadata.src_node_id)
            if u is None or r.has_error() or MASKED not in r.content.array_records:
                continue
            try:  # each coordinate in the modulus' bytes (fedpriv.secagg.pack)
                y = unpack(_bytes_of(r.content[MASKED]), self.modulus_bits, server.length)
                server.receive(MaskedInput(round_id=server_round, sender=u, y=y))
                plain.append(r)
            except SecAggError as err:
                log(WARNING, "secagg: rejected the masked input of node %s: %s",
                    r.metadata.src_node_id, err)
        dropped = sorted(set(server.routed) - set(server.masked))
        self.last_round.update(survivors=len(server.masked), dropped=len(dropped),
                               dropped_before_share=len(id_of) - len(server.routed))
        try:
            payloads = {self._node_of[u]: server.consistency_request(u).to_dict()
                        for u in server.survivors}
            for node, rec in self._send(SECAGG_CONSISTENCY, payloads).items():
                self._accept(node, ConsistencySignature, rec)
            payloads = {self._node_of[u]: server.unmask_request_for(u).to_dict()
                        for u in sorted(server.signatures)}
            for node, rec in self._send(SECAGG_UNMASK, payloads).items():
                self._accept(node, UnmaskShares, rec)
            total, _ = server.finish()
        except SecAggAbort as err:
            self._abandon(server_round, str(err))
            return None, None
        if dropped:
            log(INFO, "secagg: round %d recovered %d dropped client(s) from shares",
                server_round, len(dropped))
        if self.plan is not None:
            decoded = self._decode_distributed(total, len(server.masked), server_round)
        else:
            decoded = self.layout.decode(total, n=self.cfg.training.clients, bits=self.modulus_bits)
        return self.inner.aggregate_train(
            server_round, [self._sum_reply(decoded, len(server.masked), plain)])

    def _decode_distributed(self, total: np.ndarray, n: int, server_round: int
                            ) -> DecodedSum:
        """The decoded mean of the n survivors' noised encodings.

        Returned times n (a sum, as the layout decodes). ``total`` is the unmasked sum
        mod 2^b: the encodings' sum plus the n noise shares, never anything without
        them. The weight slot must count the n encodings (each client puts 1 there); a
        client that puts anything else is noted.
        """
        assert self.plan is not None
        p = self.plan.params
        dp = p.padded_dimension
        if int(total[dp]) != n:
            log(WARNING, "distributed DP: round %d's weight slot sums to %d, but %d "
                "encodings were summed (a client sent a malformed vector)", server_round,
                int(total[dp]), n)
        mean = ddp_decode(total[:dp], p, n, rotation_seed(self.cfg.deployment.run_id, server_round))
        self.last_round.update(ddp_survivors=n)
        return DecodedSum(update_sum=mean * n, weight=n, unclipped=0, loss_sum=0.0)  # (d,)

    def _sum_reply(self, total: DecodedSum, survivors: int, plain: list[Message]) -> Message:
        """One reply holding the totals: update sum, weight, unclipped count, mean loss."""
        arrays, at = {}, 0
        for key, (shape, _) in self._shapes.items():
            size = int(np.prod(shape))
            arrays[key] = total.update_sum[at:at + size].reshape(shape)
            at += size
        metrics = {SUM_WEIGHT: float(total.weight), SUM_COUNT: float(survivors),
                   SUM_UNCLIPPED: float(total.unclipped), NUM_EXAMPLES: float(total.weight)}
        if total.mean_loss is not None and self.cfg.privacy.dp_mode is DpMode.NONE:
            metrics[TRAIN_LOSS] = total.mean_loss  # under DP no loss is summed (slot is 0)
        return synthetic_reply(plain[0], RecordDict({UPDATE_SUM: numpy_record(arrays),
                                                     METRICS: MetricRecord(metrics)}))

    def describe(self) -> None:
        """Log the secure-aggregation settings."""
        if self.plan is not None:
            log(INFO, "\t├──> secure aggregation: SecAgg+ against a malicious server "
                "(distributed-DP encodings, modulus 2^%d, %s masks)", self.modulus_bits,
                self.params.prg)
            return
        log(INFO, "\t├──> secure aggregation: SecAgg+ against a malicious server "
            "(quantisation %d bits, range ±%g, modulus 2^%d, %s masks)",
            self.layout.quantizer.bits, self.layout.quantizer.clip_range,
            self.modulus_bits, self.params.prg)
