"""One federated run: the global model, the wrapped strategy, evaluation and records.

Flower's ``Strategy.start`` is the round loop; fedpriv adds central evaluation on the
held-out split, a metrics line and a checkpoint per round, and a summary however the
run ends.
"""

from __future__ import annotations

import math
import shutil
import threading
import time
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedpriv.certs import ensure_identities
from fedpriv.config import ClipMode, DpMode, Model, RunConfig, default_count_stddev
from fedpriv.ddp_plan import DistributedPlan, distributed_plan, model_dimension
from fedpriv.dp_plan import central_record_event, client_sampling_rate, with_user_noise
from fedpriv.durable import private_dir
from fedpriv.messages import TRAIN_LOSS
from fedpriv.privacy import (
    AdaptiveClip,
    GaussianSource,
    SecureGaussian,
    SeededGaussian,
)
from fedpriv.secagg.layout import META_SLOTS, layout_for
from fedpriv.secagg.wire import word_bytes
from fedpriv.tasks import build_task_model, evaluate, load_task_data, model_inputs
from server.canary import write_canary_key
from server.checkpoint import (
    Checkpointer,
    ResumePoint,
    check_resumable,
    metric,
    restore_state,
    resume_point,
)
from server.grid import PromptGrid
from server.planning import privacy_plan
from server.privacy import BudgetExhausted, FederationPrivacy
from server.reporting import Reporter
from server.rundir import RunDirectory
from server.sampling import CohortSampler, SamplingKind
from server.secagg import SecAggStrategy
from server.strategy import FedPrivStrategy, RunInterrupted
from strategies import build_strategy
from strategies.central_dp import CentralDpSgd
from strategies.distributed_dp import DistributedDpMean
from strategies.dp_fedavg import DpFedAvg, test_only_noise_scale
from strategies.server_momentum import ServerMomentum
from strategies.update_mean import UpdateMean

__all__ = ["run_federation"]

# Independent random streams derived from the run's seed.
_SAMPLING_STREAM = 1
_SECAGG_STREAM = 2
_NOISE_STREAM = 3


