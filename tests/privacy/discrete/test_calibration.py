import dataclasses

import pytest

from fedpriv.privacy import epsilon
from fedpriv.privacy.discrete import MAX_POISSON_MEAN, MAX_SIGMA, calibrate, distributed_epsilon
from fedpriv.privacy.events import Mechanism

TARGET, DELTA, ROUNDS, Q = 4.0, 1e-5, 20, 0.2
SETUP = dict(target_epsilon=TARGET, delta=DELTA, rounds=ROUNDS, sampling_rate=Q, clip=1.0,
             dimension=500, min_clients=10, max_clients=30, bits=16, wrap_bound=1e-9)


@pytest.fixture(scope="module", params=[Mechanism.SKELLAM_SUM, Mechanism.DDG_SUM])
def cal(request):
    return calibrate(mechanism=request.param, **SETUP)


def eps(params, clients=10):
    return distributed_epsilon(params, clients=clients, sampling_rate=Q, rounds=ROUNDS,
                               delta=DELTA)


def test_calibrated_noise_meets_the_target_and_slightly_less_misses_it(cal):
    assert cal.epsilon <= TARGET
    assert cal.epsilon == pytest.approx(eps(cal.params))
    less = dataclasses.replace(cal.params, local_variance=0.99 * cal.params.local_variance)
    assert eps(less) > TARGET


def test_the_scale_is_the_largest_the_wrap_bound_allows(cal):
    assert cal.wrap_probability <= 1e-9
    assert cal.wrap_probability == cal.params.wrap_probability(30)
    # gamma was bisected to 0.1 %: the bound is nearly used up, not wasted
    assert cal.wrap_probability > 0.5e-9


def test_more_survivors_than_the_minimum_only_add_privacy(cal):
    assert eps(cal.params, clients=30) < cal.epsilon


def test_the_reported_variance_and_the_ledger_event_agree_with_the_params(cal):
    p = cal.params
    assert cal.sum_noise_variance == pytest.approx(10 * p.local_variance / p.scale ** 2)
    assert p.mean_noise_std(10) ** 2 * 100 == pytest.approx(cal.sum_noise_variance)
    event = p.event(clients=10, sampling_rate=Q, rounds=ROUNDS)
    assert epsilon([event], DELTA) == pytest.approx(cal.epsilon, rel=1e-12)
    assert event.l2_sensitivity == p.l2_sensitivity and event.dimension == 512


def test_too_few_bits_are_refused():
    with pytest.raises(ValueError, match="raise bits"):
        calibrate(mechanism=Mechanism.SKELLAM_SUM, **{**SETUP, "bits": 6})


@pytest.mark.parametrize(("over", "message"), [
    (dict(target_epsilon=0.0), "target_epsilon must be"),
    (dict(delta=1.0), "delta must be"),
    (dict(rounds=0), "rounds must be"),
    (dict(min_clients=0), "min_clients must be"),
    (dict(max_clients=5), "max_clients must be an integer >= min_clients = 10"),
    (dict(bits=1), "bits must be"),
    (dict(wrap_bound=0.0), "wrap_bound must be"),
])
def test_bad_arguments_are_refused_naming_the_field(over, message):
    with pytest.raises(ValueError, match=message):
        calibrate(mechanism=Mechanism.DDG_SUM, **{**SETUP, **over})


@pytest.mark.parametrize("mechanism", [Mechanism.SKELLAM_SUM, Mechanism.DDG_SUM])
def test_a_weak_target_with_many_bits_stays_within_the_samplers_range(mechanism):
    # With 64 bits the wrap bound alone would allow scales whose noise exceeds what the
    # samplers can draw; the search must stop there instead of failing.
    cal = calibrate(mechanism=mechanism, target_epsilon=50.0, delta=1e-5, rounds=15,
                    sampling_rate=1.0, clip=1.0, dimension=17226, min_clients=6, bits=64,
                    max_clients=10)
    assert cal.epsilon <= 50.0 and cal.wrap_probability <= 1e-9
    top = MAX_SIGMA ** 2 if mechanism is Mechanism.DDG_SUM else 2 * MAX_POISSON_MEAN
    assert cal.params.local_variance <= top
