"""Differential-privacy events: immutable records of one use of a mechanism.

An event's meaning never changes once written to a ledger: it names the mechanism and
every parameter an accountant needs. The Gaussian events map onto Google dp-accounting's
``DpEvent`` algebra, which does their accounting (see :mod:`fedpriv.privacy.accounting`);
the distributed discrete-noise event (Skellam or discrete Gaussian shares under secure
aggregation) has no dp-accounting counterpart and is accounted in Renyi DP by
:mod:`fedpriv.privacy.discrete.rdp`.

Edge cases are explicit: ``sigma = 0`` (no noise) is a legal, *recorded* release whose
epsilon is infinite (``NonPrivateDpEvent``), so a run without noise is never mistaken for
a private one; ``sigma = inf`` cannot be written to JSON and is refused; zero steps is
no event at all (``NoOpDpEvent``).
"""

from __future__ import annotations

import enum
import math
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

import dp_accounting

__all__ = [
    "DistributedNoiseEvent",
    "DpEvent",
    "DpSgdEvent",
    "GaussianSumEvent",
    "Mechanism",
    "event_from_dict",
    "sampled_gaussian",
]


class Mechanism(enum.StrEnum):
    """The mechanisms fedpriv records (the value is what the ledger stores)."""

    DP_SGD = "dp-sgd"
    GAUSSIAN_SUM = "gaussian-sum"
    SKELLAM_SUM = "skellam-sum"
    DDG_SUM = "ddg-sum"


def _real(obj: object, name: str, lo: float, hi: float, *, lo_open: bool = False,
          hi_open: bool = False) -> None:
    """Check ``obj.name`` is a real number in the interval and store it as a float."""
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    bad = (math.isnan(value) or value < lo or value > hi or (lo_open and value == lo)
           or (hi_open and value == hi))
    if bad:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ValueError(f"{name} must be in {left}{lo:g}, {hi:g}{right}, got {value!r}")
    object.__setattr__(obj, name, float(value))  # 1 and 1.0 serialise the same way


def _count(obj: object, name: str, lo: int) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")


def sampled_gaussian(sigma: float, q: float, count: int) -> dp_accounting.DpEvent:
    """``count`` compositions of the Poisson-sampled Gaussian mechanism.

    ``SelfComposed(PoissonSampled(q, Gaussian(sigma)), count)``; q = 1 drops the sampling
    wrapper, count = 0 is ``NoOpDpEvent`` and sigma = 0 is ``NonPrivateDpEvent`` (epsilon
    = inf: with probability q a record is released in the clear, which no delta < q
    covers, so fedpriv reports infinity whatever q is).
    """
    if count == 0:
        return dp_accounting.NoOpDpEvent()
    if sigma == 0:
        return dp_accounting.SelfComposedDpEvent(dp_accounting.NonPrivateDpEvent(), count)
    step: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(sigma)
    if q < 1.0:
        step = dp_accounting.PoissonSampledDpEvent(q, step)
    return dp_accounting.SelfComposedDpEvent(step, count)


