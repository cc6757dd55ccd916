"""DP end to end through the real ServerApp logic and ClientApp, in-process."""

import json
import math

import numpy as np
import pytest

from bench.loopback import LoopbackGrid, task_identity
from client.app import app as client_app
from fedpriv.audit import audit_run
from fedpriv.config import RunConfig
from fedpriv.privacy import PrivacyLedger
from server.federation import run_federation
from server.reporting import LogReporter
from server.rundir import RunDirectory


def run(tmp_path, **overrides):
    values = {"rounds": 2, "clients": 4, "local-epochs": 1, "partition": "iid", **overrides}
    run_dir = RunDirectory(tmp_path / "run").create()
    cfg = RunConfig.from_mapping({**values, "run-dir": str(run_dir.path)}).resolved()
    nodes = {i + 1: {"partition-id": i, "num-partitions": cfg.training.clients}
             for i in range(cfg.training.clients)}
    with task_identity():
        summary = run_federation(LoopbackGrid(client_app, nodes), cfg, run_dir,
                                 scenario="t", reporter=LogReporter())
    return run_dir.path, summary


def test_user_level_fixed_clip_records_every_round(tmp_path):
    path, summary = run(tmp_path, **{"dp-mode": "user", "clients-per-round": 2})
    assert summary["status"] == "completed"
    with PrivacyLedger.open(path / "ledger.sqlite") as fed:
        events = fed.events()
    assert [r for r, _ in events] == [1, 2]
    assert all(e.sampling_rate == 0.5 and e.noise_multiplier == 1.0 for _, e in events)
    report = audit_run(path)
    assert report.ok, report.problems
    fed_audit = next(s for s in report.scopes if s.scope == "federation")
    assert fed_audit.epsilon_pld == pytest.approx(summary["epsilon"]["federation"])
    clients = [s for s in report.scopes if s.scope.startswith("client-")]
    assert len(clients) <= 4
    # Poisson sampling at q = 2/4: each client's ledger holds the rounds it was drawn in
    lines = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
    assert sum(s.rounds for s in clients) == sum(r["cohort"] for r in lines)
    if clients:
        assert summary["epsilon"]["clients_max"] == pytest.approx(
            max(s.epsilon_pld for s in clients))


def test_user_level_adaptive_clip_moves_the_clip(tmp_path):
    # Every update is clipped (b_i = 0), so b_bar = 1/2 + (-m/2 + N(0, sb^2)) / m ~ 0:
    # with sb = 0.6 and m = 4 it stays below gamma = 1/2 except with probability 4e-4.
    path, summary = run(tmp_path, **{"dp-mode": "user", "clip": "adaptive", "rounds": 3,
                                     "clip-norm": 0.01, "clip-count-stddev": 0.6})
    lines = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
    clips = [r["clip"] for r in lines]
    assert clips[0] == pytest.approx(0.01) and clips[-1] > clips[0]  # every update clipped
    assert audit_run(path).ok


def test_record_level_mirrors_client_events_and_takes_the_largest(tmp_path):
    path, summary = run(tmp_path, **{"dp-mode": "record", "rounds": 1})
    report = audit_run(path)
    assert report.ok, report.problems
    mirrored = {s.scope: s.epsilon_pld for s in report.scopes
                if s.ledger.endswith("run/ledger.sqlite")}
    own = {s.scope: s.epsilon_pld for s in report.scopes if "clients" in s.ledger}
    assert mirrored == pytest.approx(own)  # the server's copy agrees with each client's
    assert summary["epsilon"]["federation"] == pytest.approx(max(own.values()))


def test_record_level_target_epsilon_is_met(tmp_path):
    path, summary = run(tmp_path, **{"dp-mode": "record", "target-epsilon": 3.0})
    assert summary["epsilon"]["federation"] <= 3.0 + 1e-9
    assert summary["epsilon"]["federation"] > 2.0


def test_clients_refuse_past_their_budget_and_the_server_stops_cleanly(tmp_path):
    # User level, q = 1, z = 1, delta 1e-5: epsilon 6.57 after two rounds, 8.39 after
    # three, so every client refuses round 3 and round 4 has nobody left to sample.
    path, summary = run(tmp_path, **{"dp-mode": "user", "rounds": 5,
                                     "client-max-epsilon": 7.0})
    assert summary["status"] == "stopped" and "budget" in summary["reason"]
    assert summary["rounds"] == 3
    assert len(summary["refused_clients"]) == 4
    assert (path / "model.safetensors").exists()
    report = audit_run(path)
    assert report.ok and not any(s.over_budget for s in report.scopes)