def run_federation(
    grid: Grid,
    cfg: RunConfig,
    run_dir: RunDirectory,
    *,
    scenario: str,
    reporter: Reporter,
    resume: bool = False,
) -> dict[str, Any]:
    """Run ``cfg.training.rounds`` rounds on ``grid`` and record everything in ``run_dir``.

    ``resume``: continue the run ``run_dir`` holds from its last checkpoint (see
    :mod:`server.checkpoint`): the model, the strategy's state, the ledger (with a new
    head-signing key, endorsed by the old one) and the metrics so far.

    Returns
    -------
    dict
        The summary also written to ``summary.json``.
    """
    cfg = with_user_noise(cfg.resolved())  # z calibrated once, up front, if asked
    t0 = time.monotonic()
    grid = PromptGrid(grid)  # replies collected as they arrive, not every 3 s
    data = load_task_data(cfg)
    model = build_task_model(cfg, data)
    device = torch.device("cpu")  # server-side evaluation is small; keep the GPU for clients
    # distributed DP: gamma, V and b once, up front (every client derives the same)
    ddp = (distributed_plan(cfg, model_dimension(cfg))
           if cfg.privacy.dp_mode is DpMode.DISTRIBUTED else None)
    point = _resume_point(cfg, run_dir) if resume else None
    privacy = (FederationPrivacy(cfg, run_dir.path, run_id=run_dir.path.name,
                                 resume_from=point.signed if point is not None else None,
                                 distributed=ddp)
               if cfg.privacy.dp_mode is not DpMode.NONE else None)
    if cfg.privacy.canaries > 0:
        write_canary_key(run_dir.path)
    if privacy is not None and cfg.deployment.run_dir:  # simulation: identities sign ledger heads
        ensure_identities(Path(cfg.deployment.run_dir) / "identities",
                          list(range(cfg.training.clients)))
    strategy = FedPrivStrategy(
        _aggregation(cfg, ddp),
        sampler=_sampler(cfg),
        min_nodes=cfg.training.clients + cfg.privacy.canaries,
        fraction_evaluate=cfg.training.fraction_evaluate,
        node_wait_timeout=cfg.deployment.round_timeout,
        min_replies=cfg.deployment.min_replies,
        privacy=privacy,
        stop=run_dir.stop,
        first_round=point.round + 1 if point is not None else 1,
        ema_decay=cfg.training.ema_decay,
    )
    state: dict[str, Any] = {"secagg_rounds": [], "rounds": 0, "initial_accuracy": float("nan"),
                             "final_accuracy": float("nan"), "final_loss": float("nan"),
                             "resumed": [], "rounds_aggregated": 0}
    checkpoints = Checkpointer(run_dir, strategy, privacy, extra={})
    strategy.checkpoints = checkpoints
    initial = ArrayRecord(model.state_dict())
    if point is not None:
        initial = _restore(point, strategy, model, state)

    test = model_inputs(cfg, data.test)  # scatternet: the test split's coefficients, once

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        last = arrays  # the global model training goes on from
        arrays = strategy.released(arrays)  # what the run releases (ema-decay: the EMA)
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(model, test, device=device)
        if server_round == 0 and point is not None:  # resumed: round 0 is point.round
            if point.needs_metrics:
                record = {"round": point.round, "test_loss": loss, "test_accuracy": acc,
                          "recovered": True, "elapsed_seconds": time.monotonic() - t0,
                          **({"result_lost": True} if point.lost else {})}
                run_dir.save_model({k: v.numpy() for k, v in arrays.items()},
                                   server_round=point.round)
                run_dir.append_metrics(record)
                state.update(final_accuracy=acc, final_loss=loss)
            return MetricRecord({"test-loss": loss, "test-accuracy": acc})
        if server_round == 0:
            state["initial_accuracy"] = acc
            state["initial_loss"] = loss
            checkpoints.extra["initial_accuracy"] = acc
            run_dir.save_initial_model({k: v.numpy() for k, v in arrays.items()})
            checkpoints.after_charge(0)  # the genesis head, signed, before round 1
            return MetricRecord({"test-loss": loss, "test-accuracy": acc})
        server_round += strategy.offset
        train = strategy.last_train_metrics
        record = {
            "round": server_round,
            "train_loss": float(train[TRAIN_LOSS]) if train and TRAIN_LOSS in train else None,
            "test_loss": loss,
            "test_accuracy": acc,
            **_perplexity(cfg, loss),
            **_last_aggregate(model, last, arrays, test, device),
            "cohort": len(strategy.last_cohort),
            "replies": strategy.last_replies,
            "rejected": list(strategy.last_rejected),
            "skipped": strategy.last_skipped or None,
            "missing": list(strategy.last_missing),
            "failed": {str(k): v for k, v in strategy.last_failed.items()},
            "elapsed_seconds": time.monotonic() - t0,
        }
        if privacy is not None:
            record.update(_privacy_record(strategy))
        sa = strategy.layer(SecAggStrategy)
        if sa is not None:
            record["secagg"] = dict(sa.last_round)
            state["secagg_rounds"].append(dict(sa.last_round))
        run_dir.save_model(
            {k: v.numpy() for k, v in arrays.items()}, server_round=server_round
        )
        run_dir.append_metrics(record)
        state.update(rounds=server_round, final_accuracy=acc, final_loss=loss)
        state["rounds_aggregated"] += _aggregated(record)
        reporter.on_round(record)
        return MetricRecord({"test-loss": loss, "test-accuracy": acc})

    reporter.on_start(scenario=scenario, rounds=cfg.training.rounds, run_dir=str(run_dir.path))
    if point is not None:
        for note in [f"resuming after round {point.round} of {cfg.training.rounds}", *point.notes]:
            log(WARNING, "fedpriv: %s", note)
        state["resumed"].append({"after_round": point.round, "notes": point.notes})
    plan = privacy_plan(cfg) if privacy is not None else None
    if plan is not None:
        log(INFO, "fedpriv: %s", plan["text"])
    config = ConfigRecord(cfg.to_flat())
    finished = threading.Lock()
    written: list[dict[str, Any]] = []

    def finish(status: str, reason: str) -> dict[str, Any]:
        """Write summary.json once, however the run ends (from any thread)."""
        with finished:
            if written:
                return written[0]
            summary = _summary(cfg, scenario, state, status, reason, time.monotonic() - t0)
            if privacy is not None:
                summary.update(privacy.summary(status=status, rounds=int(summary["rounds"])))
                summary["privacy_plan"] = plan
                summary["epsilon"]["clients_max"] = max(strategy.clients_epsilon.values(),
                                                        default=None)
                summary["refused_clients"] = sorted(privacy.excluded_ids)
                summary["client_ledger_heads"] = dict(sorted(strategy.client_heads.items()))
                summary["client_ledgers_in_run_dir"] = sorted(strategy.ledgers_in_run_dir)
                summary["client_ledger_signatures"] = dict(
                    sorted(strategy.client_signatures.items()))
            if ddp is not None:
                summary["distributed_dp"] = {
                    **ddp.summary(),
                    "survivors_by_round": [r.get("ddp_survivors")
                                           for r in state["secagg_rounds"]]}
            run_dir.write_summary(summary)
            written.append(summary)
        reporter.on_finish(summary)
        return summary

    run_dir.on_interrupt = lambda reason: finish("interrupted", reason)
    status, reason = "completed", ""
    try:
        strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=cfg.training.rounds - strategy.offset,
            timeout=cfg.deployment.round_timeout,
            train_config=config,
            evaluate_config=ConfigRecord(cfg.to_flat()),
            evaluate_fn=evaluate_fn,
        )
    except BudgetExhausted as err:  # a clean stop: the last model is already saved
        status, reason = "stopped", str(err)
    except RunInterrupted as err:
        status, reason = "interrupted", str(err)
    except BaseException as err:
        status, reason = "failed", f"{type(err).__name__}: {err}"
        raise
    finally:
        summary = finish(status, reason)
        if privacy is not None:
            privacy.close()
        if status in ("completed", "stopped") and cfg.deployment.run_dir:
            # simulated clients' copies of what they released (client.replay): a completed
            # or budget-stopped run is never resumed, and they must not outlive it
            shutil.rmtree(private_dir(cfg.deployment.run_dir, "replay"), ignore_errors=True)
    return summary


