"""What a run's differential privacy will be, decided once, up front, from the config.

Both sides use this module: a client to know its DP-SGD shape and noise, the server to
calibrate user-level noise and to tell the user, before round 1, what epsilon the run
will spend. Everything here is a function of the run config and, for record-level DP, of
the client's own example count.

Record level (Abadi et al. 2016; Opacus' ``DPDataLoader``): a client with n examples and
batch size B runs ``ceil(n / B)`` Poisson-sampled steps per local epoch with sampling
rate ``q = 1 / ceil(n / B)``, exactly what Opacus does with a loader of ``ceil(n / B)``
batches (``sample_rate = 1 / len(data_loader)``), so the recorded q and steps are the
ones that ran.

User level (McMahan et al. 2018): one Poisson-sampled Gaussian sum per round with
``q = clients-per-round / clients``; ``target-epsilon`` calibrates z for ``rounds``
rounds.

Record level, noised by the server (``record-central``): one step of centralised DP-SGD
per round (Abadi et al. 2016, Algorithm 1, with the federation's examples as the data
set): every client includes each of its examples with probability
``q = record-sampling-rate``, and the server adds N(0, sigma^2 C^2) once to the sum of all
the clipped gradients; ``target-epsilon`` calibrates sigma for ``rounds`` steps at q.
"""

from __future__ import annotations

import dataclasses
import functools
import math

from fedpriv.config import ConfigError, DpMode, RunConfig
from fedpriv.privacy import (
    DpSgdEvent,
    GaussianSumEvent,
    calibrate_noise_multiplier,
    epsilon,
)

__all__ = [
    "WARN_EPSILON",
    "central_record_event",
    "client_sampling_rate",
    "planned_central_epsilon",
    "planned_record_epsilon",
    "planned_user_epsilon",
    "record_noise_multiplier",
    "record_shape",
    "with_user_noise",
]

#: Above this epsilon a run warns that its guarantee is weak.
WARN_EPSILON = 10.0


def record_shape(cfg: RunConfig, n_local: int) -> tuple[float, int]:
    """``(q, steps per round)`` of Poisson-sampled DP-SGD on ``n_local`` examples.

    ``q = 1 / ceil(n / B)`` and ``steps = local-epochs * ceil(n / B)``, as Opacus' Poisson
    loader runs them. An empty data set is refused.
    """
    if n_local < 1:
        raise ValueError(f"n_local must be >= 1, got {n_local!r}")
    batches = math.ceil(n_local / cfg.training.batch_size)
    return 1.0 / batches, cfg.training.local_epochs * batches


@functools.lru_cache(maxsize=256)
def _calibrated(target: float, delta: float, q: float, steps: int) -> float:
    return calibrate_noise_multiplier(target, delta, sampling_rate=q, steps=steps)


def record_noise_multiplier(cfg: RunConfig, n_local: int) -> float:
    """Sigma for DP-SGD: ``noise-multiplier``, or calibrated from ``target-epsilon``.

    The calibration assumes the client takes part in every one of ``rounds`` rounds, so
    the whole run spends at most ``target-epsilon`` however it is sampled.
    """
    if cfg.privacy.target_epsilon <= 0:
        return cfg.privacy.noise_multiplier
    q, steps = record_shape(cfg, n_local)
    privacy = cfg.privacy
    return _calibrated(privacy.target_epsilon, privacy.delta, q, steps * cfg.training.rounds)


def planned_record_epsilon(cfg: RunConfig, n_local: int) -> float:
    """Epsilon a client with ``n_local`` examples spends if it trains every round."""
    q, steps = record_shape(cfg, n_local)
    event = DpSgdEvent(noise_multiplier=record_noise_multiplier(cfg, n_local),
                       sampling_rate=q, steps=steps * cfg.training.rounds,
                       clip=cfg.privacy.clip_norm)
    return epsilon([event], cfg.privacy.delta)


def client_sampling_rate(cfg: RunConfig) -> float:
    """Q = clients-per-round / clients (1 when every client trains every round)."""
    return cfg.training.cohort_size / cfg.training.clients


def with_user_noise(cfg: RunConfig) -> RunConfig:
    """``cfg`` with the server's noise calibrated from ``target-epsilon`` (else unchanged).

    User level: z, for ``rounds`` Poisson-sampled rounds at ``q = clients-per-round /
    clients``. Record-central: sigma, for ``rounds`` DP-SGD steps at ``q =
    record-sampling-rate``. Found once with the PLD accountant the run reports with, so a
    run that completes spends just under ``target-epsilon``; the search is cached, so the
    CLI's announcement and the server (one process in simulation) do it once.

    Raises
    ------
    ConfigError
        When no z in [0.01, 1000] reaches the target, or the calibrated z does not fit
        the configured ``clip-count-stddev`` (Andrew et al. 2021, Theorem 1).
    """
    mode = cfg.privacy.dp_mode
    if mode not in (DpMode.USER, DpMode.RECORD_CENTRAL) or cfg.privacy.target_epsilon <= 0:
        return cfg
    q = (cfg.privacy.record_sampling_rate if mode is DpMode.RECORD_CENTRAL
         else client_sampling_rate(cfg))
    try:
        z = _calibrated(cfg.privacy.target_epsilon, cfg.privacy.delta, q, cfg.training.rounds)
    except ValueError as err:
        raise ConfigError("target-epsilon", str(err)) from None
    return cfg.with_values(noise_multiplier=z)


def planned_user_epsilon(cfg: RunConfig) -> float:
    """Epsilon of the federation after all ``rounds`` user-level rounds."""
    event = GaussianSumEvent(noise_multiplier=cfg.privacy.noise_multiplier,
                             sampling_rate=client_sampling_rate(cfg), clip=cfg.privacy.clip_norm,
                             rounds=cfg.training.rounds)
    return epsilon([event], cfg.privacy.delta)


def central_record_event(cfg: RunConfig) -> DpSgdEvent:
    """One ``record-central`` round: a DP-SGD step at q = ``record-sampling-rate``.

    Sigma is ``noise-multiplier`` (calibrated by :func:`with_user_noise` when
    ``target-epsilon`` is set); each example's gradient is clipped to ``clip-norm``.
    """
    return DpSgdEvent(noise_multiplier=cfg.privacy.noise_multiplier,
                      sampling_rate=cfg.privacy.record_sampling_rate, steps=1,
                      clip=cfg.privacy.clip_norm)


def planned_central_epsilon(cfg: RunConfig) -> float:
    """Epsilon of a ``record-central`` run after all ``rounds`` steps."""
    event = dataclasses.replace(central_record_event(cfg), steps=cfg.training.rounds)
    return epsilon([event], cfg.privacy.delta)
