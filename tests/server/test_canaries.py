"""The empirical privacy estimate (Andrew et al. 2024) catches a mechanism that lies."""


from fedpriv.audit import audit_run
from strategies.dp_fedavg import TEST_ONLY_NOISE_SCALE
from tests.server.test_privacy_guarantees import run

CANARY_RUN = {"dp-mode": "user", "noise-multiplier": 1.0, "rounds": 3,
              "clients-per-round": 4}


def test_correct_run_estimate_stays_below_the_claim(tmp_path):
    path, summary, _ = run(tmp_path, canaries=32, **CANARY_RUN)
    report = audit_run(path)
    assert report.ok, report.problems
    emp = report.empirical
    assert emp is not None and emp["canaries"] == 32
    claimed = summary["epsilon"]["federation"]
    assert 0 <= emp["epsilon_lower"] <= claimed
    # q = 1 and every canary in every round: the estimate sits near the tight bound (it
    # is not trivially small, which would make the check below meaningless)
    assert emp["epsilon"] > 0.4 * claimed


def test_planted_under_noising_is_flagged(tmp_path, monkeypatch):
    monkeypatch.setenv(TEST_ONLY_NOISE_SCALE, "0.1")  # 10x too little noise, same ledger
    path, summary, _ = run(tmp_path, canaries=32, **CANARY_RUN)
    report = audit_run(path)
    emp = report.empirical
    assert emp["epsilon_lower"] > 2 * summary["epsilon"]["federation"]
    assert not report.ok
    assert any("empirical privacy estimate" in p for p in report.problems)