@dataclass(frozen=True, slots=True, kw_only=True)
class DpSgdEvent:
    """``steps`` steps of DP-SGD with Poisson sampling (record-level DP).

    Abadi et al. 2016, "Deep Learning with Differential Privacy" (CCS), Algorithm 1:
    each step samples each example with probability ``q``, clips per-example gradients
    to norm ``C`` and adds ``N(0, sigma^2 C^2)`` to their sum.

    Parameters
    ----------
    noise_multiplier : float
        sigma, noise std divided by the clip norm, in [0, inf); 0 means epsilon = inf.
    sampling_rate : float
        q, in (0, 1].
    steps : int
        Number of noisy steps (>= 0).
    clip : float
        C, the per-example clip norm (> 0); recorded for the audit, sigma alone sets
        epsilon.
    """

    noise_multiplier: float
    sampling_rate: float
    steps: int
    clip: float

    def __post_init__(self) -> None:
        _real(self, "noise_multiplier", 0.0, math.inf, hi_open=True)
        _real(self, "sampling_rate", 0.0, 1.0, lo_open=True)
        _count(self, "steps", 0)
        _real(self, "clip", 0.0, math.inf, lo_open=True, hi_open=True)

    @property
    def mechanism(self) -> Mechanism:
        """The mechanism's name in the ledger."""
        return Mechanism.DP_SGD

    @property
    def count(self) -> int:
        """How many sampled-Gaussian releases the event covers (``steps``)."""
        return self.steps

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe parameters, with the mechanism name; ``event_from_dict`` inverts it."""
        return {"mechanism": self.mechanism.value, **asdict(self)}

    def to_dp_event(self) -> dp_accounting.DpEvent:
        """``SelfComposed(PoissonSampled(q, Gaussian(sigma)), steps)`` in dp-accounting."""
        return sampled_gaussian(self.noise_multiplier, self.sampling_rate, self.steps)


@dataclass(frozen=True, slots=True, kw_only=True)
class GaussianSumEvent:
    """``rounds`` rounds of DP-FedAvg's noisy sum of clipped client updates (user-level).

    McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models"
    (ICLR), Algorithm 1: each round samples each client with probability ``q``, clips
    each update to norm ``C`` and adds ``N(0, z^2 C^2)`` to the sum, so one round is the
    sampled Gaussian mechanism with noise multiplier ``z``. With adaptive clipping
    (Andrew et al. 2021), ``z`` is the *total* noise multiplier of their Theorem 1 (the
    update noise is raised to pay for the noised unclipped count).

    Parameters
    ----------
    noise_multiplier : float
        z, in [0, inf); 0 means epsilon = inf.
    sampling_rate : float
        q, in (0, 1]; 1 when a client accounts only the rounds it took part in.
    clip : float
        C (> 0); the round's clip norm (it moves under adaptive clipping).
    rounds : int
        Number of rounds the event covers (>= 1).
    update_noise_multiplier : float, optional
        Adaptive clipping only: z_Delta, the multiplier of the noise on the update sum.
    count_stddev : float, optional
        Adaptive clipping only: sigma_b, the std of the noise on the centred unclipped
        count (sensitivity 1/2). With both given, ``noise_multiplier`` must equal
        Theorem 1's ``(z_Delta^-2 + (2 sigma_b)^-2)^(-1/2)``, which is checked, so an
        auditor can recompute the combined z from what the server actually added.
    """

    noise_multiplier: float
    sampling_rate: float
    clip: float
    rounds: int = 1
    update_noise_multiplier: float | None = None
    count_stddev: float | None = None

    def __post_init__(self) -> None:
        _real(self, "noise_multiplier", 0.0, math.inf, hi_open=True)
        _real(self, "sampling_rate", 0.0, 1.0, lo_open=True)
        _real(self, "clip", 0.0, math.inf, lo_open=True, hi_open=True)
        _count(self, "rounds", 1)
        parts = (self.update_noise_multiplier, self.count_stddev)
        if parts == (None, None):
            return
        if None in parts:
            raise ValueError(
                "update_noise_multiplier and count_stddev go together (adaptive clipping), "
                f"got {self.update_noise_multiplier!r} and {self.count_stddev!r}")
        _real(self, "update_noise_multiplier", 0.0, math.inf, lo_open=True, hi_open=True)
        _real(self, "count_stddev", 0.0, math.inf, lo_open=True, hi_open=True)
        z_delta, sigma_b = float(parts[0]), float(parts[1])  # type: ignore[arg-type]
        combined = (z_delta ** -2 + (2 * sigma_b) ** -2) ** -0.5
        if not math.isclose(self.noise_multiplier, combined, rel_tol=1e-9):
            raise ValueError(
                f"noise_multiplier must be (z_Delta^-2 + (2 sigma_b)^-2)^(-1/2) = "
                f"{combined!r} for update_noise_multiplier {z_delta!r} and count_stddev "
                f"{sigma_b!r} (Andrew et al. 2021, Theorem 1), got {self.noise_multiplier!r}")

    @property
    def mechanism(self) -> Mechanism:
        """The mechanism's name in the ledger."""
        return Mechanism.GAUSSIAN_SUM

    @property
    def count(self) -> int:
        """How many sampled-Gaussian releases the event covers (``rounds``)."""
        return self.rounds

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe parameters, with the mechanism name; ``event_from_dict`` inverts it.

        The adaptive-clipping components are left out when absent.
        """
        params = {k: v for k, v in asdict(self).items() if v is not None}
        return {"mechanism": self.mechanism.value, **params}

    def to_dp_event(self) -> dp_accounting.DpEvent:
        """``SelfComposed(PoissonSampled(q, Gaussian(z)), rounds)`` in dp-accounting."""
        return sampled_gaussian(self.noise_multiplier, self.sampling_rate, self.rounds)


@dataclass(frozen=True, slots=True, kw_only=True)
class DistributedNoiseEvent:
    """``rounds`` rounds of a securely summed update with distributed discrete noise.

    Kairouz, Liu & Steinke 2021 (ICML, arXiv:2102.06387), Algorithm 1, and Agarwal,
    Kairouz & Liu 2021 (NeurIPS, arXiv:2110.04995), Algorithm 1: each sampled client
    clips, rotates, scales and rounds its update to integers of L2 norm at most Delta_2,
    adds its own share of discrete noise, and only the sum of the ``clients`` survivors
    is unmasked. The event records the noise *actually present* in that sum (the shares
    of the clients summed, not of those planned), in the integer units of the sum. Its
    RDP is :func:`fedpriv.privacy.discrete.rdp.event_rdp`; ``accounting.epsilon``
    composes it with every other event through RDP.

    Parameters
    ----------
    mechanism : Mechanism
        ``SKELLAM_SUM`` (shares Sk(mu, mu)) or ``DDG_SUM`` (shares N_Z(0, sigma^2)).
    l1_sensitivity : float
        Delta_1 > 0, in integer units; at most ``sqrt(dimension) * l2_sensitivity``.
    l2_sensitivity : float
        Delta_2 > 0, the conditional-rounding bound, in integer units.
    local_variance : float
        One client's share per coordinate, in [0, inf): 2 mu for Sk(mu, mu) (its
        variance), sigma^2 for N_Z(0, sigma^2) (its parameter, an upper bound on its
        variance). 0 (no noise), and a DDG share with sigma < 1/2 (outside KLS21's
        Proposition 14), are recorded and give epsilon = inf.
    clients : int
        n >= 1, the clients whose shares are in the sum.
    dimension : int
        d >= 1, the (padded) dimension the noise was added in.
    sampling_rate : float
        q in (0, 1], the Poisson client-sampling rate. Amplification by sampling holds
        only against parties that do not know who was sampled; against the server that
        chose the cohort, record q = 1.
    bits : int
        b in [2, 64], the modulus 2^b of the secure sum (for the audit; epsilon does not
        depend on it: a wrapped sum is post-processing).
    rounds : int
        Number of rounds the event covers (>= 1).

    Notes
    -----
    As in both papers, epsilon is for neighbours that differ in one client's update
    while the ``clients`` noise shares stay in the sum (zero-out); see the Notes of
    :mod:`fedpriv.privacy.discrete.rdp`.
    """

    mechanism: Mechanism
    l1_sensitivity: float
    l2_sensitivity: float
    local_variance: float
    clients: int
    dimension: int
    sampling_rate: float
    bits: int
    rounds: int = 1

    def __post_init__(self) -> None:
        allowed = (Mechanism.SKELLAM_SUM, Mechanism.DDG_SUM)
        try:
            mech = Mechanism(self.mechanism)
        except ValueError:
            mech = None
        if mech not in allowed:
            raise ValueError(f"mechanism must be one of {{{', '.join(m.value for m in allowed)}}}"
                             f", got {self.mechanism!r}")
        object.__setattr__(self, "mechanism", mech)
        _real(self, "l1_sensitivity", 0.0, math.inf, lo_open=True, hi_open=True)
        _real(self, "l2_sensitivity", 0.0, math.inf, lo_open=True, hi_open=True)
        _real(self, "local_variance", 0.0, math.inf, hi_open=True)
        _count(self, "clients", 1)
        _count(self, "dimension", 1)
        _real(self, "sampling_rate", 0.0, 1.0, lo_open=True)
        _count(self, "bits", 2)
        if self.bits > 64:
            raise ValueError(f"bits must be an integer in [2, 64], got {self.bits!r}")
        _count(self, "rounds", 1)
        most = math.sqrt(self.dimension) * self.l2_sensitivity
        if self.l1_sensitivity > most * (1 + 1e-12):
            raise ValueError(
                f"l1_sensitivity must be in (0, sqrt(dimension) * l2_sensitivity] = (0, "
                f"{most!r}], got {self.l1_sensitivity!r}")

    @property
    def count(self) -> int:
        """How many noisy sums the event covers (``rounds``)."""
        return self.rounds

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe parameters, with the mechanism name; ``event_from_dict`` inverts it."""
        params = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "mechanism"}
        return {"mechanism": self.mechanism.value, **params}


