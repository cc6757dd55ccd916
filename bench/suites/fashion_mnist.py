"""The privacy/utility frontier on Fashion-MNIST, federated and non-IID (issue 15).

10 clients, Dirichlet(0.5) label skew, the ScatterNet + linear model of Tramèr & Boneh
2021 (``model = scatternet``) with the settings of the shipped scenario
``fashion-mnist-scatternet-dp``: non-private, and record-level DP-SGD on every client
calibrated to the whole run's epsilon in {1, 3, 8} (delta 1e-5). Beside each, the
centralised figure: one client holding all 60,000 images (its sampling rate is then
batch / 60,000 rather than batch / its share), :data:`CENTRAL`'s epochs. Then the
recipes' ablation at epsilon 3 (:data:`RECIPES`): from the baseline FedAvg recipe to the
scenario as shipped, one recipe at a time, with the points each bought. And the same
task under ``dp-mode = record-central`` (scenario ``fashion-mnist-scatternet-central-dp``:
one step of centralised DP-SGD a round, the noise added once by the server, which is
trusted with it) at each epsilon. Writes ``bench/results/utility-fashion-mnist.png``.

Runs are in-process (:func:`bench.suites.common.run_in_process`: the real ServerApp and
ClientApp on a loopback grid, no Ray), :data:`WORKERS` at once. ``--quick`` runs the same
code on the first 6,000 training and 1,000 test images (written as IDX files to a
temporary ``dataset-dir``), 3 rounds, one epsilon.

The scattering coefficients of every data layout are put in ``FEDPRIV_FEATURE_CACHE``
(a temporary directory when unset) before the runs: the clients' shares and the test
split computed once, the one-client layout gathered from the clients' rows.
``python -m bench.suites.fashion_mnist [--quick]`` runs this part alone and puts it
under ``fashion_mnist`` in ``bench-utility.json``, keeping the digits results there, then
renders ``bench/README.md`` again; ``--explore`` runs the variations that were
tried and not kept (:data:`EXPLORED`) and are not in the results yet (``--again``: all of
them), and adds them to the results already there, each row with its own date;
``--central-dp`` runs only the record-central rows and puts them in the results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bench.suites.common import REPORT, RESULTS, bench_config, meta, run_in_process

SCENARIO = "fashion-mnist-scatternet-dp"
#: The same task with the noise added once a round by the server (dp-mode = record-central:
#: one step of centralised DP-SGD a round; the server is trusted with the noise).
CENTRAL_DP_SCENARIO = "fashion-mnist-scatternet-central-dp"
EPSILONS = (1.0, 3.0, 8.0)
#: The centralised comparison: one client with all the data (each run costs as much as a
#: federated one on two cores, so at the headline epsilon only).
CENTRAL_EPSILONS = (3.0,)
#: The centralised recipe (Tramèr & Boneh's shape: epochs of DP-SGD with momentum): the
#: scenario's model, batch, lr and clip, 20 epochs; server momentum means nothing with one
#: client, whose every round is one epoch.
CENTRAL = {"clients": 1, "partition": "iid", "rounds": 20, "server-momentum": 0.0}
#: Issue 15's recipes at epsilon 3, each row adding one to the row before; the last is
#: the scenario as shipped (its row is the headline epsilon 3 run, not run twice).
BASELINE = {"rounds": 20, "server-momentum": 0.0, "server-momentum-lr": 1.0}
RECIPES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("baseline: 20 rounds of 1 local epoch (~3 steps), FedAvg", BASELINE),
    ("+ server momentum beta 0.9, eta 2 (FedAvgM), 20 rounds",
     {**BASELINE, "server-momentum": 0.9, "server-momentum-lr": 2.0}),
    ("+ 40 rounds (~120 steps; noise calibrated for all of them)", {}),
)
#: Variations of the shipped scenario at epsilon 3 that were measured and not kept
#: (``--explore``): the README lists each beside the scenario's figure.
EXPLORED: tuple[tuple[str, dict[str, Any]], ...] = (
    ("100 rounds instead of 40 (~300 local steps; sigma calibrated for all of them)",
     {"rounds": 100}),
    ("batch 512 and lr 2 instead of 2048 and 4 (~12 local steps a round), 40 rounds",
     {"batch-size": 512, "lr": 2.0}),
    ("batch 4096 instead of 2048 (~1.5 local steps a round; less noise per step, fewer "
     "steps), lr 4, 40 rounds", {"batch-size": 4096}),
    ("batch 4096 and lr 8 instead of 2048 and 4, 40 rounds",
     {"batch-size": 4096, "lr": 8.0}),
    ("tanh CNN with group norm (Papernot et al. 2021, the tempered sigmoid s = 2, T = 2, "
     "o = 1) instead of ScatterNet + linear, the scenario's batch, lr and clip",
     {"model": "cnn"}),
    ("no group norm on the scattering coefficients (Tramèr & Boneh 2021, Section 3.1: "
     "their data-independent normalisation, off)", {"scatternet-norm-groups": 0}),
    ("parameter averaging: the server releases the EMA of the round models, beta 0.9 "
     "(De et al. 2022)", {"ema-decay": 0.9}),
)
#: Runs at once (processes); the machine the results came from has 2 cores.
WORKERS = 2
PLOT = "utility-fashion-mnist.png"
#: Okabe & Ito's colour-blind-safe palette.
_BLUE, _VERMILION, _GREEN, _PURPLE = "#0072B2", "#D55E00", "#009E73", "#CC79A7"
_SKY = "#56B4E9"


def _scenario_values(name: str = SCENARIO) -> dict[str, Any]:
    from simulations.scenarios import load_scenario

    values = dict(load_scenario(name).values)
    for key in ("dp-mode", "target-epsilon", "max-epsilon"):
        values.pop(key, None)
    return values


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


def federate(values: dict[str, Any]) -> dict[str, Any]:
    """One run in-process (the real ServerApp and ClientApp on a loopback grid): summary."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        return run_in_process(bench_config(values, run), run, scenario=SCENARIO)


