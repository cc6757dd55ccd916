"""Wall time per deployed round on loopback: a plain Flower deployment against fedpriv's.

Both federations are real processes on 127.0.0.1, started and stopped the way the
deployment tests do it (:mod:`bench.local_deploy`): a SuperLink, ``NODES`` SuperNodes
(each with its SuperExec and one ``flwr-clientapp`` process per message) and ``flwr run``.
Both run without TLS (``--insecure``), so neither pays a handshake the other does not.

- plain: ``flower-superlink`` / ``flower-supernode`` with Flower's defaults and the plain
  FedAvg app of the round suite (:data:`bench.suites.plain_flower.deployed`, copied into a
  Flower app directory of its own), each node training its IID share of digits;
- fedpriv: ``fedpriv deploy superlink`` / ``fedpriv deploy supernode`` (``--threads 1``)
  and ``flwr run .`` with record-level DP-SGD and secure aggregation, each device holding
  the same IID share as an ``.npz`` file, its own ledger and its secure-aggregation
  identity (``fedpriv certs node``).

Time per round is (end of the last round - end of round 1) / (rounds - 1), as in the
round suite: round 1 pays every process's first imports. Each SuperNode's log is
time-stamped line by line; from Flower's own lines in it every message a node handled
is split into the stretches of :data:`STRETCHES` (``flwr-clientapp`` logs its start
after importing Flower, so the second stretch ends there).
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.suites.common import ROOT, per_round

NODES = 2
#: fedpriv's federation in the deploy test and docs/deploy.md: devices with their own
#: ledgers, record-level DP-SGD, secure aggregation.
FEDPRIV_SETS = 'dp-mode="record" secagg=true'

_PLAIN_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "plainflower"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "bench"

[tool.flwr.app.components]
serverapp = "plain_flower:deployed"
clientapp = "plain_flower:client"

[tool.flwr.app.config]
rounds = 3
local-epochs = 1
nodes = 2
out = ""
"""

_STAMP = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) ")


def _plain_app(where: Path) -> Path:
    """A Flower app directory holding only the plain app (no fedpriv code in its FAB)."""
    app = where / "plain-app"
    app.mkdir()
    shutil.copy(ROOT / "bench" / "suites" / "plain_flower.py", app / "plain_flower.py")
    (app / "pyproject.toml").write_text(_PLAIN_PYPROJECT)
    return app


def _seconds(line: str) -> float | None:
    m = _STAMP.match(line)
    if m is None:
        return None
    h, mi, s, ms = (int(g) for g in m.groups())
    return 3600 * h + 60 * mi + s + ms / 1000


#: A SuperNode's log lines that mark a message's way through it, in order.
MARKS = (("receiving", "Receiving: "), ("received", "Received successfully"),
         ("clientapp", "Start `flwr-clientapp` process"), ("sending", "Sending: "),
         ("sent", "Sent successfully"))
#: The stretches between consecutive marks (the last: from a reply to the next message).
STRETCHES = ("pull the message", "SuperExec poll, process start, Flower's imports",
             "ClientApp: app imports and work, reply to the SuperNode",
             "push the reply", "until the next message (cohort, ServerApp, idle poll)")


def message_times(log: str) -> dict[str, Any]:
    """From a time-stamped SuperNode log: the median seconds of each of :data:`STRETCHES`
    over the messages the node handled, and how many it handled."""
    events = []
    for line in log.splitlines():
        t = _seconds(line)
        for name, needle in MARKS:
            if t is not None and needle in line:
                events.append((name, t))
    order = [name for name, _ in MARKS]
    spans: dict[str, list[float]] = {s: [] for s in STRETCHES}
    for (ka, a), (kb, b) in zip(events, events[1:], strict=False):
        i = order.index(ka)
        if order[(i + 1) % len(order)] == kb:
            spans[STRETCHES[i]].append(b - a)
    return {"messages": sum(k == "sent" for k, _ in events),
            "stretches_s": {k: statistics.median(v) for k, v in spans.items() if v}}


