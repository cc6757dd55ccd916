"""One federated run: the global model, the wrapped strategy, evaluation and records.

Flower's ``Strategy.start`` is the round loop; fedpriv adds central evaluation on the
held-out split, a metrics line and a checkpoint per round, and a summary however the
run ends.
"""

from __future__ import annotations

import math
import threading
import time
from logging import INFO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedpriv.certs import ensure_identities
from fedpriv.config import ClipMode, DpMode, RunConfig, default_count_stddev
from fedpriv.dp_plan import client_sampling_rate, with_user_noise
from fedpriv.messages import TRAIN_LOSS
from fedpriv.privacy import AdaptiveClip, GaussianSource, SecureGaussian, SeededGaussian
from fedpriv.tasks import build_task_model, evaluate, load_task_data
from server.canary import write_canary_key
from server.planning import privacy_plan
from server.privacy import BudgetExhausted, FederationPrivacy
from server.reporting import Reporter
from server.rundir import RunDirectory
from server.sampling import CohortSampler, SamplingKind
from server.secagg import SecAggStrategy
from server.strategy import FedPrivStrategy, RunInterrupted
from strategies import build_strategy
from strategies.dp_fedavg import DpFedAvg
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
) -> dict[str, Any]:
    """Run ``cfg.rounds`` rounds on ``grid`` and record everything in ``run_dir``.

    Returns
    -------
    dict
        The summary also written to ``summary.json``.
    """
    cfg = with_user_noise(cfg.resolved())  # z calibrated once, up front, if asked
    t0 = time.monotonic()
    data = load_task_data(cfg)
    model = build_task_model(cfg, data)
    device = torch.device("cpu")  # server-side evaluation is small; keep the GPU for clients
    privacy = (FederationPrivacy(cfg, run_dir.path, run_id=run_dir.path.name)
               if cfg.dp_mode is not DpMode.NONE else None)
    if cfg.canaries > 0:
        write_canary_key(run_dir.path)
    if privacy is not None and cfg.run_dir:  # simulation: identities sign ledger heads
        ensure_identities(Path(cfg.run_dir) / "identities", list(range(cfg.clients)))
    strategy = FedPrivStrategy(
        _aggregation(cfg),
        sampler=_sampler(cfg),
        min_nodes=cfg.clients + cfg.canaries,
        fraction_evaluate=cfg.fraction_evaluate,
        node_wait_timeout=cfg.round_timeout,
        privacy=privacy,
        stop=run_dir.stop,
    )
    state: dict[str, Any] = {"secagg_rounds": [], "rounds": 0, "initial_accuracy": float("nan"),
                             "final_accuracy": float("nan"), "final_loss": float("nan")}

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(model, data.test, device=device)
        if server_round == 0:
            state["initial_accuracy"] = acc
            run_dir.save_initial_model({k: v.numpy() for k, v in arrays.items()})
            return MetricRecord({"test-loss": loss, "test-accuracy": acc})
        train = strategy.last_train_metrics
        record = {
            "round": server_round,
            "train_loss": float(train[TRAIN_LOSS]) if train and TRAIN_LOSS in train else None,
            "test_loss": loss,
            "test_accuracy": acc,
            "cohort": len(strategy.last_cohort),
            "replies": strategy.last_replies,
            "rejected": list(strategy.last_rejected),
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
        reporter.on_round(record)
        return MetricRecord({"test-loss": loss, "test-accuracy": acc})

    reporter.on_start(scenario=scenario, rounds=cfg.rounds, run_dir=str(run_dir.path))
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
                summary.update(privacy.summary())
                summary["privacy_plan"] = plan
                summary["epsilon"]["clients_max"] = max(strategy.clients_epsilon.values(),
                                                        default=None)
                summary["refused_clients"] = sorted(privacy.excluded_ids)
                summary["client_ledger_heads"] = dict(sorted(strategy.client_heads.items()))
                summary["client_ledgers_in_run_dir"] = sorted(strategy.ledgers_in_run_dir)
                summary["client_ledger_signatures"] = dict(
                    sorted(strategy.client_signatures.items()))
            run_dir.write_summary(summary)
            written.append(summary)
        reporter.on_finish(summary)
        return summary

    run_dir.on_interrupt = lambda reason: finish("interrupted", reason)
    status, reason = "completed", ""
    try:
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=cfg.rounds,
            timeout=cfg.round_timeout,
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
    return summary


def _sampler(cfg: RunConfig) -> CohortSampler:
    """Poisson at q = m / N under user-level DP (what is accounted), else fixed size m.

    Secret randomness under any DP mode unless ``reproducible = true``; seeded from the
    run's seed without DP (no privacy claim depends on it, and runs reproduce).
    """
    seeded = cfg.reproducible or cfg.dp_mode is DpMode.NONE
    seed = [cfg.seed, _SAMPLING_STREAM] if seeded else None
    if cfg.dp_mode is DpMode.USER:
        return CohortSampler(SamplingKind.POISSON, rate=client_sampling_rate(cfg), seed=seed)
    return CohortSampler(SamplingKind.FIXED, size=cfg.cohort_size, seed=seed)


def _aggregation(cfg: RunConfig) -> Any:
    """Build the aggregation rule, wrappers around Flower's strategy.

    Innermost first: Flower's strategy; DP-FedAvg for user-level DP (or the weighted mean
    of updates under secure aggregation); SecAgg+ outermost.
    """
    inner = _dp_or_mean(cfg, build_strategy(cfg))
    if cfg.secagg:
        inner = SecAggStrategy(inner, cfg, np.random.default_rng([cfg.seed, _SECAGG_STREAM]))
    return inner


def _dp_or_mean(cfg: RunConfig, inner: Any) -> Any:
    if cfg.dp_mode is not DpMode.USER:
        return UpdateMean(inner) if cfg.secagg else inner
    clip: float | AdaptiveClip = cfg.clip_norm
    if cfg.clip is ClipMode.ADAPTIVE:
        sigma_b = cfg.clip_count_stddev or default_count_stddev(cfg)
        clip = AdaptiveClip(clip=cfg.clip_norm, target_quantile=cfg.target_quantile,
                            learning_rate=cfg.clip_lr, count_stddev=sigma_b)
    noise: GaussianSource = SecureGaussian()
    if cfg.reproducible:
        noise = SeededGaussian(np.random.default_rng([cfg.seed, _NOISE_STREAM]))
    return DpFedAvg(inner, noise_multiplier=cfg.noise_multiplier, clip=clip,
                    expected_cohort=client_sampling_rate(cfg) * (cfg.clients + cfg.canaries),
                    noise=noise)


def _privacy_record(strategy: FedPrivStrategy) -> dict[str, Any]:
    out: dict[str, Any] = {"epsilon": strategy.last_epsilon,
                           "refused": list(strategy.last_refused)}
    if strategy.clients_epsilon:
        out["clients_epsilon_max"] = max(strategy.clients_epsilon.values())
    dp = strategy.layer(DpFedAvg)
    if dp is not None and dp.last_round is not None:
        out["clip"] = dp.last_round.clip
        out["unclipped_fraction"] = dp.last_round.unclipped_fraction
    return out


def _secagg_summary(cfg: RunConfig, rounds: list[dict[str, Any]]) -> dict[str, Any] | bool:
    if not cfg.secagg:
        return False
    return {
        "enabled": True, "cohort": cfg.cohort_size,
        "threshold": rounds[-1]["threshold"] if rounds else None,
        "degree": rounds[-1]["degree"] if rounds else None,
        "dropouts_recovered": [r.get("dropped", 0) for r in rounds],
        "rounds_abandoned": sum(1 for r in rounds if "aborted" in r),
    }


def _summary(cfg: RunConfig, scenario: str, state: dict[str, Any], status: str,
             reason: str, wall: float) -> dict[str, Any]:
    def num(x: float) -> float | None:
        return None if math.isnan(x) else x

    return {
        "scenario": scenario,
        "status": status,
        "reason": reason,
        "rounds": state["rounds"],
        "rounds_planned": cfg.rounds,
        "clients": cfg.clients,
        "clients_per_round": cfg.cohort_size,
        "dataset": cfg.dataset.value,
        "model": cfg.resolved_model.value,
        "partition": cfg.resolved_partition.value,
        "strategy": cfg.strategy.value,
        "dp_mode": cfg.dp_mode.value,
        "reproducible": cfg.reproducible,
        "canaries": cfg.canaries,
        "secagg": _secagg_summary(cfg, state["secagg_rounds"]),
        "initial_accuracy": num(state["initial_accuracy"]),
        "final_accuracy": num(state["final_accuracy"]),
        "final_loss": num(state["final_loss"]),
        "wall_seconds": wall,
    }
