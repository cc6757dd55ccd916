import json
import math
import sqlite3

from typer.testing import CliRunner

from fedpriv.audit import audit_run
from fedpriv.cli import app
from fedpriv.privacy import GaussianSumEvent, PrivacyLedger, epsilon

EV = GaussianSumEvent(noise_multiplier=1.0, sampling_rate=0.5, clip=1.0)
CLIENT_EV = GaussianSumEvent(noise_multiplier=1.0, sampling_rate=1.0, clip=1.0)


def make_run(root, *, client_budget=100.0, rounds=3):
    root.mkdir()
    with PrivacyLedger.create(root / "ledger.sqlite", run_id="r", scope="federation",
                              delta=1e-5, max_epsilon=50.0) as fed:
        for r in range(1, rounds + 1):
            fed.append(r, EV)
        fed_head = fed.head()
    heads = {}
    for c in ("client-0", "client-1"):
        with PrivacyLedger.create(root / "clients" / c / "ledger.sqlite", run_id="r",
                                  scope=c, delta=1e-5, max_epsilon=client_budget) as led:
            for r in range(1, rounds + 1):
                led.append(r, CLIENT_EV)
            seq, digest = led.head()
            heads[c] = f"{seq}:{digest}"
    summary = {"epsilon": {"federation": epsilon([EV] * rounds, 1e-5), "delta": 1e-5},
               "ledger_head": {"seq": fed_head[0], "hash": fed_head[1]},
               "client_ledger_heads": heads, "status": "completed",
               "client_ledgers_in_run_dir": sorted(heads)}
    (root / "summary.json").write_text(json.dumps(summary))
    return root


def test_clean_run_passes_and_writes_its_reports(tmp_path):
    run = make_run(tmp_path / "run")
    result = CliRunner().invoke(app, ["audit", str(run)])
    assert result.exit_code == 0, result.output
    assert "audit passed" in result.output
    data = json.loads((run / "audit.json").read_text())
    assert data["ok"] and len(data["scopes"]) == 3
    fed = next(s for s in data["scopes"] if s["scope"] == "federation")
    assert fed["epsilon_pld"] <= fed["epsilon_rdp"] and fed["rounds"] == 3
    assert (run / "audit.md").read_text().startswith("# Privacy audit")
    assert (run / "audit.png").read_bytes()[:4] == b"\x89PNG"


def test_tampered_entry_fails_naming_it(tmp_path):
    run = make_run(tmp_path / "run")
    conn = sqlite3.connect(run / "clients" / "client-1" / "ledger.sqlite")
    conn.execute("UPDATE entries SET params = replace(params, '1.0', '0.9') WHERE seq = 3")
    conn.commit()
    conn.close()
    result = CliRunner().invoke(app, ["audit", str(run)])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "client-1" in text and "entry 3" in text


def test_deleted_last_client_entry_is_caught_by_its_reported_head(tmp_path):
    run = make_run(tmp_path / "run")
    conn = sqlite3.connect(run / "clients" / "client-0" / "ledger.sqlite")
    conn.execute("DELETE FROM entries WHERE seq = 4")
    conn.commit()
    conn.close()
    report = audit_run(run)
    assert not report.ok and any("client-0" in p and "head" in p for p in report.problems)


def test_exceeded_budget_fails(tmp_path):
    run = make_run(tmp_path / "run", client_budget=2.0)
    report = audit_run(run)
    assert not report.ok
    assert any("client-0" in p and "budget" in p for p in report.problems)


