"""The distributed-DP plan every party derives from the run config."""

import math

import pytest

from fedpriv.config import ConfigError, RunConfig
from fedpriv.ddp_plan import (
    NOISE_SLACK,
    WRAP_BOUND,
    distributed_plan,
    min_survivors,
    model_dimension,
    rotation_seed,
)
from fedpriv.privacy.discrete import distributed_epsilon

D = 650  # digits logistic regression: 64 x 10 weights + 10 biases


def cfg(**values):
    return RunConfig.from_mapping({"dp-mode": "distributed", "secagg": "true",
                                   "model": "logreg", **values}).resolved()


def test_the_model_dimension_and_min_survivors_follow_from_the_config():
    assert model_dimension(cfg()) == D
    assert min_survivors(cfg()) == 6  # 10 clients, c = 1: max(T = 6, 2 + 1)
    assert min_survivors(cfg(**{"ddp-min-survivors": 4})) == 4


def test_target_epsilon_is_met_with_the_fewest_survivors_and_the_wrap_bound_holds():
    plan = distributed_plan(cfg(**{"target-epsilon": 4.0, "rounds": 10}), D)
    assert plan.epsilon <= 4.0 and plan.epsilon == pytest.approx(4.0, rel=1e-3)
    assert plan.wrap_probability <= WRAP_BOUND
    assert plan.event(plan.min_clients).clients == 6
    # every client adds V whatever the survivors: more of them, less epsilon
    more = distributed_epsilon(plan.params, clients=10, sampling_rate=1.0, rounds=10,
                               delta=1e-5)
    assert more < plan.epsilon < plan.epsilon_with_colluders  # 1 colluder drops its share


def test_noise_multiplier_sets_the_sum_noise_of_the_fewest_survivors():
    plan = distributed_plan(cfg(**{"noise-multiplier": 0.7}), D)
    p = plan.params
    assert math.sqrt(plan.min_clients * p.local_variance) / p.scale == pytest.approx(0.7)
    assert plan.noise_multiplier == pytest.approx(0.7)


@pytest.mark.parametrize("mechanism", ["skellam", "ddg"])
def test_auto_bits_are_the_fewest_within_the_noise_slack(mechanism):
    base = cfg(**{"target-epsilon": 3.0, "ddp-mechanism": mechanism})
    plan = distributed_plan(base, D)
    p = plan.params
    assert plan.auto_bits and p.l2_sensitivity <= (1 + NOISE_SLACK) * p.scaled_clip
    fewer = base.with_values(ddp_bits=p.bits - 1)
    try:
        q = distributed_plan(fewer, D).params
    except ConfigError:
        return  # one bit fewer cannot hold the noise at all
    assert q.l2_sensitivity > (1 + NOISE_SLACK) * q.scaled_clip


def test_too_few_bits_name_the_key():
    with pytest.raises(ConfigError) as err:
        distributed_plan(cfg(**{"ddp-bits": 8, "target-epsilon": 1.0}), D)
    assert err.value.key == "ddp-bits" and "raise bits" in str(err.value)


def test_the_plan_is_deterministic_and_the_rotation_seed_public():
    values = {"target-epsilon": 2.0, "ddp-bits": 18}
    a = distributed_plan(cfg(**values), D)
    from fedpriv import ddp_plan

    ddp_plan._plan.cache_clear()  # recomputed from scratch, as another process would
    b = distributed_plan(cfg(**values), D)
    assert a == b
    assert rotation_seed("run", 3) == rotation_seed("run", 3)
    assert len({rotation_seed("run", 3), rotation_seed("run", 4),
                rotation_seed("other", 3)}) == 3
    with pytest.raises(ConfigError, match="needs dp-mode=distributed"):
        distributed_plan(RunConfig(), D)
