"""User-level DP-FedAvg around any Flower strategy, with fixed or adaptive clipping.

McMahan, Ramage, Talwar & Zhang 2018, "Learning Differentially Private Recurrent Language
Models" (ICLR), Algorithm 1 with the fixed-denominator estimator: clients send updates
clipped to norm C; the server adds ``N(0, z^2 C^2)`` to their sum and divides by the
*expected* cohort size m = qN (not the number that replied, which would depend on who
was sampled), then hands the wrapped strategy the resulting model so
FedAvg/FedProx/FedAdam take their usual step. With Poisson client sampling a round can
draw nobody; the release is then noise only, as the sampled Gaussian mechanism that the
ledger records requires (skipping it would make the output depend on the sample).
Adaptive clipping follows Andrew et al. 2021 (see :mod:`fedpriv.privacy.adaptive`).

Wrap, don't subclass: ``DpFedAvg(FedAdam(...), ...)`` works like Flower's
``DifferentialPrivacyServerSideFixedClipping``, but clipping happens on the client and a
zero-norm or empty round cannot divide by zero.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from logging import INFO

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedpriv.messages import ROUND_CLIP_NORM
from fedpriv.privacy import (
    AdaptiveClip,
    GaussianSource,
    GaussianSumEvent,
    corrected_noise_multiplier,
)
from strategies.delegation import Delegating
from strategies.updates import UpdateSum, model_reply, numpy_record, sum_updates

__all__ = ["TEST_ONLY_NOISE_SCALE", "DpFedAvg", "DpRound", "test_only_noise_scale"]

#: Environment variable that scales the noise actually added (never the ledger's record).
#: It exists only so that tests can plant an under-noising bug and show that the
#: empirical privacy estimate (``fedpriv audit``, canaries) catches it. Never set it in a
#: real run: the run's epsilon would be false.
TEST_ONLY_NOISE_SCALE = "FEDPRIV_TEST_ONLY_NOISE_SCALE"


def test_only_noise_scale() -> float:
    """The factor :data:`TEST_ONLY_NOISE_SCALE` puts on the noise actually added (1: unset)."""
    return float(os.environ.get(TEST_ONLY_NOISE_SCALE, "1") or 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class DpRound:
    """What the DP step of one round did (for the ledger and the progress display).

    ``noise_multiplier`` is the round's total z (what the accountant uses); with adaptive
    clipping ``update_noise_multiplier`` (z_Delta) and ``count_stddev`` (sigma_b) are the
    parts it combines (Andrew et al. 2021, Theorem 1).
    """

    clip: float
    noise_multiplier: float
    noise_std: float
    count: int
    expected_cohort: float
    unclipped_fraction: float | None
    update_noise_multiplier: float | None = None
    count_stddev: float | None = None

    def event(self, sampling_rate: float) -> GaussianSumEvent:
        """The ledger event of this round for client-sampling rate ``sampling_rate``."""
        return GaussianSumEvent(noise_multiplier=self.noise_multiplier,
                                sampling_rate=sampling_rate, clip=self.clip,
                                update_noise_multiplier=self.update_noise_multiplier,
                                count_stddev=self.count_stddev)


class DpFedAvg(Delegating, Strategy):
    """Clip on the client, noise on the server, then delegate to ``inner``.

    Parameters
    ----------
    inner : Strategy
        The aggregation rule that receives the privatised model.
    noise_multiplier : float
        z, the round's total noise multiplier (what the accountant uses).
    clip : float or AdaptiveClip
        A fixed C, or the state of adaptive clipping.
    expected_cohort : float
        m, the fixed denominator (qN); :meth:`set_expected_cohort` changes it when the
        eligible population changes.
    noise : GaussianSource
        Where the noise comes from (``SecureGaussian`` in runs).
    quantisation_slack : float
        How far, in l2, a client's update may move on its way to the sum beyond its clip
        (secure aggregation's stochastic rounding: at most ``step * sqrt(d)``). A client's
        contribution to the sum is then bounded by ``C + slack``, not ``C``, and the noise
        is ``z_Delta (C + slack)`` so that z stays the noise multiplier of the actual
        sensitivity and the ledger's epsilon (z, C) stays true. 0 without secure
        aggregation.
    """

    def __init__(self, inner: Strategy, *, noise_multiplier: float,
                 clip: float | AdaptiveClip, expected_cohort: float,
                 noise: GaussianSource, quantisation_slack: float = 0.0) -> None:
        if not 0 < noise_multiplier < math.inf:
            raise ValueError(f"noise_multiplier must be in (0, inf), got {noise_multiplier!r}")
        if not 0 <= quantisation_slack < math.inf:
            raise ValueError(f"quantisation_slack must be in [0, inf), got "
                             f"{quantisation_slack!r}")
        self.quantisation_slack = float(quantisation_slack)
        self.inner = inner
        self.noise_multiplier = float(noise_multiplier)
        self.adaptive = clip if isinstance(clip, AdaptiveClip) else None
        self.fixed_clip = None if isinstance(clip, AdaptiveClip) else float(clip)
        if self.fixed_clip is not None and not 0 < self.fixed_clip < math.inf:
            raise ValueError(f"clip must be in (0, inf), got {clip!r}")
        self.expected_cohort = 1.0
        self.set_expected_cohort(expected_cohort)
        self.noise = noise
        # Andrew et al. 2021, Theorem 1: pay for the noised count with more update noise.
        self.update_noise_multiplier = (
            corrected_noise_multiplier(noise_multiplier, self.adaptive.count_stddev)
            if self.adaptive is not None else self.noise_multiplier
        )
        self._noise_scale = test_only_noise_scale()
        self._current: ArrayRecord | None = None
        self.last_round: DpRound | None = None

    def set_expected_cohort(self, expected_cohort: float) -> None:
        """Set m, the expected number of clients in the coming round (> 0)."""
        if not 0 < expected_cohort < math.inf:
            raise ValueError(f"expected_cohort must be in (0, inf), got {expected_cohort!r}")
        self.expected_cohort = float(expected_cohort)

    @property
    def clip(self) -> float:
        """The clip norm C for the coming round."""
        return self.adaptive.clip if self.adaptive is not None else float(self.fixed_clip or 0)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Tell clients this round's clip norm; remember the global model.

        The last round's release is forgotten first: a round that never reaches
        :meth:`aggregate_train` (abandoned by secure aggregation) released nothing and
        must not be charged as the previous round again.
        """
        self._current = arrays
        self.last_round = None
        config = ConfigRecord({**dict(config), ROUND_CLIP_NORM: self.clip})
        if not grid.get_node_ids():  # an empty Poisson sample: nobody to ask
            return []
        return self.inner.configure_train(server_round, arrays, config, grid)

    def _empty_sum(self) -> UpdateSum:
        assert self._current is not None
        keys = tuple(self._current.keys())
        return UpdateSum(keys=keys, count=0, weight=0.0, unclipped=0.0,
                         arrays=[np.zeros(self._current[k].numpy().shape) for k in keys])

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Noisy sum / m, new model = global + that; then the inner strategy's step."""
        replies = list(replies)
        if self._current is None:
            self.last_round = None
            return None, None
        total = sum_updates(replies) or self._empty_sum()
        clip = self.clip
        std = self.update_noise_multiplier * (clip + self.quantisation_slack)
        m = self.expected_cohort
        current = self._current
        new = {}
        for key, acc in zip(total.keys, total.arrays, strict=True):
            noise = self.noise(acc.shape, std) * self._noise_scale  # N(0, std^2 I)
            base = current[key].numpy()
            new[key] = (base.astype(np.float64) + (acc + noise) / m).astype(base.dtype)
        frac = None
        if self.adaptive is not None:
            self.adaptive, frac = self.adaptive.update(total.unclipped, total.count, m,
                                                       self.noise)
        self.last_round = DpRound(
            clip=clip, noise_multiplier=self.noise_multiplier, noise_std=std,
            count=total.count, expected_cohort=m, unclipped_fraction=frac,
            update_noise_multiplier=(self.update_noise_multiplier
                                     if self.adaptive is not None else None),
            count_stddev=self.adaptive.count_stddev if self.adaptive is not None else None,
        )
        template = next((r for r in replies if not r.has_error()), None)
        reply = model_reply(template, numpy_record(new), weight=m, loss=None)
        return self.inner.aggregate_train(server_round, [reply])

    def describe(self) -> None:
        """Log the DP settings."""
        log(INFO, "\t├──> DP-FedAvg: z=%g (update z_Delta=%g), clip %s, m=%g",
            self.noise_multiplier, self.update_noise_multiplier,
            "adaptive" if self.adaptive is not None else f"{self.clip:g}",
            self.expected_cohort)
