"""Wall time per round, fedpriv's protections against the plain Flower app.

10 clients on digits, the same MLP, rounds and local epochs. Ray's start-up and the
first round (actor warm-up) are excluded: time per round is (end of last round - end of
round 1) / (rounds - 1). Ratios are to the plain Flower FedAvg app.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.suites.common import ROOT, per_round, simulate

VARIANTS: dict[str, tuple[str, ...]] = {
    "fedpriv": (),
    "fedpriv record-DP": ("dp-mode=record",),
    "fedpriv user-DP": ("dp-mode=user",),
    "fedpriv secagg": ("secagg=true",),
    "fedpriv all (user-DP adaptive + secagg)": ("dp-mode=user", "clip=adaptive",
                                                "secagg=true"),
}


def _plain(rounds: int, epochs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "plain.json"
        proc = subprocess.run([sys.executable, "-m", "bench.suites.plain_flower", str(rounds),
                               str(epochs), str(out)], cwd=ROOT, capture_output=True,
                              text=True, timeout=900)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"plain Flower app failed:\n{proc.stderr[-2000:]}")
        data = json.loads(out.read_text())
    if data["final_accuracy"] <= data["initial_accuracy"]:
        raise RuntimeError("the plain Flower app did not learn (its clients failed?): "
                           f"{data}")
    return {"seconds_per_round": per_round(data["round_ends"]),
            "final_accuracy": data["final_accuracy"]}


def run(quick: bool) -> dict[str, Any]:
    """Seconds per round for the plain app and each fedpriv variant."""
    rounds, epochs = (3, 1) if quick else (10, 1)
    common = (f"rounds={rounds}", f"local-epochs={epochs}", "clients=10", "partition=iid")
    plain = _plain(rounds, epochs)
    rows = [{"variant": "plain Flower FedAvg", **plain, "ratio_to_plain": 1.0}]
    for name, sets in VARIANTS.items():
        summary, lines = simulate(*common, *sets)
        spr = per_round([r["elapsed_seconds"] for r in lines])
        rows.append({"variant": name, "seconds_per_round": spr,
                     "final_accuracy": summary["final_accuracy"],
                     "ratio_to_plain": spr / plain["seconds_per_round"],
                     "sets": list(sets)})
    return {"rounds": rounds, "local_epochs": epochs, "clients": 10, "rows": rows}