def _run(values: dict[str, Any], mode: str, eps: float | None, setting: str
         ) -> dict[str, Any]:
    extra = ({"dp-mode": "none"} if eps is None else
             {"dp-mode": mode, "target-epsilon": eps, "max-epsilon": math.inf})
    t0 = time.monotonic()
    summary = federate({**values, **extra})
    if summary.get("status") != "completed":
        raise RuntimeError(f"{setting} {mode} run ended {summary.get('status')}: "
                           f"{summary.get('reason')}")
    return {"setting": setting, "mode": mode, "target": eps,
            "epsilon": summary["epsilon"]["federation"] if eps is not None else None,
            "final_accuracy": summary["final_accuracy"],
            "seconds": time.monotonic() - t0}


def _prime_centralised(values: dict[str, Any], central: dict[str, Any]) -> None:
    """Every layout's coefficients in the cache before the runs: the clients' shares and
    the test split (computed once), then the one-client layout's, gathered from the
    clients' (no recomputing).

    The scattering maps each image on its own, so the centralised client's coefficients
    are the federated clients' rows in its order (:func:`remember_features`).
    """
    from fedpriv.config import RunConfig
    from fedpriv.tasks import load_task_data, model_inputs
    from fedpriv.tasks.features import clear_feature_cache, remember_features
    from fedpriv.tasks.partition import partition_indices

    def indices(cfg: RunConfig) -> list[Any]:
        return partition_indices(train, scheme=cfg.data.resolved_partition,
                                 num_partitions=cfg.training.clients,
                                 seed=cfg.training.seed, alpha=cfg.data.alpha,
                                 classes_per_client=cfg.data.classes_per_client)

    fed = RunConfig.from_mapping(values)
    train = load_task_data(fed).train
    model_inputs(fed, load_task_data(fed).test)
    parts = indices(fed)
    if sum(len(i) for i in parts) != len(train):
        return  # not a partition of the whole pool: the runs compute their own
    import numpy as np

    full = np.empty((len(train), 81, 7, 7), np.float32)  # (n, 81, 7, 7)
    for idx in parts:
        full[idx] = model_inputs(fed, train.subset(idx)).x
    (order,) = indices(RunConfig.from_mapping({**values, **central}))
    remember_features(train.x[order], full[order], groups=fed.model.scatternet_norm_groups)
    clear_feature_cache()  # the runs read them back; this process keeps no copy


@contextlib.contextmanager
def _feature_cache(tmp: Path) -> Iterator[None]:
    """``FEDPRIV_FEATURE_CACHE`` for the runs inside: the user's if set, else a directory
    in ``tmp`` (filled once, read by every run), unset again on the way out."""
    if os.environ.get("FEDPRIV_FEATURE_CACHE") is not None:
        yield
        return
    os.environ["FEDPRIV_FEATURE_CACHE"] = str(tmp / "features")
    try:
        yield
    finally:
        os.environ.pop("FEDPRIV_FEATURE_CACHE", None)


