"""RankItems: a given list of items ordered by a user's (or a session's) score.

The vector is the one ``Recommend`` would use (``recommend.user_vector``: session, nearline,
batch, profile fold-in), and each requested item the model knows is scored exactly, ``y_i . x``,
items of the version's delta (new items, ``serving.item_delta``) alike; without a vector they go
by the model's popularity (source POPULARITY). Items the model does not know follow the known
ones, by the tenant's trending score where it has one, else in request order, and are listed in
``unknown``. Banned items and those a filter leaves out are not answered; nothing else is
suppressed: the app chose these items (a product page, a search result), seen ones included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys_stream.serving.filters import Eligibility
from recsys_stream.serving.recommend import POPULAR, POPULARITY, PERSONALIZED, UNKNOWN_ITEM, \
    user_vector

MAX_RANK_ITEMS = 500


@dataclass
class Ranking:
    items: list[tuple[str, float]] = field(default_factory=list)
    source: int = POPULARITY
    unknown: list[str] = field(default_factory=list)
    vector: np.ndarray | None = None
    basis: tuple[np.ndarray, np.ndarray] | None = None

    def reasons(self) -> list[int]:
        unknown = set(self.unknown)
        known = PERSONALIZED if self.vector is not None else POPULAR
        return [UNKNOWN_ITEM if i in unknown else known for i, _ in self.items]


def rank_items(snap, profile, user_id: str, context: Sequence[str], item_ids: Sequence[str],
               banned, eligible: Eligibility | None = None, delta=None,
               trending: Callable[[], Sequence[tuple[str, float]]] = lambda: ()) -> Ranking:
    """The requested items in this user's order (see the module docstring)."""
    keep = [i for i in item_ids if i not in banned
            and (eligible is None or eligible.admits_id(i))]
    x, source, _, basis = user_vector(snap, profile, user_id, context)
    if delta is not None and (delta.version != snap.version or x is None
                              or len(x) != delta.Y.shape[1]):
        delta = None  # invariant 2: a delta is scored only by a vector of its own version
    row_of = snap.item_row
    rows, delta_rows, known, unknown = [], [], [], []
    fresh = delta.young if delta is not None else frozenset()  # re-solved: the delta's
    for item in keep:
        r = row_of.get(item) if item not in fresh else None
        if r is not None:
            rows.append(r)
            known.append(item)
        elif delta is not None and item in delta.row:
            delta_rows.append(delta.row[item])
        else:
            unknown.append(item)
    if x is not None:
        scores = snap.index.item_factors[rows] @ x if rows else np.zeros(0)
        scored = list(zip(known, scores.tolist()))
        if delta_rows:
            ids = [delta.ids[j] for j in delta_rows]
            scored += list(zip(ids, (delta.Y[delta_rows] @ x).tolist()))
    else:
        scored = list(zip(known, snap.popularity[rows].tolist() if rows else []))
    scored.sort(key=lambda t: -t[1])  # stable: ties keep the request's order
    tail = []
    if unknown:
        trend = dict(trending())
        tail = sorted(((i, float(trend.get(i, 0.0))) for i in unknown), key=lambda t: -t[1])
    return Ranking(scored + tail, source, unknown, x, basis)
