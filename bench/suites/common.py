"""Shared helpers: machine metadata, results files, running ``fedpriv simulate``, and a
federation run in-process."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "results"
#: The report every suite renders from the JSON files in RESULTS (``fedpriv bench``).
REPORT = RESULTS.parent / "README.md"
ROOT = Path(__file__).resolve().parents[2]


def meta(quick: bool) -> dict[str, Any]:
    """Where and with what a suite ran."""
    import flwr
    import opacus
    import torch

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "quick": quick,
        "cpus": os.cpu_count(), "machine": platform.machine(),
        "python": sys.version.split()[0], "torch": torch.__version__,
        "opacus": opacus.__version__, "flwr": flwr.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def write(name: str, payload: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return path


def simulate(*sets: str, timeout: int = 900) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``fedpriv simulate --set ...`` in a fresh process; (summary, metrics lines)."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    exe = Path(sys.executable).with_name("fedpriv")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        args = [str(exe), "simulate", "--out", str(out)]
        for kv in sets:
            args += ["--set", kv]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=ROOT)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}"
                               f"{proc.stderr[-2000:]}")
        summary = json.loads((out / "summary.json").read_text())
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return summary, lines


def per_round(elapsed: list[float]) -> float:
    """Seconds per round from the rounds' end times, excluding round 1 (Ray warm-up)."""
    if len(elapsed) < 2:
        raise ValueError("need at least two rounds to time a round")
    return (elapsed[-1] - elapsed[0]) / (len(elapsed) - 1)


def bench_config(values: dict[str, Any], run_dir: Path) -> Any:
    """``values`` (flat keys) as a resolved config for an in-process run in ``run_dir``.

    The server's noise (user level, record-central) is calibrated as ``fedpriv simulate``
    calibrates it.
    """
    from fedpriv.config import RunConfig
    from fedpriv.dp_plan import with_user_noise

    cfg = RunConfig.from_mapping(values).resolved().with_values(run_dir=str(run_dir),
                                                                  run_id=run_dir.name)
    return with_user_noise(cfg)


def run_in_process(cfg: Any, run_dir: Path, *, scenario: str,
                   client_app: Any = None) -> dict[str, Any]:
    """Run ``cfg`` (resolved) in-process: the real ServerApp and ClientApp code on the
    loopback grid, no Ray. ``run_dir`` is created; ``client_app`` defaults to fedpriv's.

    Returns the run's summary.
    """
    from bench.loopback import LoopbackGrid, task_identity
    from client.app import app as fedpriv_app
    from server.federation import run_federation
    from server.reporting import LogReporter
    from server.rundir import RunDirectory

    if not cfg.deployment.run_dir:  # the clients' ledgers live in it (DP modes need them)
        cfg = cfg.with_values(run_dir=str(run_dir))
    n = cfg.training.clients
    nodes = {i + 1: {"partition-id": i, "num-partitions": n} for i in range(n)}
    with task_identity():
        return run_federation(LoopbackGrid(client_app or fedpriv_app, nodes), cfg,
                              RunDirectory(run_dir).create(), scenario=scenario,
                              reporter=LogReporter())
