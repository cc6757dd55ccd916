"""Distributed DP end to end: real ServerApp logic, real ClientApp, in-process messages."""

import itertools
import json
import math

import numpy as np
import pytest

from bench.loopback import LoopbackGrid, task_identity
from fedpriv.audit import audit_run
from fedpriv.config import RunConfig
from fedpriv.ddp_plan import distributed_plan, model_dimension
from fedpriv.privacy import PrivacyLedger, epsilon
from fedpriv.privacy.discrete import centre_mod
from fedpriv.privacy.events import DistributedNoiseEvent
from fedpriv.secagg import unpack
from server.rundir import RunDirectory

# logistic regression on digits (650 parameters) keeps these runs to seconds
DDP = {"dp-mode": "distributed", "secagg": "true", "local-epochs": 1, "partition": "iid",
       "model": "logreg", "batch-size": 64, "lr": 0.1}


def run(tmp_path, **overrides):
    """One in-process run; returns (grid, summary, run directory path)."""
    from client.app import app as client_app
    from server.federation import run_federation
    from server.reporting import LogReporter

    values = {"rounds": 1, "clients": 4, **DDP, **overrides}
    run_dir = RunDirectory(tmp_path / "run").create()
    cfg = RunConfig.from_mapping({**values, "run-dir": str(run_dir.path),
                                  "run-id": "ddp-test"}).resolved()
    nodes = {i + 1: {"partition-id": i, "num-partitions": cfg.training.clients}
             for i in range(cfg.training.clients)}
    grid = LoopbackGrid(client_app, nodes)
    with task_identity():
        summary = run_federation(grid, cfg, run_dir, scenario="t", reporter=LogReporter())
    return grid, summary, run_dir.path, cfg


def events(path):
    with PrivacyLedger.open(path) as ledger:
        return ledger.events()


def test_a_distributed_run_learns_on_digits_and_its_audit_passes(tmp_path):
    # z = 0.05 (sum noise 0.05 C): a weak epsilon, chosen so 2 short rounds visibly learn
    grid, summary, path, cfg = run(tmp_path, rounds=2, **{"noise-multiplier": 0.05})
    assert summary["status"] == "completed"
    assert summary["final_accuracy"] > summary["initial_accuracy"] + 0.2
    ddp = summary["distributed_dp"]
    assert ddp["mechanism"] == "skellam-sum" and ddp["wrap_probability"] <= 1e-9
    assert ddp["survivors_by_round"] == [4, 4] and ddp["min_survivors"] == 3
    fed = events(path / "ledger.sqlite")
    assert [r for r, _ in fed] == [1, 2]
    assert all(isinstance(e, DistributedNoiseEvent) and e.clients == 4
               and e.sampling_rate == 1.0 and e.local_variance == ddp["local_variance"]
               for _, e in fed)
    for client in sorted((path / "clients").glob("*/ledger.sqlite")):
        own = events(client)  # each client accounts the fewest survivors it allows
        assert [e.clients for _, e in own] == [3, 3]
    assert summary["epsilon"]["accountant"] == "rdp"
    assert summary["epsilon"]["federation"] == pytest.approx(epsilon([e for _, e in fed],
                                                                     cfg.privacy.delta))
    report = audit_run(path)
    assert report.ok, report.problems
    scope = next(s for s in report.scopes if s.scope == "federation")
    assert scope.accountant == "rdp" and "Theorem 3.5" in scope.bounds[0]
    assert scope.epsilon_independent == pytest.approx(scope.epsilon_pld, rel=1e-9)


def _record(monkeypatch):
    """Record each client's encoding and noise share, and the server's unmasked sum."""
    from fedpriv.privacy.discrete import codec
    from fedpriv.secagg.server import ServerSecAgg

    seen = {"shares": [], "encodings": [], "totals": []}
    real_share, real_encode, real_finish = (codec.noise_share, codec.encode,
                                            ServerSecAgg.finish)

    def share(*args, **kwargs):
        z = real_share(*args, **kwargs)
        seen["shares"].append(z.copy())
        return z

    def encode(*args, **kwargs):
        x = real_encode(*args, **kwargs)
        seen["encodings"].append(x.copy())
        return x

    def finish(self):
        total, survivors = real_finish(self)
        seen["totals"].append(total.copy())
        return total, survivors

    monkeypatch.setattr(codec, "noise_share", share)
    monkeypatch.setattr(codec, "encode", encode)  # what client.secagg calls
    monkeypatch.setattr(ServerSecAgg, "finish", finish)
    return seen


