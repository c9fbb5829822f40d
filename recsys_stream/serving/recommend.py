"""The answer to one Recommend request: fallback chain and suppression, with no I/O.

Chain (DESIGN.md "Serving"), the first step that can answer wins and names ``source``:

1. NEARLINE - the profile's vector for this algorithm *and this model version*;
2. BATCH - the user's vector in the model itself;
3. PROFILE_FOLD_IN - solved now from the profile's items and confidences;
4. TRENDING - the tenant's items by time-decayed recent interactions (topped up from 5 if short);
5. POPULARITY - the model's most popular items (score = interactions in the training window);
6. EMPTY - with the reason.

Suppression applies on every step: the user's seen and hidden items, banned or removed catalog
items, and the request's exclusions. Exactly ``k`` items come back whenever ``k`` eligible items
exist: the index is over-fetched by the number of suppressed items, doubled while short, and
the last resort scores every item exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recsys_stream.contracts.pb import profiles_pb2, recommender_pb2
from recsys_stream.serving.snapshots import TenantSnapshot

_EXACT_SIMILAR_VALUES = 4_000_000

NEARLINE, BATCH, FOLD_IN, TRENDING, POPULARITY, EMPTY = (
    recommender_pb2.NEARLINE, recommender_pb2.BATCH, recommender_pb2.PROFILE_FOLD_IN,
    recommender_pb2.TRENDING, recommender_pb2.POPULARITY, recommender_pb2.EMPTY)


@dataclass
class Answer:
    items: list[tuple[str, float]] = field(default_factory=list)
    source: int = EMPTY
    algorithm: str = ""
    version: int = 0
    reason: str = ""
    suppressed: int = 0


def recommend(snap: TenantSnapshot | None, profile: profiles_pb2.UserProfile | None,
              user_id: str, k: int, exclude: set[str], banned: frozenset[str] | set[str],
              trending: list[tuple[str, float]] = ()) -> Answer:
    """Top-``k`` for a user from one snapshot (see the module docstring)."""
    hidden = set(exclude) | set(banned)
    if profile is not None:
        hidden.update(profile.item_ids)
        hidden.update(profile.suppressed_item_ids)
    if snap is None:
        items = _take(trending, hidden, k)
        if items:
            return Answer(items, TRENDING, suppressed=len(hidden))
        return Answer(reason="no model has been published for this tenant yet and nothing "
                             "is trending")
    rows = [snap.item_row[i] for i in hidden if i in snap.item_row]
    blocked = np.array(sorted(rows), dtype=np.int64)

    x, source = _user_vector(snap, profile, user_id)
    if x is not None:
        picked, scores = _top_k(snap, x, k, blocked)
        items = [(str(snap.item_ids[r]), float(s)) for r, s in zip(picked, scores)]
    else:
        items = _take(trending, hidden, k)
        source = TRENDING if items else POPULARITY
        if len(items) < k:  # top up from the model's popularity
            taken = {snap.item_row[i] for i, _ in items if i in snap.item_row}
            order = snap.popular_order
            keep = order[~np.isin(order, np.concatenate([blocked, list(taken)]))]
            items += [(str(snap.item_ids[r]), float(snap.popularity[r]))
                      for r in keep[:k - len(items)]]
    if not items:
        return Answer(algorithm=snap.algorithm, version=snap.version, suppressed=len(hidden),
                      reason="every item of the model is suppressed for this user")
    return Answer(items, source, snap.algorithm, snap.version, suppressed=len(hidden))


def _take(ranked, hidden: set[str], k: int) -> list[tuple[str, float]]:
    """The first ``k`` distinct, unsuppressed items of a ranked list."""
    out, seen = [], set(hidden)
    for item, score in ranked:
        if item not in seen:
            seen.add(item)
            out.append((item, score))
            if len(out) == k:
                break
    return out


class UnknownItem(KeyError):
    pass


def similar_items(snap: TenantSnapshot, item_id: str, k: int, exclude: set[str],
                  banned: frozenset[str] | set[str]) -> list[tuple[str, float]]:
    """Items by cosine similarity of factors to ``item_id``'s.

    Cosine neighbours are not inner-product neighbours (long, popular vectors dominate the
    latter), so the MIPS index only proposes candidates for large catalogues, over-fetched
    widely; up to ``_EXACT_SIMILAR_VALUES`` factor values every item is scored exactly (~1 ms).
    """
    row = snap.item_row.get(item_id)
    if row is None:
        raise UnknownItem(item_id)
    Y = snap.index.item_factors
    hidden = {snap.item_row[i] for i in set(exclude) | set(banned) if i in snap.item_row}
    hidden.add(row)
    if Y.size <= _EXACT_SIMILAR_VALUES:
        rows = np.arange(len(Y))
    else:
        rows, _ = snap.index.query(Y[row], min(len(Y), 50 * k + len(hidden)))
    rows = rows[~np.isin(rows, np.fromiter(hidden, np.int64, len(hidden)))]
    norms = np.linalg.norm(Y[rows], axis=1) * max(float(np.linalg.norm(Y[row])), 1e-12)
    cos = (Y[rows] @ Y[row]) / np.maximum(norms, 1e-12)
    order = np.argsort(-cos, kind="stable")[:k]
    return [(str(snap.item_ids[rows[i]]), float(cos[i])) for i in order]


def _user_vector(snap: TenantSnapshot, profile, user_id: str):
    if profile is not None:
        for v in profile.vectors:
            # invariant 2: only a vector solved against this very model version
            if v.algorithm == snap.algorithm and v.model_version == snap.version \
                    and len(v.values) == snap.width:
                return np.asarray(v.values, dtype=np.float32), NEARLINE
    row = snap.user_row.get(user_id)
    if row is not None:
        return snap.user_factors[row], BATCH
    if profile is not None and profile.item_ids:
        known = [(snap.item_row[i], c) for i, c in zip(profile.item_ids, profile.confidences)
                 if i in snap.item_row]
        if known:
            items, conf = zip(*known)
            return snap.solver.solve_one(np.array(items), np.array(conf)), FOLD_IN
    return None, POPULARITY


def _top_k(snap: TenantSnapshot, x: np.ndarray, k: int, blocked: np.ndarray):
    n_items = len(snap.item_ids)
    n = min(n_items, k + len(blocked))
    while True:
        exact = n >= n_items
        rows, scores = snap.index.query(x, n, exact=exact)
        keep = ~np.isin(rows, blocked)
        if keep.sum() >= k or exact:
            return rows[keep][:k], scores[keep][:k]
        n = min(n_items, n * 2)
