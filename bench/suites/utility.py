"""The privacy/utility frontier on digits: final accuracy against epsilon.

Record-level DP-SGD calibrated to target epsilons (the whole run's budget), and
user-level DP-FedAvg at several noise multipliers, with the non-private accuracy as the
ceiling; then distributed DP against central user-level DP at the same epsilon
(:mod:`bench.suites.distributed`). Writes ``bench/results/utility.png``. Then the
Fashion-MNIST frontier, federated and centralised (:mod:`bench.suites.fashion_mnist`;
``utility-fashion-mnist.png``).
"""

from __future__ import annotations

from typing import Any

from bench.suites import distributed, fashion_mnist
from bench.suites.common import RESULTS, simulate


def run(quick: bool) -> dict[str, Any]:
    """Accuracy and epsilon for each configuration; the plot."""
    rounds = 5 if quick else 15
    base = (f"rounds={rounds}", "partition=iid")
    ceiling, _ = simulate(*base)
    rows = [{"mode": "none", "target": None, "epsilon": None,
             "final_accuracy": ceiling["final_accuracy"]}]
    for eps in (1.0, 3.0, 8.0):
        summary, _ = simulate(*base, "dp-mode=record", f"target-epsilon={eps}")
        rows.append({"mode": "record", "target": eps,
                     "epsilon": summary["epsilon"]["federation"],
                     "final_accuracy": summary["final_accuracy"]})
    if not quick:
        for z in (0.5, 1.0, 2.0):
            summary, _ = simulate(*base, "dp-mode=user", f"noise-multiplier={z}",
                                  "clients-per-round=5")
            rows.append({"mode": "user", "noise_multiplier": z,
                         "epsilon": summary["epsilon"]["federation"],
                         "final_accuracy": summary["final_accuracy"]})
    _plot(rows, rounds)
    return {"rounds": rounds, "rows": rows, "distributed": distributed.run(quick),
            "fashion_mnist": _fashion_mnist_or_why_not(quick)}


def _fashion_mnist_or_why_not(quick: bool) -> dict[str, Any]:
    """The Fashion-MNIST frontier, or why it was skipped (its data is an optional install)."""
    from fedpriv.config import ConfigError
    from fedpriv.tasks.fashion_mnist import DEFAULT_DIR, find_idx_files

    try:
        find_idx_files(DEFAULT_DIR)
    except ConfigError as err:
        print(f"bench: utility: Fashion-MNIST skipped ({err}); `make data` installs it",
              flush=True)
        return {"skipped": f"Fashion-MNIST is not installed ({err}); `make data` installs it"}
    return fashion_mnist.run(quick)


def _plot(rows: list[dict[str, Any]], rounds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, marker in (("record", "o"), ("user", "s")):
        pts = sorted((r["epsilon"], r["final_accuracy"]) for r in rows if r["mode"] == mode)
        if pts:
            ax.plot(*zip(*pts, strict=True), marker=marker, label=f"{mode}-level DP")
    ax.axhline(rows[0]["final_accuracy"], color="grey", linestyle="--", label="no DP")
    ax.set_xscale("log")
    ax.set_xlabel("ε (PLD, δ = 1e-5)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"digits, 10 clients, {rounds} rounds")
    ax.legend()
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "utility.png", dpi=100)
    plt.close(fig)
