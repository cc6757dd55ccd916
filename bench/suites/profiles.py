"""Where the time goes: py-spy flame graphs of the suites and a breakdown of each.

``python -m bench.suites.profiles [NAME ...]`` (all by default) runs each target in a
fresh process under ``py-spy record -f speedscope`` (``pip install py-spy``; as root or
with ptrace allowed) and writes ``bench/profiles/<name>.speedscope.json`` (open it at
https://www.speedscope.app) and ``bench/profiles/<name>.json``: the share of the main
thread's samples per cost category (the innermost frame that matches a rule of
:data:`RULES`, walking from the leaf to the root), per-round fixed costs against
per-example costs, and the top functions by self and by inclusive time.
``fedpriv bench`` renders the JSON into ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

PROFILES = Path(__file__).resolve().parents[1] / "profiles"
ROOT = Path(__file__).resolve().parents[2]

#: (category, fixed per round?, substrings of a frame's "file:function"); first match wins.
RULES: tuple[tuple[str, bool, tuple[str, ...]], ...] = (
    ("imports", True, ("<frozen importlib",)),
    ("ledger (SQLite, signatures, fsync)", True, ("fedpriv/privacy/ledger.py",
                                                  "fedpriv/privacy/attest.py", "sqlite3")),
    ("accountant (dp-accounting PLD/RDP)", True, ("dp_accounting/", "privacy/accounting.py",
                                                  "privacy/budget.py", "fedpriv/dp_plan.py")),
    ("secure aggregation", True, ("fedpriv/secagg/", "client/secagg.py", "server/secagg.py")),
    ("model (de)serialisation", True, ("flwr/app/", "flwr/common/serde", "safetensors",
                                       "client/replay.py", "strategies/updates.py")),
    ("checkpoint and run directory", True, ("server/checkpoint.py", "server/rundir.py",
                                            "server/reporting.py")),
    ("engine and model construction", True, ("opacus/privacy_engine.py", "models.py",
                                             "BookKeepingDpSgd.__init__",
                                             "BookKeepingDpSgd.__enter__",
                                             "BookKeepingDpSgd.__exit__", "torch/nn/init.py")),
    ("server evaluation", True, (":evaluate_fn", "training.py:evaluate")),
    ("DP-SGD noise", False, ("_noise", "gaussian")),
    ("DP-SGD per-example norms and clipped sums (book-keeping)", False,
     ("client/bookkeeping.py",)),
    ("Opacus per-example gradients", False, ("opacus/grad_sample", "opacus/optimizers",
                                             "opacus/utils")),
    ("optimizer step", False, ("torch/optim/",)),
    ("forward and backward", False, ("torch/autograd", "torch/_tensor.py", "torch/nn/")),
    ("data loading and sampling", False, ("torch/utils/data", "opacus/data_loader.py",
                                          "client/data.py", "fedpriv/tasks/local.py",
                                          "fedpriv/tasks/data.py")),
    ("training loop (Python)", False, ("fedpriv/tasks/training.py", "client/privacy.py",
                                       "bench/suites/dpsgd.py", "bench/edge_minimal.py")),
)

TARGETS = ("dpsgd-mlp", "dpsgd-cnn", "round-record-dp", "edge-record-dp")


# ------------------------------------------------------------------ what is profiled
def _target(name: str) -> None:
    """Run ``name``'s workload in this process (under py-spy)."""
    import torch

    torch.set_num_threads(1)
    if name.startswith("dpsgd-"):
        from bench.suites.dpsgd import _steps
        from fedpriv.config import Model

        model = Model.MLP if name == "dpsgd-mlp" else Model.CNN
        _steps("bookkeeping", model, 3000 if model is Model.MLP else 600, torch.device("cpu"))
    elif name == "round-record-dp":
        from bench.suites.common import run_in_process
        from fedpriv.config import RunConfig

        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "run"
            cfg = RunConfig.from_mapping({
                "rounds": 4, "clients": 10, "local-epochs": 1, "partition": "iid",
                "dp-mode": "record", "run-dir": str(run)}).resolved()
            run_in_process(cfg, run, scenario="profile")
    else:
        raise ValueError(f"unknown profile target {name!r}; choose from {TARGETS}")


def _command(name: str, where: Path) -> list[str]:
    """The command py-spy runs for ``name``."""
    if name == "edge-record-dp":  # the device's ClientApp process itself
        from bench.edge import CONFIGS, _write_device_data, record

        _write_device_data(where / "device-data", 719)
        msg, ctx = record(CONFIGS["record-DP"], where / "rec",
                          {"data-dir": str(where / "device-data"),
                           "ledger-path": str(where / "ledger" / "ledger.sqlite")})
        return [sys.executable, "-m", "bench.edge", "client", "fedpriv", str(msg), str(ctx)]
    return [sys.executable, "-m", "bench.suites.profiles", "--target", name]


