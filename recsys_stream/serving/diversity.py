"""Diversity of a slate: per-category caps and maximal marginal relevance (DESIGN.md "Serving").

Both act on a candidate pool ranked by relevance (the answer for a larger ``k``, filters,
suppression and new items included) and pick ``k`` greedily:

- ``max_per_category``: an item is taken only while every one of its categories has fewer than
  the cap in the slate (an item without categories is never capped);
- ``mmr_lambda`` (Carbonell & Goldstein 1998): the next item maximises
  ``(1 - lambda) rel_i - lambda max_{j in slate} cos(y_i, y_j)``, with the relevance min-max
  scaled to [0, 1] over the pool so that both terms share a scale (a raw ``x . y`` has none).

When the caps leave the pool short of ``k``, the caller fetches a deeper pool (4x) and picks
again, down to the whole catalogue: exactly ``k`` whenever ``k`` items can satisfy the caps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

MAX_CAP = 1000


class DiversityError(ValueError):
    pass


@dataclass(frozen=True)
class DiversitySpec:
    max_per_category: int
    mmr_lambda: float


def parse_diversity(d, field: str) -> DiversitySpec | None:
    """A checked ``recsys.v1.Diversity`` (``DiversityError`` naming the field); None: off."""
    if not 0 <= d.max_per_category <= MAX_CAP:
        raise DiversityError(f"{field}.max_per_category must be 0 (off) to {MAX_CAP}, got "
                             f"{d.max_per_category}")
    if not (np.isfinite(d.mmr_lambda) and 0.0 <= d.mmr_lambda <= 1.0):
        raise DiversityError(f"{field}.mmr_lambda must be between 0 and 1, got {d.mmr_lambda}")
    if not d.max_per_category and not d.mmr_lambda:
        return None
    return DiversitySpec(int(d.max_per_category), float(d.mmr_lambda))


def pool_size(k: int) -> int:
    """Candidates fetched for a diversified top-``k`` at first (deepened while short)."""
    return max(4 * k, 50)


def diversify(items: Sequence[tuple[str, float]], k: int, spec: DiversitySpec,
              categories: Callable[[Sequence[str]], Sequence[Sequence[str]]],
              vectors: Callable[[Sequence[str]], np.ndarray]) -> list[tuple[str, float]]:
    """Up to ``k`` of ``items`` (best first) picked for diversity, in slate order.

    ``categories`` and ``vectors`` map the pool's ids to their categories and factor rows, all
    at once (one row lookup per item serves both)."""
    n = len(items)
    if not n:
        return []
    cats = categories([i for i, _ in items]) if spec.max_per_category else None
    blocked = np.zeros(n, dtype=bool)
    members: dict[str, list[int]] = {}
    if cats is not None:
        for i, cs in enumerate(cats):
            for c in cs:
                members.setdefault(c, []).append(i)
    lam = spec.mmr_lambda
    if lam:
        V = np.asarray(vectors([i for i, _ in items]), dtype=np.float64)
        V /= np.maximum(np.sqrt(np.einsum("ij,ij->i", V, V)), 1e-12)[:, None]  # row norms
        lamS = lam * (V @ V.T)  # lambda * cosine, every pair of the pool at once
        rel = np.array([s for _, s in items], dtype=np.float64)
        span = rel.max() - rel.min()
        # min-max scaled relevance, weighted: (1 - lambda) rel_i; a taken or capped item's is
        # -inf, so that it never wins again (-inf minus any penalty stays -inf)
        rel = (1 - lam) * ((rel - rel.min()) / span if span > 0 else np.ones(n))
        penalty = np.zeros(n)  # lambda * the highest cosine to the slate so far
        gain = np.empty(n)
    counts: dict[str, int] = {}
    out: list[tuple[str, float]] = []
    while len(out) < k:
        # three whole-array operations per pick (a pool is a few dozen items)
        if lam:
            np.subtract(rel, penalty, out=gain)
            pick = int(gain.argmax())
            if gain[pick] == -np.inf:
                break
            np.maximum(penalty, lamS[pick], out=penalty)
            rel[pick] = -np.inf
        else:
            free = blocked.argmin()
            if blocked[free]:
                break
            pick = int(free)
            blocked[pick] = True
        out.append(items[pick])
        if cats is not None:
            for c in cats[pick]:
                counts[c] = counts.get(c, 0) + 1
                if counts[c] >= spec.max_per_category:
                    blocked[members[c]] = True
                    if lam:
                        rel[members[c]] = -np.inf
    return out
