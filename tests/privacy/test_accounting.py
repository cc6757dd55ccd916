import math

import numpy as np
import pytest
from scipy.stats import norm

from fedpriv.privacy import (
    Accountant,
    DpSgdEvent,
    GaussianSumEvent,
    calibrate_noise_multiplier,
    epsilon,
    event_from_dict,
)


def gaussian_delta(eps: float, sigma: float) -> float:
    """Exact delta(eps) of one Gaussian mechanism with sensitivity 1 and std sigma.

    Balle & Wang 2018, "Improving the Gaussian Mechanism for Differential Privacy"
    (ICML), Theorem 8.
    """
    return norm.cdf(-eps * sigma + 1 / (2 * sigma)) - math.exp(eps) * norm.cdf(
        -eps * sigma - 1 / (2 * sigma))


@pytest.mark.parametrize("sigma", [0.8, 1.0, 2.0, 5.0])
def test_pld_matches_the_analytic_gaussian_mechanism(sigma):
    ev = GaussianSumEvent(noise_multiplier=sigma, sampling_rate=1.0, clip=1.0)
    delta = 1e-5
    eps = epsilon([ev], delta)
    # PLD is a (tight) upper bound: at its epsilon the exact delta is just below target,
    # and a slightly smaller epsilon already needs a larger delta.
    assert gaussian_delta(eps, sigma) <= delta * 1.0001
    assert gaussian_delta(eps * 0.99, sigma) > delta


def test_rdp_matches_opacus_independent_implementation():
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    q, sigma, steps, delta = 0.01, 1.1, 2000, 1e-5
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    rdp = compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=orders)
    opacus_eps, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    ours = epsilon([DpSgdEvent(noise_multiplier=sigma, sampling_rate=q, steps=steps,
                               clip=1.0)], delta, Accountant.RDP)
    assert ours == pytest.approx(opacus_eps, rel=0.02)


def test_pld_is_tighter_than_rdp_and_both_grow_with_steps():
    delta = 1e-5
    e = [DpSgdEvent(noise_multiplier=1.0, sampling_rate=0.05, steps=s, clip=1.0)
         for s in (100, 400)]
    pld = [epsilon([x], delta) for x in e]
    rdp = [epsilon([x], delta, Accountant.RDP) for x in e]
    assert pld[0] < pld[1] and rdp[0] < rdp[1]
    assert all(p <= r for p, r in zip(pld, rdp, strict=True))
    assert pld[1] > 0.7 * rdp[1]  # same mechanism: the two bounds are close


def test_composition_of_events_equals_one_event_with_more_steps():
    a = DpSgdEvent(noise_multiplier=1.0, sampling_rate=0.1, steps=50, clip=1.0)
    b = DpSgdEvent(noise_multiplier=1.0, sampling_rate=0.1, steps=100, clip=2.0)
    assert epsilon([a, a], 1e-5) == pytest.approx(epsilon([b], 1e-5))
    assert epsilon([], 1e-5) == 0.0


def test_calibration_round_trips():
    sigma = calibrate_noise_multiplier(2.0, 1e-5, sampling_rate=0.02, steps=500)
    ev = DpSgdEvent(noise_multiplier=sigma, sampling_rate=0.02, steps=500, clip=1.0)
    assert epsilon([ev], 1e-5, Accountant.RDP) == pytest.approx(2.0, rel=0.01)
    assert epsilon([ev], 1e-5) <= 2.0 + 1e-9  # the reported PLD figure stays within target


@pytest.mark.parametrize("bad", [
    {"noise_multiplier": 0.0}, {"noise_multiplier": -1.0}, {"sampling_rate": 0.0},
    {"sampling_rate": 1.5}, {"clip": 0.0}, {"steps": -1}, {"noise_multiplier": math.nan},
])
def test_events_reject_bad_parameters_naming_them(bad):
    params = {"noise_multiplier": 1.0, "sampling_rate": 0.1, "steps": 10, "clip": 1.0}
    params.update(bad)
    with pytest.raises(ValueError, match=next(iter(bad))):
        DpSgdEvent(**params)


def test_event_round_trip_and_delta_domain():
    ev = GaussianSumEvent(noise_multiplier=1.3, sampling_rate=0.25, clip=0.7, rounds=3)
    assert event_from_dict(ev.to_dict()) == ev
    with pytest.raises(ValueError, match="mechanism"):
        event_from_dict({"mechanism": "laplace"})
    with pytest.raises(ValueError, match=r"delta must be in \(0, 1\), got 0"):
        epsilon([ev], 0)


def test_sampling_amplifies():
    full = GaussianSumEvent(noise_multiplier=1.0, sampling_rate=1.0, clip=1.0, rounds=10)
    sub = GaussianSumEvent(noise_multiplier=1.0, sampling_rate=0.1, clip=1.0, rounds=10)
    assert epsilon([sub], 1e-5) < 0.5 * epsilon([full], 1e-5)
    assert np.isfinite(epsilon([full], 1e-5))
