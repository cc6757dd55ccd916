"""Per-round checkpoints around the ledger commit, and resuming a run from them.

The protocol (see :mod:`server.rundir`): aggregate, append the round's DP events to the
ledger, write ``checkpoint-next``, then commit the checkpoint with the ledger head signed
by this process's key. A noised model reaches the disk only after its round is charged,
and a charged round is never run again. :func:`resume_point` reconciles what a crash
left:

- a pending checkpoint of round ``C + 1`` (charged, since it is written after the
  charge) is promoted: the round's result is kept and it is not run (or charged) again;
- a round the ledger charged with no pending checkpoint (a crash between the two) is
  not run again either: it stays charged, its result is lost, and the model stays the
  one kept before it (running it again would release a second result of one charge:
  under distributed DP a second unmasked sum of the same replayed encodings);
- a round nobody charged runs again. Clients that charged it (the server crashed before
  its own charge) replay the update they released, uncharged (:mod:`client.replay`),
  so no client is charged twice;
- a pending checkpoint the ledger never charged (left by an older version, which wrote
  it first) is discarded and the round runs again.

The strategy state that must survive is small and explicit: the adaptive clip norm,
a server optimiser's moments (FedAdam's ``m_t``, ``v_t``; server momentum's
``velocity``), the released model's moving average (``ema-decay``), a seeded sampler's
state, and the clients' reported ledger heads and
signatures (for the summary and the audit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from flwr.app import ArrayRecord

from server.rundir import RunDirectory

__all__ = ["Checkpointer", "ResumeError", "ResumePoint", "check_resumable", "resume_point"]

#: FedAdam's moments, server momentum's v, the released model's moving average
_MOMENTS = ("m_t", "v_t", "velocity", "ema")
#: What clients report with each reply (public: ledger heads, signatures, epsilons).
_HEADS = ("client_heads", "client_signatures", "clients_epsilon", "ledgers_in_run_dir")


class ResumeError(RuntimeError):
    """The run directory cannot be resumed (named reason)."""


def _chain(strategy: Any) -> list[Any]:
    out, node = [], strategy
    while node is not None:
        out.append(node)
        node = getattr(node, "inner", None)
    return out


def _reported_heads(strategy: Any) -> dict[str, Any]:
    """What clients reported with their replies (the :data:`_HEADS` keys; public values)."""
    return {"client_heads": dict(strategy.client_heads),
            "client_signatures": dict(strategy.client_signatures),
            "clients_epsilon": dict(strategy.clients_epsilon),
            "ledgers_in_run_dir": sorted(strategy.ledgers_in_run_dir)}


def capture_state(strategy: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The state of ``strategy`` (a FedPrivStrategy and its wrapped chain) to restore."""
    arrays: dict[str, np.ndarray] = {}
    info: dict[str, Any] = _reported_heads(strategy)
    rng = getattr(strategy.sampler, "_rng", None)
    if rng is not None:
        info["sampler_state"] = rng.bit_generator.state
    for node in _chain(strategy):
        adaptive = getattr(node, "adaptive", None)
        if adaptive is not None:
            info["clip"] = float(adaptive.clip)
        for name in _MOMENTS:
            moments = getattr(node, name, None)
            if isinstance(moments, dict):
                arrays.update({f"{name}/{k}": np.asarray(v) for k, v in moments.items()})
    return arrays, info


def restore_state(strategy: Any, arrays: dict[str, np.ndarray], info: dict[str, Any]
                  ) -> None:
    """Put back what :func:`capture_state` took."""
    strategy.client_heads.update(info.get("client_heads", {}))
    strategy.client_signatures.update(info.get("client_signatures", {}))
    strategy.clients_epsilon.update(info.get("clients_epsilon", {}))
    strategy.ledgers_in_run_dir.update(info.get("ledgers_in_run_dir", []))
    rng = getattr(strategy.sampler, "_rng", None)
    if rng is not None and "sampler_state" in info:
        rng.bit_generator.state = info["sampler_state"]
    for node in _chain(strategy):
        adaptive = getattr(node, "adaptive", None)
        if adaptive is not None and "clip" in info:
            node.adaptive = replace(adaptive, clip=float(info["clip"]))
        for name in _MOMENTS:
            if hasattr(node, name):
                moments = {k.split("/", 1)[1]: v for k, v in arrays.items()
                           if k.startswith(f"{name}/")}
                if moments:
                    setattr(node, name, moments)