def run(quick: bool, workers: int = WORKERS) -> dict[str, Any]:
    """Accuracy and epsilon, federated and centralised, non-private and at each epsilon;
    the recipes' ablation at epsilon 3. ``workers`` runs go at once (1: in this process)."""
    t0 = time.monotonic()
    values = _scenario_values()
    epsilons = (3.0,) if quick else EPSILONS
    with tempfile.TemporaryDirectory() as tmp, _feature_cache(Path(tmp)):
        if quick:
            data = _subset_dir(Path(tmp), 6000, 1000)
            values.update({"dataset-dir": str(data), "rounds": 3})
        central = {**values, **CENTRAL, **({"rounds": 3} if quick else {})}
        _prime_centralised(values, central)  # every layout's coefficients, once
        jobs: list[tuple[dict[str, Any], str, float | None, str]] = [
            (values, "none", None, "federated")]
        jobs += [(values, "record", eps, "federated") for eps in sorted(epsilons)]
        jobs += [(central, "none", None, "centralised")]
        jobs += [(central, "record", eps, "centralised") for eps in CENTRAL_EPSILONS]
        jobs += _central_dp_jobs(epsilons, quick, values.get("dataset-dir"))
        recipes = [(label, {**values, **changes, **({"rounds": 3} if quick else {})})
                   for label, changes in RECIPES if changes]
        jobs += [(v, "record", 3.0, "federated") for _, v in recipes]
        done = _run_all(jobs, workers)
    rows, extra = done[:len(jobs) - len(recipes)], done[len(jobs) - len(recipes):]
    headline = next(r for r in rows if r["setting"] == "federated" and r["target"] == 3.0)
    ablation = _ablation(values, headline, dict(zip([lb for lb, _ in recipes], extra,
                                                    strict=True)))
    config = {k: _plain(v) for k, v in values.items() if k != "dataset-dir"}
    _plot(rows, config, quick)
    central_dp_config = {k: _plain(v) for k, v in
                         _scenario_values(CENTRAL_DP_SCENARIO).items()}
    return {"meta": {**meta(quick), "seconds": time.monotonic() - t0, "workers": workers},
            "scenario": SCENARIO, "config": config, "rows": rows, "plot": PLOT,
            "central_dp": {"scenario": CENTRAL_DP_SCENARIO, "config": central_dp_config},
            "central": {k: _plain(v) for k, v in CENTRAL.items()},
            "ablation": ablation,
            "data": "first 6,000 train / 1,000 test images" if quick else
            "60,000 train / 10,000 test images"}


def _central_dp_jobs(epsilons: Iterable[float], quick: bool, data_dir: str | None = None
                     ) -> list[tuple[dict[str, Any], str, float | None, str]]:
    """The record-central scenario's runs, one per epsilon (its own rounds and step)."""
    values = _scenario_values(CENTRAL_DP_SCENARIO)
    if quick:
        values.update({"rounds": 3, **({"dataset-dir": data_dir} if data_dir else {})})
    return [(values, "record-central", eps, "federated") for eps in sorted(epsilons)]


