"""Wrap any Flower strategy with fedpriv's cohort sampling, budget checks and accounting.

Wrap, don't subclass: :class:`FedPrivStrategy` owns *who* takes part in a round and
delegates *how* updates are combined to the Flower strategy it wraps. Flower's own
strategies sample with the global ``random`` module; fedpriv samples with
:class:`server.sampling.CohortSampler`: secret (OS entropy) randomness, and Poisson
sampling under user-level DP so that the ledger's ``PoissonSampled(q, ...)`` event is
what actually happened.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Sequence
from logging import INFO, WARNING
from typing import Any, TypeVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedpriv.config import DpMode
from fedpriv.messages import (
    ARRAYS,
    CLIENT_EPSILON,
    CLIENT_ID,
    LEDGER_HEAD,
    LEDGER_IN_RUN_DIR,
    LEDGER_SIGNATURE,
    METRICS,
    NUM_EXAMPLES,
    PRIVACY,
    REFUSED,
    REFUSED_REASON,
    SIGNER_ID,
    UNCLIPPED,
    UPDATE,
    UPDATE_WEIGHT,
)
from server.privacy import BudgetExhausted, FederationPrivacy
from server.sampling import CohortSampler
from strategies.central_dp import CentralDpSgd
from strategies.distributed_dp import DistributedDpMean
from strategies.dp_fedavg import DpFedAvg

T = TypeVar("T")

__all__ = ["CohortGrid", "FedPrivStrategy", "NotEnoughNodesError", "RunInterrupted"]


class NotEnoughNodesError(RuntimeError):
    """Fewer nodes connected than the run needs, within the wait timeout."""


class RunInterrupted(RuntimeError):
    """The operator asked the run to stop (SIGINT or SIGTERM)."""


class CohortGrid:
    """A view of a :class:`flwr.serverapp.Grid` that shows only the sampled cohort.

    The wrapped strategy samples "all nodes it sees" from this view; every other call
    goes to the real grid.
    """

    def __init__(self, grid: Grid, node_ids: Sequence[int]) -> None:
        self._grid = grid
        self._node_ids = list(node_ids)

    def get_node_ids(self) -> list[int]:
        """The cohort's node ids."""
        return list(self._node_ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def _finite_record(record: ArrayRecord) -> bool:
    """Every array of ``record`` is finite (integer arrays always are)."""
    for array in record.values():
        values = array.numpy()
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            return False
    return True


class FedPrivStrategy(Strategy):
    """Cohort sampling, budget checks and privacy accounting around a Flower strategy.

    Parameters
    ----------
    inner : Strategy
        The aggregation rule (FedAvg, FedProx, FedAdam, ...), built to take every node
        it is shown.
    sampler : CohortSampler
        Who takes part in each training round (Poisson or fixed size).
    min_nodes : int
        Nodes that must be connected before the first round starts.
    fraction_evaluate : float
        Fraction of connected nodes sent a federated-evaluation message (0: none).
    node_wait_timeout : float
        Seconds to wait for ``min_nodes`` before giving up.
    min_replies : int
        A round with fewer usable replies is skipped: the model is kept and nothing is
        released (secure aggregation has its own threshold instead).
    privacy : FederationPrivacy or None
        The federation's ledger and budget (any DP mode).
    stop : threading.Event or None
        Set by a signal handler: no further round starts.
    first_round : int
        The round Flower's round 1 is (a resumed run continues after its checkpoint).
    checkpoints : Checkpointer or None
        Writes each round's checkpoint around its ledger commit.
    ema_decay : float
        beta of the released model's parameter averaging (0: off): see :meth:`released`.
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        sampler: CohortSampler,
        min_nodes: int,
        fraction_evaluate: float = 0.0,
        node_wait_timeout: float = 600.0,
        min_replies: int = 1,
        privacy: FederationPrivacy | None = None,
        stop: threading.Event | None = None,
        first_round: int = 1,
        checkpoints: Any = None,
        ema_decay: float = 0.0,
    ) -> None:
        if min_nodes < 1:
            raise ValueError(f"min_nodes must be >= 1, got {min_nodes}")
        self.inner = inner
        self.sampler = sampler
        self.min_nodes = min_nodes
        self.fraction_evaluate = fraction_evaluate
        self.node_wait_timeout = node_wait_timeout
        if min_replies < 1:
            raise ValueError(f"min_replies must be >= 1, got {min_replies}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.min_replies = min_replies
        self.ema_decay = ema_decay
        #: The moving average of the round models (None until the first aggregate, or
        #: when off); kept in each checkpoint beside the model training continues from.
        self.ema: dict[str, np.ndarray] | None = None
        self.last_skipped = ""  # why this round was skipped ("": it was not)
        self.last_missing: list[int] = []  # cohort nodes with no reply by the timeout
        self.last_failed: dict[int, str] = {}  # node -> its error, this round
        self.privacy = privacy
        self.stop = stop
        self.offset = first_round - 1
        self.checkpoints = checkpoints
        self._eval_rng = np.random.default_rng()  # evaluation protects nothing
        self.last_train_metrics: MetricRecord | None = None
        self.last_cohort: list[int] = []
        self.last_replies = 0
        self.last_refused: list[str] = []
        self.last_rejected: list[str] = []  # non-finite replies (or aggregate) this round
        self.last_epsilon: float | None = None
        self.clients_epsilon: dict[str, float] = {}  # as each client reports its own
        self.client_heads: dict[str, str] = {}  # "<seq>:<hash>" of each client's ledger
        self.ledgers_in_run_dir: set[str] = set()  # clients whose ledger the run dir holds
        self.client_signatures: dict[str, dict[str, int | str]] = {}  # signed heads
        self._noise_only = False
        # All min_nodes were connected once. A resumed run has started already: a node
        # that vanished meanwhile must not keep it from going on.
        self._started = first_round > 1
        self.reference: ArrayRecord | None = None  # the global model of this round
        self._specs: tuple[ArrayRecord, Any, dict[str, Any]] | None = None  # shapes, dtypes

    def layer(self, cls: type[T]) -> T | None:
        """The first wrapped strategy of type ``cls`` down the ``inner`` chain."""
        node: Any = self.inner
        while node is not None:
            if isinstance(node, cls):
                return node
            node = getattr(node, "inner", None)
        return None

    # ------------------------------------------------------------------ sampling
    def _wait_for_nodes(self, grid: Grid) -> list[int]:
        """The connected nodes: all ``min_nodes`` before round 1, at least one later.

        Once the run has started, a node that vanished (a killed SuperNode) does not
        hold up the next round: the round goes on with the nodes still connected, and
        the one that left is reported among the round's missing replies.
        """
        needed = self.min_nodes if not self._started else 1
        deadline = time.monotonic() + self.node_wait_timeout
        while len(nodes := sorted(grid.get_node_ids())) < needed:
            if time.monotonic() > deadline:
                raise NotEnoughNodesError(
                    f"{len(nodes)} node(s) connected after {self.node_wait_timeout:.0f}s; "
                    f"the run needs {self.min_nodes} (run-config key `clients`); with "
                    f"`flwr run`, match it to the federation, e.g. --federation-config "
                    f"'num-supernodes={self.min_nodes}', or lower `clients`"
                )
            log(INFO, "Waiting for nodes: %d of %d connected", len(nodes), needed)
            time.sleep(1.0)
        if self._started and len(nodes) < self.min_nodes:
            log(WARNING, "fedpriv: %d of %d nodes connected; the round goes on without the "
                "others", len(nodes), self.min_nodes)
        self._started = True
        return nodes

    def eligible(self, grid: Grid) -> list[int]:
        """Connected nodes, less those that refused for lack of budget."""
        excluded = self.privacy.excluded if self.privacy is not None else {}
        return [n for n in self._wait_for_nodes(grid) if n not in excluded]

    # -------------------------------------------------------------- delegation
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Check the budget, sample the cohort, then let the inner strategy build messages.

        The budget is checked before anything is sent, round 1 included: the round is
        refused (:class:`BudgetExhausted`, a normal stop) when its event would take the
        federation past ``max-epsilon``.
        """
        server_round += self.offset
        if self.stop is not None and self.stop.is_set():
            raise RunInterrupted(f"interrupted before round {server_round}")
        eligible = self.eligible(grid)
        dp = self.layer(DpFedAvg)
        if self.privacy is not None:
            if not eligible:
                excluded = self.privacy.excluded
                example = next(iter(excluded.values()), "")
                raise BudgetExhausted(
                    f"round {server_round}: no client can take part: all {len(excluded)} "
                    f"refused for their own budgets (e.g. {example})")
            self.privacy.check_budget(server_round, sampling_rate=self.sampler.rate,
                                      clip=dp.clip if dp is not None else 0.0)
        if dp is not None:  # McMahan et al.'s fixed denominator: m = q * eligible
            dp.set_expected_cohort(self.sampler.expected_size(len(eligible)))
        self.last_cohort = self.sampler.sample(eligible)
        self.reference = arrays
        view = CohortGrid(grid, self.last_cohort)
        self._noise_only = not self.last_cohort and dp is not None
        if not self.last_cohort:
            # Nobody was sampled. Under DP the round is still a release, noise only:
            # DP-FedAvg makes it directly (there is nothing to aggregate securely).
            if dp is not None:
                dp.configure_train(server_round, arrays, config, view)  # type: ignore[arg-type]
            return []
        return self.inner.configure_train(server_round, arrays, config, view)  # type: ignore[arg-type]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Delegate to the inner strategy; checkpoint and charge the round.

        The round's aggregate is checkpointed before its DP events are appended to the
        ledger and committed after (see :mod:`server.checkpoint`).
        """
        server_round += self.offset
        self.last_refused = []
        replies = list(replies)
        self._note_absent(server_round, replies)
        replies = [m for m in replies if not self._refused(m)]
        replies = self._well_formed(replies)
        self.last_replies = sum(not m.has_error() for m in replies)
        self.last_skipped = ""
        dp = self.layer(DpFedAvg)
        if self._too_few(replies):
            self.last_skipped = (f"{self.last_replies} usable replies < min-replies "
                                 f"{self.min_replies}")
            log(WARNING, "fedpriv: round %d skipped (%s): the global model is kept and "
                "nothing is released", server_round, self.last_skipped)
            arrays, metrics = None, None
        elif self._noise_only and dp is not None:
            arrays, metrics = dp.aggregate_train(server_round, [])
        else:
            arrays, metrics = self.inner.aggregate_train(server_round, replies)
        if arrays is not None and not _finite_record(arrays):
            log(WARNING, "fedpriv: round %d produced a non-finite model; the global model "
                "is kept as it was", server_round)
            self.last_rejected.append("aggregate")
            arrays = None
        self.last_train_metrics = metrics
        if arrays is not None and self.ema_decay > 0:
            self._average(arrays)
        reports = self._reports(replies)
        result = arrays if arrays is not None else self.reference
        # Charge, then write the pending checkpoint, then commit it: a noised model
        # reaches the disk only once its round is charged. (Pending first would leave an
        # uncharged noised model on disk after a crash; the resumed run would run the
        # round again, and the clients would replay the same sum, noised afresh: two
        # releases of one sum for one charge.) A round charged before a crash is never
        # run again (server.checkpoint.resume_point); the heads clients reported in it
        # are kept before the charge, so the run's record of their ledgers survives.
        if self.checkpoints is not None and result is not None:
            self.checkpoints.before_charge(server_round)  # the heads clients reported
        if self.privacy is not None:
            self._account(server_round, reports, released=not self.last_skipped)
        if self.checkpoints is not None and result is not None:
            self.checkpoints.before_commit(server_round, result)
            self.checkpoints.after_charge(server_round)
        return arrays, metrics

    def _average(self, arrays: ArrayRecord) -> None:
        """Fold ``arrays`` into the average: ema = beta ema + (1 - beta) model (first: model)."""
        beta = self.ema_decay
        model = {k: v.numpy() for k, v in arrays.items()}
        if self.ema is None or set(self.ema) != set(model):
            self.ema = {k: np.array(v, copy=True) for k, v in model.items()}
            return
        self.ema = {k: (beta * self.ema[k] + (1.0 - beta) * v).astype(v.dtype, copy=False)
                    for k, v in model.items()}

    def released(self, arrays: ArrayRecord) -> ArrayRecord:
        """The model the run releases for the global model ``arrays``.

        With ``ema_decay`` = beta > 0, the exponential moving average of the round models
        from the first aggregate on (parameter averaging: Polyak & Juditsky 1992; the EMA
        of De et al. 2022, arXiv:2204.13650, for DP training). It is a function of
        models the server releases anyway, so it costs no privacy; training goes on from
        ``arrays``. Without it (or before any aggregate), ``arrays`` itself.
        """
        if self.ema is None:
            return arrays
        return ArrayRecord({k: Array(v) for k, v in self.ema.items()})

    def _well_formed(self, replies: list[Message]) -> list[Message]:
        """Drop malformed replies and those with NaN or inf; remember who and why.

        A reply that carries a model or an update must carry exactly the global model's
        parameters (names, shapes, floating dtypes), finite values and well-formed
        metrics; anything else is a client's fault and must not stop the run.
        """
        self.last_rejected = []
        kept = []
        for msg in replies:
            problem = "" if msg.has_error() else self._malformed(msg)
            if problem:
                who = msg.metadata.src_node_id
                if PRIVACY in msg.content.config_records:
                    who = msg.content[PRIVACY].get(CLIENT_ID, who)
                self.last_rejected.append(str(who))
                log(WARNING, "fedpriv: round reply from %s rejected: %s", who, problem)
                continue
            kept.append(msg)
        return kept

    def _malformed(self, msg: Message) -> str:
        """Why ``msg`` cannot be aggregated, or ``""``."""
        content = msg.content
        for name, rec in content.array_records.items():
            if name not in (ARRAYS, UPDATE):
                continue
            specs = self._reference_specs()
            if specs is not None and list(rec.keys()) != list(specs):
                return f"{name} holds parameters {sorted(rec.keys())[:4]}..., not the model's"
            for key, array in rec.items():
                try:  # the bytes the aggregate will read, not the metadata beside them
                    got = array.numpy()
                except Exception as err:  # noqa: BLE001 (any unreadable payload is the client's)
                    return f"{name}[{key}] is not a readable array ({type(err).__name__})"
                if not isinstance(got, np.ndarray):  # e.g. .npz bytes: an archive
                    return f"{name}[{key}] is not one array ({type(got).__name__})"
                if specs is not None:
                    shape, dtype = specs[key]
                    if got.shape != shape or not np.issubdtype(got.dtype, np.floating):
                        return (f"{name}[{key}] is {got.dtype}{list(got.shape)}, not "
                                f"{dtype}{list(shape)}")
                if np.issubdtype(got.dtype, np.floating) and not np.isfinite(got).all():
                    return "non-finite values"
            metrics = dict(content[METRICS]) if METRICS in content.metric_records else None
            if metrics is None:
                return "no metrics record"
            values = {k: float(v) for k, v in metrics.items()
                      if isinstance(v, int | float)}
            if not all(math.isfinite(v) for v in values.values()):
                return "non-finite metrics"
            if name == ARRAYS and not values.get(NUM_EXAMPLES, 0) > 0:
                return f"no positive {NUM_EXAMPLES} to weight the model by"
            if name == UPDATE and not (values.get(UPDATE_WEIGHT, 1.0) >= 0
                                       and 0 <= values.get(UNCLIPPED, 0.0) <= 1):
                return f"{UPDATE_WEIGHT} or {UNCLIPPED} out of range"
        return ""

    def _reference_specs(self) -> dict[str, tuple[tuple[int, ...], np.dtype]] | None:
        """Each global parameter's shape and dtype, read from its bytes once a round.

        Kept while the reference is the same record with the same parameters (its own
        Arrays' fields, which the server wrote: a replaced entry shows there).
        """
        ref = self.reference
        if ref is None:
            return None
        stamp = tuple((k, id(a), tuple(a.shape), a.dtype) for k, a in ref.items())
        if self._specs is None or self._specs[0] is not ref or self._specs[1] != stamp:
            values = {key: array.numpy() for key, array in ref.items()}
            self._specs = (ref, stamp,
                           {key: (v.shape, v.dtype) for key, v in values.items()})
        return self._specs[2]

    def _refused(self, msg: Message) -> bool:
        """Note a budget refusal: the node is left out from now on."""
        if msg.has_error() or PRIVACY not in msg.content.config_records:
            return False
        rec = msg.content[PRIVACY]
        if REFUSED in rec and bool(rec[REFUSED]):
            node = msg.metadata.src_node_id
            reason = str(rec.get(REFUSED_REASON, ""))
            if self.privacy is not None:
                self.privacy.excluded[node] = f"{rec.get(CLIENT_ID, node)}: {reason}"
                self._record_head(dict(rec))  # its ledger as it stands, signed
            self.last_refused.append(str(rec.get(CLIENT_ID, node)))
            log(WARNING, "fedpriv: %s refused to train and is left out from now on: %s",
                rec.get(CLIENT_ID, node), reason)
            return True
        return False

    def _record_head(self, rep: dict[str, Any]) -> None:
        """Keep a client's reported epsilon, ledger head, signature and ledger location."""
        client = str(rep.get(CLIENT_ID, ""))
        if not client:
            return
        if CLIENT_EPSILON in rep:
            self.clients_epsilon[client] = float(rep[CLIENT_EPSILON])
        if LEDGER_HEAD in rep:
            self.client_heads[client] = str(rep[LEDGER_HEAD])
        if LEDGER_SIGNATURE in rep:
            self.client_signatures[client] = {"signer": int(rep.get(SIGNER_ID, -1)),
                                              "signature": str(rep[LEDGER_SIGNATURE])}
        if rep.get(LEDGER_IN_RUN_DIR):
            self.ledgers_in_run_dir.add(client)

    def _reports(self, replies: list[Message]) -> list[dict[str, Any]]:
        """The replies' privacy reports; their ledger heads are noted first."""
        reports = [dict(m.content[PRIVACY]) for m in replies
                   if not m.has_error() and PRIVACY in m.content.config_records]
        for rep in reports:
            self._record_head(rep)
        return reports

    def _note_absent(self, server_round: int, replies: list[Message]) -> None:
        """Who in the cohort did not answer by the round's timeout, and who failed, why."""
        answered = {m.metadata.src_node_id for m in replies}
        self.last_missing = sorted(set(self.last_cohort) - answered)
        self.last_failed = {}
        for msg in replies:
            if msg.has_error():
                self.last_failed[msg.metadata.src_node_id] = str(msg.error.reason or "")[:200]
        if self.last_missing:
            log(WARNING, "fedpriv: round %d: no reply from node(s) %s within round-timeout "
                "(vanished or too slow); the round goes on without them", server_round,
                ", ".join(map(str, self.last_missing)))
        for node, reason in self.last_failed.items():
            log(WARNING, "fedpriv: round %d: node %s failed: %s", server_round, node, reason)

    def _too_few(self, replies: list[Message]) -> bool:
        """Fewer usable replies than ``min_replies`` (not under secure aggregation)."""
        from server.secagg import SecAggStrategy

        if self._noise_only or self.layer(SecAggStrategy) is not None:
            return False
        return self.last_replies < self.min_replies

    def _account(self, server_round: int, reports: list[dict[str, Any]], *,
                 released: bool = True) -> None:
        """Charge the round's release (user, record-central, distributed) or mirror clients'.

        Record level: clients charged before replying, whether or not the round is used.
        Distributed: nothing is charged for a round abandoned before unmasking (no sum
        was released).
        """
        assert self.privacy is not None
        mode = self.privacy.cfg.privacy.dp_mode
        if mode in (DpMode.USER, DpMode.DISTRIBUTED, DpMode.RECORD_CENTRAL):
            if not released:
                self.last_epsilon = self.privacy.federation_epsilon()
                return
            dp = self.layer(DpFedAvg)
            ddp = self.layer(DistributedDpMean)
            central = self.layer(CentralDpSgd)
            if central is not None and central.last_round is not None:
                self.privacy.record_user_round(server_round, central.last_round.event)
            elif mode is DpMode.USER and dp is not None and dp.last_round is not None:
                self.privacy.record_user_round(server_round,
                                               dp.last_round.event(self.sampler.rate))
            elif mode is DpMode.DISTRIBUTED and ddp is not None and ddp.last_round is not None:
                # the noise actually in the unmasked sum: the survivors' shares
                self.privacy.record_user_round(server_round, ddp.last_round.event)
        else:
            self.privacy.record_client_events(server_round, reports)
        self.last_epsilon = self.privacy.federation_epsilon()

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Federated evaluation on a sampled fraction of nodes (none by default)."""
        server_round += self.offset
        if self.fraction_evaluate <= 0.0:
            return []
        nodes = self._wait_for_nodes(grid)
        size = min(len(nodes), max(1, int(round(self.fraction_evaluate * len(nodes)))))
        picked = self._eval_rng.choice(len(nodes), size=size, replace=False)
        view = CohortGrid(grid, sorted(nodes[int(i)] for i in picked))
        return self.inner.configure_evaluate(server_round, arrays, config, view)  # type: ignore[arg-type]

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Delegate to the inner strategy."""
        return self.inner.aggregate_evaluate(server_round + self.offset, replies)

    def summary(self) -> None:
        """Log the sampling settings and the inner strategy's summary."""
        log(INFO, "\t├──> fedpriv cohort: %s sampling (q=%g, m=%d) of >= %d nodes, %s",
            self.sampler.kind.value, self.sampler.rate, self.sampler.size, self.min_nodes,
            "secret randomness" if self.sampler.secret else "SEEDED (reproducible)")
        self.inner.summary()
