"""1,000 clients under user-level DP on Fashion-MNIST, and what grows with the clients (issue 15).

Two parts.

*Accuracy*: the shipped scenario ``fashion-mnist-1000-user-dp`` (1,000 clients of ~60
images, Dirichlet(0.5), 100 expected per round, ScatterNet + linear; McMahan et al. 2018
DP-FedAvg, epsilon <= 5 at delta 1e-5 with Poisson client sampling) against the same
settings without DP, run in-process (:func:`bench.suites.common.run_in_process`: the real
ServerApp and ClientApp, no Ray) because Ray's per-message overhead on two shared cores
would make 2 x ``rounds`` rounds cost far more than the training itself.

*Scale*: the same scenario through ``fedpriv simulate`` (Flower's simulation engine on
Ray) at 100, 300 and 1,000 clients with 100 sampled a round, a few rounds each. A thread
walks the run's process tree every half second (``/proc``: the ``fedpriv`` process that
hosts the ServerApp and Ray's driver, Ray's system processes, the ClientApp actors) and
keeps each group's peak resident memory and each process's high-water mark (``VmHWM``);
seconds per round exclude round 1 (Ray start-up, first data load); the run directory's
per-client files are counted after the run.

``--quick`` runs fewer rounds (accuracy) and 100 / 1,000 clients only (scale).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.suites.common import ROOT, per_round

__all__ = ["SCENARIO", "render", "run"]

SCENARIO = "fashion-mnist-1000-user-dp"
SCALE_CLIENTS = (100, 300, 1000)
SCALE_ROUNDS = 4
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _scenario() -> dict[str, Any]:
    from simulations.scenarios import load_scenario

    return dict(load_scenario(SCENARIO).values)


def _accuracy(values: dict[str, Any], private: bool, rounds: int) -> dict[str, Any]:
    """One in-process run of the scenario (``private``: as shipped; else dp-mode none)."""
    from bench.suites.common import run_in_process
    from fedpriv.config import RunConfig

    values = {**values, "rounds": rounds}
    if not private:
        for key in ("target-epsilon", "max-epsilon", "clip", "clip-norm", "delta"):
            values.pop(key, None)
        values["dp-mode"] = "none"
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cfg = RunConfig.from_mapping({**values, "run-dir": str(run)}).resolved()
        t0 = time.monotonic()
        summary = run_in_process(cfg, run, scenario=SCENARIO)
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    eps = summary.get("epsilon") or {}
    return {"mode": "user" if private else "none", "rounds": rounds,
            "final_accuracy": summary["final_accuracy"],
            "curve": [round(x["test_accuracy"], 4) for x in lines],
            "epsilon": eps.get("federation"), "delta": eps.get("delta"),
            "clients_epsilon_max": eps.get("clients_max"),
            "noise_multiplier": _calibrated_z(cfg) if private else None,
            "seconds_per_round": per_round([x["elapsed_seconds"] for x in lines]),
            "seconds": time.monotonic() - t0}


def _calibrated_z(cfg: Any) -> float:
    """z the server calibrated for ``cfg`` (cached: the run already searched for it)."""
    from fedpriv.dp_plan import with_user_noise

    return float(with_user_noise(cfg).privacy.noise_multiplier)


# ----------------------------------------------------------------------- memory
def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    return out


def _status(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in bytes, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
        return (int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024)
    except (OSError, KeyError, ValueError):
        return None


def _group(pid: int, root: int) -> str:
    if pid == root:
        return "server"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    if "ClientAppActor" in cmd or "default_worker.py" in cmd or cmd.startswith("ray::"):
        return "ray_workers"
    return "ray_system"


class TreeMemory:
    """Peak memory of a process tree, sampled from ``/proc`` every ``interval`` seconds."""

    def __init__(self, root: int, interval: float = 0.5) -> None:
        self.root, self.interval = root, interval
        self.peak: dict[str, int] = {}  # group -> peak of the group's summed RSS
        self.hwm: dict[int, tuple[str, int]] = {}  # pid -> (group, VmHWM)
        self.max_workers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        """Walk the tree once."""
        pids, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo += _children(pid)
        sums: dict[str, int] = {}
        workers = 0
        for pid in pids:
            status = _status(pid)
            if status is None:
                continue
            group = _group(pid, self.root)
            workers += group == "ray_workers"
            sums[group] = sums.get(group, 0) + status[0]
            self.hwm[pid] = (group, max(status[1], self.hwm.get(pid, (group, 0))[1]))
        sums["total"] = sum(sums.values())
        for group, rss in sums.items():
            self.peak[group] = max(self.peak.get(group, 0), rss)
        self.max_workers = max(self.max_workers, workers)

    def report(self) -> dict[str, Any]:
        """Peaks in MiB: per group (summed RSS) and the largest single-process VmHWM."""
        mib = 1 / 2 ** 20
        largest: dict[str, float] = {}
        for group, hwm in self.hwm.values():
            largest[group] = max(largest.get(group, 0.0), hwm * mib)
        return {"peak_rss_mib": {g: round(v * mib, 1) for g, v in sorted(self.peak.items())},
                "max_hwm_mib": {g: round(v, 1) for g, v in sorted(largest.items())},
                "ray_workers": self.max_workers}


def _files(path: Path) -> tuple[int, int]:
    """(files, bytes) under ``path``."""
    n = size = 0
    for p in path.rglob("*"):
        if p.is_file():
            n, size = n + 1, size + p.stat().st_size
    return n, size


def _ray_run(clients: int, rounds: int, private: bool = True) -> dict[str, Any]:
    """``fedpriv simulate SCENARIO`` at ``clients``, timed and measured."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    exe = Path(sys.executable).with_name("fedpriv")
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load = os.getloadavg()[0]  # one-minute load when the run starts: figures are shared
    cache = os.environ.get("FEDPRIV_FEATURE_CACHE")  # warm coefficients skip first visits
    cached = (sum(1 for _ in Path(cache).glob("*.npy")) if cache and Path(cache).is_dir()
              else 0 if cache else None)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        args = [str(exe), "simulate", SCENARIO, "--out", str(out),
                "--set", f"clients={clients}", "--set", f"rounds={rounds}"]
        if not private:
            args += ["--set", "dp-mode=none", "--set", "target-epsilon=0",
                     "--set", "max-epsilon=inf"]
        t0 = time.monotonic()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, cwd=ROOT)
        with TreeMemory(proc.pid) as memory:
            log, _ = proc.communicate(timeout=3600)
        wall = time.monotonic() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{log[-3000:]}")
        summary = json.loads((out / "summary.json").read_text())
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        client_files = _files(out / "clients") if (out / "clients").exists() else (0, 0)
        identity_files = _files(out / "identities") if (out / "identities").exists() else (0, 0)
        ledgers = len(list((out / "clients").rglob("ledger.sqlite"))) \
            if (out / "clients").exists() else 0
        run_files = _files(out)
    elapsed = [x["elapsed_seconds"] for x in lines]
    return {"clients": clients, "clients_per_round": 100, "rounds": rounds,
            "date": started, "load_average": load, "feature_cache_files": cached,
            "mode": "user" if private else "none",
            "seconds_per_round": per_round(elapsed), "first_round_seconds": elapsed[0],
            "wall_seconds": wall, "final_accuracy": summary["final_accuracy"],
            "cohorts": [x["cohort"] for x in lines], **memory.report(),
            "client_ledgers": ledgers, "client_files": client_files[0],
            "client_mib": round(client_files[1] / 2 ** 20, 1),
            "identity_files": identity_files[0], "run_files": run_files[0],
            "run_mib": round(run_files[1] / 2 ** 20, 1)}