def test_federation_budget_stops_before_it_is_exceeded(tmp_path):
    path, summary = run(tmp_path, **{"dp-mode": "user", "rounds": 10, "max-epsilon": 8.0,
                                     "clients-per-round": 2})
    assert summary["status"] == "stopped" and "max-epsilon 8" in summary["reason"]
    assert summary["epsilon"]["federation"] <= 8.0
    assert 1 <= summary["rounds"] < 10
    assert audit_run(path).ok


def test_dp_fedavg_adds_noise_of_std_z_c_over_m():
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy import FedAvg

    from bench.loopback import instruction
    from fedpriv.messages import METRICS, UNCLIPPED, UPDATE, UPDATE_WEIGHT
    from fedpriv.privacy import SeededGaussian
    from strategies.dp_fedavg import DpFedAvg
    from strategies.updates import numpy_record

    d, m, z, c = 50_000, 4, 2.0, 0.5
    dp = DpFedAvg(FedAvg(fraction_train=1.0), noise_multiplier=z, clip=c, expected_cohort=m,
                  noise=SeededGaussian(np.random.default_rng(0)))
    dp._current = ArrayRecord({"w": numpy_record({"w": np.zeros(d, np.float32)})["w"]})
    replies = [
        instruction(RecordDict({UPDATE: numpy_record({"w": np.zeros(d, np.float32)}),
                                METRICS: MetricRecord({UPDATE_WEIGHT: 1.0, UNCLIPPED: 1.0,
                                                       "num-examples": 10})}),
                    dst_node_id=i, message_type="train")
        for i in range(3)
    ]
    arrays, _ = dp.aggregate_train(1, replies)
    w = arrays["w"].numpy()
    sigma = z * c / m
    assert abs(w.std() - sigma) < 6 * sigma / math.sqrt(2 * d)
    assert dp.last_round.count == 3
    _ = ConfigRecord  # imported for clarity of the message types involved


def test_under_secure_aggregation_the_noise_covers_the_roundings_reach_too():
    # Stochastic rounding to secagg's grid can move a clipped update by up to
    # step * sqrt(d) in l2, so one client's contribution to the sum is bounded by C plus
    # that, not C: the server's noise is z (C + slack), keeping z (what the ledgers
    # record) the noise multiplier of the actual sensitivity.
    from flwr.app import ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy import FedAvg

    from bench.loopback import instruction
    from fedpriv.ddp_plan import model_dimension
    from fedpriv.messages import METRICS, UNCLIPPED, UPDATE, UPDATE_WEIGHT
    from fedpriv.privacy import SeededGaussian
    from fedpriv.secagg import layout_for
    from server.federation import _dp_or_mean, quantisation_slack
    from strategies.dp_fedavg import DpFedAvg
    from strategies.updates import numpy_record

    cfg = RunConfig.from_mapping({"dp-mode": "user", "secagg": True, "secagg-bits": 8,
                                  "clients": 4}).resolved()
    slack = quantisation_slack(cfg)
    step = 2 * cfg.secagg.clip_range / (2 ** 8 - 1)
    assert slack == pytest.approx(step * math.sqrt(model_dimension(cfg)))
    assert layout_for(cfg.secagg).quantizer.step == pytest.approx(step)
    assert quantisation_slack(cfg.with_values(secagg=False)) == 0.0
    built = _dp_or_mean(cfg, FedAvg())
    assert isinstance(built, DpFedAvg) and built.quantisation_slack == slack
    d, m, z, c = 50_000, 4, 2.0, 0.5
    dp = DpFedAvg(FedAvg(fraction_train=1.0), noise_multiplier=z, clip=c, expected_cohort=m,
                  noise=SeededGaussian(np.random.default_rng(0)), quantisation_slack=0.25)
    dp._current = ArrayRecord({"w": numpy_record({"w": np.zeros(d, np.float32)})["w"]})
    reply = instruction(RecordDict({UPDATE: numpy_record({"w": np.zeros(d, np.float32)}),
                                    METRICS: MetricRecord({UPDATE_WEIGHT: 1.0,
                                                           UNCLIPPED: 1.0})}),
                        dst_node_id=1, message_type="train")
    arrays, _ = dp.aggregate_train(1, [reply])
    sigma = z * (c + 0.25) / m
    assert dp.last_round.noise_std == pytest.approx(z * (c + 0.25))
    assert abs(arrays["w"].numpy().std() - sigma) < 6 * sigma / math.sqrt(2 * d)
