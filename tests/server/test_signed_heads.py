"""A ledger rewritten end to end, its new head copied everywhere, still fails the audit."""

import json
import shutil
import sqlite3

import pytest

from fedpriv.audit import audit_run
from fedpriv.privacy import PrivacyLedger
from fedpriv.privacy.ledger import LedgerEntry
from tests.server.test_privacy_guarantees import run


def forge(path, seq, field, value):
    """Change one entry's params and re-hash every entry from it on (a full forgery)."""
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT seq, run_id, round, scope, mechanism, params, created, "
                        "prev_hash, hash FROM entries ORDER BY seq").fetchall()
    prev = None
    for row in rows:
        entry = LedgerEntry(seq=row[0], run_id=row[1], round=row[2], scope=row[3],
                            mechanism=row[4], params=row[5], created=row[6],
                            prev_hash=row[7], hash=row[8])
        params = json.loads(entry.params)
        if entry.seq == seq:
            params[field] = value
        entry = LedgerEntry(**{**{f: getattr(entry, f) for f in entry.__slots__},
                               "params": json.dumps(params, sort_keys=True,
                                                    separators=(",", ":")),
                               "prev_hash": prev if prev is not None else entry.prev_hash})
        digest = entry.expected_hash()
        conn.execute("UPDATE entries SET params=?, prev_hash=?, hash=? WHERE seq=?",
                     (entry.params, entry.prev_hash, digest, entry.seq))
        prev = digest
    conn.commit()
    conn.close()
    return rows[-1][0], prev


@pytest.fixture(scope="module")
def signed_run(tmp_path_factory):
    path, summary, _ = run(tmp_path_factory.mktemp("signed"),
                           **{"dp-mode": "user", "rounds": 2})
    return path, summary


def copy_of(signed_run, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(signed_run[0], path)
    return path


def test_an_honest_run_verifies_and_pinning_its_key_passes(signed_run, tmp_path):
    path = copy_of(signed_run, tmp_path)
    summary = json.loads((path / "summary.json").read_text())
    report = audit_run(path, server_key=summary["server_key_fingerprint"])
    assert report.ok, report.problems
    assert summary["client_ledger_signatures"]  # every client signed its head
    with PrivacyLedger.open(path / "ledger.sqlite") as led:
        assert led.signer is not None


def test_a_wrong_pin_fails(signed_run, tmp_path):
    path = copy_of(signed_run, tmp_path)
    report = audit_run(path, server_key="0" * 16)
    assert any("not the pinned" in p for p in report.problems)


def test_a_fully_rehashed_federation_ledger_with_its_head_copied_fails(signed_run,
                                                                       tmp_path):
    path = copy_of(signed_run, tmp_path)
    # Claim twice the noise in round 1: a smaller epsilon; rewrite the chain from there.
    seq, digest = forge(path / "ledger.sqlite", 2, "noise_multiplier", 2.0)
    summary = json.loads((path / "summary.json").read_text())
    summary["ledger_head"] = {"seq": seq, "hash": digest}
    with PrivacyLedger.open(path / "ledger.sqlite") as led:
        from fedpriv.privacy import epsilon

        summary["epsilon"]["federation"] = epsilon([e for _, e in led.events()], 1e-5)
    (path / "summary.json").write_text(json.dumps(summary))
    report = audit_run(path)
    assert not report.ok
    assert any("no valid signature of the run's key" in p for p in report.problems)


def test_a_fully_rehashed_client_ledger_with_its_head_copied_fails(signed_run, tmp_path):
    path = copy_of(signed_run, tmp_path)
    client = sorted(p.parent.name for p in (path / "clients").glob("*/ledger.sqlite"))[0]
    seq, digest = forge(path / "clients" / client / "ledger.sqlite", 2,
                        "noise_multiplier", 3.0)
    summary = json.loads((path / "summary.json").read_text())
    summary["client_ledger_heads"][client] = f"{seq}:{digest}"
    (path / "summary.json").write_text(json.dumps(summary))
    report = audit_run(path)
    assert any(f"no valid signature of {client}'s key" in p for p in report.problems)


def test_a_ledger_cut_back_to_a_checkpoints_signed_head_fails(tmp_path, monkeypatch):
    # Red-team F1: every checkpoint keeps the run key's signature of that round's head.
    # Cutting the federation ledger back to round 1's head, pasting that signature into
    # summary.json and recomputing epsilon must not pass for a finished run, even with the
    # key pinned: only the run's final signature (head + status + rounds) is accepted.
    from fedpriv.privacy import epsilon
    from server.privacy import FederationPrivacy

    heads = []
    original = FederationPrivacy.signed_head

    def keep(self):
        signed = original(self)
        heads.append(signed)
        return signed

    monkeypatch.setattr(FederationPrivacy, "signed_head", keep)
    path, summary, _ = run(tmp_path, **{"dp-mode": "user", "rounds": 3})
    pin = summary["server_key_fingerprint"]
    assert audit_run(path, server_key=pin).ok
    early = heads[1]  # round 1's checkpoint (heads[0]: round 0's)
    seq = early["ledger_head"]["seq"]
    conn = sqlite3.connect(path / "ledger.sqlite")
    conn.execute("DELETE FROM entries WHERE seq > ?", (seq,))
    conn.commit()
    conn.close()
    with PrivacyLedger.open(path / "ledger.sqlite") as led:
        assert led.head() == (seq, early["ledger_head"]["hash"]) and led.verify().ok
        cut_eps = epsilon([e for _, e in led.events()], led.delta)
    forged = {**summary, "ledger_head": early["ledger_head"],
              "ledger_head_signature": early["signature"], "rounds": 1,
              "epsilon": {**summary["epsilon"], "federation": cut_eps}}
    (path / "summary.json").write_text(json.dumps(forged))
    report = audit_run(path, server_key=pin)
    assert not report.ok
    assert any("signed only as a checkpoint" in p for p in report.problems), report.problems


def test_a_summary_whose_ending_was_edited_fails(signed_run, tmp_path):
    # The final signature covers how the run ended: a summary claiming fewer rounds (or
    # another status) than the run key signed no longer verifies.
    path = copy_of(signed_run, tmp_path)
    summary = json.loads((path / "summary.json").read_text())
    assert audit_run(path).ok
    (path / "summary.json").write_text(json.dumps({**summary, "rounds": summary["rounds"] - 1}))
    report = audit_run(path)
    assert any("no valid signature of the run's key for summary.json's status" in p
               for p in report.problems), report.problems
