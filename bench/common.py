"""Shared by the suites: machine metadata, result files, ``fedpriv simulate`` runs."""

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

__all__ = [
    "RAY_ENV",
    "RESULTS",
    "ROOT",
    "command",
    "meta",
    "seconds_per_round",
    "simulate",
    "write_json",
]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
#: Environment for anything that starts Ray: loopback only, no telemetry.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "FLWR_TELEMETRY_ENABLED": "0",
           "RAY_USAGE_STATS_ENABLED": "0"}


def command(name: str, quick: bool) -> str:
    """The one-line command, run from the repository root, that reproduces a suite."""
    return f"`.venv/bin/python -m bench {name}{' --quick' if quick else ''}`"


def meta(quick: bool, tiny: bool = False) -> dict[str, Any]:
    """Where, when and with what a suite ran."""
    import flwr
    import opacus
    import torch

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "tiny": tiny,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "opacus": opacus.__version__,
        "flwr": flwr.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON (NaN refused: it is not JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return path


def simulate(*sets: str, timeout: float = 900) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``fedpriv simulate --set KEY=VALUE ...`` in a fresh process.

    Parameters
    ----------
    *sets : str
        ``KEY=VALUE`` run-config overrides.
    timeout : float
        Seconds before the run is killed.

    Returns
    -------
    tuple of (dict, list of dict)
        The run's ``summary.json`` and its ``metrics.jsonl`` lines.
    """
    exe = Path(sys.executable).with_name("fedpriv")
    with tempfile.TemporaryDirectory(prefix="fedpriv-bench-") as tmp:
        out = Path(tmp) / "run"
        args = [str(exe), "simulate", "--out", str(out)]
        for kv in sets:
            args += ["--set", kv]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **RAY_ENV}, cwd=ROOT, check=False)
        if proc.returncode != 0 or not (out / "summary.json").exists():
            raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}:\n"
                               f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        summary = json.loads((out / "summary.json").read_text())
        lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()
                 if ln.strip()]
    if summary.get("status") != "completed":
        raise RuntimeError(f"{' '.join(args)}: run {summary.get('status')}: "
                           f"{summary.get('reason')}")
    return summary, lines


def seconds_per_round(ends: list[float]) -> float:
    """Seconds per round from each round's end time, round 1 (and Ray's start) excluded.

    ``(end of round N - end of round 1) / (N - 1)``.
    """
    if len(ends) < 2:
        raise ValueError(f"need at least two rounds to time a round, got {len(ends)}")
    return (ends[-1] - ends[0]) / (len(ends) - 1)