def _resume_point(cfg: RunConfig, run_dir: RunDirectory) -> ResumePoint:
    """Reconcile the run directory for a resume (raises :class:`ResumeError`)."""
    charged = check_resumable(run_dir, private=cfg.privacy.dp_mode is not DpMode.NONE)
    point = resume_point(run_dir, charged_through=charged)
    if point.round >= cfg.training.rounds and not point.needs_metrics:
        log(INFO, "fedpriv: every planned round was already done; writing the summary")
    run_dir.archive_summary()
    return point


def _restore(point: ResumePoint, strategy: FedPrivStrategy, model: torch.nn.Module,
             state: dict[str, Any]) -> ArrayRecord:
    """Put a resume point's model, strategy state and records back; the model to start."""
    restore_state(strategy, point.state, point.info)
    strategy.checkpoints.extra.update(point.extra)
    if point.model is not None:
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in point.model.items()})
    state["initial_accuracy"] = metric(point.extra.get("initial_accuracy"))
    state["rounds"] = point.round
    for line in point.metrics:
        state.update(final_accuracy=metric(line.get("test_accuracy")),
                     final_loss=metric(line.get("test_loss")))
        state["rounds_aggregated"] += _aggregated(line)
        if isinstance(line.get("secagg"), dict):
            state["secagg_rounds"].append(dict(line["secagg"]))
    if strategy.privacy is not None:  # the new key signs the resumed head at once
        strategy.checkpoints.after_charge(point.round)
    return ArrayRecord(model.state_dict())


def _aggregated(record: dict[str, Any]) -> bool:
    """Whether a round's metrics line says the model took an aggregate of replies."""
    secagg = record.get("secagg")
    aborted = isinstance(secagg, dict) and bool(secagg.get("aborted"))
    return bool(record.get("replies")) and not record.get("skipped") and not aborted


def _sampler(cfg: RunConfig) -> CohortSampler:
    """Poisson at q = m / N under user-level DP (what is accounted), else fixed size m.

    Secret randomness under any DP mode unless ``reproducible = true``; seeded from the
    run's seed without DP (no privacy claim depends on it, and runs reproduce).
    """
    seeded = cfg.training.reproducible or cfg.privacy.dp_mode is DpMode.NONE
    seed = [cfg.training.seed, _SAMPLING_STREAM] if seeded else None
    if cfg.privacy.dp_mode is DpMode.USER:
        return CohortSampler(SamplingKind.POISSON, rate=client_sampling_rate(cfg), seed=seed)
    return CohortSampler(SamplingKind.FIXED, size=cfg.training.cohort_size, seed=seed)