def _federation(kind: str, rounds: int, tmp: Path) -> dict[str, Any]:
    """Start a SuperLink and :data:`NODES` SuperNodes, run ``kind``'s app, stop them."""
    from bench.local_deploy import (
        BIN,
        Processes,
        deploy_env,
        free_port,
        run,
        wait_for_port,
        write_device_data,
        write_flwr_config,
    )

    env = deploy_env(tmp)
    logs = tmp / "logs"
    logs.mkdir()
    port = free_port()
    fedpriv = BIN / "fedpriv"
    write_flwr_config(tmp / "flwr-home", port)
    procs = Processes(env, logs)
    try:
        if kind == "plain":
            procs.start("superlink", BIN / "flower-superlink", "--insecure", "--port", port,
                        "--database", tmp / "state.db",
                        "--disable-runtime-dependency-installation")
            wait_for_port(port)
            for i in range(NODES):
                procs.start(f"node-{i + 1}", BIN / "flower-supernode", "--insecure",
                            "--superlink", f"127.0.0.1:{port}", "--port", free_port(),
                            "--node-config", f"partition-id={i} num-partitions={NODES}")
            out = tmp / "plain.json"
            app = _plain_app(tmp)
            config = f'rounds={rounds} local-epochs=1 nodes={NODES} out="{out}"'
        else:
            certs = tmp / "certs"  # the devices' secure-aggregation identities and roster
            made = [run(env, fedpriv, "certs", "init", certs, "--host", "127.0.0.1")]
            made += [run(env, fedpriv, "certs", "node", f"node-{i + 1}", "--dir", certs)
                     for i in range(NODES)]
            if any(m.returncode != 0 for m in made):
                raise RuntimeError("fedpriv certs failed:\n"
                                   + "".join(m.stderr for m in made))
            write_device_data(tmp, NODES)
            procs.start("superlink", fedpriv, "deploy", "superlink", "--insecure", "--port",
                        port, "--database", tmp / "state.db")
            wait_for_port(port)
            for i in range(1, NODES + 1):
                procs.start(f"node-{i}", fedpriv, "deploy", "supernode", f"node-{i}",
                            "--insecure", "--certs", certs, "--superlink",
                            f"127.0.0.1:{port}", "--data-dir", tmp / f"data-{i}",
                            "--ledger", tmp / f"node-{i}.sqlite", "--port", free_port(),
                            "--threads", 1)
            out = tmp / "run"
            app = ROOT
            config = (f"rounds={rounds} clients={NODES} local-epochs=1 {FEDPRIV_SETS} "
                      f'run-dir="{out}"')
        t0 = time.monotonic()
        flwr_run = run(env, BIN / "flwr", "run", app, "fedpriv", "--stream", "--run-config",
                       config, timeout=300 + 120 * rounds)
        wall = time.monotonic() - t0
        listed = run(env, BIN / "flwr", "ls", "--format", "json")
        status = [r["status"] for r in json.loads(listed.stdout)["runs"]]
        if flwr_run.returncode != 0 or status != ["finished:completed"]:
            raise RuntimeError(f"{kind} deployment failed ({status}):\n"
                               f"{flwr_run.stdout[-3000:]}{flwr_run.stderr[-2000:]}")
    finally:
        procs.stop_all()
    if kind == "plain":
        data = json.loads(out.read_text())
        ends, acc = data["round_ends"], data["final_accuracy"]
    else:
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        ends = [r["elapsed_seconds"] for r in lines]
        acc = json.loads((out / "summary.json").read_text())["final_accuracy"]
    nodes = [message_times((logs / f"node-{i}.log").read_text()) for i in range(1, NODES + 1)]
    return {"seconds_per_round": per_round(ends), "round_ends": ends,
            "final_accuracy": acc, "flwr_run_seconds": wall,
            "messages_per_round": nodes[0]["messages"] / rounds,
            "stretches_s": {k: statistics.median(n["stretches_s"][k] for n in nodes
                                                 if k in n["stretches_s"])
                            for k in STRETCHES if any(k in n["stretches_s"] for n in nodes)}}


def run(quick: bool) -> dict[str, Any]:
    """Seconds per deployed round, plain Flower and fedpriv (DP + secure aggregation)."""
    rounds = 2 if quick else 3
    rows = []
    for kind, variant in (("plain", "plain Flower FedAvg, deployed"),
                          ("fedpriv", "fedpriv record-DP + secagg, deployed")):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append({"variant": variant, **_federation(kind, rounds, Path(tmp))})
    for r in rows:
        r["ratio_to_plain"] = r["seconds_per_round"] / rows[0]["seconds_per_round"]
    return {"rounds": rounds, "nodes": NODES, "local_epochs": 1, "transport": "insecure",
            "fedpriv_run_config": FEDPRIV_SETS, "rows": rows}
