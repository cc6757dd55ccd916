import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from fedpriv.privacy import (
    Accountant,
    DpSgdEvent,
    GaussianSumEvent,
    Mechanism,
    calibrate_noise_multiplier,
    epsilon,
    epsilon_by_step,
    event_from_dict,
    sampled_gaussian,
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


@pytest.mark.parametrize(("sigmas", "delta"), [((1.0,), 1e-5), ((0.8, 0.8, 0.8), 1e-5),
                                               ((5.0,) * 100, 1e-6), ((0.3, 20.0), 1e-5),
                                               ((3.0,) * 40, 1e-9)])
def test_unsampled_gaussians_get_the_exact_gaussian_epsilon(sigmas, delta):
    """Gaussians compose to one with 1/sigma^2 = sum 1/sigma_i^2 (Dong, Roth & Su 2022):
    the reported epsilon is where that Gaussian's exact delta (Balle & Wang 2018) meets
    the target, from the safe side; PLD at a fine interval is at most 1e-6 above it."""
    from dp_accounting import pld

    events = [GaussianSumEvent(noise_multiplier=s, sampling_rate=1.0, clip=1.0)
              for s in sigmas]
    eps = epsilon(events, delta)
    sigma = sum(1 / s**2 for s in sigmas) ** -0.5
    assert gaussian_delta(eps, sigma) <= delta
    assert gaussian_delta(eps * (1 - 1e-9), sigma) > delta
    fine = pld.PLDAccountant(value_discretization_interval=1e-4)
    for s in sorted(set(sigmas)):  # n equal Gaussians: the accountant's sigma/sqrt(n)
        fine.compose(sampled_gaussian(s, 1.0, sigmas.count(s)))
    assert eps <= fine.get_epsilon(delta)
    assert eps == pytest.approx(fine.get_epsilon(delta), rel=1e-6)
    assert epsilon(events, 0.5) == 0.0 or gaussian_delta(0.0, sigma) > 0.5


@pytest.mark.parametrize(("q", "sigma", "steps"), [(0.01, 1.1, 10_000), (0.05, 0.8, 500)])
def test_rdp_matches_opacus_rdp_accountant(q, sigma, steps):
    from opacus.accountants import RDPAccountant

    delta = 1e-5
    opacus = RDPAccountant()
    opacus.history = [(sigma, q, steps)]  # what `steps` calls of opacus.step(...) record
    ev = DpSgdEvent(noise_multiplier=sigma, sampling_rate=q, steps=steps, clip=1.0)
    ours_rdp = epsilon([ev], delta, Accountant.RDP)
    ours_pld = epsilon([ev], delta, Accountant.PLD)
    # Same math (Mironov et al. 2019), slightly different order grids.
    assert ours_rdp == pytest.approx(opacus.get_epsilon(delta), rel=0.01)
    # PLD is tighter, and close: the two bound the same mechanism.
    assert 0.7 * ours_rdp < ours_pld <= ours_rdp


def test_known_value_dp_sgd_q001_sigma11_10k_steps():
    # Pinned against dp-accounting 0.6 / Opacus 1.6 (RDP 5.632, PLD at 1e-3 grid 5.196).
    ev = DpSgdEvent(noise_multiplier=1.1, sampling_rate=0.01, steps=10_000, clip=1.0)
    assert epsilon([ev], 1e-5, Accountant.RDP) == pytest.approx(5.632, abs=5e-3)
    assert epsilon([ev], 1e-5, Accountant.PLD) == pytest.approx(5.196, abs=5e-3)


def test_pld_is_tighter_than_rdp_and_both_grow_with_steps():
    delta = 1e-5
    e = [DpSgdEvent(noise_multiplier=1.0, sampling_rate=0.05, steps=s, clip=1.0)
         for s in (100, 400)]
    pld = [epsilon([x], delta) for x in e]
    rdp = [epsilon([x], delta, Accountant.RDP) for x in e]
    assert pld[0] < pld[1] and rdp[0] < rdp[1]
    assert all(p <= r for p, r in zip(pld, rdp, strict=True))


def test_composition_of_events_equals_one_event_with_more_steps():
    a = DpSgdEvent(noise_multiplier=1.0, sampling_rate=0.1, steps=50, clip=1.0)
    b = DpSgdEvent(noise_multiplier=1.0, sampling_rate=0.1, steps=100, clip=2.0)
    assert epsilon([a, a], 1e-5) == pytest.approx(epsilon([b], 1e-5))
    mixed = [a, GaussianSumEvent(noise_multiplier=2.0, sampling_rate=1.0, clip=1.0)]
    assert epsilon(mixed, 1e-5) > epsilon([a], 1e-5)
    assert epsilon([], 1e-5) == 0.0
    zero = DpSgdEvent(noise_multiplier=1.0, sampling_rate=0.1, steps=0, clip=1.0)
    assert epsilon([zero], 1e-5) == 0.0


_GROUP = st.tuples(st.sampled_from([0.5, 0.9, 1.3, 3.0]),
                   st.sampled_from([0.003, 0.1, 0.45, 1.0]), st.integers(1, 40))


@settings(max_examples=8, deadline=None)
@given(st.lists(_GROUP, min_size=1, max_size=3), st.sampled_from([1e-3, 1e-5, 1e-7]))
def test_pld_epsilon_is_dp_accountings_own_number_bit_for_bit(groups, delta):
    """fedpriv keeps each step's PLD and self-composes it; the figure must be exactly
    what a fresh dp-accounting PLDAccountant reports for the same events (steps with
    equal (sigma, q) merged into one self-composition), whether the step's PLD was
    already kept or not, and in a ledger's growing prefix order; unsampled Gaussians
    alone get the exact Gaussian figure, at most PLD's."""
    from dp_accounting import pld

    from fedpriv.privacy.accounting import PLD_DISCRETIZATION

    events = [DpSgdEvent(noise_multiplier=s, sampling_rate=q, steps=n, clip=1.0)
              for s, q, n in groups]
    for end in range(1, len(events) + 1):
        counts: dict[tuple[float, float], int] = {}
        for s, q, n in groups[:end]:  # equal (sigma, q): one self-composition, as documented
            counts[(s, q)] = counts.get((s, q), 0) + n
        ref = pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
        for (s, q), n in sorted(counts.items()):
            ref.compose(sampled_gaussian(s, q, n))
        want = ref.get_epsilon(delta)
        got = epsilon(events[:end], delta)
        assert epsilon(list(reversed(events[:end])), delta) == got
        if any(q < 1 for q in {q for _, q in counts}):
            assert got == want
        else:  # unsampled Gaussians only: the exact figure, which PLD bounds from above
            assert got <= want
            assert got == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize(("sigma", "q", "n"), [
    (1.0, 32 / 144, 1), (1.0, 32 / 143, 37), (0.8, 0.5, 7), (1.1, 0.01, 1000),
    (3.0, 0.05, 300),  # a step PMF small enough for dp-accounting to keep sparse
])
def test_kept_log_mgfs_give_the_librarys_own_self_composition(sigma, q, n):
    """The self-composition that keeps the Chernoff bound's log-MGFs per step must give
    dp-accounting's PMFs exactly (same support, probabilities and infinity mass), however
    many times it is asked and in whatever order of n."""
    from fedpriv.privacy.accounting import _self_composer, _step_pld

    step = _step_pld(sigma, q)
    composer = _self_composer(sigma, q)
    for m in (n, 1, n + 1, n):
        want, got = step.self_compose(m), composer.compose(m)
        for a, b in ((want._pmf_remove, got._pmf_remove), (want._pmf_add, got._pmf_add)):
            a, b = a.to_dense_pmf(), b.to_dense_pmf()
            assert a._lower_loss == b._lower_loss
            assert a._infinity_mass == b._infinity_mass
            assert np.array_equal(a._probs, b._probs)
        assert got.get_epsilon_for_delta(1e-5) == want.get_epsilon_for_delta(1e-5)
    with pytest.raises(ValueError, match="num_times"):
        composer.compose(0)


def test_epsilon_by_step_is_cumulative_and_increasing():
    ev = GaussianSumEvent(noise_multiplier=1.0, sampling_rate=0.2, clip=1.0)
    series = epsilon_by_step([ev] * 5, 1e-5)
    assert len(series) == 5 and all(a < b for a, b in zip(series, series[1:], strict=False))
    assert series[-1] == pytest.approx(epsilon([ev] * 5, 1e-5))


@pytest.mark.parametrize("accountant", [Accountant.PLD, Accountant.RDP])
def test_sigma_zero_is_infinite_epsilon_explicitly(accountant):
    leak = GaussianSumEvent(noise_multiplier=0.0, sampling_rate=0.1, clip=1.0)
    fine = GaussianSumEvent(noise_multiplier=1.0, sampling_rate=0.1, clip=1.0)
    assert epsilon([fine, leak], 1e-5, accountant) == math.inf
    assert leak.to_dp_event().event.__class__.__name__ == "NonPrivateDpEvent"
    silent = DpSgdEvent(noise_multiplier=0.0, sampling_rate=0.1, steps=0, clip=1.0)
    assert epsilon([silent], 1e-5, accountant) == 0.0  # no step, no release


def test_dp_event_shapes():
    import dp_accounting as dpa

    sampled = DpSgdEvent(noise_multiplier=1.5, sampling_rate=0.1, steps=7, clip=1.0)
    assert sampled.to_dp_event() == dpa.SelfComposedDpEvent(
        dpa.PoissonSampledDpEvent(0.1, dpa.GaussianDpEvent(1.5)), 7)
    full = GaussianSumEvent(noise_multiplier=1.5, sampling_rate=1.0, clip=1.0, rounds=3)
    assert full.to_dp_event() == dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(1.5), 3)
    assert sampled_gaussian(1.0, 0.5, 0) == dpa.NoOpDpEvent()


