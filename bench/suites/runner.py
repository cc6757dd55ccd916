"""Run the suites and write ``bench/results/<name>.json`` and ``bench/README.md``.

``fedpriv bench [NAME ...] [--quick]`` or ``python -m bench.suites [NAME ...] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from bench.suites import (
    accounting,
    deploy,
    dpsgd,
    edge,
    lm,
    movielens,
    round,
    scale,
    utility,
)
from bench.suites.common import REPORT, RESULTS, meta, write
from bench.suites.report import render

__all__ = ["SUITES", "main", "run_suites"]


def _secagg(quick: bool) -> dict[str, Any]:
    from bench.secagg.run import main as secagg_main

    secagg_main(["--quick"] if quick else [])
    name = "secagg-quick" if quick else "secagg"
    return {"rows": json.loads((RESULTS / f"{name}.json").read_text())["rows"],
            "source": f"bench/results/{name}.json"}


SUITES: dict[str, Callable[[bool], dict[str, Any]]] = {
    "dpsgd": dpsgd.run, "accounting": accounting.run, "secagg": _secagg,
    "round": round.run, "deploy": deploy.run, "utility": utility.run, "lm": lm.run,
    "edge": edge.run, "movielens": movielens.run, "scale": scale.run,
}


def run_suites(names: list[str], quick: bool) -> dict[str, Any]:
    """Run ``names`` (all if empty), write each JSON and the README table."""
    unknown = sorted(set(names) - set(SUITES))
    if unknown:
        raise ValueError(f"unknown suite(s) {unknown}; choose from {sorted(SUITES)}")
    results: dict[str, Any] = {}
    for name in names or list(SUITES):
        t0 = time.monotonic()
        print(f"bench: {name} ...", flush=True)
        payload = {"meta": meta(quick), **SUITES[name](quick)}
        payload["meta"]["seconds"] = time.monotonic() - t0
        write(f"bench-{name}", payload)
        results[name] = payload
        print(f"bench: {name} done in {payload['meta']['seconds']:.0f} s", flush=True)
    for name in SUITES:  # the README reports every suite that has results
        if name not in results and (RESULTS / f"bench-{name}.json").exists():
            results[name] = json.loads((RESULTS / f"bench-{name}.json").read_text())
    results = {name: results[name] for name in SUITES if name in results}  # fixed order
    REPORT.write_text(render(results))
    return results


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description="fedpriv benchmark suites")
    p.add_argument("names", nargs="*", help=f"suites to run (default all): {sorted(SUITES)}")
    p.add_argument("--quick", action="store_true", help="small settings (a few minutes)")
    args = p.parse_args(argv)
    run_suites(args.names, args.quick)
    print(REPORT.read_text())
    return 0
