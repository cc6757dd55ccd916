import math

import numpy as np
import pytest
from scipy import stats

from fedpriv.privacy.discrete import (
    DistributedDpParams,
    SeededUniforms,
    add_mod,
    centre_mod,
    coordinate_tail_bound,
    encode,
    min_bits,
    wrap_probability,
)
from fedpriv.privacy.events import Mechanism

MECHS = [Mechanism.SKELLAM_SUM, Mechanism.DDG_SUM]
CASE = dict(scaled_clip=500.0, local_variance=2e4, clients=50, dim=1 << 14)


@pytest.mark.parametrize("mechanism", MECHS)
def test_wrap_probability_falls_with_every_extra_bit(mechanism):
    probs = [wrap_probability(mechanism, bits=b, **CASE) for b in range(10, 30)]
    assert probs[0] == 1.0 and probs[-1] < 1e-30
    inner = [p for p in probs if 0 < p < 1]
    assert len(inner) >= 3 and all(b < a for a, b in zip(inner, inner[1:], strict=False))


@pytest.mark.parametrize("mechanism", MECHS)
@pytest.mark.parametrize("bound", [1e-3, 1e-9])
def test_min_bits_is_the_least_width_meeting_the_bound(mechanism, bound):
    b = min_bits(mechanism, bound=bound, **CASE)
    assert wrap_probability(mechanism, bits=b, **CASE) <= bound
    assert wrap_probability(mechanism, bits=b - 1, **CASE) > bound


def test_ddg_tail_is_the_sub_gaussian_bound_by_hand():
    # v = (n gamma C)^2 / d' + n sigma^2 = 50^2 / 64 + 5 * 4 = 59.0625
    got = coordinate_tail_bound(Mechanism.DDG_SUM, scaled_clip=10.0, local_variance=4.0,
                                clients=5, dim=64, t=30.0)
    assert got == pytest.approx(2 * math.exp(-900 / (2 * 59.0625)))
    assert wrap_probability(Mechanism.DDG_SUM, scaled_clip=10.0, local_variance=4.0,
                            clients=5, dim=64, bits=6) == pytest.approx(
        min(1.0, 64 * 2 * math.exp(-(32 - 5) ** 2 / (2 * 59.0625))))


@pytest.mark.parametrize("t", [20, 40, 60])
def test_skellam_chernoff_bound_covers_the_exact_tail(t):
    # Pure noise (no signal): 5 shares of Sk(10, 10) sum to Sk(50, 50).
    bound = coordinate_tail_bound(Mechanism.SKELLAM_SUM, scaled_clip=0.0,
                                  local_variance=20.0, clients=5, dim=64, t=t)
    exact = 2 * stats.skellam.sf(t - 1, 50, 50)  # P[|X| >= t]
    assert exact <= bound <= 15 * exact  # Chernoff: valid, within a modest factor here


@pytest.mark.parametrize("mechanism", MECHS)
def test_the_bound_holds_for_simulated_worst_case_sums(mechanism):
    # Every client sends the same vector of norm C (the signal term is then as large as
    # it can be); per-coordinate frequency of |S_j| >= 2^(b-1) = 128 over fresh rotation
    # seeds must stay below the per-coordinate bound at t = 128 - n.
    n, d, trials = 8, 64, 150
    params = DistributedDpParams(mechanism=mechanism, clip=1.0, dimension=d, scale=40.0,
                                 local_variance=100.0, bits=64, beta=0.0)
    x = np.random.default_rng(0).normal(size=d)
    x /= np.linalg.norm(x)
    src, rng = SeededUniforms(np.random.default_rng(1)), np.random.default_rng(2)
    hits = 0
    for trial in range(trials):
        seed = trial.to_bytes(4, "little")
        encs = np.stack([encode(x, params, seed, rng, source=src) for _ in range(n)])
        total = centre_mod(add_mod(encs, 64), 64)  # the exact integer sum (no wrap at 64)
        hits += int(np.count_nonzero(np.abs(total) >= 128))
    bound = coordinate_tail_bound(mechanism, scaled_clip=40.0, local_variance=100.0,
                                  clients=n, dim=d, t=128 - n)
    assert 0.02 < bound < 0.2  # a regime where the comparison says something
    assert hits / (trials * d) <= bound


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="bits must be"):
        wrap_probability(Mechanism.DDG_SUM, bits=65, **CASE)
    with pytest.raises(ValueError, match="clients must be"):
        coordinate_tail_bound(Mechanism.DDG_SUM, scaled_clip=1.0, local_variance=1.0,
                              clients=0, dim=4, t=1.0)
    with pytest.raises(ValueError, match="mechanism must be"):
        coordinate_tail_bound(Mechanism.GAUSSIAN_SUM, scaled_clip=1.0, local_variance=1.0,
                              clients=1, dim=4, t=1.0)
    with pytest.raises(ValueError, match="no bit width up to 64"):
        min_bits(Mechanism.SKELLAM_SUM, scaled_clip=1e19, local_variance=1.0, clients=2,
                 dim=4)