@pytest.mark.parametrize("accountant", [Accountant.RDP, Accountant.PLD])
def test_calibration_round_trips_sigma_to_epsilon_to_sigma(accountant):
    q, steps, delta = 0.02, 300, 1e-5
    sigma = 1.3
    ev = DpSgdEvent(noise_multiplier=sigma, sampling_rate=q, steps=steps, clip=1.0)
    eps = epsilon([ev], delta, accountant)
    back = calibrate_noise_multiplier(eps, delta, q, steps, accountant=accountant)
    assert back == pytest.approx(sigma, rel=5e-3)
    calibrated = DpSgdEvent(noise_multiplier=back, sampling_rate=q, steps=steps, clip=1.0)
    assert epsilon([calibrated], delta, accountant) <= eps * 1.001


def test_calibration_hits_the_reported_pld_target_from_below():
    # The default search ends on PLD (the reported accountant): within 0.1 % under it.
    sigma = calibrate_noise_multiplier(2.0, 1e-5, sampling_rate=0.02, steps=500)
    ev = DpSgdEvent(noise_multiplier=sigma, sampling_rate=0.02, steps=500, clip=1.0)
    assert 2.0 * 0.999 <= epsilon([ev], 1e-5) <= 2.0
    # RDP's own calibration is looser: its sigma is larger, so PLD reports less.
    rdp_sigma = calibrate_noise_multiplier(2.0, 1e-5, 0.02, 500, accountant=Accountant.RDP)
    assert rdp_sigma > sigma
    rdp_ev = DpSgdEvent(noise_multiplier=rdp_sigma, sampling_rate=0.02, steps=500, clip=1.0)
    assert epsilon([rdp_ev], 1e-5, Accountant.RDP) == pytest.approx(2.0, rel=0.01)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"target_epsilon": 0.0}, "target_epsilon must be in"),
    ({"target_epsilon": math.inf}, "target_epsilon must be in"),
    ({"delta": 0.0}, r"delta must be in \(0, 1\), got 0.0"),
    ({"sampling_rate": 0.0}, "sampling_rate must be in"),
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"target_epsilon": 1e-6}, "no noise multiplier"),
])
def test_calibration_rejects_bad_input(kwargs, match):
    args = {"target_epsilon": 1.0, "delta": 1e-5, "sampling_rate": 0.1, "steps": 10}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        calibrate_noise_multiplier(**args)