def run(quick: bool) -> dict[str, Any]:
    """Accuracy (in-process) and scale figures (Ray)."""
    return {**_part("accuracy", quick), **_part("scale", quick)}


def render(p: dict[str, Any]) -> list[str]:
    """The Markdown section of ``bench-scale.json``."""
    acc = p.get("accuracy", {})
    if not {"none", "user"} <= set(acc):
        rows = [f"Accuracy not measured yet (have: {sorted(acc) or 'none'}); "
                "`python -m bench.suites.scale --part accuracy`.", ""]
        return rows + _scale_rows(p)
    plain, private = acc["none"], acc["user"]
    gap = 100 * (plain["final_accuracy"] - private["final_accuracy"])
    cfg = p["config"]
    rows = ["| run | rounds | ε (δ) | final accuracy | s/round (in-process) |",
            "|---|---|---|---|---|",
            f"| no DP | {plain['rounds']} | - | {100 * plain['final_accuracy']:.1f} % | "
            f"{plain['seconds_per_round']:.1f} |",
            f"| user-level DP-FedAvg, z = {private['noise_multiplier']:.3f} | "
            f"{private['rounds']} | {private['epsilon']:.2f} ({private['delta']:g}) | "
            f"{100 * private['final_accuracy']:.1f} % | {private['seconds_per_round']:.1f} |",
            "", f"Gap: **{gap:.1f} points** (goal: within {p['goal_points']:g}). "
            f"Scenario `{p['scenario']}`: {cfg.get('clients')} clients, "
            f"{cfg.get('clients-per-round')} expected per round (Poisson, q = "
            f"{int(cfg.get('clients-per-round', 0)) / int(cfg.get('clients', 1)):g}), "
            f"Dirichlet α = {cfg.get('alpha')}, {cfg.get('local-epochs')} local epochs of "
            f"batch {cfg.get('batch-size')} at lr {cfg.get('lr')}, clip C = "
            f"{cfg.get('clip-norm')}, strategy {cfg.get('strategy')}. ε is the federation's "
            "(PLD accountant, sampled Gaussian per round; McMahan et al. 2018). Each client's "
            "own ledger accounts without amplification (it cannot verify the server's "
            f"sampling): its largest ε is {_f1(private['clients_epsilon_max'])}.",
            "", "Accuracy after each round (no DP / DP): "
            f"{', '.join(f'{100 * a:.0f}' for a in plain['curve'])} / "
            f"{', '.join(f'{100 * a:.0f}' for a in private['curve'])}.", ""]
    return rows + _scale_rows(p)


