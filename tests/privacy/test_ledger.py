import math
import sqlite3

import pytest

from fedpriv.privacy import DpSgdEvent, GaussianSumEvent, LedgerError, PrivacyLedger

EV = GaussianSumEvent(noise_multiplier=1.0, sampling_rate=0.1, clip=1.0)


@pytest.fixture
def ledger(tmp_path):
    led = PrivacyLedger.create(tmp_path / "l.sqlite", run_id="run-1", scope="federation",
                               delta=1e-5, max_epsilon=8.0)
    for r in range(1, 5):
        led.append(r, EV)
    yield led
    led.close()


def raw(path, sql, *args):
    conn = sqlite3.connect(path)
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def test_round_trip_survives_reopen(ledger):
    head = ledger.head()
    path = ledger.path
    ledger.close()
    with PrivacyLedger.open(path) as again:
        assert again.verify(head).ok
        assert [r for r, _ in again.events()] == [1, 2, 3, 4]
        assert again.events()[0][1] == EV
        assert (again.delta, again.max_epsilon, again.scope) == (1e-5, 8.0, "federation")


def test_unlimited_budget_is_stored_in_the_chain(tmp_path):
    with PrivacyLedger.create(tmp_path / "u.sqlite", run_id="r", scope="c", delta=1e-6,
                              max_epsilon=math.inf) as led:
        assert math.isinf(led.max_epsilon) and led.verify().ok


def test_editing_one_byte_is_detected_and_named(ledger):
    ledger.close()
    raw(ledger.path, "UPDATE entries SET params = replace(params, '0.1', '0.2') WHERE seq = 3")
    with PrivacyLedger.open(ledger.path) as led:
        report = led.verify()
    assert not report.ok and report.broken_seq == 3 and "modified" in report.reason


def test_editing_the_budget_in_genesis_is_detected(ledger):
    ledger.close()
    raw(ledger.path, "UPDATE entries SET params = replace(params, '8.0', '80.0') WHERE seq = 1")
    with PrivacyLedger.open(ledger.path) as led:
        assert led.verify().broken_seq == 1


def test_recomputing_the_hash_of_an_edit_still_breaks_the_link(ledger):
    entries = ledger.entries()
    ledger.close()
    forged = entries[2].__class__(**{**{f: getattr(entries[2], f) for f in
                                        entries[2].__slots__}, "round": 99, "hash": ""})
    raw(ledger.path, "UPDATE entries SET round = 99, hash = ? WHERE seq = 3",
        forged.expected_hash())
    with PrivacyLedger.open(ledger.path) as led:
        report = led.verify()
    assert not report.ok and report.broken_seq == 4 and "link" in report.reason


def test_deleting_an_entry_is_detected(ledger):
    ledger.close()
    raw(ledger.path, "DELETE FROM entries WHERE seq = 2")
    with PrivacyLedger.open(ledger.path) as led:
        report = led.verify()
    assert not report.ok and report.broken_seq == 2 and "missing" in report.reason


def test_truncating_the_tail_needs_the_recorded_head(ledger):
    head = ledger.head()
    ledger.close()
    raw(ledger.path, "DELETE FROM entries WHERE seq = 5")
    with PrivacyLedger.open(ledger.path) as led:
        assert led.verify().ok  # a chain alone cannot see a missing tail...
        report = led.verify(head)  # ...the head kept in summary.json can
    assert not report.ok and "head is entry 4" in report.reason


def test_rejected_append_writes_nothing(ledger):
    before = ledger.head()
    with pytest.raises(ValueError, match="round must be an integer >= 1"):
        ledger.append(0, EV)
    with pytest.raises(ValueError, match="noise_multiplier"):
        ledger.append(5, DpSgdEvent(noise_multiplier=-1.0, sampling_rate=0.1, steps=1,
                                    clip=1.0))
    assert ledger.head() == before and ledger.verify().ok


def test_create_refuses_existing_and_open_refuses_non_ledgers(ledger, tmp_path):
    with pytest.raises(LedgerError, match="exists already"):
        PrivacyLedger.create(ledger.path, run_id="r", scope="s", delta=1e-5, max_epsilon=1)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 10)
    with pytest.raises(LedgerError, match="not a privacy ledger"):
        PrivacyLedger.open(junk)
    with pytest.raises(LedgerError, match="no ledger"):
        PrivacyLedger.open(tmp_path / "missing.sqlite")