DpEvent = DpSgdEvent | GaussianSumEvent | DistributedNoiseEvent

_BY_MECHANISM: dict[str, type[DpSgdEvent] | type[GaussianSumEvent]
                   | type[DistributedNoiseEvent]] = {
    Mechanism.DP_SGD.value: DpSgdEvent,
    Mechanism.GAUSSIAN_SUM.value: GaussianSumEvent,
    Mechanism.SKELLAM_SUM.value: DistributedNoiseEvent,
    Mechanism.DDG_SUM.value: DistributedNoiseEvent,
}


def event_from_dict(data: dict[str, Any]) -> DpEvent:
    """Rebuild an event from :meth:`to_dict` output (validated again).

    Raises
    ------
    ValueError
        For an unknown mechanism, a missing or unknown parameter, or a parameter out of
        its domain.
    """
    params = dict(data)
    mechanism = params.pop("mechanism", None)
    cls = _BY_MECHANISM.get(mechanism) if isinstance(mechanism, str) else None
    if cls is None:
        allowed = ", ".join(m.value for m in Mechanism)
        raise ValueError(f"mechanism must be one of {{{allowed}}}, got {mechanism!r}")
    if cls is DistributedNoiseEvent:
        params["mechanism"] = Mechanism(mechanism)  # one class for both distributed sums
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - names)
    if unknown:
        raise ValueError(f"{mechanism} has no parameter(s) {', '.join(unknown)}")
    required = {f.name for f in fields(cls)
                if f.default is MISSING and f.default_factory is MISSING}
    missing = sorted(required - set(params))
    if missing:
        raise ValueError(f"{mechanism} needs parameter(s) {', '.join(missing)}")
    return cls(**params)
