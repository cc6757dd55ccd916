"""A real deployment on loopback: TLS, SuperNode authentication, DP and secure aggregation.

Every process is real (SuperLink, two SuperNodes and their ClientApps, ``flwr`` CLI) and
is stopped by PID (its whole process group) at the end.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class Processes:
    def __init__(self, env, logs: Path):
        self.env, self.logs, self.procs = env, logs, []

    def start(self, name, *cmd):
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT,
                                env=self.env, cwd=ROOT, start_new_session=True)
        self.procs.append((proc, log))
        return proc

    def run_to_exit(self, name, *cmd, timeout=90):
        """Start, wait for the process itself to exit, return (code, its log)."""
        proc = self.start(name, *cmd)
        code = proc.wait(timeout=timeout)  # its children may linger: stop_all reaps them
        return code, (self.logs / f"{name}.log").read_text()

    def stop_all(self):
        from fedpriv.cli.signals import descendants

        # Children that left the process group (Flower starts some in sessions of
        # their own) are found by walking the process tree, and stopped by PID too.
        strays = [pid for proc, _ in self.procs for pid in descendants(proc.pid)]
        for proc, _ in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in strays:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc, log in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()


def run(env, *cmd, timeout=120):
    return subprocess.run([str(c) for c in cmd], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_tls_node_auth_dp_secagg_deployment(tmp_path):
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home"),
           "FLWR_TELEMETRY_ENABLED": "0", "PATH": f"{BIN}:{os.environ['PATH']}"}
    certs, logs = tmp_path / "certs", tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    fedpriv = BIN / "fedpriv"

    # Certificates: a CA, the SuperLink's TLS certificate, three node key pairs.
    out = run(env, fedpriv, "certs", "init", certs, "--host", "127.0.0.1",
              "--host", "localhost")
    assert out.returncode == 0, out.stderr
    assert oct((certs / "ca.key").stat().st_mode & 0o777) == "0o600"
    for name in ("edge-1", "edge-2", "rogue"):
        assert run(env, fedpriv, "certs", "node", name, "--dir", certs).returncode == 0
    again = run(env, fedpriv, "certs", "init", certs, "--host", "127.0.0.1")
    assert again.returncode == 2 and "--force" in again.stderr

    # The devices' own data (digits shares as .npz) and ledgers.
    from fedpriv.config import Partition
    from fedpriv.tasks import load_digits, partition_indices

    train = load_digits(test_fraction=0.2, seed=0).train
    for i, idx in enumerate(partition_indices(train, scheme=Partition.IID, num_partitions=2,
                                              seed=0), start=1):
        (tmp_path / f"data-{i}").mkdir()
        np.savez(tmp_path / f"data-{i}" / "part.npz", x=train.x[idx], y=train.y[idx])

    procs = Processes(env, logs)
    try:
        procs.start("superlink", fedpriv, "deploy", "superlink", "--certs", certs,
                    "--port", port, "--database", tmp_path / "state.db")
        wait_for_port(port)
        home = tmp_path / "flwr-home"
        home.mkdir(exist_ok=True)
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "fedpriv"\n\n[superlink.fedpriv]\n'
            f'address = "127.0.0.1:{port}"\nroot-certificates = "{certs / "ca.pem"}"\n')
        for name in ("edge-1", "edge-2"):
            reg = run(env, BIN / "flwr", "supernode", "register", certs / "nodes" / f"{name}.pub")
            assert reg.returncode == 0 and "registered" in reg.stdout, reg.stdout + reg.stderr

        # Refused: an unregistered key; no CA (system roots); no TLS at all.
        refused = {
            "rogue": ["--root-certificates", certs / "ca.pem", "--auth-supernode-private-key",
                      certs / "nodes" / "rogue", "--auth-supernode-public-key",
                      certs / "nodes" / "rogue.pub"],
            "no-ca": ["--auth-supernode-private-key", certs / "nodes" / "edge-1",
                      "--auth-supernode-public-key", certs / "nodes" / "edge-1.pub"],
            "insecure": ["--insecure"],
        }
        for name, extra in refused.items():
            code, log = procs.run_to_exit(
                f"refused-{name}", BIN / "flower-supernode", "--superlink",
                f"127.0.0.1:{port}", "--max-retries", "1", "--port", free_port(), *extra)
            assert code != 0, name
            assert "Failed to initialize the connection to the SuperLink" in log, name
            if name == "no-ca":
                assert "SSL/TLS handshake error" in log

        for i, name in enumerate(("edge-1", "edge-2"), start=1):
            procs.start(name, fedpriv, "deploy", "supernode", name, "--superlink",
                        f"127.0.0.1:{port}", "--certs", certs, "--data-dir",
                        tmp_path / f"data-{i}", "--ledger", tmp_path / f"{name}.sqlite",
                        "--max-epsilon", "50", "--port", free_port())

        run_dir = tmp_path / "run"
        config = (f'rounds=2 clients=2 local-epochs=1 dp-mode="record" secagg=true '
                  f'run-dir="{run_dir}"')
        flwr_run = run(env, BIN / "flwr", "run", ".", "fedpriv", "--stream", "--run-config",
                       config, timeout=500)
        assert flwr_run.returncode == 0, flwr_run.stdout + flwr_run.stderr
        listed = run(env, BIN / "flwr", "ls", "--format", "json")
        runs = json.loads(listed.stdout)["runs"]
        assert [r["status"] for r in runs] == ["finished:completed"], listed.stdout

        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["rounds"] == 2 and summary["secagg"]["enabled"]
        assert summary["final_accuracy"] > summary["initial_accuracy"]
        assert summary["epsilon"]["federation"] > 0
        from fedpriv.privacy import PrivacyLedger

        for name in ("edge-1", "edge-2"):  # each device's own ledger, on the device
            with PrivacyLedger.open(tmp_path / f"{name}.sqlite") as led:
                assert led.verify().ok and [r for r, _ in led.events()] == [1, 2]
                assert led.max_epsilon == 50.0
        audit = run(env, fedpriv, "audit", run_dir)
        assert audit.returncode == 0, audit.stdout + audit.stderr
    finally:
        procs.stop_all()