def test_a_device_ledger_records_each_run_and_a_run_ledger_refuses_others(tmp_path):
    device = PrivacyLedger.create(tmp_path / "device.sqlite", run_id="101", scope="edge-1",
                                  delta=1e-5, max_epsilon=8.0, multi_run=True)
    with device:
        device.append(1, EV, run_id="101")
        device.append(1, EV, run_id="102")  # the next run on the same device
        assert [e.run_id for e in device.entries()] == ["101", "101", "102"]
        assert device.verify().ok
    single = PrivacyLedger.create(tmp_path / "run.sqlite", run_id="7", scope="federation",
                                  delta=1e-5, max_epsilon=8.0)
    with single, pytest.raises(ValueError, match="belongs to run '7'"):
        single.append(1, EV, run_id="8")


def test_a_resume_entry_rotates_the_signer_and_is_no_event(tmp_path):
    old, new = bytes(range(32)), bytes(range(1, 33))
    led = PrivacyLedger.create(tmp_path / "r.sqlite", run_id="run-1", scope="federation",
                               delta=1e-5, max_epsilon=8.0, signer=old)
    led.append(1, EV)
    head = led.head()
    led.append(2, EV)  # charged after the last signed head, before the crash
    led.append_resume(2, signer=new, prior_head=head, prior_signature="ab")
    led.append(3, EV)
    assert led.verify().ok
    assert led.genesis_signer == old and led.signer == new
    [rot] = led.rotations()
    assert (rot.prior_seq, rot.prior_hash, rot.round) == (head[0], head[1], 2)
    assert [r for r, _ in led.events()] == [1, 2, 3]  # the resume is not charged
    with pytest.raises(ValueError, match="not an entry"):
        led.append_resume(3, signer=new, prior_head=(2, "0" * 64), prior_signature="ab")
    led.close()


def test_run_flags_live_in_the_chain_and_a_resume_adds_its_own(tmp_path):
    led = PrivacyLedger.create(tmp_path / "f.sqlite", run_id="run-1", scope="federation",
                               delta=1e-5, max_epsilon=8.0, signer=bytes(32),
                               flags={"reproducible": True})
    led.append(1, EV)
    assert led.flags() == {"reproducible": True}
    led.append_resume(1, signer=bytes(range(32)), prior_head=led.head(),
                      prior_signature="ab", flags={"test_only_noise_scale": 0.0})
    assert led.flags() == {"reproducible": True, "test_only_noise_scale": 0.0}
    assert led.verify().ok
    led.close()
    # editing a flag out of the genesis breaks the chain
    import sqlite3

    with sqlite3.connect(tmp_path / "f.sqlite") as db:
        db.execute("UPDATE entries SET params = replace(params, '\"reproducible\":true', "
                   "'\"reproducible\":false') WHERE seq = 1")
    with PrivacyLedger.open(tmp_path / "f.sqlite") as again:
        assert again.flags()["reproducible"] is False and not again.verify().ok


def test_append_many_chains_a_round_in_one_transaction_all_or_none(ledger):
    ev = DpSgdEvent(noise_multiplier=1.0, sampling_rate=0.1, steps=10, clip=1.0)
    written = ledger.append_many(1, [(ev, "client-0"), (ev, "client-1")])
    assert [(e.round, e.scope) for e in written] == [(1, "client-0"), (1, "client-1")]
    assert ledger.verify().ok and ledger.entries()[-1] == written[-1]
    # A failure inside the transaction (here SQLite itself refuses the third row, as a
    # crash or a full disk would stop it) leaves none of the round's rows behind.
    conn = sqlite3.connect(ledger.path)
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON entries WHEN NEW.scope = "
                 "'client-2' BEGIN SELECT RAISE(ABORT, 'refused'); END")
    conn.commit()
    conn.close()
    before = ledger.entries()
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        ledger.append_many(2, [(ev, "client-0"), (ev, "client-1"), (ev, "client-2")])
    assert ledger.entries() == before and ledger.verify().ok
    with pytest.raises(ValueError, match="scope"):  # checked before anything is written
        ledger.append_many(2, [(ev, "client-0"), (ev, "")])
    assert ledger.entries() == before
    assert ledger.append_many(2, []) == []
