"""A rigorous bound on the chance that the secure sum wraps around mod 2^b.

The server unmasks ``S = sum_i (round(gamma U x_i) + z_i) mod 2^b`` and reads it as an
integer in ``[-2^(b-1), 2^(b-1))`` (:func:`fedpriv.privacy.discrete.codec.decode`); that
is the true sum unless some coordinate of the true sum lies outside that range. For one
coordinate j, with n clients, clip C, scale gamma and padded dimension d':

- signal: ``A_j = gamma (U s)_j`` with ``s = sum_i x_i``, ``||s|| <= n C``. Over the
  random signs of the rotation (drawn independently of the data), ``A_j = sum_k c_k D_k``
  with ``sum_k c_k^2 = gamma^2 ||s||^2 / d'``, so by Hoeffding's lemma (Hoeffding 1963,
  "Probability inequalities for sums of bounded random variables", JASA, eq. 4.16)
  ``E[exp(lambda A_j)] <= exp(lambda^2 v_A / 2)`` with ``v_A = (n gamma C)^2 / d'``
  (KLS21, arXiv:2102.06387, Section 4.2, make the same sub-Gaussian argument);
- rounding: each client's rounded coordinate is within 1 of its real value, so the
  rounding errors add up to less than n in absolute value, deterministically;
- noise: independent of the signs; n shares of N_Z(0, sigma^2) have
  ``E[exp(lambda N_j)] <= exp(n sigma^2 lambda^2 / 2)`` (CKS20, arXiv:2004.00010,
  Section 2: the discrete Gaussian is sigma^2-sub-Gaussian), and n shares of Sk(mu, mu)
  have ``E[exp(lambda N_j)] = exp(2 n mu (cosh lambda - 1))`` exactly.

The Chernoff bound (Chernoff 1952; Boucheron, Lugosi & Massart 2013, Section 2.2) on
``A_j + N_j`` at ``t = 2^(b-1) - n`` then gives, both tails together,

    P[|S_j| >= 2^(b-1)] <= 2 min_{lambda > 0} exp(lambda^2 v / 2 - lambda t)
                        = 2 exp(-t^2 / (2 v)),    v = v_A + n sigma^2       (DDG)
    P[|S_j| >= 2^(b-1)] <= 2 min_{lambda > 0} exp(lambda^2 v_A / 2
                             + n V (cosh lambda - 1) - lambda t),  V = 2 mu  (Skellam)

(the Skellam minimum is found numerically; any lambda gives a valid bound), and a union
bound over the d' coordinates gives the probability that *any* coordinate wraps. The
bound grows with n, so a bound computed for the largest number of clients that may be
summed covers every smaller sum.
"""

from __future__ import annotations

import math

from scipy.optimize import brentq

from fedpriv.privacy.events import Mechanism

__all__ = ["coordinate_tail_bound", "min_bits", "wrap_probability"]


def _check(scaled_clip: float, local_variance: float, clients: int, dim: int) -> None:
    for name, value in (("scaled_clip", scaled_clip), ("local_variance", local_variance)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                0 <= value < math.inf):
            raise ValueError(f"{name} must be in [0, inf), got {value!r}")
    for name, count in (("clients", clients), ("dim", dim)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {count!r}")


def coordinate_tail_bound(mechanism: Mechanism, *, scaled_clip: float,
                          local_variance: float, clients: int, dim: int, t: float) -> float:
    """Bound on ``P[|A_j + N_j| >= t]`` for one coordinate (see the module docstring).

    Parameters
    ----------
    mechanism : Mechanism
        ``SKELLAM_SUM`` or ``DDG_SUM``.
    scaled_clip : float
        gamma C >= 0, one client's norm bound in integer units before rounding.
    local_variance : float
        One share's variance parameter: 2 mu for Sk(mu, mu), sigma^2 for N_Z(0, sigma^2).
    clients : int
        n >= 1, the clients in the sum.
    dim : int
        d', the padded dimension.
    t : float
        The threshold; t <= 0 gives 1.
    """
    _check(scaled_clip, local_variance, clients, dim)
    if t <= 0:
        return 1.0
    if mechanism not in (Mechanism.SKELLAM_SUM, Mechanism.DDG_SUM):
        raise ValueError(f"mechanism must be {Mechanism.SKELLAM_SUM.value} or "
                         f"{Mechanism.DDG_SUM.value}, got {mechanism!r}")
    v_signal = (clients * scaled_clip) ** 2 / dim
    noise = clients * local_variance
    if mechanism is Mechanism.DDG_SUM or noise == 0:
        v = v_signal + noise
        if v == 0:  # nothing random and |A_j + N_j| = 0 < t
            return 0.0
        return min(1.0, 2 * math.exp(-t * t / (2 * v)))

    def log_bound(lam: float) -> float:
        return lam * lam * v_signal / 2 + noise * (math.cosh(lam) - 1) - lam * t

    # The exponent is convex in lambda; its minimum solves lambda v_A + nV sinh(lambda) = t,
    # which lies below both t / v_A and asinh(t / nV).
    hi = math.asinh(t / noise)
    if v_signal > 0:
        hi = min(hi, t / v_signal)
    def slope(x: float) -> float:
        return x * v_signal + noise * math.sinh(x) - t

    # Any lambda gives a valid bound; if rounding leaves no sign change, hi is the root.
    lam = brentq(slope, 0.0, hi) if hi > 0 and slope(hi) > 0 else hi
    return min(1.0, 2 * math.exp(log_bound(lam)))


def wrap_probability(mechanism: Mechanism, *, scaled_clip: float, local_variance: float,
                     clients: int, dim: int, bits: int) -> float:
    """Bound on P[some coordinate of the n-client sum leaves [-2^(b-1), 2^(b-1))].

    ``d' * coordinate_tail_bound(t = 2^(b-1) - n)``, capped at 1.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 64:
        raise ValueError(f"bits must be an integer in [2, 64], got {bits!r}")
    tail = coordinate_tail_bound(mechanism, scaled_clip=scaled_clip,
                                 local_variance=local_variance, clients=clients, dim=dim,
                                 t=2.0 ** (bits - 1) - clients)
    return min(1.0, dim * tail)


def min_bits(mechanism: Mechanism, *, scaled_clip: float, local_variance: float,
             clients: int, dim: int, bound: float = 1e-9) -> int:
    """The smallest b in [2, 64] whose wrap-around probability is at most ``bound``.

    Raises
    ------
    ValueError
        For ``bound`` outside (0, 1) or when even b = 64 does not reach it.
    """
    if not 0 < bound < 1:
        raise ValueError(f"bound must be in (0, 1), got {bound!r}")
    for bits in range(2, 65):
        if wrap_probability(mechanism, scaled_clip=scaled_clip, local_variance=local_variance,
                            clients=clients, dim=dim, bits=bits) <= bound:
            return bits
    raise ValueError(f"no bit width up to 64 keeps the wrap-around probability below "
                     f"{bound:g} (scaled clip {scaled_clip:g}, local variance "
                     f"{local_variance:g}, {clients} clients, dimension {dim})")
