"""The privacy/utility frontier on Fashion-MNIST, federated and non-IID (issue 15).

10 clients, Dirichlet(0.5) label skew, the ScatterNet + linear model of Tramèr & Boneh
2021 (``model = scatternet``) with the settings of the shipped scenario
``fashion-mnist-scatternet-dp``: non-private, and record-level DP-SGD on every client
calibrated to the whole run's epsilon in {1, 3, 8} (delta 1e-5). Beside each, the
centralised figure: the same recipe with one client holding all 60,000 images (its
sampling rate is then batch / 60,000 rather than batch / its share). Writes
``bench/results/utility-fashion-mnist.png``.

``--quick`` runs the same code on the first 6,000 training and 1,000 test images (written
as IDX files to a temporary ``dataset-dir``), fewer rounds, one epsilon.

The scattering coefficients of a data set are computed once and shared by the runs
through a temporary ``FEDPRIV_FEATURE_CACHE`` (the first run pays for them; its time
says so). ``python -m bench.suites.fashion_mnist [--quick]`` runs this part alone and
puts it under ``fashion_mnist`` in ``bench-utility.json``, keeping the digits results
there, then renders ``bench/results/README.md`` again.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.suites.common import RESULTS, meta, simulate

SCENARIO = "fashion-mnist-scatternet-dp"
EPSILONS = (1.0, 3.0, 8.0)
#: The centralised comparison: one client with all the data (each run costs as much as a
#: federated one on two cores, so at the headline epsilon only).
CENTRAL_EPSILONS = (3.0,)
PLOT = "utility-fashion-mnist.png"
#: Okabe & Ito's colour-blind-safe palette.
_BLUE, _VERMILION, _GREEN, _PURPLE = "#0072B2", "#D55E00", "#009E73", "#CC79A7"


def _scenario_sets() -> list[str]:
    from simulations.scenarios import load_scenario

    values = load_scenario(SCENARIO).values
    drop = {"dp-mode", "target-epsilon", "max-epsilon"}
    return [f"{k}={_plain(v)}" for k, v in values.items() if k not in drop]


def _plain(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _subset_dir(root: Path, n_train: int, n_test: int) -> Path:
    """The first images of the installed Fashion-MNIST as IDX files (``--quick``)."""
    from fedpriv.tasks import write_idx
    from fedpriv.tasks.fashion_mnist import DEFAULT_DIR, FILES, find_idx_files
    from fedpriv.tasks.idx import read_idx

    found = find_idx_files(DEFAULT_DIR)
    for role, name in FILES.items():
        n = n_train if role.startswith("train") else n_test
        array = read_idx(found[role], ndim=3 if role.endswith("images") else 1)
        write_idx(root / name, array[:n])
    return root


def _run(sets: list[str], mode: str, eps: float | None, setting: str) -> dict[str, Any]:
    extra = (["dp-mode=none"] if eps is None else
             ["dp-mode=record", f"target-epsilon={eps:g}", "max-epsilon=inf"])
    t0 = time.monotonic()
    summary, _ = simulate(*sets, *extra, timeout=3600)
    return {"setting": setting, "mode": mode, "target": eps,
            "epsilon": summary["epsilon"]["federation"] if eps is not None else None,
            "final_accuracy": summary["final_accuracy"],
            "seconds": time.monotonic() - t0}


def run(quick: bool) -> dict[str, Any]:
    """Accuracy and epsilon, federated and centralised, non-private and at each epsilon."""
    t0 = time.monotonic()
    sets = _scenario_sets()
    epsilons = (3.0,) if quick else EPSILONS
    saved = os.environ.get("FEDPRIV_FEATURE_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FEDPRIV_FEATURE_CACHE"] = str(Path(tmp) / "features")
        try:
            if quick:
                data = _subset_dir(Path(tmp), 6000, 1000)
                sets += [f"dataset-dir={data}", "rounds=3"]
            central = [*sets, "clients=1", "partition=iid"]
            rows = [_run(sets, "record", eps, "federated") for eps in sorted(
                epsilons, key=lambda e: e != 3.0)]  # the headline first: it pays for features
            rows.insert(0, _run(sets, "none", None, "federated"))
            rows += [_run(central, "none", None, "centralised")]
            rows += [_run(central, "record", eps, "centralised") for eps in CENTRAL_EPSILONS]
        finally:
            if saved is None:
                os.environ.pop("FEDPRIV_FEATURE_CACHE", None)
            else:
                os.environ["FEDPRIV_FEATURE_CACHE"] = saved
    rows[1:1 + len(epsilons)] = sorted(rows[1:1 + len(epsilons)], key=lambda r: r["target"])
    config = dict(s.split("=", 1) for s in sets if not s.startswith("dataset-dir="))
    _plot(rows, config, quick)
    return {"meta": {**meta(quick), "seconds": time.monotonic() - t0},
            "scenario": SCENARIO, "config": config, "rows": rows, "plot": PLOT,
            "data": "first 6,000 train / 1,000 test images" if quick else
            "60,000 train / 10,000 test images"}


def _plot(rows: list[dict[str, Any]], config: dict[str, str], quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, 4.2))
    styles = {"federated": (_BLUE, "o", _GREEN), "centralised": (_VERMILION, "s", _PURPLE)}
    for setting, (colour, marker, ceiling_colour) in styles.items():
        pts = sorted((r["epsilon"], 100 * r["final_accuracy"]) for r in rows
                     if r["setting"] == setting and r["mode"] == "record")
        if pts:
            ax.plot(*zip(*pts, strict=True), color=colour, marker=marker,
                    label=f"{setting}, record-level DP-SGD")
        for r in rows:
            if r["setting"] == setting and r["mode"] == "none":
                ax.axhline(100 * r["final_accuracy"], color=ceiling_colour, linestyle="--",
                           label=f"{setting}, no DP ({100 * r['final_accuracy']:.1f} %)")
    ax.axhline(89.7, color="grey", linestyle=":", label="Tramèr & Boneh 2021, central, ε≈3")
    ax.set_xscale("log")
    eps = sorted({round(r["epsilon"]) for r in rows if r["epsilon"]})
    if eps:
        ax.set_xticks(eps, labels=[f"{e:g}" for e in eps])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("privacy budget ε per record (PLD accountant, δ = 10⁻⁵; dimensionless)")
    ax.set_ylabel("test accuracy (%)")
    lo = min(100 * r["final_accuracy"] for r in rows)
    ax.set_ylim(max(0.0, math.floor(lo / 5) * 5 - 5), 100)
    ax.set_title(f"Fashion-MNIST{' (quick subset)' if quick else ''}, ScatterNet + linear, "
                 f"{config.get('clients', '?')} clients, Dirichlet α = {config.get('alpha')}",
                 fontsize=10)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / PLOT, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the Fashion-MNIST part alone; merge it into ``bench-utility.json``."""
    from bench.suites.report import render
    from bench.suites.runner import SUITES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a 6,000-image subset, 3 rounds")
    p.add_argument("--replot", action="store_true",
                   help="only redraw the plot and README from bench-utility.json (no runs)")
    args = p.parse_args(argv)
    path = RESULTS / "bench-utility.json"
    payload = json.loads(path.read_text()) if path.exists() else None
    if payload is None:
        raise SystemExit(f"{path} is missing: run `fedpriv bench utility` first")
    if args.replot:
        result = payload["fashion_mnist"]
        _plot(result["rows"], result["config"], result["meta"]["quick"])
    else:
        result = run(args.quick)
        payload["fashion_mnist"] = result
        path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    results = {name: json.loads((RESULTS / f"bench-{name}.json").read_text())
               for name in SUITES if (RESULTS / f"bench-{name}.json").exists()}
    (RESULTS / "README.md").write_text(render(results))
    print(json.dumps(result["rows"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
