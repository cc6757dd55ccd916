"""Distributed DP's parameters for a run, decided once from public values, on both sides.

``dp-mode = distributed`` (Kairouz, Liu & Steinke 2021, arXiv:2102.06387, Algorithm 1;
Agarwal, Kairouz & Liu 2021, arXiv:2110.04995, Algorithm 1): every client clips its
update to C, rotates it with a public per-round seed, scales it by gamma, rounds it to
integers and adds its own share of discrete noise before secure aggregation masks it; the
server unmasks only the noised sum. Every party computes the scale gamma, the share's
variance V and the modulus bits b itself, from the run config and the model's size,
with :func:`distributed_plan`: a client never takes them from the server's messages.

Symbols: C the clip norm, d the model's parameter count and d' = 2^ceil(log2 d), gamma
the scale, V one client's share variance per coordinate (2 mu for Sk(mu, mu), sigma^2
for N_Z(0, sigma^2)), b the modulus bits, n_min the fewest survivors the noise is sized
for, N the enrolled clients (the most a sum may hold), c the colluding clients secure
aggregation tolerates.

- ``target-epsilon > 0``: :func:`fedpriv.privacy.discrete.calibrate` finds the largest
  gamma whose wrap-around bound with N clients is at most :data:`WRAP_BOUND` and the
  least V with which ``rounds`` sums of n_min shares spend the target (q = 1: the
  server that picks the cohort gets no amplification by sampling).
- otherwise ``noise-multiplier`` z sets the noise of the sum of n_min shares to z C in
  real units, ``V = (z gamma C)^2 / n_min``, and gamma is the largest whose wrap-around
  bound is at most :data:`WRAP_BOUND` (bisection, relative tolerance 1e-3).
- ``ddp-bits = 0`` picks the fewest bits b whose gamma makes the rounding inflate the
  L2 sensitivity Delta_2 (KLS21, Theorem 1, eq. 2), and so the noise a given epsilon
  needs, by at most :data:`NOISE_SLACK` over the unrounded gamma C (bisection on b).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

from fedpriv.config import ConfigError, DdpMechanism, DpMode, RunConfig
from fedpriv.privacy.discrete import (
    DistributedDpParams,
    calibrate,
    distributed_epsilon,
    padded_dimension,
    rounded_l2_bound,
    wrap_probability,
)
from fedpriv.privacy.discrete.calibration import largest_scale
from fedpriv.privacy.discrete.discrete_gaussian import MAX_SIGMA
from fedpriv.privacy.discrete.params import DEFAULT_BETA
from fedpriv.privacy.discrete.skellam import MAX_POISSON_MEAN
from fedpriv.privacy.events import DistributedNoiseEvent, Mechanism

__all__ = [
    "NOISE_SLACK",
    "WRAP_BOUND",
    "DistributedPlan",
    "colluders",
    "distributed_plan",
    "min_survivors",
    "model_dimension",
    "rotation_seed",
]

#: The largest wrap-around probability per round the modulus may have.
WRAP_BOUND = 1e-9

#: ``ddp-bits = 0``: the rounding may add at most this fraction to Delta_2 (and the noise).
NOISE_SLACK = 0.01

_MECHANISM = {DdpMechanism.SKELLAM: Mechanism.SKELLAM_SUM, DdpMechanism.DDG: Mechanism.DDG_SUM}


@dataclass(frozen=True, slots=True, kw_only=True)
class DistributedPlan:
    """What every party encodes, decodes and accounts with in a distributed-DP run.

    Attributes
    ----------
    params : DistributedDpParams
        mechanism, C, d, gamma, V, b.
    min_clients : int
        n_min: the fewest survivors whose shares the noise is sized for.
    max_clients : int
        N: the wrap-around bound holds for any sum of at most N encodings.
    colluders : int
        c: clients that may collude with the server (and may leave out their shares).
    delta : float
        The run's delta.
    rounds : int
        The rounds planned.
    epsilon : float
        The run's epsilon against the server when every round sums n_min honest shares
        (the most a completed run spends; q = 1).
    epsilon_with_colluders : float
        The same when c of those n_min clients collude and add no noise (inf when
        n_min <= c).
    wrap_probability : float
        Bound on a wrap-around in one round summing N encodings.
    auto_bits : bool
        Whether b was chosen (``ddp-bits = 0``).
    """

    params: DistributedDpParams
    min_clients: int
    max_clients: int
    colluders: int
    delta: float
    rounds: int
    epsilon: float
    epsilon_with_colluders: float
    wrap_probability: float
    auto_bits: bool

    def event(self, clients: int) -> DistributedNoiseEvent:
        """One round's ledger event with ``clients`` shares in the sum (q = 1)."""
        return self.params.event(clients=clients, sampling_rate=1.0)

    @property
    def noise_multiplier(self) -> float:
        """z: the std of the n_min shares' sum, in real units, over C."""
        p = self.params
        return math.sqrt(self.min_clients * p.local_variance) / (p.scale * p.clip)

    @property
    def digest(self) -> str:
        """SHA-256 of the plan (its :meth:`summary` as canonical JSON), hex.

        Every client derives its plan from the run config on its own machine; the server
        sends the digest of its own in the first secure-aggregation stage, and a client
        whose plan differs (another version, another platform's floating point) refuses
        the round before touching its data: its share would not add up to the noise the
        ledger records, or the sum would not decode.
        """
        blob = json.dumps(self.summary(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def summary(self) -> dict[str, Any]:
        """The plan as JSON-safe values (``summary.json``'s ``distributed_dp``)."""
        p = self.params
        return {
            "mechanism": p.mechanism.value, "bits": p.bits, "bits_auto": self.auto_bits,
            "scale_gamma": p.scale, "local_variance": p.local_variance,
            "clip": p.clip, "dimension": p.dimension, "padded_dimension": p.padded_dimension,
            "beta": p.beta, "l2_sensitivity": p.l2_sensitivity,
            "l1_sensitivity": p.l1_sensitivity, "min_survivors": self.min_clients,
            "max_clients": self.max_clients, "colluders": self.colluders,
            "noise_multiplier": self.noise_multiplier,
            "mean_noise_std_at_min_survivors": p.mean_noise_std(self.min_clients),
            "wrap_probability": self.wrap_probability, "wrap_bound": WRAP_BOUND,
            "epsilon_planned": _finite(self.epsilon),
            "epsilon_with_colluders": _finite(self.epsilon_with_colluders),
            "rotation_seed": "SHA-256('fedpriv-ddp|rotation|' + run-id + '|' + round)",
        }


def _finite(x: float) -> float | str:
    return x if math.isfinite(x) else "inf"


def min_survivors(cfg: RunConfig) -> int:
    """n_min: ``ddp-min-survivors``, or the minimum survivors secure aggregation guarantees.

    The guarantee is :meth:`fedpriv.secagg.params.SecurityParams.min_survivors` for the
    cohort, with c counted on every enrolled client (as each client derives it).
    """
    from fedpriv.secagg.params import params_for

    if cfg.privacy.ddp_min_survivors:
        return cfg.privacy.ddp_min_survivors
    params = params_for(cfg.secagg)
    n = cfg.training.cohort_size
    return params.min_survivors(n, colluders(cfg))


def colluders(cfg: RunConfig) -> int:
    """C = floor(corruption rate x enrolled clients) (see :mod:`fedpriv.secagg.params`)."""
    from fedpriv.secagg.params import params_for

    training = cfg.training
    return params_for(cfg.secagg).corrupt(max(training.cohort_size, training.clients))


@functools.lru_cache(maxsize=8)
def model_dimension(cfg: RunConfig) -> int:
    """d: the parameter count of the run's model (public: it follows from the config).

    Cached: a client asks it for the plan check and the modulus of every round.
    """
    from fedpriv.tasks import build_task_model

    model = build_task_model(cfg)
    return int(sum(t.numel() for t in model.state_dict().values()))


def rotation_seed(run_id: str, server_round: int) -> bytes:
    """The round's public rotation seed: SHA-256 of a domain tag, the run id and the round.

    The same on every client and the server, and on a resumed run (the run id is
    fedpriv's, the run directory's name, not Flower's), so a replayed encoding decodes.
    """
    if isinstance(server_round, bool) or not isinstance(server_round, int) or server_round < 0:
        raise ValueError(f"server_round must be an integer >= 0, got {server_round!r}")
    return hashlib.sha256(b"fedpriv-ddp|rotation|" + str(run_id).encode() + b"|"
                          + struct.pack(">Q", server_round)).digest()


def distributed_plan(cfg: RunConfig, dimension: int) -> DistributedPlan:
    """The run's distributed-DP parameters for a model of ``dimension`` parameters.

    Deterministic in the config's public values (and cached), so every party computes
    the same plan. See the module docstring for how gamma, V and b are chosen.

    Raises
    ------
    ConfigError
        For a config that is not ``dp-mode = distributed``, or when no scale meets the
        target (or the noise multiplier) within :data:`WRAP_BOUND` at ``ddp-bits``.
    """
    privacy, training = cfg.privacy, cfg.training
    if privacy.dp_mode is not DpMode.DISTRIBUTED:
        raise ConfigError("dp-mode", f"a distributed plan needs dp-mode=distributed, got "
                          f"dp-mode={privacy.dp_mode.value}")
    return _plan(_MECHANISM[privacy.ddp_mechanism], privacy.target_epsilon,
                 privacy.noise_multiplier, privacy.delta, training.rounds, privacy.clip_norm,
                 int(dimension), min_survivors(cfg), training.clients, privacy.ddp_bits,
                 colluders(cfg))


@functools.lru_cache(maxsize=32)
def _plan(mechanism: Mechanism, target: float, z: float, delta: float, rounds: int,
          clip: float, dimension: int, n_min: int, n_max: int, bits: int,
          c: int) -> DistributedPlan:
    key = "target-epsilon" if target > 0 else "noise-multiplier"

    def solve(b: int) -> DistributedDpParams:
        if target > 0:
            return calibrate(mechanism=mechanism, target_epsilon=target, delta=delta,
                             rounds=rounds, sampling_rate=1.0, clip=clip, dimension=dimension,
                             min_clients=n_min, bits=b, max_clients=n_max,
                             wrap_bound=WRAP_BOUND).params
        return _for_multiplier(mechanism, z, clip, dimension, n_min, n_max, b)

    if bits:
        try:
            params = solve(bits)
        except ValueError as err:
            raise ConfigError("ddp-bits", f"{err} (ddp-bits={bits}; 0 picks the bits)"
                              ) from None
    else:
        params = _auto_bits(solve, lo=max(8, n_max.bit_length() + 1), key=key)

    def eps(clients: int) -> float:
        if clients < 1:
            return math.inf
        return distributed_epsilon(params, clients=clients, sampling_rate=1.0,
                                   rounds=rounds, delta=delta)

    return DistributedPlan(params=params, min_clients=n_min, max_clients=n_max,
                           colluders=c, delta=delta, rounds=rounds, epsilon=eps(n_min),
                           epsilon_with_colluders=eps(n_min - c),
                           wrap_probability=params.wrap_probability(n_max),
                           auto_bits=not bits)


def _auto_bits(solve: Any, *, lo: int, key: str) -> DistributedDpParams:
    """The fewest bits in [lo, 64] whose rounding adds at most NOISE_SLACK to Delta_2.

    Delta_2 / (gamma C) falls as b (hence gamma) grows, so the test is monotone in b and
    a bisection finds the least b; when even 64 bits do not reach the slack, 64.
    """

    def attempt(b: int) -> DistributedDpParams | None:
        try:
            return solve(b)
        except ValueError:
            return None  # too few bits to hold the noise at all

    def good(p: DistributedDpParams | None) -> bool:
        return p is not None and p.l2_sensitivity <= (1 + NOISE_SLACK) * p.scaled_clip

    top = attempt(64)
    if top is None:
        raise ConfigError(key, "even 64 modulus bits cannot hold the noise this needs within "
                          f"the wrap-around bound {WRAP_BOUND:g}; lower the noise (raise "
                          "target-epsilon or lower noise-multiplier)")
    if not good(top):
        return top
    best, hi = top, 64
    while lo < hi:
        mid = (lo + hi) // 2
        p = attempt(mid)
        if good(p):
            best, hi = p, mid  # type: ignore[assignment]
        else:
            lo = mid + 1
    return best


def _for_multiplier(mechanism: Mechanism, z: float, clip: float, dimension: int,
                    n_min: int, n_max: int, bits: int) -> DistributedDpParams:
    """The largest gamma with V = (z gamma C)^2 / n_min whose wrap bound is <= WRAP_BOUND."""
    dp = padded_dimension(dimension)
    v_max = MAX_SIGMA ** 2 if mechanism is Mechanism.DDG_SUM else 2 * MAX_POISSON_MEAN

    def variance(scale: float) -> float:
        return (z * scale * clip) ** 2 / n_min

    def wrap(scale: float) -> float:
        if variance(scale) > v_max or rounded_l2_bound(scale * clip, dp,
                                                       DEFAULT_BETA) >= 2.0 ** 62:
            return 1.0
        return wrap_probability(mechanism, scaled_clip=scale * clip,
                                local_variance=variance(scale), clients=n_max, dim=dp,
                                bits=bits)

    lo = 1e-6 / clip
    if wrap(lo) > WRAP_BOUND:
        raise ValueError(f"{bits} bits cannot hold the sum of {n_max} clients within the "
                         f"wrap-around bound {WRAP_BOUND:g} even at the smallest scale; "
                         "raise the bits")
    lo = largest_scale(wrap, WRAP_BOUND, lo)
    return DistributedDpParams(mechanism=mechanism, clip=clip, dimension=dimension, scale=lo,
                               local_variance=variance(lo), bits=bits)
