"""Real process, real signal: Ctrl-C stops a simulation cleanly and says where it is."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedpriv.cli.signals import descendants

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130)])
def test_a_signal_mid_run_stops_it_before_its_end_with_an_interrupted_summary(tmp_path, sig, code):
    out = tmp_path / "run"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "FLWR_TELEMETRY_ENABLED": "0", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedpriv.cli", "simulate", "--set", "rounds=50",
         "--set", "clients=4", "--set", "local-epochs=1", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True)
    lines = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if line.lstrip().startswith("round   1") or proc.poll() is not None:
                break
        assert any(x.lstrip().startswith("round   1") for x in lines), "".join(lines)
        children = descendants(proc.pid)
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=120)  # a hang guard, not a speed claim
    finally:
        if proc.poll() is None:  # stop what we started, by PID
            for pid in [*descendants(proc.pid), proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    assert proc.returncode == code, rest
    assert "interrupted: run directory" in rest and str(out) in rest
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert 1 <= summary["rounds"] < 50
    time.sleep(1.0)
    alive = [p for p in children if Path(f"/proc/{p}").exists()
             and "zombie" not in Path(f"/proc/{p}/status").read_text().lower()]
    assert not alive, f"child processes left running: {alive}"