def _aggregation(cfg: RunConfig, ddp: DistributedPlan | None = None) -> Any:
    """Build the aggregation rule, wrappers around Flower's strategy.

    Innermost first: Flower's strategy; DP-FedAvg for user-level DP, the mean of the
    decoded noised sum for distributed DP (or the weighted mean of updates under secure
    aggregation); SecAgg+ around them; server momentum (FedAvgM) outermost, on the model
    the chain releases.
    """
    inner = _dp_or_mean(cfg, build_strategy(cfg), ddp)
    if cfg.secagg.enabled:
        rng = np.random.default_rng([cfg.training.seed, _SECAGG_STREAM])
        inner = SecAggStrategy(inner, cfg, rng, plan=ddp)
    if cfg.training.server_momentum > 0:
        inner = ServerMomentum(inner, momentum=cfg.training.server_momentum,
                               learning_rate=cfg.training.server_momentum_lr)
    return inner


def _dp_or_mean(cfg: RunConfig, inner: Any, ddp: DistributedPlan | None = None) -> Any:
    if cfg.privacy.dp_mode is DpMode.DISTRIBUTED:
        if ddp is None:
            raise ValueError("dp-mode=distributed needs its plan")
        return DistributedDpMean(inner, ddp)  # the clients' noise only: none added here
    if cfg.privacy.dp_mode is DpMode.RECORD_CENTRAL:
        return CentralDpSgd(inner, event=central_record_event(cfg),
                            learning_rate=cfg.training.lr, trained=_trained_keys(cfg),
                            noise=_server_noise(cfg))
    if cfg.privacy.dp_mode is not DpMode.USER:
        return UpdateMean(inner) if cfg.secagg.enabled else inner
    clip: float | AdaptiveClip = cfg.privacy.clip_norm
    if cfg.privacy.clip is ClipMode.ADAPTIVE:
        sigma_b = cfg.privacy.clip_count_stddev or default_count_stddev(cfg)
        clip = AdaptiveClip(clip=cfg.privacy.clip_norm, target_quantile=cfg.privacy.target_quantile,
                            learning_rate=cfg.privacy.clip_lr, count_stddev=sigma_b)
    return DpFedAvg(inner, noise_multiplier=cfg.privacy.noise_multiplier, clip=clip,
                    expected_cohort=client_sampling_rate(cfg)
                    * (cfg.training.clients + cfg.privacy.canaries),
                    noise=_server_noise(cfg), quantisation_slack=quantisation_slack(cfg))


def quantisation_slack(cfg: RunConfig) -> float:
    """The l2 distance secure aggregation's rounding may add to a clipped update.

    Stochastic rounding moves each of the d coordinates by less than one step
    (``fedpriv.secagg.quantize``: 2r / (2^q - 1)), so a client's contribution to the sum
    is within ``C + step * sqrt(d)`` of nothing; clipping to [-r, r] only shrinks it. 0
    without secure aggregation. (Defaults, digits MLP: 2e-3, 0.2% of C = 1.)
    """
    if not cfg.secagg.enabled:
        return 0.0
    from fedpriv.ddp_plan import model_dimension
    from fedpriv.secagg import layout_for

    return layout_for(cfg.secagg).quantizer.step * math.sqrt(model_dimension(cfg))


def _test_only_noise() -> dict[str, float]:
    """``{"test_only_noise_scale": s}`` when the tests' under-noising switch is set, else {}.

    :data:`strategies.dp_fedavg.TEST_ONLY_NOISE_SCALE` scales the noise actually added
    and never the ledger's record; a run that had it set says so in its summary, and
    ``fedpriv audit`` warns.
    """
    scale = test_only_noise_scale()
    return {} if scale == 1.0 else {"test_only_noise_scale": scale}


def _server_noise(cfg: RunConfig) -> GaussianSource:
    """The server's Gaussian noise: OS entropy, seeded only if ``reproducible``."""
    if cfg.training.reproducible:
        return SeededGaussian(np.random.default_rng([cfg.training.seed, _NOISE_STREAM]))
    return SecureGaussian()


def _trained_keys(cfg: RunConfig) -> list[str]:
    """The state-dict keys of the run's model that training changes (its parameters)."""
    model = build_task_model(cfg)
    return [name for name, p in model.named_parameters() if p.requires_grad]


