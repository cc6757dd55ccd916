"""The audit's own distributed-DP accountant: against exact divergences and the run's."""

import math

import pytest

from fedpriv.privacy import GaussianSumEvent, epsilon
from fedpriv.privacy.ddp_audit import (
    ddg_divergence_1d,
    independent_epsilon,
    independent_rdp,
    skellam_divergence_1d,
)
from fedpriv.privacy.events import DistributedNoiseEvent, Mechanism


def event(mechanism, *, variance, clients, l1, l2, dim=1, q=1.0, rounds=1):
    return DistributedNoiseEvent(mechanism=mechanism, l1_sensitivity=l1, l2_sensitivity=l2,
                                 local_variance=variance, clients=clients, dimension=dim,
                                 sampling_rate=q, bits=32, rounds=rounds)


@pytest.mark.parametrize("mu", [50.0, 500.0, 5000.0])
@pytest.mark.parametrize("shift", [1, 5, 20])
@pytest.mark.parametrize("alpha", [2, 8, 32])
def test_skellam_bound_covers_the_exact_one_dimensional_divergence(mu, shift, alpha):
    # One coordinate moved by `shift` is a pair of neighbours with D1 = D2 = shift; the
    # exact Renyi divergence of the summed Skellam noise (variance mu, here as 2 shares
    # of mu / 2) must not exceed Theorem 3.5, which tends to the Gaussian alpha D^2/2mu.
    exact = skellam_divergence_1d(alpha, shift, mu)
    bound = independent_rdp(event(Mechanism.SKELLAM_SUM, variance=mu / 2, clients=2,
                                  l1=shift, l2=shift), alpha)
    assert exact <= bound * (1 + 1e-9)
    gaussian = alpha * shift ** 2 / (2 * mu)
    if mu >= 500:
        assert bound <= gaussian * 1.5 and exact >= gaussian * 0.5  # tight, not vacuous


@pytest.mark.parametrize(("sigma2", "clients"), [(1.0, 1), (1.0, 3), (4.0, 3), (0.3, 4)])
@pytest.mark.parametrize("shift", [1, 3])
@pytest.mark.parametrize("alpha", [2, 8])
def test_ddg_bound_covers_the_exact_one_dimensional_divergence(sigma2, clients, shift, alpha):
    exact = ddg_divergence_1d(alpha, shift, sigma2, clients)
    bound = independent_rdp(event(Mechanism.DDG_SUM, variance=sigma2, clients=clients,
                                  l1=shift, l2=shift), alpha)
    assert exact <= bound * (1 + 1e-9)
    assert bound <= 2 * alpha * shift ** 2 / (2 * clients * sigma2) + 1e-3  # not vacuous


def test_an_understated_bound_would_be_caught_by_the_exact_divergence():
    # The check above can fail: the exact divergence exceeds half the Gaussian value.
    exact = skellam_divergence_1d(8, 5, 500.0)
    assert exact > 0.5 * 8 * 25 / (2 * 500.0)


@pytest.mark.parametrize("mechanism", [Mechanism.SKELLAM_SUM, Mechanism.DDG_SUM])
@pytest.mark.parametrize("q", [1.0, 0.2])
@pytest.mark.parametrize(("variance", "clients"), [(4e6, 6), (2e3, 3), (40.0, 10)])
def test_independent_epsilon_agrees_with_the_runs_accountant(mechanism, q, variance, clients):
    ev = event(mechanism, variance=variance, clients=clients, l1=3.3e4, l2=1050.0,
               dim=1024, q=q, rounds=7)
    ours, theirs = independent_epsilon([ev], 1e-5), epsilon([ev], 1e-5)
    assert ours == pytest.approx(theirs, rel=1e-9)


def test_mixed_ledgers_and_edge_cases():
    ev = event(Mechanism.SKELLAM_SUM, variance=5e3, clients=4, l1=3e3, l2=100.0, dim=1024)
    gauss = GaussianSumEvent(noise_multiplier=1.3, sampling_rate=0.3, clip=1.0, rounds=4)
    assert independent_epsilon([ev, gauss], 1e-6) == pytest.approx(
        epsilon([ev, gauss], 1e-6), rel=1e-9)
    assert independent_epsilon([], 1e-5) == 0.0
    silent = event(Mechanism.SKELLAM_SUM, variance=0.0, clients=4, l1=1.0, l2=1.0)
    assert math.isinf(independent_epsilon([silent], 1e-5))
    small = event(Mechanism.DDG_SUM, variance=0.2, clients=4, l1=1.0, l2=1.0)
    assert math.isinf(independent_epsilon([small], 1e-5))  # sigma < 1/2: not covered
    with pytest.raises(ValueError, match="delta must be in"):
        independent_epsilon([ev], 0.0)