@pytest.mark.parametrize("noise", ["on", "off"])
def test_the_server_never_holds_an_unnoised_aggregate(tmp_path, monkeypatch, noise):
    # Prepare: record what each client encoded (its noise share apart) and the only
    # aggregate the server ever forms, the unmasked sum. "off" plants the bug this test
    # exists to catch (clients that add no noise) through the test-only knob.
    from fedpriv.messages import MASKED
    from strategies.dp_fedavg import TEST_ONLY_NOISE_SCALE

    if noise == "off":
        monkeypatch.setenv(TEST_ONLY_NOISE_SCALE, "0")
    seen = _record(monkeypatch)
    # Execute
    grid, summary, path, cfg = run(tmp_path)
    # Assert: the server received masked vectors only, and unmasked one sum
    assert summary["status"] == "completed"
    train = [m for m in grid.received if m.metadata.message_type == "train"]
    assert len(train) == 4
    assert all(set(m.content.array_records) == {MASKED} for m in train)
    plan = distributed_plan(cfg, model_dimension(cfg))
    bits, dp, n = plan.params.bits, plan.params.padded_dimension, 4
    [total] = seen["totals"]
    assert len(seen["encodings"]) == len(seen["shares"]) == n
    mask = np.uint64((1 << bits) - 1)
    noised = [x[:dp] for x in seen["encodings"]]  # (d',) each: encoding + share mod 2^b
    clean = [(x - z.astype(np.uint64)) & mask for x, z in zip(noised, seen["shares"],
                                                             strict=True)]
    sent = [unpack(m.content[MASKED]["y"].numpy(), bits, dp + 3) for m in train]
    for x in seen["encodings"]:  # what a masked vector hides: not what was sent
        assert not any(np.array_equal(x, y) for y in sent)
    # the secure sum is exact: the unmasked total is the sum of the noised encodings
    np.testing.assert_array_equal(total[:dp], np.sum(noised, axis=0, dtype=np.uint64) & mask)
    # ... and differs from the sum of every subset of noise-free encodings by the noise
    matches = {}
    for size in range(1, n + 1):
        for subset in itertools.combinations(range(n), size):
            partial = np.sum([clean[i] for i in subset], axis=0, dtype=np.uint64) & mask
            gap = centre_mod((total[:dp] - partial) & mask, bits)  # (d',)
            matches[subset] = float(np.mean(gap == 0))
    if noise == "off":
        assert matches[tuple(range(n))] == 1.0  # the un-noised sum itself: caught
        return
    assert max(matches.values()) < 0.05  # sum noise std sqrt(4 V) ~ 59: P[0] ~ 0.7 %
    gap = centre_mod((total[:dp] - np.sum(clean, axis=0, dtype=np.uint64)) & mask, bits)
    std = math.sqrt(n * plan.params.local_variance)
    assert abs(gap.std() - std) < 6 * std / math.sqrt(2 * dp)  # the n shares, in full


def test_dropouts_are_recorded_as_fewer_shares_and_a_larger_epsilon(tmp_path):
    # Seeded dropouts (dropout-rate, seed 0): some of the 6 clients vanish after sharing
    # keys; the rounds complete with the survivors and the ledger says how many shares
    # the noise had.
    grid, summary, path, cfg = run(tmp_path, rounds=2, clients=6,
                                   **{"dropout-rate": 0.3, "noise-multiplier": 0.5})
    assert summary["status"] == "completed"
    survivors = summary["distributed_dp"]["survivors_by_round"]
    fed = [e for _, e in events(path / "ledger.sqlite")]
    assert [e.clients for e in fed] == survivors
    assert min(survivors) < 6 and min(survivors) >= summary["distributed_dp"]["min_survivors"]
    plan = distributed_plan(cfg, model_dimension(cfg))
    full = epsilon([plan.event(6)] * len(fed), cfg.privacy.delta)
    assert summary["epsilon"]["federation"] > full  # less noise than a full cohort's
    fewest = epsilon([plan.event(plan.min_clients)] * len(fed), cfg.privacy.delta)
    assert summary["epsilon"]["federation"] <= fewest  # never past what was planned
    assert audit_run(path).ok


