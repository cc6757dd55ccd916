"""Public security parameters, and what every client derives from them for a round.

Nothing here comes from the server. Each client computes, from the run's public
parameters (the configuration it was started with), the roster it holds out of band and
the round's cohort:

- the graph degree k and the Shamir threshold t (Bell et al. 2020, "Secure Single-Server
  Aggregation with (Poly)Logarithmic Overhead", CCS, Section 3: each client shares its
  secrets t-of-k with its k neighbours in a random graph);
- the ConsistencyCheck threshold T (Bonawitz et al. 2017, CCS, Section 4 and Figure 4,
  "ConsistencyCheck"): a client reveals shares only after T clients signed the very
  survivor set it signed;
- the minimum number of survivors, and the graph itself (seeded by the round and the
  cohort, so every client that sees the same cohort builds the same graph).

Notes
-----
Symbols: n the cohort size, gamma the corruption rate (c = floor(gamma n) clients may
collude with the server), delta the dropout rate, k the degree, t the Shamir threshold,
T = floor((n + c) / 2) + 1 the consistency threshold.

*Two disjoint reveal sets are impossible.* An honest client signs one survivor set per
round. Two different sets each signed by T clients need 2T - c <= n distinct signers
(the c corrupt ones may sign both), so T > (n + c) / 2 makes a split view impossible:
every honest client that reveals anything reveals against the same set S, so for no
client v does the server get both the shares of b_v (v in S) and of s_sk_v (v not in S)
from honest clients. t > k / 2 (``threshold_fraction >= 1/2``) keeps the same property
inside each neighbourhood when consistency fails open, and t > (corrupt neighbours)
keeps the corrupt clients alone from rebuilding a secret.

*Degree.* :func:`secure_degree` is the smallest k for which a union bound over the n
neighbourhoods (each a uniformly random k-subset of the cohort, as in Bell et al. 2020,
Section 3, where a random graph replaces the complete one) gives

    n * P[Binomial(k, gamma) >= t]              <= 2^-sigma  (no neighbourhood holds t
                                                              corrupt clients), and
    n * P[Binomial(k, gamma + delta) > k - t]   <= 2^-eta    (every neighbourhood keeps
                                                              t honest, live clients);

else the complete graph (k = n - 1). This is our bound in the paper's spirit, not its
table; docs/secure-aggregation.md lists the values it gives.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedpriv.secagg.errors import SecAggAbort
from fedpriv.secagg.graph import default_degree, regular_graph
from fedpriv.secagg.setup import RoundSetup

__all__ = [
    "PRG_KINDS",
    "SecurityParams",
    "binomial_tail",
    "derive_setup",
    "graph_seed",
    "params_for",
    "secure_degree",
]

PRG_KINDS = ("aes128-ctr", "chacha20")
_MAX_SEARCH = 4096  # above this degree the complete graph is used


def binomial_tail(k: int, p: float, m: int) -> float:
    """P[Binomial(k, p) >= m], summed in log space (exact enough for 2^-60 tails)."""
    if m <= 0:
        return 1.0
    if m > k or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(k + 1) - math.lgamma(i + 1) - math.lgamma(k - i + 1)
             + i * lp + (k - i) * lq for i in range(m, k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(x - top) for x in terms))


@functools.lru_cache(maxsize=256)
def secure_degree(n: int, *, threshold_fraction: float, corruption_rate: float,
                  dropout_rate: float, sigma: int = 40, eta: int = 20) -> int:
    """The smallest degree k >= 2 ceil(log2 n) + 1 meeting both bounds; n - 1 if none.

    The floor is :func:`~fedpriv.secagg.graph.default_degree` (Bell et al. 2020 take
    k = O(log n)), which keeps sparse graphs connected when gamma = delta = 0.

    Parameters
    ----------
    n : int
        Cohort size (>= 2).
    threshold_fraction : float
        t = floor(fraction * k) + 1.
    corruption_rate, dropout_rate : float
        gamma and delta.
    sigma, eta : int
        Security and correctness parameters (failure <= 2^-sigma, 2^-eta).
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    for k in range(max(2, default_degree(n)), min(n - 1, _MAX_SEARCH) + 1):
        t = math.floor(threshold_fraction * k) + 1
        if t > k:
            continue
        private = n * binomial_tail(k, corruption_rate, t)
        correct = n * binomial_tail(k, corruption_rate + dropout_rate, k - t + 1)
        if private <= 2.0 ** -sigma and correct <= 2.0 ** -eta:
            return k
    return n - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityParams:
    """The run's public secure-aggregation parameters (identical on every client).

    Attributes
    ----------
    threshold_fraction : float
        t = floor(fraction * k) + 1; in [1/2, 1) so that t > k/2 and t <= k.
    degree : int
        k; 0 derives it with :func:`secure_degree`.
    dropout_rate : float
        delta in [0, 1): the dropout rate the degree must tolerate.
    corruption_rate : float
        gamma in [0, 1/2): the fraction of the cohort that may collude with the server.
    min_honest : int
        The fewest honest clients whose sum the server may learn (>= 1).
    sigma, eta : int
        Security and correctness parameters of the degree bound.
    prg : str
        Mask keystream: ``aes128-ctr`` (AES-NI) or ``chacha20`` (devices without it).
    """

    threshold_fraction: float = 0.5
    degree: int = 0
    dropout_rate: float = 0.0
    corruption_rate: float = 0.1
    min_honest: int = 2
    sigma: int = 40
    eta: int = 20
    prg: str = "aes128-ctr"

    def __post_init__(self) -> None:
        if not 0.5 <= self.threshold_fraction < 1.0:
            raise ValueError("threshold_fraction must be in [0.5, 1) (t > k/2 makes two "
                             "disjoint reveal sets impossible; t <= k), got "
                             f"{self.threshold_fraction!r}")
        if self.degree < 0:
            raise ValueError(f"degree must be >= 0 (0: derived), got {self.degree!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
        if not 0.0 <= self.corruption_rate < 0.5:
            raise ValueError("corruption_rate must be in [0, 0.5), got "
                             f"{self.corruption_rate!r}")
        if self.min_honest < 1:
            raise ValueError(f"min_honest must be >= 1, got {self.min_honest!r}")
        if self.sigma < 1 or self.eta < 1:
            raise ValueError(f"sigma and eta must be >= 1, got {self.sigma}, {self.eta}")
        if self.prg not in PRG_KINDS:
            raise ValueError(f"prg must be one of {PRG_KINDS}, got {self.prg!r}")

    def corrupt(self, n: int) -> int:
        """The colluding clients a cohort of n may hold: c = floor(gamma n)."""
        return math.floor(self.corruption_rate * n)

    def _c(self, n: int, c: int | None) -> int:
        return self.corrupt(n) if c is None else c

    def degree_for(self, n: int, c: int | None = None) -> int:
        """The degree k for a cohort of n: configured (capped at n - 1) or derived.

        Derived: the :func:`secure_degree` bound, raised until t > c, so that the
        colluding clients alone can never hold t shares of one secret (capped at n - 1).
        """
        if n < 2:
            return 0
        if self.degree:
            return min(self.degree, n - 1)
        k = secure_degree(n, threshold_fraction=self.threshold_fraction,
                          corruption_rate=self.corruption_rate,
                          dropout_rate=self.dropout_rate, sigma=self.sigma, eta=self.eta)
        c = self._c(n, c)
        while k < n - 1 and (self.threshold_for(k) <= c or k < c + self.min_honest):
            k += 1
        return k

    def threshold_for(self, k: int) -> int:
        """The Shamir threshold t = floor(fraction * k) + 1."""
        return math.floor(self.threshold_fraction * k) + 1

    def consistency_threshold(self, n: int, c: int | None = None) -> int:
        """The consistency threshold T = floor((n + c) / 2) + 1 signatures of one set."""
        return (n + self._c(n, c)) // 2 + 1

    def min_survivors(self, n: int, c: int | None = None) -> int:
        """The fewest survivors (and fewest per component): max(T, min_honest + c)."""
        return max(self.consistency_threshold(n, c), self.min_honest + self._c(n, c))

    def cohort_problem(self, n: int, c: int | None = None) -> str | None:
        """Why a cohort of n (with up to c colluding clients) cannot run securely, or None."""
        if n < 2:
            return f"a cohort needs >= 2 clients, got {n}"
        c = self._c(n, c)
        if self.min_survivors(n, c) > n:
            return (f"a cohort of {n} cannot have the {self.min_survivors(n, c)} survivors "
                    f"required (consistency threshold {self.consistency_threshold(n, c)}, "
                    f"min_honest {self.min_honest} + corrupt {c})")
        k = self.degree_for(n, c)
        t = self.threshold_for(k)
        if t > k:
            return f"threshold {t} exceeds the degree {k}"
        if t <= c:
            return (f"threshold t={t} (degree k={k}) does not exceed the {c} clients that "
                    "may collude with the server, which could then rebuild a client's "
                    "secrets; raise secagg-degree (0 derives a safe one) or the threshold")
        if k < c + self.min_honest - 1:
            return (f"degree k={k} cannot keep {self.min_honest - 1} honest neighbours "
                    f"beside {c} colluding ones; raise secagg-degree")
        return None


def graph_seed(round_id: int, cohort: Sequence[int]) -> bytes:
    """SHA-256 of (domain, round, sorted cohort): the graph's public randomness."""
    ids = sorted(cohort)
    return hashlib.sha256(b"fedpriv-secagg|graph" + struct.pack(">QQ", round_id, len(ids))
                          + b"".join(struct.pack(">Q", u) for u in ids)).digest()


def derive_setup(params: SecurityParams, *, round_id: int, cohort: Sequence[int],
                 modulus_bits: int, length: int = 0, population: int = 0) -> RoundSetup:
    """The round's public setup, computed from public values only.

    ``population`` is the number of enrolled clients (the roster's size, known out of
    band): the colluding clients are counted on it, c = floor(gamma * population), since
    a server that picks the cohort can put every colluder into it, and showing a client
    a small cohort must not lower the bar.

    Raises
    ------
    SecAggAbort
        When the cohort cannot run securely (:meth:`SecurityParams.cohort_problem`).
    """
    ids = sorted(set(int(u) for u in cohort))
    if len(ids) != len(cohort):
        raise SecAggAbort(f"cohort has duplicate ids: {sorted(cohort)}")
    n = len(ids)
    c = params.corrupt(max(n, population))
    problem = params.cohort_problem(n, c)
    if problem:
        raise SecAggAbort(problem)
    k = params.degree_for(n, c)
    rng = np.random.default_rng(int.from_bytes(graph_seed(round_id, ids), "big"))
    graph = regular_graph(ids, k, rng)
    k_min = min(len(v) for v in graph.values())
    return RoundSetup(round_id=round_id, neighbours={u: tuple(v) for u, v in graph.items()},
                      threshold=min(k_min, params.threshold_for(k_min)),
                      modulus_bits=modulus_bits, length=length,
                      consistency_threshold=params.consistency_threshold(n, c),
                      min_survivors=params.min_survivors(n, c),
                      min_neighbours=min(k_min, max(params.threshold_for(k_min) - 1,
                                                    c + params.min_honest - 1)),
                      prg=params.prg)


def params_for(section: Any) -> SecurityParams:
    """The security parameters of a secure-aggregation config section.

    Duck-typed (:class:`fedpriv.config.SecAggConfig`): ``threshold``, ``degree`` and
    ``dropout_rate``; ``corruption_rate``, ``min_honest`` and ``prg`` are read when the
    section has them and default to 0.1, 2 and ``aes128-ctr`` otherwise.
    """
    return SecurityParams(
        threshold_fraction=float(section.threshold), degree=int(section.degree),
        dropout_rate=min(float(section.dropout_rate), 0.999),
        corruption_rate=float(getattr(section, "corruption_rate", 0.1)),
        min_honest=int(getattr(section, "min_honest", 2)),
        prg=str(getattr(section, "prg", "aes128-ctr")))
