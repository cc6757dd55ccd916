"""Wall time per round, fedpriv's protections against the plain Flower app.

10 clients on digits, the same MLP, rounds and local epochs. Ray's start-up and the
first round (actor warm-up) are excluded: time per round is (end of last round - end of
round 1) / (rounds - 1). Ratios are to the plain Flower FedAvg app, run first and again
last (the mean of the two; both are kept, to show how far the machine drifted); the full
stack is also compared with Flower's own SecAgg+ and DP wrapper
(:mod:`bench.suites.flower_secaggplus`), the same protections built from Flower's parts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.suites.common import ROOT, per_round, simulate

#: The fedpriv row compared with Flower's own SecAgg+ and DP wrapper (the same protections).
FULL_STACK = "fedpriv all (user-DP adaptive + secagg)"
FLOWER_SECAGG_DP = "Flower SecAgg+ + DP (client-side fixed clipping)"
PLAIN = "plain Flower FedAvg"


VARIANTS: dict[str, tuple[str, ...]] = {
    "fedpriv": (),
    "fedpriv record-DP": ("dp-mode=record",),
    "fedpriv user-DP": ("dp-mode=user",),
    "fedpriv secagg": ("secagg=true",),
    FULL_STACK: ("dp-mode=user", "clip=adaptive", "secagg=true"),
}


def _plain(rounds: int, epochs: int, app: str = "plain") -> dict[str, Any]:
    """Run a Flower peer app (``plain`` or ``secaggplus-dp``) in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "plain.json"
        proc = subprocess.run([sys.executable, "-m", "bench.suites.plain_flower", app,
                               str(rounds), str(epochs), str(out)], cwd=ROOT,
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"Flower app {app} failed:\n{proc.stderr[-2000:]}")
        data = json.loads(out.read_text())
    if data["final_accuracy"] <= data["initial_accuracy"]:
        raise RuntimeError(f"the Flower app {app} did not learn (its clients failed?): "
                           f"{data}")
    return {"seconds_per_round": per_round(data["round_ends"]),
            "final_accuracy": data["final_accuracy"]}


def _in_process(sets: tuple[str, ...]) -> float:
    """Seconds per round of the same run in this process, on the loopback grid.

    The real ServerApp and ClientApp code with the clients called one after another and no
    simulation engine: the round's own work, without the engine's 0.1 s scans between a
    message and its pickup (the difference to the Ray figure is those waits, and Ray's two
    clients at once).
    """
    from bench.suites.common import bench_config, run_in_process

    values = dict(kv.split("=", 1) for kv in sets)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        run_in_process(bench_config(values, run_dir), run_dir, scenario="bench-round")
        lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return per_round([r["elapsed_seconds"] for r in lines if "elapsed_seconds" in r])


def run(quick: bool) -> dict[str, Any]:
    """Seconds per round for the plain app, Flower's SecAgg+ with DP, and fedpriv's."""
    rounds, epochs = (3, 1) if quick else (10, 1)
    common = (f"rounds={rounds}", f"local-epochs={epochs}", "clients=10", "partition=iid")
    first = _plain(rounds, epochs)
    flower = _plain(rounds, epochs, "secaggplus-dp")
    rows = [{"variant": FLOWER_SECAGG_DP, **flower}]
    for name, sets in VARIANTS.items():
        summary, lines = simulate(*common, *sets)
        rows.append({"variant": name,
                     "seconds_per_round": per_round([r["elapsed_seconds"] for r in lines]),
                     "in_process_seconds_per_round": _in_process((*common, *sets)),
                     "final_accuracy": summary["final_accuracy"], "sets": list(sets)})
    # the baseline once before and once after the others: its mean is what the ratios
    # divide by, and the two runs show how far the machine moved during the suite
    last = _plain(rounds, epochs)
    runs = [first["seconds_per_round"], last["seconds_per_round"]]
    plain = {"variant": PLAIN, "seconds_per_round": sum(runs) / 2, "runs": runs,
             "final_accuracy": last["final_accuracy"]}
    rows.insert(0, plain)
    for row in rows:
        row["ratio_to_plain"] = row["seconds_per_round"] / plain["seconds_per_round"]
    full = next(r for r in rows if r["variant"] == FULL_STACK)
    full["ratio_to_flower_secagg_dp"] = full["seconds_per_round"] / flower["seconds_per_round"]
    return {"rounds": rounds, "local_epochs": epochs, "clients": 10, "rows": rows}