# ------------------------------------------------------------------ the breakdown
def _category(stack: list[dict[str, Any]]) -> tuple[str, bool]:
    for frame in reversed(stack):  # leaf first
        key = f"{frame['file']}:{frame['name']}"
        for category, fixed, needles in RULES:
            if any(n in key for n in needles):
                return category, fixed
    return "other", True


def breakdown(speedscope: dict[str, Any], top: int = 8) -> dict[str, Any]:
    """Shares per category and the top functions of the busiest thread's samples."""
    frames = speedscope["shared"]["frames"]
    profile = max(speedscope["profiles"], key=lambda p: sum(p.get("weights") or [1]))
    weights = profile.get("weights") or [1] * len(profile["samples"])
    cats: Counter[str] = Counter()
    fixed = imports = 0.0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for sample, w in zip(profile["samples"], weights, strict=True):
        stack = [frames[i] for i in sample]
        cat, is_fixed = _category(stack)
        if cat == "imports":  # once per process: reported apart from the work itself
            imports += w
            continue
        cats[cat] += w
        fixed += w if is_fixed else 0.0
        if stack:
            leaf = stack[-1]
            own[f"{leaf['name']} ({_short(leaf['file'])})"] += w
        for key in {f"{f['name']} ({_short(f['file'])})" for f in stack
                    if not f["file"].endswith(("profiles.py", "runpy>", "edge.py"))}:
            inclusive[key] += w
    total = float(sum(cats.values())) or 1.0
    # py-spy's speedscope weights are seconds ("unit": "seconds"), not sample counts
    amount = ({"sampled_seconds": float(sum(weights))} if profile.get("unit") == "seconds"
              else {"samples": int(sum(weights))})
    return {
        **amount,
        "imports_share_of_all": imports / (imports + total),
        "categories": {c: w / total for c, w in cats.most_common()},
        "fixed_share": fixed / total, "per_example_share": 1 - fixed / total,
        "top_self": [[k, w / total] for k, w in own.most_common(top)],
        "top_inclusive": [[k, w / total] for k, w in inclusive.most_common(3 * top)
                          if w / total < 0.999][:top],
    }


def _short(path: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return Path(path).name


def profile(name: str, rate: int = 100) -> dict[str, Any]:
    """Record ``name`` under py-spy; write its speedscope file and breakdown JSON."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("py-spy not found: pip install py-spy")
    PROFILES.mkdir(parents=True, exist_ok=True)
    out = PROFILES / f"{name}.speedscope.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FLWR_TELEMETRY_ENABLED": "0",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = _command(name, Path(tmp))
        proc = subprocess.run([spy, "record", "-f", "speedscope", "-r", str(rate),
                               "--nonblocking", "-o", str(out), "--", *cmd], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy on {name} failed:\n{proc.stderr[-3000:]}")
    data = _compact(json.loads(out.read_text()))
    out.write_text(json.dumps(data, separators=(",", ":")))
    result = {"name": name, "rate_hz": rate,
              "command": "python -m bench.suites.profiles " + name, **breakdown(data)}
    (PROFILES / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _compact(speedscope: dict[str, Any]) -> dict[str, Any]:
    """The busiest thread only, identical stacks merged (same flame graph, smaller file)."""
    profile = max(speedscope["profiles"], key=lambda p: sum(p.get("weights") or [1]))
    weights = profile.get("weights") or [1] * len(profile["samples"])
    merged: Counter[tuple[int, ...]] = Counter()
    for sample, w in zip(profile["samples"], weights, strict=True):
        merged[tuple(sample)] += w
    used = sorted({i for stack in merged for i in stack})
    index = {old: new for new, old in enumerate(used)}
    frames = speedscope["shared"]["frames"]
    return {**speedscope, "activeProfileIndex": 0,
            "shared": {"frames": [{"name": frames[i]["name"], "file": _short(frames[i]["file"]),
                                   "line": frames[i].get("line")} for i in used]},
            "profiles": [{**profile, "samples": [[index[i] for i in s] for s in merged],
                          "weights": list(merged.values())}]}


def load() -> dict[str, dict[str, Any]]:
    """Every saved breakdown, by name."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(PROFILES.glob("*.json"))
            if not p.name.endswith(".speedscope.json")}


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.suites.profiles [NAME ...]``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help=f"targets (default all): {list(TARGETS)}")
    p.add_argument("--target", help="(internal) run one target's workload in-process")
    args = p.parse_args(argv)
    if args.target:
        _target(args.target)
        return 0
    for name in args.names or TARGETS:
        r = profile(name)
        cats = ", ".join(f"{c} {100 * s:.0f}%" for c, s in list(r["categories"].items())[:5])
        amount = r.get("sampled_seconds", r.get("samples"))
        print(f"{name}: {amount:.1f} s sampled; {cats}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