def _scale_rows(p: dict[str, Any]) -> list[str]:
    if not p.get("scale"):
        return ["Scale (Ray) runs not measured yet: `python -m bench.suites.scale --part scale`."]
    rows = ["| clients (100 a round) | rounds | measured (UTC; 1-min load at start) | "
            "s/round | round 1 s | peak RSS: server / Ray workers "
            "/ Ray system / total (MiB) | largest worker VmHWM | Ray workers | client "
            "ledgers | per-client files (MiB) | identity keys |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in p["scale"]:
        pk = r["peak_rss_mib"]
        when = (f"{r['date']}; {r['load_average']:.1f}" if "date" in r
                else "before load was recorded")
        if "feature_cache_files" in r:
            files = r["feature_cache_files"]
            when += ("; no coefficient cache on disk" if files is None
                     else f"; {files} cached coefficient files")
        rows.append(
            f"| {r['clients']} | {r['rounds']} | {when} | {r['seconds_per_round']:.1f} | "
            f"{r['first_round_seconds']:.0f} "
            f"| {pk.get('server', 0):.0f} / {pk.get('ray_workers', 0):.0f} / "
            f"{pk.get('ray_system', 0):.0f} / {pk.get('total', 0):.0f} | "
            f"{r['max_hwm_mib'].get('ray_workers', 0):.0f} | {r['ray_workers']} | "
            f"{r['client_ledgers']} | {r['client_files']} ({r['client_mib']:.0f}) | "
            f"{r['identity_files']} |")
    rows += ["", f"Ray runs (`fedpriv simulate {p['scenario']} --set clients=N`), "
             "user-level DP, each row its own run (`--clients N`; the table merges them, "
             "so compare rows measured at a similar load); s/round excludes round 1, and "
             "with this few rounds it still includes the first visit of clients that round "
             "1 did not sample (their data and ScatterNet coefficients), which more clients "
             "make more of: the per-round cost at steady state needs longer runs. A row run with "
             "`FEDPRIV_FEATURE_CACHE` already holding coefficients (the file count it "
             "started with) skips computing them. "
             "What grows with the number of clients N: Ray actors do not (one per "
             f"`client-cpus` = 1 of the {p['cpus']} CPUs, whatever N); each actor process "
             "keeps the data set once, the partition of all N clients (one index array "
             "each, 60,000 indices in all) and up to 16 clients' ScatterNet coefficients "
             "(LRU; `FEDPRIV_FEATURE_CACHE` keeps each client's on disk, one file per "
             "client). Per client that has trained, the run directory keeps its own ledger "
             "(one SQLite file, `clients/<id>/ledger.sqlite`) and the replay copy of its last "
             "release (one model-sized safetensors file), and the server makes one identity "
             "key per client up front (`identities/`); the server's memory holds one "
             "ledger head, signature and epsilon per client that replied and the simulation "
             "engine's record of every SuperNode. Disk grows with N (a ledger and a replay "
             "file per client that trained, ~170 KB each here). Memory was measured only "
             "at the client counts in the table; which of it depends on N is the list above, "
             "from the code. 'Ray workers' counts every `ray::` process: the ClientApp "
             "actors and Ray's idle pre-started workers."]
    return rows


def _f1(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def main(argv: list[str] | None = None) -> int:
    """Run one part (``--part accuracy`` or ``scale``) and merge it into ``bench-scale.json``.

    The two parts are independent (in-process runs, Ray runs): on a shared machine each
    can run as its own process, then the README is rendered again from every suite's JSON.
    """
    import argparse

    from bench.suites.common import REPORT, RESULTS, meta, write
    from bench.suites.report import render as render_readme
    from bench.suites.runner import SUITES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", default="all", choices=(
        "accuracy", "accuracy-user", "accuracy-none", "scale", "all", "render"),
        help="render: only render bench/README.md again from the JSON files")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--clients", type=int, nargs="*", default=None,
                   help=f"scale: the client counts to run (default {SCALE_CLIENTS})")
    p.add_argument("--rounds", type=int, default=None,
                   help=f"scale: rounds per Ray run (default {SCALE_ROUNDS}; at least 2)")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    path = RESULTS / "bench-scale.json"
    if args.part == "render":
        payload = json.loads(path.read_text())
    elif args.part == "all":
        payload = {"meta": meta(args.quick), **run(args.quick)}
        payload["meta"]["seconds"] = time.monotonic() - t0
        write("bench-scale", payload)
    else:
        import fcntl

        part = _part(args.part, args.quick, args.clients, args.rounds)
        RESULTS.mkdir(parents=True, exist_ok=True)
        lock_path = Path(tempfile.gettempdir()) / "fedpriv-bench-scale.lock"
        with open(lock_path, "w") as lock:  # parts may end together
            fcntl.flock(lock, fcntl.LOCK_EX)
            payload = json.loads(path.read_text()) if path.exists() else {}
            part["accuracy"] = {**payload.get("accuracy", {}), **part.get("accuracy", {})}
            rows = {r["clients"]: r for r in [*payload.get("scale", []), *part.get("scale", [])]}
            part["scale"] = [rows[n] for n in sorted(rows)]
            payload.update(part)
            payload["meta"] = {**meta(args.quick), "parts": sorted(
                {*payload.get("meta", {}).get("parts", []), args.part}),
                "seconds": time.monotonic() - t0}
            write("bench-scale", payload)
    if {"accuracy", "scale"} & set(payload):
        results = {name: json.loads((RESULTS / f"bench-{name}.json").read_text())
                   for name in SUITES if (RESULTS / f"bench-{name}.json").exists()}
        REPORT.write_text(render_readme(results))
    print(json.dumps({k: v for k, v in payload.items() if k != "config"}, indent=1))
    return 0


def _part(part: str, quick: bool, clients: list[int] | None = None,
          rounds: int | None = None) -> dict[str, Any]:
    """``accuracy-user`` / ``accuracy-none`` (one in-process run), ``accuracy`` (both) or
    ``scale`` (the Ray runs)."""
    values = _scenario()
    if part.startswith("accuracy"):
        rounds = 5 if quick else int(values["rounds"])
        modes = ("none", "user") if part == "accuracy" else (part.split("-", 1)[1],)
        return {"scenario": SCENARIO, "config": {k: str(v) for k, v in values.items()},
                "cpus": os.cpu_count(), "goal_points": 10.0,
                "accuracy": {m: _accuracy(values, m == "user", rounds) for m in modes}}
    rounds = rounds or (3 if quick else SCALE_ROUNDS)
    clients = clients or ([100, 1000] if quick else list(SCALE_CLIENTS))
    return {"scenario": SCENARIO, "cpus": os.cpu_count(),
            "scale": [_ray_run(n, rounds) for n in clients]}


if __name__ == "__main__":
    raise SystemExit(main())
