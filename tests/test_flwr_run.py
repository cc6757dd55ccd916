"""``flwr run .`` on Flower's local simulation federation runs the same app."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pids_using(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmd and int(proc.name) != os.getpid():
                pids.append(int(proc.name))
    return pids


@pytest.mark.slow
def test_flwr_run_on_the_local_simulation_federation(tmp_path):
    home = tmp_path / "flwr-home"
    run_dir = tmp_path / "run"
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "FLWR_HOME": str(home), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    try:
        proc = subprocess.run(
            [str(bin_dir / "flwr"), "run", ".", "--stream",
             "--run-config", f'rounds=1 clients=2 local-epochs=1 run-dir="{run_dir}"',
             # one Ray actor takes both clients: a second would only add its start-up
             # (imports) on a two-core machine that runs another test beside this one
             "--federation-config", "num-supernodes=2 client-resources-num-cpus=2"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=400,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # flwr run exits 0 even when the run failed: ask the SuperLink for its status.
        listed = subprocess.run([str(bin_dir / "flwr"), "ls", "--format", "json"], cwd=ROOT,
                                env=env, capture_output=True, text=True, timeout=60)
        runs = json.loads(listed.stdout)["runs"]
        assert [r["status"] for r in runs] == ["finished:completed"], listed.stdout
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["rounds"] == 1
        assert summary["scenario"] == "flwr-run"
    finally:
        # The local SuperLink is detached and stays up: stop it (and its children) by PID.
        for pid in _pids_using(str(home)):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        while _pids_using(str(home)) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in _pids_using(str(home)):
            os.kill(pid, signal.SIGKILL)