def test_misreported_epsilon_fails(tmp_path):
    run = make_run(tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    summary["epsilon"]["federation"] = 0.5
    (run / "summary.json").write_text(json.dumps(summary))
    report = audit_run(run)
    assert not report.ok and any("reports federation epsilon" in p for p in report.problems)


def test_json_output_and_bad_directory(tmp_path):
    run = make_run(tmp_path / "run")
    result = CliRunner().invoke(app, ["audit", str(run), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["ok"] is True
    missing = CliRunner().invoke(app, ["audit", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "is not a directory" in " ".join(missing.output.split())


def test_audit_names_both_accountants_and_they_agree(tmp_path):
    run = make_run(tmp_path / "run")
    result = CliRunner().invoke(app, ["audit", str(run)])
    assert result.exit_code == 0, result.output
    assert "dp-accounting PLD" in result.output and "prv-accountant PRV" in result.output
    report = audit_run(run)
    for s in report.scopes:
        assert abs(s.epsilon_pld - s.epsilon_prv) <= 0.01 * s.epsilon_prv
    assert set(report.to_json()["accountants"]) == {"pld", "prv", "rdp"}


def test_a_primary_accountant_that_under_reports_is_caught(tmp_path, monkeypatch):
    # A bug in the reporting accountant (here: 3 % low) must not pass the audit: the
    # independent PRV recomputation disagrees by more than 1 %.
    import fedpriv.audit as audit_mod

    run = make_run(tmp_path / "run")
    real = audit_mod.epsilon
    monkeypatch.setattr(audit_mod, "epsilon", lambda *a, **k: 0.97 * real(*a, **k))
    report = audit_run(run)
    assert not report.ok
    assert any("accountants disagree" in p for p in report.problems)


def test_a_reported_epsilon_off_the_independent_one_fails(tmp_path):
    run = make_run(tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    summary["epsilon"]["federation"] *= 0.98
    (run / "summary.json").write_text(json.dumps(summary))
    problems = audit_run(run).problems
    assert any("independent PRV accountant" in p for p in problems)


def test_a_reproducible_run_is_flagged(tmp_path):
    run = make_run(tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    summary["reproducible"] = True
    (run / "summary.json").write_text(json.dumps(summary))
    report = audit_run(run)
    assert report.ok
    assert any("seed is secret" in w for w in report.warnings)
    result = CliRunner().invoke(app, ["audit", str(run)])
    assert "seed is secret" in result.output


def test_a_forged_adaptive_z_is_caught(tmp_path):
    # A ledger entry claiming z = 2 while its recorded noise parts give z = 1 cannot be
    # written through the event class; the audit also recomputes it from the parts.
    from fedpriv.audit import _check_theorem1

    ev = GaussianSumEvent(noise_multiplier=1.0, sampling_rate=1.0, clip=1.0,
                          update_noise_multiplier=1.0327955589886444, count_stddev=2.0)
    forged = object.__new__(GaussianSumEvent)
    for name in ("sampling_rate", "clip", "rounds", "update_noise_multiplier",
                 "count_stddev"):
        object.__setattr__(forged, name, getattr(ev, name))
    object.__setattr__(forged, "noise_multiplier", 2.0)
    problems = []
    _check_theorem1(tmp_path, "federation", [(1, ev), (2, forged)], problems)
    assert len(problems) == 1 and "round 2" in problems[0] and "Theorem 1" in problems[0]


def _fails_with(run, text):
    result = CliRunner().invoke(app, ["audit", str(run)])
    assert result.exit_code == 1, result.output
    assert text in result.output
    assert "Traceback" not in result.output


def test_a_deleted_client_ledger_fails(tmp_path):
    import shutil

    run = make_run(tmp_path / "run")
    shutil.rmtree(run / "clients" / "client-1")
    _fails_with(run, "client-1/ledger.sqlite is missing")


def test_a_corrupt_or_missing_summary_fails_without_a_traceback(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "summary.json").write_text('{"epsilon": {"federation": 1.0, ')
    _fails_with(run, "is unreadable or malformed")
    (run / "summary.json").write_text('{"epsilon": 3}')
    _fails_with(run, "is unreadable or malformed")
    (run / "summary.json").unlink()
    _fails_with(run, "the run did not finish")


def test_an_unfinished_run_fails(tmp_path):
    run = make_run(tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    summary["status"] = "failed"
    (run / "summary.json").write_text(json.dumps(summary))
    _fails_with(run, "the run did not finish")


def _share(variance=5e6, clients=3):
    from fedpriv.privacy.events import DistributedNoiseEvent, Mechanism

    return DistributedNoiseEvent(mechanism=Mechanism.SKELLAM_SUM, l1_sensitivity=3.5e4,
                                 l2_sensitivity=1100.0, local_variance=variance,
                                 clients=clients, dimension=1024, sampling_rate=1.0,
                                 bits=20)


def make_distributed_run(root, *, claimed_variance=5e6, claimed_clients=3, rounds=2):
    """A distributed-DP run directory: 3 clients each recording the share it added."""
    root.mkdir()
    fed_ev = _share(claimed_variance, claimed_clients)
    with PrivacyLedger.create(root / "ledger.sqlite", run_id="r", scope="federation",
                              delta=1e-5, max_epsilon=math.inf) as fed:
        for r in range(1, rounds + 1):
            fed.append(r, fed_ev)
        fed_head = fed.head()
    heads = {}
    for c in ("client-0", "client-1", "client-2"):
        with PrivacyLedger.create(root / "clients" / c / "ledger.sqlite", run_id="r",
                                  scope=c, delta=1e-5, max_epsilon=math.inf) as led:
            for r in range(1, rounds + 1):
                led.append(r, _share())
            seq, digest = led.head()
            heads[c] = f"{seq}:{digest}"
    summary = {"epsilon": {"federation": epsilon([fed_ev] * rounds, 1e-5), "delta": 1e-5},
               "ledger_head": {"seq": fed_head[0], "hash": fed_head[1]},
               "client_ledger_heads": heads, "status": "completed",
               "client_ledgers_in_run_dir": sorted(heads),
               "distributed_dp": {"mechanism": "skellam-sum", "local_variance": 5e6,
                                  "l2_sensitivity": 1100.0, "bits": 20}}
    (root / "summary.json").write_text(json.dumps(summary))
    return root


def test_distributed_run_passes_and_names_mechanism_and_bound(tmp_path):
    run = make_distributed_run(tmp_path / "run")
    result = CliRunner().invoke(app, ["audit", str(run)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "audit passed" in text and "skellam-sum" in text
    assert "Agarwal, Kairouz & Liu 2021 (NeurIPS, arXiv:2110.04995), Theorem 3.5" in text
    data = json.loads((run / "audit.json").read_text())
    fed = next(s for s in data["scopes"] if s["scope"] == "federation")
    assert fed["accountant"] == "rdp" and fed["epsilon_prv"] is None
    assert abs(fed["epsilon_independent"] - fed["epsilon_pld"]) < 1e-9 * fed["epsilon_pld"]
    assert "Theorem 3.5" in (run / "audit.md").read_text()


def test_a_federation_ledger_claiming_more_noise_than_the_clients_added_fails(tmp_path):
    # The server records twice the noise the clients say they added (and reports the
    # smaller epsilon that follows): the chain and the epsilon are consistent, the
    # noise is not.
    run = make_distributed_run(tmp_path / "run", claimed_variance=1e7)
    report = audit_run(run)
    assert not report.ok
    assert any("local_variance 10000000.0 (the clients: 5000000.0)" in p
               and "not the noise client-0 says it added" in p for p in report.problems)
    assert any("not the run's distributed-DP plan" in p for p in report.problems)


def test_a_federation_ledger_claiming_more_shares_than_clients_charged_fails(tmp_path):
    run = make_distributed_run(tmp_path / "run", claimed_clients=5)
    report = audit_run(run)
    assert any("records the shares of 5 clients, but only 3 client ledger(s) charged it"
               in p for p in report.problems)


def test_the_reported_epsilon_is_checked_against_the_independent_recomputation(tmp_path):
    run = make_distributed_run(tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    summary["epsilon"]["federation"] *= 0.9  # a run that under-reports
    (run / "summary.json").write_text(json.dumps(summary))
    report = audit_run(run)
    assert any("audit's independent distributed-DP accountant gives" in p
               for p in report.problems)
