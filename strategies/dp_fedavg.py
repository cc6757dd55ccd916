"""User-level DP-FedAvg around any Flower strategy, with fixed or adaptive clipping.

McMahan, Ramage, Talwar & Zhang 2018, "Learning Differentially Private Recurrent Language
Models" (ICLR), Algorithm 1 with the fixed-denominator estimator: clients send updates
clipped to norm C; the server adds ``N(0, z^2 C^2)`` to their sum and divides by the
*expected* cohort size m (not the number that replied, which would leak), then hands the
wrapped strategy the resulting model so FedAvg/FedProx/FedAdam take their usual step.
Adaptive clipping follows Andrew et al. 2021 (see :mod:`fedpriv.privacy.adaptive`).

Wrap, don't subclass: ``DpFedAvg(FedAdam(...), ...)`` works like Flower's
``DifferentialPrivacyServerSideFixedClipping``, but clipping happens on the client and a
zero-norm or empty round cannot divide by zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedpriv.messages import ROUND_CLIP_NORM
from fedpriv.privacy import AdaptiveClip, GaussianSource, corrected_noise_multiplier
from strategies.updates import model_reply, numpy_record, sum_updates, train_loss

__all__ = ["DpFedAvg", "DpRound"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DpRound:
    """What the DP step of one round did (for the ledger and the progress display)."""

    clip: float
    noise_multiplier: float
    noise_std: float
    count: int
    unclipped_fraction: float | None


class DpFedAvg(Strategy):
    """Clip on the client, noise on the server, then delegate to ``inner``.

    Parameters
    ----------
    inner : Strategy
        The aggregation rule that receives the privatised model.
    noise_multiplier : float
        z, the round's total noise multiplier (what the accountant uses).
    clip : float or AdaptiveClip
        A fixed C, or the state of adaptive clipping.
    expected_cohort : int
        m, the fixed denominator.
    noise : GaussianSource
        Where the noise comes from (``SecureGaussian`` in runs).
    """

    def __init__(self, inner: Strategy, *, noise_multiplier: float,
                 clip: float | AdaptiveClip, expected_cohort: int,
                 noise: GaussianSource) -> None:
        if not noise_multiplier > 0:
            raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier!r}")
        if expected_cohort < 1:
            raise ValueError(f"expected_cohort must be >= 1, got {expected_cohort!r}")
        self.inner = inner
        self.noise_multiplier = noise_multiplier
        self.adaptive = clip if isinstance(clip, AdaptiveClip) else None
        self.fixed_clip = None if isinstance(clip, AdaptiveClip) else float(clip)
        if self.fixed_clip is not None and not self.fixed_clip > 0:
            raise ValueError(f"clip must be > 0, got {clip!r}")
        self.expected_cohort = expected_cohort
        self.noise = noise
        # Andrew et al. 2021, Theorem 1: pay for the noised count with more update noise.
        self.update_noise_multiplier = (
            corrected_noise_multiplier(noise_multiplier, self.adaptive.count_stddev)
            if self.adaptive is not None else noise_multiplier
        )
        self._current: ArrayRecord | None = None
        self.last_round: DpRound | None = None

    @property
    def clip(self) -> float:
        """The clip norm C for the coming round."""
        return self.adaptive.clip if self.adaptive is not None else float(self.fixed_clip or 0)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Tell clients this round's clip norm; remember the global model."""
        self._current = arrays
        config = ConfigRecord({**dict(config), ROUND_CLIP_NORM: self.clip})
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Noisy sum / m, new model = global + that; then the inner strategy's step."""
        replies = list(replies)
        total = sum_updates(replies)
        if total is None or self._current is None:
            self.last_round = None
            return None, None
        clip = self.clip
        std = self.update_noise_multiplier * clip
        m = self.expected_cohort
        current = self._current
        new = {}
        for key, acc in zip(total.keys, total.arrays, strict=True):
            noisy = acc + self.noise(acc.shape, std)  # sum_i clip(Delta_i) + N(0, std^2 I)
            base = current[key].numpy()
            new[key] = (base.astype(np.float64) + noisy / m).astype(base.dtype)
        frac = None
        if self.adaptive is not None:
            self.adaptive, frac = self.adaptive.update(total.unclipped, total.count, self.noise)
        self.last_round = DpRound(clip=clip, noise_multiplier=self.noise_multiplier,
                                  noise_std=std, count=total.count, unclipped_fraction=frac)
        template = next(m_ for m_ in replies if not m_.has_error())
        reply = model_reply(template, numpy_record(new), weight=float(m),
                            loss=train_loss(replies))
        return self.inner.aggregate_train(server_round, [reply])

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Delegate to the inner strategy."""
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        """Delegate to the inner strategy."""
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        """Delegate to the inner strategy."""
        self.inner.summary()
