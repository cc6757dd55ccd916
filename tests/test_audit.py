import json
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
               "client_ledger_heads": heads}
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
