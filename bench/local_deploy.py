"""Real deployments on loopback for end-to-end tests and `fedpriv bench deploy`: ports,
processes, devices' data.

Every process is started in a session of its own and stopped by PID (its process
group, and any child that left it) by :meth:`Processes.stop_all`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

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
    """Processes of one test, each in a session of its own, its output in ``logs/NAME.log``.

    Every line of output is stamped with the wall-clock time it was read, so that the logs
    of the SuperLink, the SuperNodes and the ServerApp can be laid side by side when a
    test fails (Flower's own lines carry no time).
    """

    def __init__(self, env, logs: Path):
        self.env, self.logs, self.procs = env, logs, []

    def start(self, name, *cmd):
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=self.env, cwd=ROOT,
                                start_new_session=True)
        pump = threading.Thread(target=_stamp_lines, args=(proc.stdout, log), daemon=True)
        pump.start()
        self.procs.append((proc, log, pump))
        return proc

    def run_to_exit(self, name, *cmd, timeout=90):
        """Start, wait for the process itself to exit, return (code, its log)."""
        return self.wait_exit(name, self.start(name, *cmd), timeout=timeout)

    def wait_exit(self, name, proc, timeout=90):
        """Wait for ``proc`` (started as ``name``) to exit; return (code, its log)."""
        code = proc.wait(timeout=timeout)  # its children may linger: stop_all reaps them
        pump = next(p for q, _, p in self.procs if q is proc)
        pump.join(timeout=2)  # its last lines, unless a child holds the pipe
        return code, (self.logs / f"{name}.log").read_text()

    def stop_all(self):
        from fedpriv.cli.signals import descendants

        # Children that left the process group (Flower starts some in sessions of
        # their own) are found by walking the process tree, and stopped by PID too.
        strays = [pid for proc, *_ in self.procs for pid in descendants(proc.pid)]
        for proc, *_ in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in strays:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc, log, pump in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            pump.join(timeout=5)  # a stray that kept the pipe open must not block the test
            if not pump.is_alive():
                log.close()


def _stamp_lines(stream, log) -> None:
    """Copy ``stream`` into ``log`` line by line, each prefixed with the time it was read."""
    for raw in iter(stream.readline, b""):
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        log.write(f"{stamp} {raw.decode(errors='replace')}")
        log.flush()
    stream.close()


def run(env, *cmd, timeout=120):
    return subprocess.run([str(c) for c in cmd], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def deploy_env(tmp_path: Path) -> dict[str, str]:
    """The environment for the ``flwr`` CLI and Flower's processes of one test."""
    return {**os.environ, "FLWR_HOME": str(tmp_path / "flwr-home"),
            "FLWR_TELEMETRY_ENABLED": "0", "PATH": f"{BIN}:{os.environ['PATH']}"}


def write_flwr_config(home: Path, port: int, *, ca: Path | None = None) -> None:
    """``flwr``'s config: one SuperLink at 127.0.0.1:port, TLS with ``ca`` or insecure."""
    home.mkdir(parents=True, exist_ok=True)
    tls = f'root-certificates = "{ca}"' if ca is not None else "insecure = true"
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "fedpriv"\n\n[superlink.fedpriv]\n'
        f'address = "127.0.0.1:{port}"\n{tls}\n')


def write_device_data(root: Path, n: int) -> list[Path]:
    """``root/data-1 .. data-n``: IID digits shares as ``part.npz``, one per device."""
    from fedpriv.config import Partition
    from fedpriv.tasks import load_digits, partition_indices

    train = load_digits(test_fraction=0.2, seed=0).train
    dirs = []
    for i, idx in enumerate(partition_indices(train, scheme=Partition.IID, num_partitions=n,
                                              seed=0), start=1):
        d = root / f"data-{i}"
        d.mkdir()
        np.savez(d / "part.npz", x=train.x[idx], y=train.y[idx])
        dirs.append(d)
    return dirs
