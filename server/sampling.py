"""Who takes part in a round: Poisson or fixed-size sampling from secret randomness.

Privacy amplification by sampling holds only against a party that does not know who was
sampled, so the sampler draws from the operating system's CSPRNG (``secrets``) unless the
run is explicitly ``reproducible`` (a research switch: then a seeded ``numpy`` generator,
and the run's summary and audit say that epsilon holds only while the seed is secret).

- :attr:`SamplingKind.POISSON` includes each eligible client independently with
  probability q (McMahan et al. 2018, Algorithm 1, "each user is selected independently
  with probability q"); the cohort size varies and may be 0. This is the sampling that
  the ledger's ``PoissonSampled(q, Gaussian(z))`` event describes, so user-level DP uses
  it.
- :attr:`SamplingKind.FIXED` draws exactly m distinct clients uniformly; used where
  nothing is accounted over client sampling (no DP, record-level DP whose clients account
  each round they take part in without amplification).
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Sequence

import numpy as np

__all__ = ["CohortSampler", "SamplingKind"]


class SamplingKind(enum.StrEnum):
    """How a cohort is drawn."""

    POISSON = "poisson"
    FIXED = "fixed"


class CohortSampler:
    """Draw cohorts from secret (or, for research, seeded) randomness.

    Parameters
    ----------
    kind : SamplingKind
        Poisson (rate ``rate``) or fixed size (``size``).
    rate : float
        q in (0, 1], for Poisson sampling.
    size : int
        m >= 1, for fixed-size sampling.
    seed : int or None
        ``None`` (production): OS entropy through :mod:`secrets`. An integer: a seeded
        ``numpy.random.Generator`` (``reproducible = true``).
    """

    def __init__(self, kind: SamplingKind, *, rate: float = 1.0, size: int = 1,
                 seed: int | Sequence[int] | None = None) -> None:
        if not 0 < rate <= 1:
            raise ValueError(f"rate must be in (0, 1], got {rate!r}")
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size!r}")
        self.kind = SamplingKind(kind)
        self.rate = float(rate)
        self.size = int(size)
        self.secret = seed is None
        self._rng = None if seed is None else np.random.default_rng(seed)
        self._sys = secrets.SystemRandom()

    def _uniform(self, n: int) -> np.ndarray:
        if self._rng is not None:
            return self._rng.random(n)
        return np.array([self._sys.random() for _ in range(n)])

    def expected_size(self, population: int) -> float:
        """m: the expected cohort size out of ``population`` eligible clients."""
        if self.kind is SamplingKind.POISSON:
            return self.rate * population
        return float(min(self.size, population))

    def sample(self, nodes: Sequence[int]) -> list[int]:
        """A cohort of ``nodes`` (sorted)."""
        nodes = sorted(nodes)
        if not nodes:
            return []
        if self.kind is SamplingKind.POISSON:
            if self.rate >= 1.0:
                return nodes
            keep = self._uniform(len(nodes)) < self.rate
            return [n for n, k in zip(nodes, keep, strict=True) if k]
        size = min(self.size, len(nodes))
        if self._rng is not None:
            picked = self._rng.choice(len(nodes), size=size, replace=False)
            return sorted(nodes[int(i)] for i in picked)
        return sorted(self._sys.sample(nodes, size))