@pytest.mark.parametrize(("bad", "match"), [
    ({"noise_multiplier": -1.0}, r"noise_multiplier must be in \[0, inf\), got -1.0"),
    ({"noise_multiplier": math.inf}, "noise_multiplier must be in"),
    ({"noise_multiplier": math.nan}, "noise_multiplier must be in"),
    ({"noise_multiplier": "1"}, "noise_multiplier must be a real number"),
    ({"sampling_rate": 0.0}, r"sampling_rate must be in \(0, 1\], got 0.0"),
    ({"sampling_rate": 1.5}, "sampling_rate must be in"),
    ({"clip": 0.0}, "clip must be in"),
    ({"clip": math.inf}, "clip must be in"),
    ({"steps": -1}, "steps must be an integer >= 0, got -1"),
    ({"steps": 1.5}, "steps must be an integer"),
    ({"steps": True}, "steps must be an integer"),
])
def test_events_reject_bad_parameters_naming_them(bad, match):
    params = {"noise_multiplier": 1.0, "sampling_rate": 0.1, "steps": 10, "clip": 1.0}
    params.update(bad)
    with pytest.raises(ValueError, match=match):
        DpSgdEvent(**params)
    with pytest.raises(ValueError, match="rounds must be an integer >= 1, got 0"):
        GaussianSumEvent(noise_multiplier=1.0, sampling_rate=0.1, clip=1.0, rounds=0)


