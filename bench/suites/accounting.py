"""Accountants compared on the same events: PLD (reported), RDP, and Opacus' PRV.

Rows are the DP-SGD configurations of digits clients (q ~ 0.2-0.3, 15 rounds of 5
local epochs) and of DP-SGD on larger data (q = 0.01, thousands of steps). The ratios say
how much more epsilon the looser accountant charges for the same training.
"""

from __future__ import annotations

import warnings
from typing import Any

from fedpriv.privacy import Accountant, DpSgdEvent, GaussianSumEvent, epsilon

DELTA = 1e-5


def _prv(sigma: float, q: float, steps: int) -> float | None:
    from opacus.accountants import PRVAccountant

    acc = PRVAccountant()
    acc.history = [(sigma, q, steps)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(acc.get_epsilon(delta=DELTA))
    except (ValueError, RuntimeError):
        return None  # PRV's domain does not cover every (sigma, q, steps)


def run(quick: bool) -> dict[str, Any]:
    """Epsilon by accountant for a grid of (sigma, q, steps)."""
    grid = [(1.0, 0.22, 15 * 23), (1.0, 0.3, 15 * 17), (2.0, 0.22, 15 * 23),
            (1.1, 0.01, 1000), (1.1, 0.01, 10_000), (0.8, 0.004, 5000)]
    fedavg = [(1.0, 0.5, 15), (1.0, 0.1, 100)]
    if quick:  # one row of each mechanism: the ones Opacus' PRV computes fastest
        grid, fedavg = grid[3:4], fedavg[1:]
    rows = []
    for sigma, q, steps in grid:
        ev = DpSgdEvent(noise_multiplier=sigma, sampling_rate=q, steps=steps, clip=1.0)
        pld = epsilon([ev], DELTA)
        rdp = epsilon([ev], DELTA, Accountant.RDP)
        prv = _prv(sigma, q, steps)
        rows.append({"mechanism": "dp-sgd", "sigma": sigma, "q": q, "steps": steps,
                     "delta": DELTA, "pld": pld, "rdp": rdp, "prv": prv,
                     "rdp_over_pld": rdp / pld, "prv_over_pld": None if prv is None
                     else prv / pld})
    for z, q, rounds in fedavg:
        ev2 = GaussianSumEvent(noise_multiplier=z, sampling_rate=q, clip=1.0, rounds=rounds)
        pld = epsilon([ev2], DELTA)
        rdp = epsilon([ev2], DELTA, Accountant.RDP)
        prv = _prv(z, q, rounds)
        rows.append({"mechanism": "dp-fedavg", "sigma": z, "q": q, "steps": rounds,
                     "delta": DELTA, "pld": pld, "rdp": rdp, "prv": prv,
                     "rdp_over_pld": rdp / pld, "prv_over_pld": None if prv is None
                     else prv / pld})
    return {"rows": rows}
