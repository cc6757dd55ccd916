"""Choose the scale gamma and each client's noise share for a target (epsilon, delta).

The procedure of KLS21 (arXiv:2102.06387), Section 5 and AKL21 (arXiv:2110.04995),
Section 4, with a rigorous wrap-around bound in place of their "k standard deviations"
heuristic:

1. For a scale gamma, the sensitivities after rounding are ``Delta_2(gamma)`` (KLS21,
   Theorem 1, eq. 2) and ``Delta_1 = min(sqrt(d') Delta_2, Delta_2^2)``; the local
   variance ``V(gamma)`` is the smallest for which ``rounds`` Poisson-sampled rounds of
   the sum of only ``min_clients`` shares spend at most ``target_epsilon`` at ``delta``
   (RDP of :mod:`fedpriv.privacy.discrete.rdp`; Brent's method on ln V, to 1e-6).
   Every client adds ``V(gamma)`` whatever the number of survivors, so any sum of at
   least ``min_clients`` shares is at least as private.
2. Among scales, take the largest whose wrap-around bound with ``max_clients`` clients
   (:mod:`fedpriv.privacy.discrete.wraparound`) is at most ``wrap_bound``: a larger
   gamma shrinks the rounding error relative to the noise (``Delta_2 / gamma`` tends to
   C) and so the error of the decoded mean, while the wrap bound only grows with gamma
   (bisection on log gamma, relative tolerance 1e-3).

The result reports the epsilon reached with ``min_clients`` survivors and the noise
variance the server's decoded sum then carries, in the update's own units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from scipy.optimize import brentq

from fedpriv.privacy.discrete.discrete_gaussian import MAX_SIGMA
from fedpriv.privacy.discrete.params import DEFAULT_BETA, DistributedDpParams
from fedpriv.privacy.discrete.rdp import RDP_ORDERS, distributed_rdp, rdp_to_epsilon
from fedpriv.privacy.discrete.rotation import padded_dimension
from fedpriv.privacy.discrete.rounding import l1_sensitivity, rounded_l2_bound
from fedpriv.privacy.discrete.skellam import MAX_POISSON_MEAN
from fedpriv.privacy.discrete.wraparound import wrap_probability
from fedpriv.privacy.events import Mechanism

__all__ = ["Calibration", "calibrate", "distributed_epsilon", "largest_scale"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Calibration:
    """What :func:`calibrate` chose and what it guarantees.

    Attributes
    ----------
    params : DistributedDpParams
        The scale gamma and local variance V every client encodes with.
    epsilon : float
        The run's epsilon at ``delta`` when only ``min_clients`` shares are summed each
        round (at most the target).
    delta : float
        The delta epsilon is reported at.
    min_clients, max_clients : int
        The fewest survivors the privacy holds for, and the most the wrap bound holds for.
    wrap_probability : float
        Bound on a wrap-around in one round with ``max_clients`` clients.
    sum_noise_variance : float
        Per-coordinate noise variance of the decoded *sum* with ``min_clients`` shares,
        in the update's units: ``min_clients V / gamma^2`` (an upper bound for DDG).
    """

    params: DistributedDpParams
    epsilon: float
    delta: float
    min_clients: int
    max_clients: int
    wrap_probability: float
    sum_noise_variance: float


def distributed_epsilon(params: DistributedDpParams, *, clients: int, sampling_rate: float,
                        rounds: int, delta: float) -> float:
    """Epsilon at ``delta`` of ``rounds`` rounds summing ``clients`` encodings of ``params``."""
    rdp = distributed_rdp(params.mechanism, l1=params.l1_sensitivity,
                          l2=params.l2_sensitivity, local_variance=params.local_variance,
                          clients=clients, dim=params.padded_dimension,
                          sampling_rate=sampling_rate, rounds=rounds)
    return rdp_to_epsilon(RDP_ORDERS, rdp, delta)


def _check(name: str, value: float, ok: bool, domain: str) -> None:
    if isinstance(value, bool) or not ok:
        raise ValueError(f"{name} must be {domain}, got {value!r}")


def largest_scale(wrap: Callable[[float], float], bound: float, lo: float) -> float:
    """The largest scale gamma (to 0.1 %) with ``wrap(gamma) <= bound``, from ``lo`` up.

    ``wrap(lo) <= bound`` must hold; the wrap-around probability grows with gamma (the
    scaled update and the noise it needs both grow), so a geometric search brackets the
    boundary by factors of 16 and bisects it in log space.
    """
    hi = lo * 16
    while wrap(hi) <= bound:
        lo, hi = hi, hi * 16
    while hi - lo > 1e-3 * lo:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if wrap(mid) <= bound else (lo, mid)
    return lo


def calibrate(*, mechanism: Mechanism, target_epsilon: float, delta: float, rounds: int,
              sampling_rate: float, clip: float, dimension: int, min_clients: int,
              bits: int, max_clients: int | None = None, beta: float = DEFAULT_BETA,
              wrap_bound: float = 1e-9) -> Calibration:
    """The largest scale, and the least noise at it, that meet the target and the wrap bound.

    Parameters
    ----------
    mechanism : Mechanism
        ``SKELLAM_SUM`` or ``DDG_SUM``.
    target_epsilon : float
        In (0, inf).
    delta : float
        In (0, 1).
    rounds : int
        T >= 1, the rounds the run will take.
    sampling_rate : float
        q in (0, 1], the Poisson client-sampling rate.
    clip : float
        C > 0.
    dimension : int
        d >= 1, the update's length.
    min_clients : int
        n_min >= 1: the fewest surviving clients a round may sum (SecAgg's threshold).
    bits : int
        b in [2, 64].
    max_clients : int, optional
        The most clients a round may sum (>= n_min; default n_min): the wrap bound holds
        for any sum of at most this many.
    beta : float
        The conditional-rounding parameter, in [0, 1).
    wrap_bound : float
        In (0, 1): the largest acceptable wrap-around probability per round.

    Raises
    ------
    ValueError
        For an argument out of its domain, or when no scale meets both the target and the
        wrap bound at ``bits`` (the message says which, so b can be raised).
    """
    _check("target_epsilon", target_epsilon, 0 < target_epsilon < math.inf, "in (0, inf)")
    _check("delta", delta, 0 < delta < 1, "in (0, 1)")
    _check("rounds", rounds, isinstance(rounds, int) and rounds >= 1, "an integer >= 1")
    _check("sampling_rate", sampling_rate, 0 < sampling_rate <= 1, "in (0, 1]")
    _check("clip", clip, 0 < clip < math.inf, "in (0, inf)")
    _check("dimension", dimension, isinstance(dimension, int) and dimension >= 1,
           "an integer >= 1")
    _check("min_clients", min_clients, isinstance(min_clients, int) and min_clients >= 1,
           "an integer >= 1")
    n_max = min_clients if max_clients is None else max_clients
    _check("max_clients", n_max, isinstance(n_max, int) and n_max >= min_clients,
           f"an integer >= min_clients = {min_clients}")
    _check("bits", bits, isinstance(bits, int) and 2 <= bits <= 64, "an integer in [2, 64]")
    _check("beta", beta, 0 <= beta < 1, "in [0, 1)")
    _check("wrap_bound", wrap_bound, 0 < wrap_bound < 1, "in (0, 1)")
    if mechanism not in (Mechanism.SKELLAM_SUM, Mechanism.DDG_SUM):
        raise ValueError(f"mechanism must be {Mechanism.SKELLAM_SUM.value} or "
                         f"{Mechanism.DDG_SUM.value}, got {mechanism!r}")
    dp = padded_dimension(dimension)
    v_max = MAX_SIGMA ** 2 if mechanism is Mechanism.DDG_SUM else 2 * MAX_POISSON_MEAN

    def eps(scale: float, variance: float) -> float:
        l2 = rounded_l2_bound(scale * clip, dp, beta)
        rdp = distributed_rdp(mechanism, l1=l1_sensitivity(l2, dp), l2=l2,
                              local_variance=variance, clients=min_clients, dim=dp,
                              sampling_rate=sampling_rate, rounds=rounds)
        return rdp_to_epsilon(RDP_ORDERS, rdp, delta)

    def excess(scale: float, log_v: float) -> float:
        return min(eps(scale, math.exp(log_v)), 1e6) - target_epsilon  # finite for brentq

    def needed_variance(scale: float) -> float:
        """Least V with eps <= target, to 1e-6 (inf when the samplers' largest V is short)."""
        l2 = rounded_l2_bound(scale * clip, dp, beta)
        hi = min(max(l2 * l2 / min_clients, 1.0), v_max)  # never past what the samplers draw
        while excess(scale, math.log(hi)) > 0:
            if hi >= v_max:
                return math.inf
            hi = min(16 * hi, v_max)
        lo = hi / 16
        while lo > 1e-12 and excess(scale, math.log(lo)) <= 0:
            hi, lo = lo, lo / 16
        root = brentq(lambda t: excess(scale, t), math.log(lo), math.log(hi), xtol=1e-8)
        v = min(math.exp(root) * (1 + 1e-7), hi)
        while excess(scale, math.log(v)) > 0:  # land on the feasible side of the root
            v = min(v * (1 + 1e-6), hi)
        return v

    def wrap(scale: float) -> float:
        variance = needed_variance(scale)
        if not math.isfinite(variance) or rounded_l2_bound(scale * clip, dp, beta) >= 2**62:
            return 1.0
        return wrap_probability(mechanism, scaled_clip=scale * clip, local_variance=variance,
                                clients=n_max, dim=dp, bits=bits)

    lo = 1e-6 / clip  # gamma C = 1e-6: rounding noise alone sets the sensitivity
    if wrap(lo) > wrap_bound:
        raise ValueError(
            f"{bits} bits cannot hold the sum: even at the smallest scale the noise that "
            f"epsilon {target_epsilon:g} needs with {min_clients} clients wraps with "
            f"probability above {wrap_bound:g} for {n_max} clients; raise bits")
    lo = largest_scale(wrap, wrap_bound, lo)
    params = DistributedDpParams(mechanism=mechanism, clip=clip, dimension=dimension,
                                 scale=lo, local_variance=needed_variance(lo), bits=bits,
                                 beta=beta)
    return Calibration(
        params=params,
        epsilon=distributed_epsilon(params, clients=min_clients, sampling_rate=sampling_rate,
                                    rounds=rounds, delta=delta),
        delta=delta, min_clients=min_clients, max_clients=n_max,
        wrap_probability=params.wrap_probability(n_max),
        sum_noise_variance=min_clients * params.local_variance / lo ** 2)
