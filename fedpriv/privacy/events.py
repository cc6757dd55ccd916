"""Differential-privacy events: immutable records of one use of a mechanism.

An event's meaning never changes once written to a ledger: it names the mechanism and
every parameter an accountant needs, and maps onto Google dp-accounting's ``DpEvent``
algebra, which does the accounting (see :mod:`fedpriv.privacy.accounting`).
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass
from typing import Any

import dp_accounting

__all__ = [
    "DpEvent",
    "DpSgdEvent",
    "GaussianSumEvent",
    "Mechanism",
    "event_from_dict",
    "sampled_gaussian",
]


class Mechanism(enum.StrEnum):
    """The mechanisms fedpriv records."""

    DP_SGD = "dp-sgd"
    GAUSSIAN_SUM = "gaussian-sum"


def _check(name: str, value: float, lo: float, hi: float, *, lo_open: bool = False,
           hi_open: bool = False) -> None:
    bad = (math.isnan(value) or value < lo or value > hi or (lo_open and value == lo)
           or (hi_open and value == hi))
    if bad:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        raise ValueError(f"{name} must be in {left}{lo:g}, {hi:g}{right}, got {value!r}")


def sampled_gaussian(sigma: float, q: float, count: int) -> dp_accounting.DpEvent:
    """``count`` compositions of the Poisson-sampled Gaussian mechanism (q = 1: unsampled)."""
    step: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(sigma)
    if q < 1.0:
        step = dp_accounting.PoissonSampledDpEvent(q, step)
    return dp_accounting.SelfComposedDpEvent(step, count)


@dataclass(frozen=True, slots=True, kw_only=True)
class DpSgdEvent:
    """``steps`` steps of DP-SGD with Poisson sampling (record-level DP).

    Abadi et al. 2016, "Deep Learning with Differential Privacy" (CCS), Algorithm 1:
    each step samples each example with probability ``q``, clips per-example gradients
    to norm ``C`` and adds ``N(0, sigma^2 C^2)``.

    Parameters
    ----------
    noise_multiplier : float
        sigma, noise std divided by the clip norm (> 0).
    sampling_rate : float
        q, in (0, 1].
    steps : int
        Number of noisy steps (>= 0).
    clip : float
        C, the per-example clip norm (> 0); recorded for the audit, sigma alone sets epsilon.
    """

    noise_multiplier: float
    sampling_rate: float
    steps: int
    clip: float

    def __post_init__(self) -> None:
        _check("noise_multiplier", self.noise_multiplier, 0.0, math.inf, lo_open=True)
        _check("sampling_rate", self.sampling_rate, 0.0, 1.0, lo_open=True)
        _check("clip", self.clip, 0.0, math.inf, lo_open=True, hi_open=True)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {self.steps!r}")

    @property
    def mechanism(self) -> Mechanism:
        """The mechanism's name in the ledger."""
        return Mechanism.DP_SGD

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe parameters, with the mechanism name."""
        return {"mechanism": self.mechanism.value, **asdict(self)}

    def to_dp_event(self) -> dp_accounting.DpEvent:
        """``SelfComposed(PoissonSampled(q, Gaussian(sigma)), steps)`` in dp-accounting."""
        return sampled_gaussian(self.noise_multiplier, self.sampling_rate, self.steps)


@dataclass(frozen=True, slots=True, kw_only=True)
class GaussianSumEvent:
    """``rounds`` rounds of DP-FedAvg's noisy sum of clipped client updates (user-level DP).

    McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models"
    (ICLR), Algorithm 1: each round samples each client with probability ``q``, clips
    each update to norm ``C`` and adds ``N(0, z^2 C^2)`` to the sum, so one round is the
    sampled Gaussian mechanism with noise multiplier ``z``. With adaptive clipping
    (Andrew et al. 2021), ``z`` is the *total* noise multiplier of their Theorem 1 (the
    update noise is raised to pay for the noised unclipped count).

    Parameters
    ----------
    noise_multiplier : float
        z (> 0).
    sampling_rate : float
        q, in (0, 1]; 1 when a client accounts only the rounds it took part in.
    clip : float
        C (> 0); the round's clip norm (it moves under adaptive clipping).
    rounds : int
        Number of rounds the event covers (>= 1).
    """

    noise_multiplier: float
    sampling_rate: float
    clip: float
    rounds: int = 1

    def __post_init__(self) -> None:
        _check("noise_multiplier", self.noise_multiplier, 0.0, math.inf, lo_open=True)
        _check("sampling_rate", self.sampling_rate, 0.0, 1.0, lo_open=True)
        _check("clip", self.clip, 0.0, math.inf, lo_open=True, hi_open=True)
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"rounds must be an integer >= 1, got {self.rounds!r}")

    @property
    def mechanism(self) -> Mechanism:
        """The mechanism's name in the ledger."""
        return Mechanism.GAUSSIAN_SUM

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe parameters, with the mechanism name."""
        return {"mechanism": self.mechanism.value, **asdict(self)}

    def to_dp_event(self) -> dp_accounting.DpEvent:
        """``SelfComposed(PoissonSampled(q, Gaussian(z)), rounds)`` in dp-accounting."""
        return sampled_gaussian(self.noise_multiplier, self.sampling_rate, self.rounds)


DpEvent = DpSgdEvent | GaussianSumEvent


def event_from_dict(data: dict[str, Any]) -> DpEvent:
    """Rebuild an event from :meth:`to_dict` output (validated again).

    Raises
    ------
    ValueError
        For an unknown mechanism or a parameter out of its domain.
    """
    params = dict(data)
    mechanism = params.pop("mechanism", None)
    if mechanism == Mechanism.DP_SGD.value:
        return DpSgdEvent(**params)
    if mechanism == Mechanism.GAUSSIAN_SUM.value:
        return GaussianSumEvent(**params)
    allowed = ", ".join(m.value for m in Mechanism)
    raise ValueError(f"mechanism must be one of {{{allowed}}}, got {mechanism!r}")
