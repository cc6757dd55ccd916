"""ema-decay: the run releases the moving average of its round models, and keeps it."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from bench.loopback import LoopbackGrid, task_identity
from client.app import app as client_app
from fedpriv.config import ConfigError, RunConfig
from server.federation import run_federation
from server.reporting import LogReporter
from server.rundir import RunDirectory
from server.strategy import FedPrivStrategy

VALUES = {"clients": 3, "local-epochs": 1, "partition": "iid", "model": "logreg",
          "ema-decay": 0.5}


def _aggregates(monkeypatch):
    """Every round's aggregate, as the strategy returns it to Flower's loop."""
    seen = []
    real = FedPrivStrategy.aggregate_train

    def recording(self, server_round, replies):
        arrays, metrics = real(self, server_round, replies)
        if arrays is not None:
            seen.append({k: np.array(v.numpy(), copy=True) for k, v in arrays.items()})
        return arrays, metrics
    monkeypatch.setattr(FedPrivStrategy, "aggregate_train", recording)
    return seen


def _run(run_dir, rounds, *, resume=False, **extra):
    cfg = RunConfig.from_mapping({**VALUES, **extra, "rounds": rounds,
                                  "run-dir": str(run_dir.path)}).resolved()
    nodes = {i + 1: {"partition-id": i, "num-partitions": cfg.training.clients}
             for i in range(cfg.training.clients)}
    if not resume:  # as `fedpriv simulate` does: a run directory names its config
        run_dir.write_config(cfg.to_flat(), scenario="t")
    with task_identity():
        return run_federation(LoopbackGrid(client_app, nodes), cfg, run_dir, scenario="t",
                              reporter=LogReporter(), resume=resume)


def _ema(models, beta):
    ema = None
    for m in models:
        ema = dict(m) if ema is None else {k: beta * ema[k] + (1 - beta) * m[k] for k in m}
    return ema


@pytest.mark.parametrize("dp", ["none", "user"])
def test_the_saved_model_is_the_moving_average_of_the_round_models(tmp_path, monkeypatch,
                                                                    dp):
    # Execute
    seen = _aggregates(monkeypatch)
    run_dir = RunDirectory(tmp_path / "run").create()
    summary = _run(run_dir, 3, **{"dp-mode": dp})
    # Assert: model.safetensors is the EMA of the three aggregates (from the first), the
    # checkpoint keeps the last aggregate to train on and the EMA beside it, and every
    # round reports the released (EMA) model and the last aggregate apart.
    assert summary["status"] == "completed" and len(seen) == 3
    want = _ema(seen, 0.5)
    saved = load_file(run_dir.path / RunDirectory.MODEL)
    for k in want:
        np.testing.assert_allclose(saved[k], want[k], rtol=1e-6, atol=1e-7)
    _, model, state, _ = run_dir.read_state(RunDirectory.STATE)
    for k in want:
        np.testing.assert_array_equal(model[k], seen[-1][k])
        np.testing.assert_allclose(state[f"ema/{k}"], want[k], rtol=1e-6, atol=1e-7)
    lines = [json.loads(x) for x in (run_dir.path / "metrics.jsonl").read_text().splitlines()]
    assert all("last_aggregate_test_accuracy" in x for x in lines)
    assert summary["final_accuracy"] == lines[-1]["test_accuracy"]
    assert not np.allclose(saved["weight"], seen[-1]["weight"])  # not the last aggregate


def test_a_resumed_run_continues_the_average_from_its_checkpoint(tmp_path, monkeypatch):
    seen = _aggregates(monkeypatch)
    run_dir = RunDirectory(tmp_path / "run").create()
    assert _run(run_dir, 2)["status"] == "completed"
    # Execute: the same run, extended to 3 rounds, resumed in a new server process
    summary = _run(RunDirectory(run_dir.path).reopen(), 3, resume=True)
    # Assert: round 3's release averages round 3's aggregate into rounds 1-2's EMA
    assert summary["status"] == "completed" and len(seen) == 3
    want = _ema(seen, 0.5)
    saved = load_file(run_dir.path / RunDirectory.MODEL)
    for k in want:
        np.testing.assert_allclose(saved[k], want[k], rtol=1e-6, atol=1e-7)


def test_ema_decay_off_releases_the_last_aggregate_and_bad_values_are_refused(
        tmp_path, monkeypatch):
    seen = _aggregates(monkeypatch)
    run_dir = RunDirectory(tmp_path / "run").create()
    _run(run_dir, 2, **{"ema-decay": 0.0})
    saved = load_file(run_dir.path / RunDirectory.MODEL)
    for k in saved:
        np.testing.assert_array_equal(saved[k], seen[-1][k])
    lines = (run_dir.path / "metrics.jsonl").read_text()
    assert "last_aggregate" not in lines
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match=r"ema-decay: must be in \[0, 1\)"):
            RunConfig.from_mapping({"ema-decay": bad})
