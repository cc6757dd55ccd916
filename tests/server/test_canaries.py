"""The empirical privacy estimate (Andrew et al. 2024) catches a mechanism that lies."""

import pytest

from fedpriv.audit import audit_run
from strategies.dp_fedavg import TEST_ONLY_NOISE_SCALE
from tests.server.test_privacy_guarantees import run

CANARY_RUN = {"dp-mode": "user", "noise-multiplier": 1.0, "rounds": 3,
              "clients-per-round": 4}


def test_correct_run_estimate_stays_below_the_claim(tmp_path):
    path, summary, _ = run(tmp_path, canaries=24, **CANARY_RUN)
    report = audit_run(path)
    assert report.ok, report.problems
    emp = report.empirical
    assert emp is not None and emp["canaries"] == 24
    claimed = summary["epsilon"]["federation"]
    assert 0 <= emp["epsilon_lower_95"] <= claimed
    # q = 1 and every canary in every round: the estimate sits near the tight bound
    assert emp["epsilon"] == pytest.approx(claimed, rel=0.35)


def test_planted_under_noising_is_flagged(tmp_path, monkeypatch):
    monkeypatch.setenv(TEST_ONLY_NOISE_SCALE, "0.1")  # 10x too little noise, same ledger
    path, summary, _ = run(tmp_path, canaries=24, **CANARY_RUN)
    report = audit_run(path)
    emp = report.empirical
    assert emp["epsilon_lower_95"] > 2 * summary["epsilon"]["federation"]
    assert not report.ok
    assert any("empirical privacy estimate" in p for p in report.problems)
