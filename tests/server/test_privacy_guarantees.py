"""Every reported epsilon holds: adaptive clipping, budgets, calibration, no leaks.

These drive the real ServerApp logic and ClientApp in-process (bench.loopback) and
check the run's ledgers and files against computations that share no code with fedpriv's
own accounting (Microsoft's prv-accountant, Andrew et al. 2021's Theorem 1 by hand).
"""

import json
import math

import numpy as np
import pytest
from flwr.app import ArrayRecord
from prv_accountant import GaussianMechanism, PRVAccountant

from bench.loopback import LoopbackGrid, task_identity
from client.app import app as client_app
from fedpriv.audit import audit_run
from fedpriv.config import RunConfig
from fedpriv.messages import METRICS, NUM_EXAMPLES, TRAIN_LOSS, UNCLIPPED, UPDATE_WEIGHT
from fedpriv.privacy import PrivacyLedger, SeededGaussian
from server.federation import run_federation
from server.reporting import LogReporter
from server.rundir import RunDirectory
from strategies.dp_fedavg import DpFedAvg
from strategies.factory import build_strategy


def run(tmp_path, canaries=0, **overrides):
    values = {"rounds": 2, "clients": 4, "local-epochs": 1, "partition": "iid",
              "canaries": canaries, **overrides}
    run_dir = RunDirectory(tmp_path / "run").create()
    cfg = RunConfig.from_mapping({**values, "run-dir": str(run_dir.path)}).resolved()
    n = cfg.training.clients + canaries
    nodes = {i + 1: {"partition-id": i, "num-partitions": n} for i in range(n)}
    grid = LoopbackGrid(client_app, nodes)
    with task_identity():
        summary = run_federation(grid, cfg, run_dir, scenario="t", reporter=LogReporter())
    return run_dir.path, summary, grid


def prv_gaussian_epsilon(z, rounds, delta=1e-5):
    acc = PRVAccountant(prvs=[GaussianMechanism(noise_multiplier=z)],
                        max_self_compositions=[rounds], eps_error=1e-3, delta_error=1e-10)
    return acc.compute_epsilon(delta=delta, num_self_compositions=[rounds])[1]


# Andrew et al. 2021, Theorem 1, by hand: z = 1 and sigma_b in {2 (the default for a
# cohort of 4: max(m/20, 2z)), 0.6}. Update noise z_Delta = (z^-2 - (2 sigma_b)^-2)^-1/2.
PINNED = [(None, 2.0, 1.0327955589886444), (0.6, 0.6, 1.8090680674665818)]


@pytest.mark.parametrize(("stddev", "sigma_b", "z_delta"), PINNED)
def test_adaptive_clipping_ledger_and_epsilon_match_theorem_1(tmp_path, stddev, sigma_b,
                                                              z_delta):
    extra = {} if stddev is None else {"clip-count-stddev": stddev}
    path, summary, _ = run(tmp_path, **{"dp-mode": "user", "clip": "adaptive",
                                        "noise-multiplier": 1.0, "rounds": 3, **extra})
    with PrivacyLedger.open(path / "ledger.sqlite") as led:
        events = [e for _, e in led.events()]
    assert len(events) == 3
    for ev in events:
        assert ev.count_stddev == pytest.approx(sigma_b, rel=1e-12)
        assert ev.update_noise_multiplier == pytest.approx(z_delta, rel=1e-9)
        combined = (z_delta ** -2 + (2 * sigma_b) ** -2) ** -0.5
        assert ev.noise_multiplier == pytest.approx(combined, rel=1e-9)
        assert ev.noise_multiplier == pytest.approx(1.0, rel=1e-9)
    # q = 1: three Gaussian mechanisms with the combined z, by an independent accountant
    assert summary["epsilon"]["federation"] == pytest.approx(
        prv_gaussian_epsilon(1.0, 3), rel=0.01)
    assert audit_run(path).ok