class Checkpointer:
    """Writes each round's checkpoint around the ledger commit (FedPrivStrategy calls it)."""

    def __init__(self, run_dir: RunDirectory, strategy: Any, privacy: Any | None,
                 extra: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.strategy = strategy
        self.privacy = privacy
        #: Run-level facts kept with every checkpoint (e.g. the initial accuracy).
        self.extra = extra

    def before_charge(self, server_round: int) -> None:
        """The clients' reported heads, kept before the charge (public values only).

        Nothing without DP: no ledger charges a round, so no round can be lost after one.
        """
        if self.privacy is not None:
            self.run_dir.save_heads(server_round, _reported_heads(self.strategy))

    def before_commit(self, server_round: int, arrays: ArrayRecord) -> None:
        """The round's aggregate, written once the ledger has charged the round."""
        state, info = capture_state(self.strategy)
        model = {k: v.numpy() for k, v in arrays.items()}
        self.run_dir.save_pending(server_round, model, state, info)

    def after_charge(self, server_round: int) -> None:
        """The ledger has the round: commit the checkpoint with the signed head."""
        record: dict[str, Any] = dict(self.extra)
        if self.privacy is not None:
            record.update(self.privacy.signed_head())
        self.run_dir.commit_checkpoint(server_round, record)


@dataclass(slots=True, kw_only=True)
class ResumePoint:
    """Where a resumed run starts (``round`` is the last round it keeps)."""

    round: int
    model: dict[str, np.ndarray] | None
    state: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    #: ``{"round", "ledger_head", "signature"}``: the last head the old key signed.
    signed: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    #: A round promoted from a pending checkpoint has no metrics line yet.
    needs_metrics: bool = False
    #: The last round was charged but its result lost in the stop (kept as the model before).
    lost: bool = False
    notes: list[str] = field(default_factory=list)


def check_resumable(run_dir: RunDirectory, *, private: bool) -> int | None:
    """Raise :class:`ResumeError` if ``run_dir`` cannot be resumed (reads only).

    ``private``: the run uses DP, so its ledger must verify and a checkpoint exist.
    Returns the last round the federation ledger charged (None without DP).
    """
    from fedpriv.privacy import LedgerError, PrivacyLedger

    try:
        record = run_dir.read_checkpoint()
        run_dir.read_state(RunDirectory.STATE)
        run_dir.read_state(RunDirectory.PENDING)
    except (OSError, ValueError, KeyError) as err:
        raise ResumeError(f"{run_dir.path}: the checkpoint cannot be read ({err})") from None
    if not private:
        return None
    if record is None:
        raise ResumeError(f"{run_dir.path}: no {RunDirectory.CHECKPOINT}: the run stopped "
                          "before it started; start a new run")
    path = run_dir.path / "ledger.sqlite"
    try:
        with PrivacyLedger.open(path) as ledger:
            report = ledger.verify()
            charged = max((rnd for rnd, _ in ledger.events()), default=0)
    except LedgerError as err:
        raise ResumeError(str(err)) from None
    if not report.ok:
        raise ResumeError(f"{path}: entry {report.broken_seq}: {report.reason}; a damaged "
                          "ledger is not continued")
    return charged


def resume_point(run_dir: RunDirectory, *, charged_through: int | None) -> ResumePoint:
    """Reconcile checkpoint, pending checkpoint, ledger and metrics after a stop or crash.

    ``charged_through``: the last round the federation ledger charged (None: no DP), as
    :func:`check_resumable` returns it after checking the directory.
    """
    try:
        record = run_dir.read_checkpoint()
        committed = run_dir.read_state(RunDirectory.STATE)
        pending = run_dir.read_state(RunDirectory.PENDING)
    except (OSError, ValueError, KeyError) as err:
        raise ResumeError(f"{run_dir.path}: the checkpoint cannot be read ({err})") from None
    last = record["round"] if record is not None else 0
    if committed is not None and committed[0] != last:
        raise ResumeError(f"{run_dir.path}: {RunDirectory.STATE} holds round "
                          f"{committed[0]}, {RunDirectory.CHECKPOINT} round {last}")
    point = ResumePoint(round=last, model=None)
    if committed is not None:
        _, point.model, point.state, point.info = committed
    # what clients reported in the round in flight: their ledgers hold it whatever became
    # of the round, so the run's record of their heads must too
    heads = run_dir.read_heads(last + 1)
    for key in _HEADS:
        if key in heads:
            merged = point.info.get(key, [] if key == "ledgers_in_run_dir" else {})
            point.info[key] = (sorted({*merged, *heads[key]}) if key == "ledgers_in_run_dir"
                               else {**merged, **heads[key]})
    notes = point.notes
    if pending is not None:
        p_round = pending[0]
        charged = charged_through is None or charged_through >= p_round
        if p_round == last + 1 and charged:
            _, point.model, point.state, point.info = pending
            point.round, point.needs_metrics = p_round, True
            # kept as committed, with the last head the old key signed
            run_dir.commit_checkpoint(p_round, {k: v for k, v in (record or {}).items()
                                                if k != "round"})
            notes.append(f"round {p_round} was charged before the stop but not "
                         "checkpointed: its result is kept, not run again")
        else:
            run_dir.discard_pending()
            notes.append(f"round {p_round} was not charged before the stop: it runs again")
    if point.model is None:
        initial = run_dir.path / RunDirectory.INITIAL_MODEL
        if initial.exists():
            from safetensors.numpy import load_file

            point.model = load_file(initial)
    if charged_through is not None and charged_through == point.round + 1:
        # Charged, then the stop came before its result reached the disk. Running it
        # again would release a second result of the same charge (under distributed DP
        # a second unmasked sum of the same replayed encodings, over other survivors), so
        # it is not run again: it stays charged and the model stays the last one kept.
        lost = charged_through
        keep = {k: v for k, v in (record or {}).items() if k != "round"}
        if committed is not None:  # the kept model and state, relabelled as round `lost`
            run_dir.save_pending(lost, point.model or {}, point.state, point.info)
        run_dir.commit_checkpoint(lost, keep)
        point.round, point.needs_metrics, point.lost = lost, True, True
        notes.append(f"round {lost} was charged before the stop but its result was lost: "
                     "it stays charged and is not run again (the model is the one kept "
                     "before it)")
    elif charged_through is not None and charged_through > point.round:
        notes.append(f"the ledger holds charges for round {charged_through} beyond the "
                     f"checkpoint (round {point.round}); they stay charged")
    if record is not None:
        point.signed = {k: record[k] for k in ("ledger_head", "signature") if k in record}
        point.signed["round"] = point.round
        point.extra = {k: v for k, v in record.items()
                       if k not in ("round", "ledger_head", "signature")}
    point.metrics = run_dir.keep_metrics_through(point.round)
    if point.round > 0 and not any(m.get("round") == point.round for m in point.metrics):
        point.needs_metrics = True
    return point


def metric(value: Any) -> float:
    """A float from a metrics value (None or junk: NaN)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
