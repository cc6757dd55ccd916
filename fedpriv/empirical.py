"""The audit's empirical privacy estimate of a run with canary clients.

Andrew et al. 2024, "One-shot Empirical Privacy Estimation for Federated Learning"
(ICLR), final-model variant: the cosines between ``Delta = theta_T - theta_0`` and the k
inserted canary directions, against those of directions never inserted, give an
epsilon estimate (:func:`fedpriv.privacy.empirical_epsilon`). A correct mechanism keeps
it at or below the accounted epsilon; an estimate above it means the run added less
noise than its ledger says.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from fedpriv.messages import CANARY_FILE
from fedpriv.privacy import cosines, empirical_epsilon

__all__ = ["CONFIDENCE_Z", "UNOBSERVED", "estimate_run"]

#: How many never-inserted directions estimate the null distribution.
UNOBSERVED = 1000

#: A claim is called false only when the estimate's one-sided 99.87 % lower confidence
#: bound (3 standard errors) exceeds it: with every canary in every round (q = 1) the
#: final-model estimate of a correct run is centred on the tight bound itself, so the
#: point estimate alone would exceed a true claim about half the time, and a 95 % bound
#: one time in twenty.
CONFIDENCE_Z = 3.0


def _flat(path: Path) -> np.ndarray:
    arrays = load_file(path)  # sorted names: the order the canaries use
    return np.concatenate([np.asarray(arrays[k], np.float64).ravel()
                           for k in sorted(arrays)])


def estimate_run(root: Path, canaries: int, *, delta: float, claimed: float | None,
                 problems: list[str]) -> dict[str, Any] | None:
    """The empirical estimate for the run in ``root``; problems are appended in place."""
    try:
        key = bytes.fromhex(json.loads((root / CANARY_FILE).read_text())["key"])
        delta_model = _flat(root / "model.safetensors") - _flat(
            root / "model-initial.safetensors")
    except (OSError, ValueError, KeyError) as err:
        problems.append(f"{root}: canary run without what the estimate needs ({err})")
        return None
    observed = cosines(delta_model, key, range(canaries))
    unobserved = cosines(delta_model, key, range(canaries, canaries + UNOBSERVED))
    eps = empirical_epsilon(observed, unobserved, delta)
    lower = empirical_epsilon(observed, unobserved, delta, z=CONFIDENCE_Z)
    out = {"method": "Andrew et al. 2024, one-shot, final model", "canaries": canaries,
           "unobserved": UNOBSERVED, "epsilon": eps, "epsilon_lower": lower,
           "confidence": "one-sided 99.87 % (3 standard errors)",
           "claimed": claimed,
           "observed_cosine_mean": float(np.mean(observed)),
           "unobserved_cosine_std": float(np.std(unobserved, ddof=1))}
    if claimed is not None and lower > claimed:
        problems.append(
            f"empirical privacy estimate {eps:.3f} (99.87 % lower bound {lower:.3f}) exceeds "
            f"the claimed epsilon {claimed:.3f}: the run added less noise than its ledger "
            "records")
    return out
