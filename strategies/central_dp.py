"""Record-level DP noised by the server: one step of centralised DP-SGD a round.

Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar & Zhang 2016, "Deep Learning with
Differential Privacy" (CCS), Algorithm 1, with the federation's examples as the data set:

    g~ = (sum_i clip_C(g_i) + N(0, sigma^2 C^2 I)) / L,    w <- w - lr g~,

where the sum runs over a Poisson sample of the examples (each in it with probability
q = ``record-sampling-rate``, drawn by its own client, secretly) and L = q N is the
*expected* batch (N the examples of the clients that replied; their counts are public,
as at record level). Each client sends ``-sum_i clip_C(g_i)`` over its part of the
sample (:func:`client.privacy.central_gradient_sum`); this wrapper adds the noise once,
to the sum over clients, only on the trained parameters, divides by L, scales by ``lr``
and hands the wrapped Flower strategy ``w + that``; server momentum (FedAvgM, the
outermost wrapper) then makes it DP-SGD with heavy-ball momentum.

Who is trusted: the server sees every client's clipped sum before it adds the noise, as
it sees every clipped update under user-level DP-FedAvg; the epsilon protects each
example against everyone downstream of the server (the model, the run directory, other
clients), not against the server (see docs/threat-model.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from logging import INFO

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedpriv.privacy import DpSgdEvent, GaussianSource
from strategies.delegation import KeepsGlobalModel
from strategies.dp_fedavg import test_only_noise_scale
from strategies.updates import model_reply, numpy_record, sum_updates

__all__ = ["CentralDpRound", "CentralDpSgd"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CentralDpRound:
    """What one round released: a DP-SGD step over ``examples`` examples' sample."""

    event: DpSgdEvent
    clients: int
    examples: float
    expected_batch: float


class CentralDpSgd(KeepsGlobalModel, Strategy):
    """Noise the clients' clipped-gradient sum once, step ``lr``, then delegate.

    Parameters
    ----------
    inner : Strategy
        The Flower strategy that receives the new model.
    event : DpSgdEvent
        One round's step: sigma, q, C (``steps = 1``).
    learning_rate : float
        lr of the step.
    trained : collection of str
        The state-dict keys that are trained; the rest get no noise (and no update).
    noise : GaussianSource
        Where the noise comes from (``SecureGaussian`` in runs).
    """

    def __init__(self, inner: Strategy, *, event: DpSgdEvent, learning_rate: float,
                 trained: Iterable[str], noise: GaussianSource) -> None:
        if event.steps != 1:
            raise ValueError(f"a round is one step; the event has steps={event.steps}")
        if not 0 < learning_rate < math.inf:
            raise ValueError(f"learning_rate must be in (0, inf), got {learning_rate!r}")
        self.inner = inner
        self.event = event
        self.learning_rate = float(learning_rate)
        self.trained = frozenset(trained)
        if not self.trained:
            raise ValueError("trained must name at least one state-dict key")
        self.noise = noise
        self._noise_scale = test_only_noise_scale()
        self.last_round: CentralDpRound | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Forget the last round's release (an abandoned round released nothing); delegate."""
        self.last_round = None
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """``w - lr (sum + N(0, sigma^2 C^2)) / (q N)``; a round nobody answered keeps w."""
        replies = list(replies)
        total = sum_updates(replies)
        if total is None or total.count < 1 or total.weight <= 0 or self._current is None:
            return None, None
        missing = self.trained - set(total.keys)
        if missing:
            raise ValueError(f"the replies lack trained parameters {sorted(missing)}")
        batch = self.event.sampling_rate * total.weight  # L = q N: fixed by public counts
        std = self.event.noise_multiplier * self.event.clip
        new = {}
        for key, acc in zip(total.keys, total.arrays, strict=True):
            base = self._current[key].numpy()
            if key in self.trained:
                # acc = -sum_i clip(g_i): noise is symmetric, so adding it is the same
                noisy = acc + self.noise(acc.shape, std) * self._noise_scale
                new[key] = (base.astype(np.float64)
                            + self.learning_rate * noisy / batch).astype(base.dtype)
            else:
                new[key] = base
        self.last_round = CentralDpRound(event=self.event, clients=total.count,
                                         examples=total.weight, expected_batch=batch)
        template = next(m for m in replies if not m.has_error())
        reply = model_reply(template, numpy_record(new), weight=total.weight, loss=None)
        return self.inner.aggregate_train(server_round, [reply])

    def describe(self) -> None:
        """Log the step's settings."""
        e = self.event
        log(INFO, "\t├──> record-central DP-SGD: sigma=%g, q=%g, C=%g, lr=%g, one step a "
            "round, noise added once by the server", e.noise_multiplier, e.sampling_rate,
            e.clip, self.learning_rate)
