"""Secure aggregation through the real ServerApp logic and ClientApp, in-process."""

import numpy as np
import pytest

from fedpriv.config import ConfigError, RunConfig
from server.rundir import RunDirectory
from tests.server.test_dp_federation import run


def final_model(tmp_path, name, **overrides):
    path, summary = run(tmp_path / name, **overrides)
    return RunDirectory(path).load_model(), summary


@pytest.mark.parametrize("strategy", ["fedavg", "fedadam"])
def test_secure_sum_gives_the_plaintext_model_within_quantisation(tmp_path, strategy):
    base = {"rounds": 2, "clients": 5, "strategy": strategy, "reproducible": "true"}
    plain, _ = final_model(tmp_path, "plain", **base)
    secure, summary = final_model(tmp_path, "secure", secagg="true", **base)
    assert summary["secagg"]["enabled"] and summary["secagg"]["rounds_abandoned"] == 0
    worst = max(float(np.abs(plain[k] - secure[k]).max()) for k in plain)
    # Stochastic rounding: per coordinate at most one step (16 / 2^20) of the weighted
    # mean per round, amplified a little by the second round's training.
    assert worst < 1e-3
    assert any(float(np.abs(plain[k]).max()) > 1e-2 for k in plain)  # not a trivial model


def test_dropouts_are_recovered(tmp_path):
    _, summary = run(tmp_path / "r", secagg="true", rounds=3, clients=10,
                     **{"dropout-rate": 0.3})
    assert summary["status"] == "completed"
    assert summary["secagg"]["rounds_abandoned"] == 0
    assert sum(summary["secagg"]["dropouts_recovered"]) >= 1


def test_below_threshold_the_round_is_abandoned_and_the_model_kept(tmp_path):
    path, summary = run(tmp_path / "r", secagg="true", rounds=1, clients=6,
                        **{"dropout-rate": 0.95})
    assert summary["status"] == "completed"
    assert summary["secagg"]["rounds_abandoned"] == 1
    assert summary["final_accuracy"] == summary["initial_accuracy"]


def test_composes_with_user_level_dp(tmp_path):
    path, summary = run(tmp_path / "r", secagg="true", rounds=2, clients=5,
                        **{"dp-mode": "user", "clip": "adaptive"})
    assert summary["status"] == "completed" and summary["epsilon"]["federation"] > 0
    from fedpriv.audit import audit_run

    assert audit_run(path).ok


def test_dropout_rate_needs_secagg():
    with pytest.raises(ConfigError, match="dropout-rate: simulated dropouts need secagg"):
        RunConfig.from_mapping({"dropout-rate": "0.2"})
