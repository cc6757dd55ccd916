"""The DistributedNoiseEvent: validation, JSON round trip, ledger, and epsilon()."""

import dataclasses
import json
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp as dp_rdp

from fedpriv.privacy import (
    Accountant,
    DistributedNoiseEvent,
    GaussianSumEvent,
    Mechanism,
    PrivacyLedger,
    epsilon,
    event_from_dict,
    sampled_gaussian,
)
from fedpriv.privacy.discrete import RDP_ORDERS, event_rdp, rdp_to_epsilon
from fedpriv.privacy.prv import prv_epsilon


def make(**over):
    params = dict(mechanism=Mechanism.SKELLAM_SUM, l1_sensitivity=120.0, l2_sensitivity=40.0,
                  local_variance=300.0, clients=20, dimension=1024, sampling_rate=0.1,
                  bits=20, rounds=3)
    params.update(over)
    return DistributedNoiseEvent(**params)


@pytest.mark.parametrize("mechanism", [Mechanism.SKELLAM_SUM, Mechanism.DDG_SUM])
def test_round_trips_through_canonical_json(mechanism):
    ev = make(mechanism=mechanism)
    text = json.dumps(ev.to_dict(), sort_keys=True, separators=(",", ":"))
    back = event_from_dict(json.loads(text))
    assert back == ev and back.mechanism is mechanism
    assert json.loads(text)["mechanism"] == mechanism.value
    assert make(clients=7).count == 3


def test_integers_and_strings_are_normalised_so_records_serialise_one_way():
    ev = make(mechanism="ddg-sum", l2_sensitivity=40, local_variance=300)
    assert ev.mechanism is Mechanism.DDG_SUM
    assert ev.to_dict() == make(mechanism=Mechanism.DDG_SUM).to_dict()


@pytest.mark.parametrize(("over", "message"), [
    (dict(mechanism=Mechanism.GAUSSIAN_SUM), "mechanism must be one of"),
    (dict(mechanism="laplace"), "mechanism must be one of"),
    (dict(l2_sensitivity=0.0), r"l2_sensitivity must be in \(0, inf\)"),
    (dict(l1_sensitivity=40.0 * 32 * 1.01), "l1_sensitivity must be in"),
    (dict(local_variance=-1.0), r"local_variance must be in \[0, inf\)"),
    (dict(local_variance=math.inf), "local_variance must be in"),
    (dict(clients=0), "clients must be an integer >= 1"),
    (dict(sampling_rate=0.0), "sampling_rate must be in"),
    (dict(bits=65), r"bits must be an integer in \[2, 64\]"),
    (dict(rounds=0), "rounds must be an integer >= 1"),
])
def test_invalid_events_are_refused_naming_the_field(over, message):
    with pytest.raises(ValueError, match=message):
        make(**over)


def test_from_dict_rejects_unknown_and_missing_parameters():
    data = make().to_dict()
    with pytest.raises(ValueError, match="has no parameter"):
        event_from_dict({**data, "noise_multiplier": 1.0})
    del data["clients"]
    with pytest.raises(ValueError, match="needs parameter"):
        event_from_dict(data)


def test_epsilon_of_a_distributed_event_is_its_rdp_converted():
    ev = make()
    expected = rdp_to_epsilon(RDP_ORDERS, event_rdp(ev), 1e-5)
    assert epsilon([ev], 1e-5) == pytest.approx(expected, rel=1e-12)
    assert epsilon([make(rounds=1)] * 3, 1e-5) == pytest.approx(expected, rel=1e-12)
    assert 0 < expected < math.inf


def test_mixed_lists_compose_everything_in_rdp():
    gauss = GaussianSumEvent(noise_multiplier=1.1, sampling_rate=0.05, clip=1.0, rounds=40)
    dist = make()
    acc = dp_rdp.RdpAccountant(orders=[float(a) for a in RDP_ORDERS])
    acc.compose(sampled_gaussian(1.1, 0.05, 40))
    expected = rdp_to_epsilon(RDP_ORDERS, acc.rdp + event_rdp(dist), 1e-5)
    got = epsilon([gauss, dist], 1e-5)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == epsilon([dist, gauss], 1e-5, Accountant.RDP)  # order and accountant
    assert got > max(epsilon([dist], 1e-5), epsilon([gauss], 1e-5, Accountant.RDP))


def test_gaussian_only_lists_are_accounted_as_before():
    gauss = GaussianSumEvent(noise_multiplier=1.1, sampling_rate=0.05, clip=1.0, rounds=40)
    acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    acc.compose(sampled_gaussian(1.1, 0.05, 40))
    assert epsilon([gauss], 1e-5) == pytest.approx(acc.get_epsilon(1e-5), rel=1e-12)


def test_noise_free_or_uncovered_sums_have_infinite_epsilon():
    assert epsilon([make(local_variance=0.0)], 1e-5) == math.inf
    assert epsilon([make(mechanism=Mechanism.DDG_SUM, local_variance=0.2)], 1e-5) == math.inf
    assert epsilon([], 1e-5) == 0.0


def test_more_survivors_mean_more_noise_and_less_epsilon():
    few, many = make(clients=10), make(clients=40)
    assert epsilon([many], 1e-5) < epsilon([few], 1e-5)


def test_the_ledger_stores_and_returns_the_event(tmp_path):
    ledger = PrivacyLedger.create(tmp_path / "l.db", run_id="run", scope="federation",
                                  delta=1e-5, max_epsilon=math.inf)
    ev = make(mechanism=Mechanism.DDG_SUM)
    ledger.append(1, ev)
    ledger.append(2, dataclasses.replace(ev, clients=19))
    assert [e for _, e in ledger.events()] == [ev, dataclasses.replace(ev, clients=19)]
    assert ledger.verify().ok


def test_the_prv_cross_check_refuses_what_it_cannot_account():
    with pytest.raises(ValueError, match="Gaussian events only"):
        prv_epsilon([make()], 1e-5)


def test_event_rdp_is_finite_and_increasing_in_alpha():
    r = event_rdp(make())
    assert r.shape == (len(RDP_ORDERS),) and np.all(np.isfinite(r))
    assert np.all(np.diff(r) >= -1e-12)
