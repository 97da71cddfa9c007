"""Communication topologies and their mixing weights (docs/method.md §5.2).

Owns the neighbour lists of `ring`, `torus`, `regular` (seeded random d-regular,
from networkx) and `complete`, and the Metropolis-Hastings mixing matrix
w_ij = 1 / (1 + max(deg_i, deg_j)) for neighbours, w_ii = 1 - sum_j w_ij, which is
symmetric and doubly stochastic.
No torch, no Ray.
"""

from __future__ import annotations

import math

import numpy as np


def neighbours(name: str, n: int, degree: int = 4, seed: int = 0) -> list[list[int]]:
    """Sorted neighbour lists (no self loops) of the named topology on n agents."""
    import networkx as nx  # here, not at the top: agent actors import this module but never build a graph (0.2 s each)

    if n == 1:
        return [[]]
    if name == "ring":
        g = nx.cycle_graph(n) if n > 2 else nx.path_graph(n)
    elif name == "torus":
        # rows x cols = n with rows the largest divisor <= sqrt(n); a prime n degenerates to a ring.
        rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
        if rows < 3:
            g = nx.cycle_graph(n) if n > 2 else nx.path_graph(n)
        else:
            g = nx.convert_node_labels_to_integers(nx.grid_2d_graph(rows, n // rows, periodic=True), ordering="sorted")
    elif name == "regular":
        g = nx.random_regular_graph(degree, n, seed=seed)
    elif name == "complete":
        g = nx.complete_graph(n)
    else:
        raise ValueError(f"unknown topology '{name}'.")
    return [sorted(int(j) for j in g.neighbors(i)) for i in range(n)]


def metropolis_hastings(nbrs: list[list[int]]) -> np.ndarray:
    """(N, N) doubly stochastic mixing matrix with Metropolis-Hastings weights."""
    n = len(nbrs)
    deg = np.array([len(x) for x in nbrs])
    w = np.zeros((n, n))
    for i, js in enumerate(nbrs):
        for j in js:
            w[i, j] = 1.0 / (1.0 + max(deg[i], deg[j]))
        w[i, i] = 1.0 - w[i].sum()
    return w