@pytest.mark.parametrize(("sigma_b", "z_delta"), [(2.0, 1.0327955589886444),
                                                  (0.6, 1.8090680674665818)])
def test_the_noise_actually_added_is_z_delta_times_c(sigma_b, z_delta):
    # A noise-only round (nobody sampled): the model moves by N(0, (z_Delta C)^2) / m.
    from fedpriv.privacy import AdaptiveClip

    cfg = RunConfig.from_mapping({"clients": 4, "dp-mode": "user"})
    inner = build_strategy(cfg)
    clip = AdaptiveClip(clip=0.5, target_quantile=0.5, learning_rate=0.2,
                        count_stddev=sigma_b)
    dp = DpFedAvg(inner, noise_multiplier=1.0, clip=clip, expected_cohort=4.0,
                  noise=SeededGaussian(np.random.default_rng(0)))
    zeros = {"w": np.zeros((400, 500), dtype=np.float32)}
    dp._current = ArrayRecord({k: __import__("flwr").app.Array(v) for k, v in zeros.items()})
    arrays, _ = dp.aggregate_train(1, [])
    moved = arrays["w"].numpy().astype(np.float64) * 4.0 / 0.5  # (400, 500)
    n = moved.size
    assert np.std(moved) == pytest.approx(z_delta, abs=6 * z_delta / math.sqrt(2 * n))
    assert dp.last_round.update_noise_multiplier == pytest.approx(z_delta)


@pytest.mark.parametrize("mode", ["record", "user"])
def test_budget_is_checked_before_round_1_and_stopping_is_normal(tmp_path, mode):
    path, summary, _ = run(tmp_path, **{"dp-mode": mode, "noise-multiplier": 0.8,
                                        "max-epsilon": 1.0, "rounds": 20})
    assert summary["status"] == "stopped"
    assert "max-epsilon 1" in summary["reason"]
    report = audit_run(path)
    assert report.ok, report.problems
    assert all((s.epsilon_pld or 0.0) <= 1.0 for s in report.scopes)
    assert summary["epsilon"]["federation"] <= 1.0


def test_user_level_target_epsilon_is_met_from_below(tmp_path):
    path, summary, _ = run(tmp_path, **{"dp-mode": "user", "target-epsilon": 2.0,
                                        "rounds": 3, "clients-per-round": 2})
    assert summary["status"] == "completed"
    assert 1.9 <= summary["epsilon"]["federation"] <= 2.0
    assert audit_run(path).ok


def test_user_level_server_sees_no_per_client_loss_or_count(tmp_path):
    path, _, grid = run(tmp_path, **{"dp-mode": "user"})
    train = [m for m in grid.received if m.metadata.message_type == "train"]
    assert train
    for reply in train:
        metrics = dict(reply.content[METRICS])
        assert set(metrics) <= {UPDATE_WEIGHT, UNCLIPPED}
        assert metrics[UPDATE_WEIGHT] == 1.0
    for line in (path / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert record["train_loss"] is None
    text = "\n".join(p.read_text(errors="ignore") for p in path.glob("*.json*"))
    assert NUM_EXAMPLES not in text and TRAIN_LOSS not in text


@pytest.mark.parametrize("mode", ["user", "record"])
def test_secure_aggregation_server_sees_no_per_client_loss_or_count(tmp_path, mode):
    # Under secure aggregation the server receives only masked vectors; under DP not
    # even the summed training loss (an unnoised function of the data) is reported.
    from fedpriv.messages import MASKED

    path, summary, grid = run(tmp_path, **{"dp-mode": mode, "secagg": "true",
                                           "clients": 5})
    assert summary["status"] == "completed"
    train = [m for m in grid.received
             if m.metadata.message_type == "train" and not m.has_error()]
    assert train
    for reply in train:
        assert set(reply.content.array_records) == {MASKED}
        assert dict(reply.content[METRICS]) == {}
    for line in (path / "metrics.jsonl").read_text().splitlines():
        assert json.loads(line)["train_loss"] is None
