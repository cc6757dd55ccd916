"""Stage numbers and the round's public setup.

Bell et al. 2020 (CCS), Algorithm 1, "Setup": a round has a cohort and its communication
graph G (Section 3.2, a random k-regular graph), the Shamir threshold t, the modulus 2^b
of the sum and the vector length d. Against a malicious server (Bonawitz et al. 2017,
Section 4 and Figure 4) none of it is taken from the server: every client computes the
setup itself (:func:`fedpriv.secagg.params.derive_setup`) from public parameters and
refuses server messages that disagree with it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from fedpriv.secagg.errors import SecAggError

__all__ = ["RoundSetup", "Stage", "setup_from_dict", "setup_to_dict"]


class Stage(enum.IntEnum):
    """Stage numbers carried by every message."""

    SETUP = 0
    ADVERTISE = 1
    SHARE = 2
    MASK = 3
    CONSISTENCY = 4
    UNMASK = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundSetup:
    """A round's public setup (derived by every party from public values).

    Attributes
    ----------
    round_id : int
        Round number (>= 0), bound into every key, AD, signature and message.
    neighbours : dict of int to tuple of int
        The communication graph over the cohort: symmetric, no self loops, ids >= 0.
    threshold : int
        t, in [1, min degree]: shares needed to rebuild a secret.
    modulus_bits : int
        b in [1, 64]: sums are taken mod 2^b.
    length : int
        d >= 0, the vector length (0: not fixed yet; a client takes its input's).
    consistency_threshold : int
        T: signatures on one survivor set a client needs before revealing (>= 1).
    min_survivors : int
        The fewest survivors, and the fewest in any component of the survivors' graph.
    min_neighbours : int
        The fewest neighbours in S that shared with a client before it signs S:
        max(t - 1, c + min_honest - 1), so that even when all c colluders are among
        them, min_honest - 1 honest neighbours stay pairwise-masked with it.
    prg : str
        The mask keystream (``aes128-ctr`` or ``chacha20``).
    """

    round_id: int
    neighbours: dict[int, tuple[int, ...]]
    threshold: int
    modulus_bits: int
    length: int = 0
    consistency_threshold: int = 1
    min_survivors: int = 1
    min_neighbours: int = 0
    prg: str = "aes128-ctr"
    stage: int = Stage.SETUP

    def __post_init__(self) -> None:
        if self.stage != Stage.SETUP:
            raise SecAggError(f"RoundSetup.stage must be 0, got {self.stage!r}")
        if not isinstance(self.round_id, int) or self.round_id < 0:
            raise SecAggError(f"round_id must be an int >= 0, got {self.round_id!r}")
        graph = {int(u): tuple(sorted(int(v) for v in vs))
                 for u, vs in self.neighbours.items()}
        for u, vs in graph.items():
            if u < 0 or u in vs or len(set(vs)) != len(vs):
                raise SecAggError(f"neighbours of {u} must be distinct ids >= 0 other "
                                  f"than {u}, got {list(vs)}")
            for v in vs:
                if u not in graph.get(v, ()):
                    raise SecAggError(f"graph must be symmetric: {v} in N({u}) but not "
                                      f"{u} in N({v})")
        object.__setattr__(self, "neighbours", MappingProxyType(dict(sorted(graph.items()))))
        object.__setattr__(self, "stage", Stage.SETUP)
        if not 1 <= self.modulus_bits <= 64:
            raise SecAggError(f"modulus_bits must be in [1, 64], got {self.modulus_bits}")
        k = min((len(v) for v in graph.values()), default=0)
        if not 1 <= self.threshold <= max(k, 1):
            raise SecAggError(f"threshold must be in [1, k={k}], got {self.threshold}")
        if self.length < 0:
            raise SecAggError(f"length must be >= 0, got {self.length}")
        if not 1 <= self.consistency_threshold <= max(len(graph), 1):
            raise SecAggError(f"consistency_threshold must be in [1, n={len(graph)}], got "
                              f"{self.consistency_threshold}")
        if not 1 <= self.min_survivors <= max(len(graph), 1):
            raise SecAggError(f"min_survivors must be in [1, n={len(graph)}], got "
                              f"{self.min_survivors}")
        if not 0 <= self.min_neighbours <= max(k, 0):
            raise SecAggError(f"min_neighbours must be in [0, k={k}], got "
                              f"{self.min_neighbours}")
        if self.prg not in ("aes128-ctr", "chacha20"):
            raise SecAggError(f"prg must be 'aes128-ctr' or 'chacha20', got {self.prg!r}")

    @property
    def cohort(self) -> tuple[int, ...]:
        """The cohort's ids, sorted."""
        return tuple(self.neighbours)

    def same_terms(self, other: RoundSetup) -> bool:
        """Whether ``other`` fixes the same graph, thresholds, modulus and PRG."""
        return (self.round_id == other.round_id and dict(self.neighbours) == dict(
            other.neighbours) and self.threshold == other.threshold
            and self.modulus_bits == other.modulus_bits and self.prg == other.prg
            and self.consistency_threshold == other.consistency_threshold
            and self.min_survivors == other.min_survivors
            and self.min_neighbours == other.min_neighbours)

    def to_dict(self) -> dict[str, Any]:
        """Plain values: ints, a string and int lists (graph as ids, degrees, adjacency)."""
        ids = sorted(self.neighbours)
        return {
            "round_id": self.round_id, "stage": int(self.stage),
            "threshold": self.threshold, "modulus_bits": self.modulus_bits,
            "length": self.length, "consistency_threshold": self.consistency_threshold,
            "min_survivors": self.min_survivors, "min_neighbours": self.min_neighbours,
            "prg": self.prg, "ids": ids,
            "degrees": [len(self.neighbours[u]) for u in ids],
            "adjacency": [v for u in ids for v in self.neighbours[u]],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundSetup:
        """Inverse of :meth:`to_dict` (validated again); :class:`SecAggError` if bad."""
        try:
            ids = [int(u) for u in data["ids"]]
            degrees = [int(d) for d in data["degrees"]]
            flat = [int(v) for v in data["adjacency"]]
            if len(ids) != len(degrees) or sum(degrees) != len(flat):
                raise SecAggError("setup: graph lists do not agree in length")
            graph, at = {}, 0
            for u, d in zip(ids, degrees, strict=True):
                graph[u] = tuple(flat[at:at + d])
                at += d
            return cls(round_id=int(data["round_id"]), neighbours=graph,
                       threshold=int(data["threshold"]),
                       modulus_bits=int(data["modulus_bits"]), length=int(data["length"]),
                       consistency_threshold=int(data.get("consistency_threshold", 1)),
                       min_survivors=int(data.get("min_survivors", 1)),
                       min_neighbours=int(data.get("min_neighbours", 0)),
                       prg=str(data.get("prg", "aes128-ctr")),
                       stage=int(data.get("stage", Stage.SETUP)))
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, SecAggError):
                raise
            raise SecAggError(f"malformed round setup: {err!r}") from None


_LEGACY = {"round-id": "round_id", "modulus-bits": "modulus_bits",
           "consistency-threshold": "consistency_threshold",
           "min-survivors": "min_survivors", "min-neighbours": "min_neighbours"}


def setup_to_dict(setup: RoundSetup) -> dict[str, int | str | list[int]]:
    """:meth:`RoundSetup.to_dict` with hyphenated keys (Flower config-key style)."""
    inv = {v: k for k, v in _LEGACY.items()}
    return {inv.get(k, k): v for k, v in setup.to_dict().items() if k != "stage"}


def setup_from_dict(data: dict[str, object]) -> RoundSetup:
    """Inverse of :func:`setup_to_dict` (also accepts :meth:`RoundSetup.to_dict` keys)."""
    return RoundSetup.from_dict({_LEGACY.get(k, k): v for k, v in data.items()})
