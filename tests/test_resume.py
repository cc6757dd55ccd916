"""Real process, real SIGKILL: a crashed private, secure simulation resumes and audits.

The one end-to-end run of ``fedpriv simulate`` on Flower's Ray engine with privacy on
(each Ray run costs ~25 s to start and stop, whatever runs on it): record-level DP-SGD
and secure aggregation, killed after round 2 of 5 and resumed. It charges no round twice,
ends with an uninterrupted run's epsilon, and its run directory passes ``fedpriv audit``.
Dropouts under secure aggregation are tested in-process
(tests/server/test_secagg_federation.py), on the same ServerApp and ClientApp code.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from fedpriv.audit import audit_run
from fedpriv.cli.signals import descendants
from fedpriv.privacy import DpSgdEvent, PrivacyLedger, epsilon

pytestmark = pytest.mark.slow

ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "FLWR_TELEMETRY_ENABLED": "0",
       "COLUMNS": "200"}
ROUNDS = 5
SETS = ["--set", f"rounds={ROUNDS}", "--set", "clients=4", "--set", "clients-per-round=4",
        "--set", "local-epochs=1", "--set", "dp-mode=record", "--set", "noise-multiplier=1.0",
        "--set", "secagg=true"]
FEDPRIV = str(Path(sys.executable).with_name("fedpriv"))


def _kill_tree(pid):
    for p in [*descendants(pid), pid]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _metrics_lines(out):
    try:
        return len((out / "metrics.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_kill_9_mid_run_then_resume_charges_every_round_exactly_once(tmp_path):
    # Prepare: a record-level run; every client takes part in every round, so an
    # uninterrupted run's epsilon per client is known: ROUNDS x its DP-SGD event. The
    # kill lands at a random moment after round 2 (the delay is printed on failure).
    delay = random.Random().uniform(0.0, 1.5)
    print(f"kill -9 {delay:.3f} s after round 2")
    out = tmp_path / "run"
    proc = subprocess.Popen([FEDPRIV, "simulate", *SETS, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while _metrics_lines(out) < 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "round 2 never finished"
            time.sleep(0.05)
        time.sleep(delay)  # anywhere in round 3 or 4: mid-training, mid-commit, ...
        # Execute: the whole process tree dies at once, as in a power cut.
        _kill_tree(proc.pid)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            _kill_tree(proc.pid)
    assert not (out / "summary.json").exists() or json.loads(
        (out / "summary.json").read_text())["status"] != "completed"
    assert not audit_run(out).ok  # an unfinished run never passes

    resumed = subprocess.run([FEDPRIV, "simulate", "--resume", str(out)],
                             capture_output=True, text=True, env=ENV, timeout=400)

    # Assert: the run completed; every client's ledger has each round exactly once; the
    # epsilon equals the uninterrupted run's; the audit passes across the key change.
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"round   {ROUNDS}" in resumed.stdout
    assert all(w in resumed.stdout for w in ("final accuracy", "ε", "secagg")), resumed.stdout
    # Flower's and Ray's own chatter stays in the run's log, off the terminal
    assert not any(w in resumed.stdout + resumed.stderr
                   for w in ("Manually terminating", "INFO :", "DeprecationWarning")), resumed
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["scenario"] == "default" and config["config"]["rounds"] == ROUNDS
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds"] == ROUNDS
    assert summary["resumed"] and summary["clients"] == 4 and summary["secagg"]["enabled"]
    assert summary["final_accuracy"] > summary["initial_accuracy"]
    assert (out / "model.safetensors").stat().st_size > 0
    rounds = [m["round"] for m in map(json.loads,
                                      (out / "metrics.jsonl").read_text().splitlines())]
    assert rounds == list(range(1, ROUNDS + 1))
    worst = 0.0
    for path in sorted(out.glob("clients/*/ledger.sqlite")):
        with PrivacyLedger.open(path) as ledger:
            events = ledger.events()
            delta = ledger.delta
        # as many entries as an uninterrupted run: one per round, none twice
        assert [r for r, _ in events] == list(range(1, ROUNDS + 1)), path
        event = events[0][1]
        assert isinstance(event, DpSgdEvent)
        expected = epsilon([event] * ROUNDS, delta)
        assert epsilon([e for _, e in events], delta) == pytest.approx(expected, rel=1e-9)
        worst = max(worst, expected)
    assert summary["epsilon"]["federation"] == pytest.approx(worst, rel=1e-9)
    with PrivacyLedger.open(out / "ledger.sqlite") as fed:
        per_client = {}
        for entry in fed.entries():
            if entry.is_event:
                per_client.setdefault(entry.scope, []).append(entry.round)
        assert len(fed.rotations()) == 1
    assert all(r == list(range(1, ROUNDS + 1)) for r in per_client.values()), per_client
    # the fingerprint the resumed run prints and records is the one to pin: the run's
    # first key (red-team F-C: it was the new process's, which the audit then refused)
    assert summary["server_key_fingerprint"] != summary["current_key_fingerprint"]
    assert f"--server-key {summary['server_key_fingerprint']}" in resumed.stdout
    audit = subprocess.run([FEDPRIV, "audit", str(out), "--json", "--server-key",
                            summary["server_key_fingerprint"]], capture_output=True,
                           text=True, env=ENV, timeout=120)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    report = json.loads(audit.stdout)
    fed = max(s["epsilon_pld"] for s in report["scopes"] if "clients" not in s["ledger"])
    assert fed == pytest.approx(summary["epsilon"]["federation"])