def test_summary_and_metrics_name_the_parameters(tmp_path):
    _, summary, path, _ = run(tmp_path, **{"ddp-mechanism": "ddg", "ddp-bits": 24,
                                           "target-epsilon": 5.0})
    ddp = summary["distributed_dp"]
    assert ddp["mechanism"] == "ddg-sum" and ddp["bits"] == 24 and not ddp["bits_auto"]
    assert ddp["scale_gamma"] > 0 and ddp["local_variance"] > 0
    assert summary["privacy_plan"]["epsilon"] <= 5.0
    assert summary["epsilon"]["federation"] <= 5.0  # 4 survivors: less than planned for 3
    line = json.loads((path / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["noise_shares"] == 4 and line["secagg"]["modulus_bits"] == 24
    # what each client's masked vector costs: the padded rotation plus three meta slots
    assert summary["secagg"]["modulus_bits"] == 24
    assert summary["secagg"]["coordinates"] == ddp["padded_dimension"] + 3
    assert summary["secagg"]["model_parameters"] == ddp["dimension"]


def test_the_budget_is_checked_before_each_round_against_the_fewest_survivors(tmp_path):
    # Prepare: a budget that two rounds of 4 shares plus one of the planned worst case
    # (3 shares) just exceed, so the server must stop before round 3.
    base = RunConfig.from_mapping({"clients": 4, **DDP}).resolved()
    plan = distributed_plan(base, model_dimension(base))
    budget = epsilon([plan.event(4)] * 2 + [plan.event(3)], base.privacy.delta) - 1e-6
    # Execute
    _, summary, path, _ = run(tmp_path, rounds=4, **{"max-epsilon": budget})
    # Assert
    assert summary["status"] == "stopped" and "round 3 would raise" in summary["reason"]
    assert summary["rounds"] == 2 and summary["epsilon"]["federation"] <= budget
    assert audit_run(path).ok


def test_a_client_refuses_a_plan_other_than_the_one_it_derives(tmp_path, monkeypatch):
    # Prepare: the server's first secure-aggregation message to node 1 names another
    # distributed-DP plan (a server on another version, or one that wants less noise).
    from flwr.app import ConfigRecord, RecordDict

    from bench import loopback as grid_mod
    from fedpriv.messages import SECAGG, SECAGG_ADVERTISE

    real = grid_mod.delivered

    def tamper(msg):
        out = real(msg)
        if out.metadata.message_type == SECAGG_ADVERTISE and out.metadata.dst_node_id == 1:
            rec = {**dict(out.content[SECAGG]), "ddp_plan": "0" * 64}
            out.content = RecordDict({**dict(out.content), SECAGG: ConfigRecord(rec)})
        return out

    monkeypatch.setattr(grid_mod, "delivered", tamper)
    # Execute
    grid, summary, path, _ = run(tmp_path)
    # Assert: node 1 refused before using its data (no ledger entry); the other three's
    # round went on, and the ledgers record three shares.
    refused = [r for r in grid.received if r.has_error()]
    assert len(refused) == 1 and "distributed-DP plan (000000000000)" in refused[0].error.reason
    assert summary["status"] == "completed"
    assert summary["distributed_dp"]["survivors_by_round"] == [3]
    assert [e.clients for _, e in events(path / "ledger.sqlite")] == [3]
    assert audit_run(path).ok


def test_a_client_that_charged_then_dropped_is_not_taken_for_a_rewritten_ledger(tmp_path):
    # Red-team F-D: a client that vanishes at stage 3 has already charged its ledger, and
    # the server never sees that head: the audit called the honest run's ledger
    # rewritten. The client keeps its own signed head beside its ledger.
    from pathlib import Path

    _, summary, path, _ = run(tmp_path, rounds=3, clients=6,
                              **{"noise-multiplier": 0.5, "dropout-rate": 0.6})
    report = audit_run(path)
    assert report.ok, report.problems
    unreported = [w for w in report.warnings if "was not reported to the server" in w]
    assert unreported
    ledger = Path(unreported[0].split(":")[0])
    # the kept head proves only the ledger it was signed for: a charge removed (the
    # ledger rewritten after the head) or the file gone, and the audit fails
    kept = ledger.with_name(ledger.name + ".head.json")
    record = json.loads(kept.read_text())
    kept.write_text(json.dumps({**record, "signature": "00" * 64}))
    assert not audit_run(path).ok
    kept.unlink()
    assert not audit_run(path).ok
