"""The answer to one Recommend request: fallback chain and suppression, with no I/O.

Chain (DESIGN.md "Serving"), the first step that can answer wins and names ``source``:

1. NEARLINE - the profile's vector for this algorithm *and this model version*;
2. BATCH - the user's vector in the model itself;
3. PROFILE_FOLD_IN - solved now from the profile's items and confidences;
4. POPULARITY - the model's most popular items (score = interactions in the training window);
5. EMPTY - with the reason.

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

NEARLINE, BATCH, FOLD_IN, POPULARITY, EMPTY = (
    recommender_pb2.NEARLINE, recommender_pb2.BATCH, recommender_pb2.PROFILE_FOLD_IN,
    recommender_pb2.POPULARITY, recommender_pb2.EMPTY)


@dataclass
class Answer:
    items: list[tuple[str, float]] = field(default_factory=list)
    source: int = EMPTY
    algorithm: str = ""
    version: int = 0
    reason: str = ""
    suppressed: int = 0


def recommend(snap: TenantSnapshot | None, profile: profiles_pb2.UserProfile | None,
              user_id: str, k: int, exclude: set[str], banned: frozenset[str] | set[str]
              ) -> Answer:
    """Top-``k`` for a user from one snapshot (see the module docstring)."""
    if snap is None:
        return Answer(reason="no model has been published for this tenant yet")
    hidden = set(exclude) | set(banned)
    if profile is not None:
        hidden.update(profile.item_ids)
        hidden.update(profile.suppressed_item_ids)
    rows = [snap.item_row[i] for i in hidden if i in snap.item_row]
    blocked = np.array(sorted(rows), dtype=np.int64)

    x, source = _user_vector(snap, profile, user_id)
    if x is not None:
        picked, scores = _top_k(snap, x, k, blocked)
    else:
        source = POPULARITY
        order = snap.popular_order
        keep = order[~np.isin(order, blocked)][:k]
        picked, scores = keep, snap.popularity[keep]
    if not len(picked):
        return Answer(algorithm=snap.algorithm, version=snap.version, suppressed=len(blocked),
                      reason="every item of the model is suppressed for this user")
    return Answer([(str(snap.item_ids[r]), float(s)) for r, s in zip(picked, scores)],
                  source, snap.algorithm, snap.version, suppressed=len(blocked))


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
