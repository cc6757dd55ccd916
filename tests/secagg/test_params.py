"""Public parameters, the exact modulus and the config refusals."""

import numpy as np
import pytest

from fedpriv.config import ConfigError, RunConfig
from fedpriv.secagg import (
    IdentityKey,
    Quantizer,
    Roster,
    SecAggError,
    SecurityParams,
    SumLayout,
    advert_payload,
    derive_setup,
    run_round,
    secure_degree,
)
from fedpriv.secagg.params import binomial_tail


def test_secagg_bits_40_with_20_clients_is_refused_with_the_numbers():
    with pytest.raises(ConfigError, match=r"secagg-bits: the exact sum of 20 clients needs "
                                          r"65 bits .*2\^40 - 1.*use secagg-bits <= 39"):
        RunConfig.from_mapping({"secagg": "true", "secagg-bits": "40", "clients": "20"})


def test_the_largest_accepted_config_sums_exactly_at_its_extreme_values():
    # Prepare: secagg-bits=39, 20 clients: every client sends the largest value of
    # every slot; the sum must come back exactly, with no wrap.
    cfg = RunConfig.from_mapping({"secagg": "true", "secagg-bits": "39", "clients": "20"})
    layout = SumLayout(quantizer=Quantizer(clip_range=8.0, bits=39))
    bits = layout.modulus_bits(cfg.training.cohort_size)
    assert bits == 64
    top = np.array([layout.max_update] * 5 + [layout.max_weight, 1, layout.max_loss],
                   dtype=np.uint64)
    # Execute
    total, _ = run_round([top] * 20, modulus_bits=bits)
    # Assert
    assert [int(v) for v in total] == [20 * int(v) for v in top]


@pytest.mark.parametrize(("values", "key", "fragment"), [
    ({"clients": "1"}, "clients", "needs >= 2 clients"),
    ({"secagg-threshold": "0.4"}, "secagg-threshold", r"must be in \[0.5, 1\)"),
    ({"secagg-threshold": "1.0"}, "secagg-threshold", r"t <= k"),
    ({"clients": "5", "secagg-degree": "5"}, "secagg-degree", r"\[0, cohort - 1 = 4\]"),
    ({"clients": "100", "secagg-degree": "10"}, "clients",
     r"threshold t=6 \(degree k=10\) does not exceed the 10 clients that may collude"),
    ({"clients": "100", "clients-per-round": "10"}, "clients",
     r"cohort of 10 cannot have the 12 survivors.*corrupt 10.*0.1 x 100 clients"),
])
def test_configs_that_cannot_work_are_refused_before_the_run(values, key, fragment):
    with pytest.raises(ConfigError, match=fragment) as err:
        RunConfig.from_mapping({"secagg": "true", **values})
    assert err.value.key == key


def test_two_clients_still_run_and_plain_configs_are_untouched():
    RunConfig.from_mapping({"secagg": "true", "clients": "2"})
    RunConfig.from_mapping({"clients": "1", "secagg-bits": "40"})


def test_thresholds_make_two_disjoint_reveal_sets_impossible():
    p = SecurityParams(corruption_rate=0.2)
    for n in range(2, 60):
        c, big_t = p.corrupt(n), p.consistency_threshold(n)
        assert 2 * big_t - c > n  # two sets each signed by T clients need > n signers
        k = p.degree_for(n)
        assert k // 2 < p.threshold_for(k) <= k
        if p.cohort_problem(n) is None:
            assert p.threshold_for(k) > c  # colluders alone never hold t shares
            assert k >= c + p.min_honest - 1  # room for honest neighbours beside them


def test_degree_meets_the_union_bounds_or_is_complete():
    n = 1000
    k = secure_degree(n, threshold_fraction=0.5, corruption_rate=0.1, dropout_rate=0.1)
    t = k // 2 + 1
    assert k < n - 1
    assert n * binomial_tail(k, 0.1, t) <= 2.0 ** -40
    assert n * binomial_tail(k, 0.2, k - t + 1) <= 2.0 ** -20
    smaller = k - 1
    ts = smaller // 2 + 1
    assert (n * binomial_tail(smaller, 0.1, ts) > 2.0 ** -40
            or n * binomial_tail(smaller, 0.2, smaller - ts + 1) > 2.0 ** -20)
    assert binomial_tail(10, 0.5, 0) == 1.0 and binomial_tail(10, 0.5, 11) == 0.0
    assert binomial_tail(4, 0.5, 3) == pytest.approx(5 / 16)


def test_every_client_derives_the_same_setup_and_it_depends_on_round_and_cohort():
    p = SecurityParams(degree=4)
    a = derive_setup(p, round_id=3, cohort=list(range(12)), modulus_bits=40)
    b = derive_setup(p, round_id=3, cohort=list(reversed(range(12))), modulus_bits=40)
    c = derive_setup(p, round_id=4, cohort=list(range(12)), modulus_bits=40)
    assert a.same_terms(b) and not a.same_terms(c)


def test_roster_and_identity_round_trips_and_rejections():
    keys = {u: IdentityKey() for u in range(3)}
    roster = Roster(keys={u: k.public for u, k in keys.items()})
    assert Roster.from_json(roster.to_json()) == roster
    assert IdentityKey.from_pem(keys[0].to_pem()).public == keys[0].public
    payload = advert_payload(run_id=1, round_id=2, sender=0, c_pk=b"c" * 32, s_pk=b"s" * 32)
    sig = keys[0].sign(payload)
    assert roster.verify(0, payload, sig)
    assert not roster.verify(1, payload, sig)  # another client's key
    assert not roster.verify(0, payload[:-1] + b"t", sig)  # tampered
    assert not roster.verify(7, payload, sig)  # not in the roster
    with pytest.raises(SecAggError, match="distinct"):
        Roster(keys={0: keys[0].public, 1: keys[0].public})
    with pytest.raises(SecAggError, match="32 bytes"):
        Roster(keys={0: b"short"})