def test_events_are_frozen_and_normalise_numbers():
    ev = GaussianSumEvent(noise_multiplier=1, sampling_rate=1, clip=2)
    assert ev.to_dict() == {"mechanism": "gaussian-sum", "noise_multiplier": 1.0,
                            "sampling_rate": 1.0, "clip": 2.0, "rounds": 1}
    assert isinstance(ev.noise_multiplier, float) and ev.mechanism is Mechanism.GAUSSIAN_SUM
    with pytest.raises(AttributeError):
        ev.clip = 3.0  # type: ignore[misc]


pos = st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False)
rate = st.floats(1e-9, 1.0, allow_nan=False).filter(lambda x: x > 0)
events = st.one_of(
    st.builds(DpSgdEvent, noise_multiplier=st.one_of(st.just(0.0), pos), sampling_rate=rate,
              steps=st.integers(0, 10**9), clip=pos),
    st.builds(GaussianSumEvent, noise_multiplier=st.one_of(st.just(0.0), pos),
              sampling_rate=rate, clip=pos, rounds=st.integers(1, 10**6)),
)


@settings(max_examples=200, deadline=None)
@given(events)
def test_event_json_round_trip_is_exact(ev):
    again = event_from_dict(json.loads(json.dumps(ev.to_dict(), allow_nan=False)))
    assert again == ev and type(again) is type(ev)
    assert again.to_dict() == ev.to_dict()


@pytest.mark.parametrize(("data", "match"), [
    ({"mechanism": "laplace"}, "mechanism must be one of"),
    ({"noise_multiplier": 1.0}, "mechanism must be one of"),
    ({"mechanism": "gaussian-sum", "noise_multiplier": 1.0, "sampling_rate": 1.0,
      "clip": 1.0, "extra": 1}, "has no parameter"),
    ({"mechanism": "dp-sgd", "noise_multiplier": 1.0}, "needs parameter"),
])
def test_event_from_dict_rejects_malformed(data, match):
    with pytest.raises(ValueError, match=match):
        event_from_dict(data)


def test_epsilon_validates_delta_and_events():
    ev = GaussianSumEvent(noise_multiplier=1.3, sampling_rate=0.25, clip=0.7, rounds=3)
    for bad in (0.0, 1.0, -1e-5, math.nan):
        with pytest.raises(ValueError, match=r"delta must be in \(0, 1\)"):
            epsilon([ev], bad)
    with pytest.raises(ValueError, match="events must be"):
        epsilon([ev.to_dict()], 1e-5)  # type: ignore[list-item]


def test_sampling_amplifies():
    full = GaussianSumEvent(noise_multiplier=1.0, sampling_rate=1.0, clip=1.0, rounds=10)
    sub = GaussianSumEvent(noise_multiplier=1.0, sampling_rate=0.1, clip=1.0, rounds=10)
    assert epsilon([sub], 1e-5) < 0.5 * epsilon([full], 1e-5)
    assert np.isfinite(epsilon([full], 1e-5))