def central_dp(workers: int = WORKERS) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Only the record-central rows, on the full data (``--central-dp``): rows, config."""
    with tempfile.TemporaryDirectory() as tmp, _feature_cache(Path(tmp)):
        rows = _run_all(_central_dp_jobs(EPSILONS, False), workers)
    config = {k: _plain(v) for k, v in _scenario_values(CENTRAL_DP_SCENARIO).items()}
    return rows, config


def explore(workers: int = WORKERS, kept: dict[str, Any] | None = None) -> dict[str, Any]:
    """Each of :data:`EXPLORED` at epsilon 3 on the full data: accuracy and epsilon.

    ``kept``: an earlier ``explore`` result for the same scenario run; its rows for
    variations still in :data:`EXPLORED` (the same changes) are kept with their dates,
    and only the others run.
    """
    t0 = time.monotonic()
    values = _scenario_values()
    old = {json.dumps(r["changes"], sort_keys=True): r for r in (kept or {}).get("rows", [])}
    when = (kept or {}).get("meta", {}).get("date")

    def key(changes: dict[str, Any]) -> str:
        return json.dumps({k: _plain(v) for k, v in changes.items()}, sort_keys=True)

    todo = [(label, ch) for label, ch in EXPLORED if key(ch) not in old]
    with tempfile.TemporaryDirectory() as tmp, _feature_cache(Path(tmp)):
        done = _run_all([({**values, **changes}, "record", 3.0, "federated")
                         for _, changes in todo], workers) if todo else []
    now = meta(False)["date"]
    ran = {key(ch): {**row, "variation": label, "date": now,
                     "changes": {k: _plain(v) for k, v in ch.items()}}
           for (label, ch), row in zip(todo, done, strict=True)}
    rows = [ran.get(key(ch)) or {"date": when, **old[key(ch)], "variation": label}
            for label, ch in EXPLORED]
    return {"meta": {**meta(False), "seconds": time.monotonic() - t0, "workers": workers},
            "rows": rows}


def _run_all(jobs: list[tuple[Any, ...]], workers: int) -> list[dict[str, Any]]:
    """``_run`` of each job, in order; ``workers`` processes at once (1: here)."""
    if workers <= 1:
        return [_run(*job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a fresh interpreter per worker (no forked torch threads); each reads the
    # coefficients from FEDPRIV_FEATURE_CACHE, which the parent filled
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_run, *zip(*jobs, strict=True)))


def _ablation(values: dict[str, Any], headline: dict[str, Any],
              runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each recipe's row at epsilon 3 and the points it bought over the row before."""
    out: list[dict[str, Any]] = []
    for label, changes in RECIPES:
        row = dict(runs[label]) if changes else dict(headline)
        run_values = {**values, **changes}
        row.update(recipe=label, rounds=int(run_values["rounds"]),
                   server_momentum=float(run_values.get("server-momentum", 0.0)))
        prev = out[-1]["final_accuracy"] if out else None
        row["points"] = None if prev is None else 100 * (row["final_accuracy"] - prev)
        out.append(row)
    return out


def _plain(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


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
                    label=f"{setting}, record-level DP-SGD"
                    + (" (noise on each client)" if setting == "federated" else ""))
        pts = sorted((r["epsilon"], 100 * r["final_accuracy"]) for r in rows
                     if r["setting"] == setting and r["mode"] == "record-central")
        if pts:
            ax.plot(*zip(*pts, strict=True), color=_SKY, marker="^", linestyle="-.",
                    label=f"{setting}, record-central (noise once, by the server)")
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
    p.add_argument("--workers", type=int, default=WORKERS,
                   help=f"runs at once, in processes (default {WORKERS}; 1: in this one)")
    p.add_argument("--explore", action="store_true",
                   help="only run the variations that were tried and not kept (EXPLORED) "
                   "and are not in the results yet, at epsilon 3, and add them to the "
                   "Fashion-MNIST results")
    p.add_argument("--again", action="store_true",
                   help="with --explore: run every variation, even those already measured")
    p.add_argument("--central-dp", action="store_true",
                   help=f"only run the record-central scenario ({CENTRAL_DP_SCENARIO}) at "
                   "each epsilon and put its rows in the Fashion-MNIST results")
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
    elif args.central_dp:
        if "fashion_mnist" not in payload:
            raise SystemExit("no Fashion-MNIST results to add to: run this module first")
        result = payload["fashion_mnist"]
        rows, config = central_dp(args.workers)
        result["rows"] = [r for r in result["rows"] if r["mode"] != "record-central"] + rows
        result["central_dp"] = {"scenario": CENTRAL_DP_SCENARIO, "config": config,
                                "date": meta(False)["date"]}
        _plot(result["rows"], result["config"], result["meta"]["quick"])
        path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    elif args.explore:
        if "fashion_mnist" not in payload:
            raise SystemExit("no Fashion-MNIST results to add to: run this module first")
        result = payload["fashion_mnist"]
        result["explored"] = explore(args.workers,
                                     None if args.again else result.get("explored"))
        path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    else:  # a new run replaces the variations too: they were measured against the old one
        result = run(args.quick, args.workers)
        payload["fashion_mnist"] = result
        path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    results = {name: json.loads((RESULTS / f"bench-{name}.json").read_text())
               for name in SUITES if (RESULTS / f"bench-{name}.json").exists()}
    REPORT.write_text(render(results))
    print(json.dumps(result["rows"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