def _privacy_record(strategy: FedPrivStrategy) -> dict[str, Any]:
    out: dict[str, Any] = {"epsilon": strategy.last_epsilon,
                           "refused": list(strategy.last_refused)}
    if strategy.clients_epsilon:
        out["clients_epsilon_max"] = max(strategy.clients_epsilon.values())
    dp = strategy.layer(DpFedAvg)
    if dp is not None and dp.last_round is not None:
        out["clip"] = dp.last_round.clip
        out["unclipped_fraction"] = dp.last_round.unclipped_fraction
    ddp = strategy.layer(DistributedDpMean)
    if ddp is not None:
        out["noise_shares"] = ddp.last_round.clients if ddp.last_round is not None else None
    return out


def _secagg_summary(cfg: RunConfig, rounds: list[dict[str, Any]]) -> dict[str, Any] | bool:
    if not cfg.secagg.enabled:
        return False
    # What each client's masked vector costs: coordinates x modulus bits, sent as
    # ceil(bits / 8) bytes per coordinate (fedpriv.secagg.pack).
    d = model_dimension(cfg)
    if cfg.privacy.dp_mode is DpMode.DISTRIBUTED:
        plan = distributed_plan(cfg, d)
        bits, length = plan.params.bits, plan.params.padded_dimension + META_SLOTS
    else:
        layout = layout_for(cfg.secagg)
        bits, length = layout.modulus_bits(cfg.training.clients), layout.length(d)
    return {
        "enabled": True, "cohort": cfg.training.cohort_size,
        "modulus_bits": bits, "coordinates": length, "model_parameters": d,
        "masked_vector_bytes": word_bytes(bits) * length,
        "threshold": rounds[-1]["threshold"] if rounds else None,
        "degree": rounds[-1]["degree"] if rounds else None,
        "dropouts_recovered": [r.get("dropped", 0) for r in rounds],
        "rounds_abandoned": sum(1 for r in rounds if "aborted" in r),
    }


def _last_aggregate(model: torch.nn.Module, last: ArrayRecord, released: ArrayRecord,
                    test: Any, device: torch.device) -> dict[str, float]:
    """Under ``ema-decay``, the last aggregate's own test figures beside the EMA's.

    Leaves ``last`` in ``model`` (each evaluation loads the model it evaluates).
    """
    if last is released:
        return {}
    model.load_state_dict(last.to_torch_state_dict())
    loss, acc = evaluate(model, test, device=device)
    return {"last_aggregate_test_loss": loss, "last_aggregate_test_accuracy": acc}


def _perplexity(cfg: RunConfig, loss: float) -> dict[str, float]:
    """The held-out loss in a task's own unit; {} for classifiers.

    A language model: perplexity, exp(mean token NLL). A rating model: RMSE, the square
    root of the mean squared error per held-out rating.
    """
    if cfg.resolved_model is Model.ASVD:
        return {"test_rmse": math.sqrt(loss) if loss >= 0 else math.nan}
    if cfg.resolved_model is not Model.LM_LORA:
        return {}
    return {"test_perplexity": math.exp(loss) if loss < 700 else math.inf}


def _summary(cfg: RunConfig, scenario: str, state: dict[str, Any], status: str,
             reason: str, wall: float) -> dict[str, Any]:
    def num(x: float) -> float | None:
        return None if math.isnan(x) else x

    return {
        "scenario": scenario,
        "status": status,
        "reason": reason,
        "rounds": state["rounds"],
        "rounds_planned": cfg.training.rounds,
        # rounds whose aggregate reached the model (not skipped, aborted or empty)
        "rounds_aggregated": state["rounds_aggregated"],
        "clients": cfg.training.clients,
        "clients_per_round": cfg.training.cohort_size,
        "dataset": cfg.data.dataset.value,
        "model": cfg.resolved_model.value,
        "partition": cfg.data.resolved_partition.value,
        "strategy": cfg.training.strategy.value,
        "dp_mode": cfg.privacy.dp_mode.value,
        "reproducible": cfg.training.reproducible,
        **_test_only_noise(),
        "canaries": cfg.privacy.canaries,
        "secagg": _secagg_summary(cfg, state["secagg_rounds"]),
        "initial_accuracy": num(state["initial_accuracy"]),
        "final_accuracy": num(state["final_accuracy"]),
        "final_loss": num(state["final_loss"]),
        **{f"initial_{k[5:]}": v for k, v in
           _perplexity(cfg, state.get("initial_loss", math.nan)).items()},
        **{f"final_{k[5:]}": v for k, v in _perplexity(cfg, state["final_loss"]).items()},
        "resumed": state["resumed"],
        "wall_seconds": wall,
    }
