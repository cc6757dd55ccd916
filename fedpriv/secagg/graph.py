"""The SecAgg+ communication graph: a random k-regular graph over the cohort.

Bell et al. 2020, Section 4: each client shares secrets with and masks against only its
k = O(log n) neighbours, which cuts the cost from O(n) to O(log n) per client while an
honest-but-curious server still learns only the sum (for a random graph, with high
probability the honest clients stay connected after dropouts).

Construction: a random relabelling of the Harary graph H(k, n) (a circulant where each
client links to the k/2 nearest on each side of a ring, plus the opposite client when k
is odd). H(k, n) is k-regular when n*k is even; when n and k are both odd no k-regular
graph exists and k is raised by one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["components", "default_degree", "regular_graph"]


def default_degree(n: int) -> int:
    """K = min(n - 1, 2 * ceil(log2 n) + 1): logarithmic, odd, at least 3 when n > 3.

    Bell et al. 2020, Theorem 3.7 takes k = O(log n); the constant here keeps the graph
    connected after a constant fraction of dropouts for the cohort sizes of FL rounds.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n < 2:
        return 0
    return min(n - 1, 2 * math.ceil(math.log2(n)) + 1)


def regular_graph(ids: list[int], k: int, rng: np.random.Generator) -> dict[int, list[int]]:
    """Neighbour lists (sorted) of a random k-regular graph over ``ids``.

    Parameters
    ----------
    ids : list of int
        Distinct client ids.
    k : int
        Degree (>= 1). ``k >= len(ids) - 1`` gives the complete graph; when ``n * k`` is
        odd the degree is raised to ``k + 1`` (no k-regular graph exists).
    rng : numpy.random.Generator
        Source of the random relabelling.

    Returns
    -------
    dict
        ``{u: sorted neighbours of u}``; symmetric, without self loops.
    """
    n = len(ids)
    if len(set(ids)) != n:
        raise ValueError("ids must be distinct")
    if k < 1 and n > 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k >= n - 1:
        return {u: sorted(v for v in ids if v != u) for u in ids}
    if (n * k) % 2 == 1:
        k += 1  # no k-regular graph on an odd number of vertices with odd k
    order = [ids[i] for i in rng.permutation(n)]
    nbrs: dict[int, set[int]] = {u: set() for u in ids}
    for pos, u in enumerate(order):
        for step in range(1, k // 2 + 1):
            for v in (order[(pos + step) % n], order[(pos - step) % n]):
                nbrs[u].add(v)
        if k % 2 == 1:
            nbrs[u].add(order[(pos + n // 2) % n])
    return {u: sorted(vs) for u, vs in nbrs.items()}


def components(neighbours: Mapping[int, Iterable[int]], subset: Iterable[int]
               ) -> list[list[int]]:
    """Connected components (sorted lists) of the graph restricted to ``subset``.

    The server can strip the pairwise masks between two groups of survivors only if no
    edge joins them, so what it can learn is the sum over each component of the
    survivors' graph (Bell et al. 2020, Section 3: the honest survivors must stay
    connected); clients refuse a survivor set with a component below the minimum.
    """
    inside = set(subset)
    seen: set[int] = set()
    out = []
    for start in sorted(inside):
        if start in seen:
            continue
        comp, stack = [], [start]
        seen.add(start)
        while stack:
            u = stack.pop()
            comp.append(u)
            for v in neighbours.get(u, ()):
                if v in inside and v not in seen:
                    seen.add(v)
                    stack.append(v)
        out.append(sorted(comp))
    return out
