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
exist: the index is walked for its tuned ``ef`` candidates first (a walk for fewer costs the
same), doubled while short up to the number of suppressed items plus ``k``, and the last
resort scores every item exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys_stream.contracts.pb import profiles_pb2, recommender_pb2
from recsys_stream.serving import filters, session
from recsys_stream.serving.filters import Eligibility
from recsys_stream.serving.snapshots import TenantSnapshot

_EXACT_SIMILAR_VALUES = 4_000_000

NEARLINE, BATCH, FOLD_IN, TRENDING, POPULARITY, EMPTY, SESSION = (
    recommender_pb2.NEARLINE, recommender_pb2.BATCH, recommender_pb2.PROFILE_FOLD_IN,
    recommender_pb2.TRENDING, recommender_pb2.POPULARITY, recommender_pb2.EMPTY,
    recommender_pb2.SESSION)
PERSONALIZED, EXPLORATION, POPULAR, TRENDING_NOW, SIMILAR, UNKNOWN_ITEM = (
    recommender_pb2.ScoredItem.PERSONALIZED, recommender_pb2.ScoredItem.EXPLORATION,
    recommender_pb2.ScoredItem.POPULAR, recommender_pb2.ScoredItem.TRENDING,
    recommender_pb2.ScoredItem.SIMILAR, recommender_pb2.ScoredItem.UNKNOWN_ITEM)


@dataclass
class Answer:
    items: list[tuple[str, float]] = field(default_factory=list)
    source: int = EMPTY
    algorithm: str = ""
    version: int = 0
    reason: str = ""
    # ranked candidates dropped because suppressed, up to the last item answered (what the
    # suppression-rate metric counts; not the size of the user's suppression set)
    suppressed: int = 0
    # the user vector of ``version`` that ranked ``items`` (None: no vector answered); new
    # items of the same version are scored with it (serving.item_delta)
    vector: np.ndarray | None = None
    # the rows and confidences the fold-in solved ``vector`` from, when it was solved here
    # (PROFILE_FOLD_IN, SESSION): what an explanation decomposes the score over
    basis: tuple[np.ndarray, np.ndarray] | None = None
    # with no vector: how many leading items came from trending (the rest: popularity)
    trending_count: int = 0

    def reasons(self) -> list[int]:
        """``ScoredItem.Reason`` of each item (exploration slots are marked by their merge)."""
        if self.vector is not None:
            return [PERSONALIZED] * len(self.items)
        t = min(self.trending_count, len(self.items))
        return [TRENDING_NOW] * t + [POPULAR] * (len(self.items) - t)


def recommend(snap: TenantSnapshot | None, profile: profiles_pb2.UserProfile | None,
              user_id: str | None, k: int, exclude: set[str], banned: frozenset[str] | set[str],
              trending: Sequence[tuple[str, float]] | Callable[[], Sequence] = (),
              eligible: Eligibility | None = None, context: Sequence[str] = (),
              masked: frozenset[str] = frozenset()) -> Answer:
    """Top-``k`` for a user from one snapshot (see the module docstring).

    ``trending`` may be a callable: it is only called when no user vector answers.
    ``user_id`` None: the model's row of the user is not used (an erased user, served as new).
    ``eligible``: a request filter (``serving.filters``), applied inside every step.
    ``context``: the session's items (``serving.session``); they are suppressed too.
    ``masked``: items whose index rows are stale (young items the version's delta re-solved,
    ``serving.item_delta``): a user vector's walk passes over them as over banned rows, and the
    delta's merge scores them instead; popularity and trending still list them.
    """
    if context:
        exclude = exclude | set(context)
    admit = eligible.admits_id if eligible is not None else None
    if snap is None:
        own = _own_ids(profile, exclude, banned)
        items, dropped = _take(_ranked(trending), own, banned, k, admit)
        if items:
            return Answer(items, TRENDING, suppressed=dropped, trending_count=len(items))
        return Answer(reason="no model has been published for this tenant yet and nothing "
                             "is trending")
    row_of = snap.item_row
    banned_rows = _banned_rows(snap, banned)
    x, source, vector_rows, basis = user_vector(snap, profile, user_id, context)
    if vector_rows:
        # a nearline vector carries the rows of its profile's suppressed items in this very
        # version: only the request's exclusions are looked up
        own_rows = {r for r in vector_rows if r not in banned_rows}
        if exclude:
            own_rows.update(r for r in map(row_of.get, exclude)
                            if r is not None and r not in banned_rows)
    else:
        own = _own_ids(profile, exclude, banned)
        # one probe per item: the model's id dict is large, each probe mostly cache misses
        own_rows = {r for r in map(row_of.get, own) if r is not None}
    if x is not None:
        if masked:
            banned_rows = _masked_rows(snap, banned_rows, masked)
        if eligible is not None:
            items, dropped = filters.top_k(snap, x, k, own_rows, banned_rows, eligible)
        else:
            items, dropped = _top_k(snap, x, k, own_rows, banned_rows)
    else:
        items, dropped = _take(_ranked(trending), own, banned, k, admit)
        n_trending = len(items)
        source = TRENDING if items else POPULARITY
        if len(items) < k and eligible is not None:
            taken = {row_of[i] for i, _ in items if i in row_of}
            items += filters.popular(snap, k - len(items), own_rows, banned_rows, eligible,
                                     taken)
        elif len(items) < k:  # top up from the model's popularity
            taken = np.fromiter({row_of[i] for i, _ in items if i in row_of}, np.int64)
            order = snap.popular_order
            hidden = np.isin(order, np.fromiter(own_rows | banned_rows, np.int64))
            free = ~(hidden | np.isin(order, taken))
            keep = order[free][:k - len(items)]
            if len(keep):  # suppressed rows ranked above the last one taken
                dropped += int(hidden[:np.flatnonzero(free)[len(keep) - 1]].sum())
            items += [(snap.item_id_list[r], float(snap.popularity[r])) for r in keep]
    if not items:
        reason = "every item of the model is suppressed for this user"
        if eligible is not None:
            reason = "no item satisfies the filter" if not eligible.count else \
                "every item that satisfies the filter is suppressed for this user"
        return Answer(algorithm=snap.algorithm, version=snap.version, suppressed=dropped,
                      reason=reason, vector=x, basis=basis)
    return Answer(items, source, snap.algorithm, snap.version, suppressed=dropped, vector=x,
                  basis=basis, trending_count=0 if x is not None else n_trending)


def _own_ids(profile: profiles_pb2.UserProfile | None, exclude: set[str],
             banned: frozenset[str] | set[str]) -> set[str]:
    """The user's and the request's suppressed ids. Suppressed = own | banned; ``own`` is kept
    apart from the catalog's bans so that a request never copies the tenant's whole ban list."""
    own = set(exclude)
    if profile is not None:
        own.update(profile.item_ids)
        own.update(profile.suppressed_item_ids)
    if banned:
        own = {i for i in own if i not in banned}
    return own


def _ranked(trending) -> Sequence[tuple[str, float]]:
    return trending() if callable(trending) else trending


def _banned_rows(snap: TenantSnapshot, banned: frozenset[str] | set[str]) -> frozenset[int]:
    """Model rows of the banned items, memoised per snapshot for an unchanged ban set.

    The read model replaces a tenant's frozenset on every catalog change, so the object itself
    identifies the version of the ban list (a mutable set is never memoised).
    """
    hit = snap.cache.get("banned")
    if hit is not None and hit[0] is banned:
        return hit[1]
    rows = frozenset(snap.item_row[i] for i in banned if i in snap.item_row)
    if isinstance(banned, frozenset):
        snap.cache["banned"] = (banned, rows)  # holds ``banned``: its id cannot be reused
    return rows


def _masked_rows(snap: TenantSnapshot, banned_rows: frozenset[int],
                 masked: frozenset[str]) -> frozenset[int]:
    """``banned_rows`` and the rows of ``masked``, memoised per snapshot for the same two
    objects (the ban list's rows and the delta's young set are replaced, never mutated)."""
    hit = snap.cache.get("masked")
    if hit is not None and hit[0] is banned_rows and hit[1] is masked:
        return hit[2]
    rows = banned_rows | frozenset(r for r in map(snap.item_row.get, masked) if r is not None)
    snap.cache["masked"] = (banned_rows, masked, rows)
    return rows


def _take(ranked, own: set[str], banned, k: int,
          admit: Callable[[str], bool] | None = None) -> tuple[list[tuple[str, float]], int]:
    """The first ``k`` distinct items of a ranked list that are in neither suppression set
    (and that ``admit`` admits), and how many suppressed entries were passed over on the way."""
    out, seen, dropped = [], set(), 0
    for item, score in ranked:
        if item in seen or (admit is not None and not admit(item)):
            continue
        seen.add(item)
        if item in own or item in banned:
            dropped += 1
            continue
        out.append((item, score))
        if len(out) == k:
            break
    return out, dropped


class UnknownItem(KeyError):
    pass


def similar_items(snap: TenantSnapshot, item_id: str, k: int, exclude: set[str],
                  banned: frozenset[str] | set[str],
                  eligible: Eligibility | None = None) -> list[tuple[str, float]]:
    """Items by cosine similarity of factors to ``item_id``'s, exactly ``k`` when that many
    are not hidden.

    Up to ``_EXACT_SIMILAR_VALUES`` factor values (or without the model's cosine graph) every
    item is scored exactly (~1 ms); above, the cosine graph proposes candidates, over-fetched
    by the hidden count and doubled while short, and they are scored exactly.
    """
    row = snap.item_row.get(item_id)
    if row is None:
        raise UnknownItem(item_id)
    ix = snap.index
    Y = ix.item_factors
    hidden = {snap.item_row[i] for i in exclude if i in snap.item_row}
    hidden.update(_banned_rows(snap, banned))
    hidden.add(row)
    if eligible is not None:  # exact over the eligible rows
        return filters.similar_rows(snap, Y[row], k, hidden, eligible)
    blocked = np.fromiter(hidden, np.int64, len(hidden))
    exact = ix.similar is None or Y.size <= _EXACT_SIMILAR_VALUES
    # as in _top_k: a walk for up to the graph's ef candidates costs the same, start there
    n_items = len(Y)
    n = k + len(hidden) if exact else min(k + len(hidden), max(k + 1, ix.similar_ef))
    while not exact and n * 4 < n_items:  # a deep over-fetch is no cheaper than exact
        rows = ix.similar_candidates(row, n)
        if np.count_nonzero(~np.isin(rows, blocked)) >= k:
            break
        n *= 2
    else:
        rows = np.arange(n_items)
    rows = rows[~np.isin(rows, blocked)]
    norms = np.linalg.norm(Y[rows], axis=1) * max(float(np.linalg.norm(Y[row])), 1e-12)
    cos = (Y[rows] @ Y[row]) / np.maximum(norms, 1e-12)
    order = np.argsort(-cos, kind="stable")[:k]
    return [(str(snap.item_ids[rows[i]]), float(cos[i])) for i in order]


def user_vector(snap: TenantSnapshot, profile, user_id: str | None, context: Sequence[str] = ()):
    """``(x, source, rows, basis)``: the first vector of the chain; for a nearline vector the
    rows of its profile's suppressed items in this version (empty: look the ids up); for a
    vector solved here the ``(rows, confidences)`` it was solved from (else None).

    Known context items put a session vector first (SESSION): the profile's items joined with
    them, solved now (``serving.session``). An explicit (mf) model has no click confidences:
    context items are only suppressed there.
    """
    if context and snap.ridge is None and session.knows_any(snap, context):
        b = session.basis(snap, profile, context)
        return snap.solver.solve_one(*b), SESSION, (), b
    if profile is not None:
        for v in profile.vectors:
            # invariant 2: only a vector solved against this very model version
            if v.algorithm == snap.algorithm and v.model_version == snap.version \
                    and len(v.values) == snap.width:
                return np.asarray(v.values, dtype=np.float32), NEARLINE, v.suppressed_rows, None
    row = snap.user_row.get(user_id) if user_id else None
    if row is not None:
        return snap.user_factors[row], BATCH, (), None
    if snap.ridge is not None:  # mf: the fold-in is the ridge step on the latest ratings
        from recsys_stream.serving.predict import FOLD_IN as _FOLD, user_vector as ridge_vector
        x, _, src = ridge_vector(snap, None, user_id) if profile is None else \
            ridge_vector(snap, _without_vectors(profile), user_id)
        return (x, FOLD_IN, (), None) if src == _FOLD else (None, POPULARITY, (), None)
    if profile is not None and profile.item_ids:
        b = session.basis(snap, profile)
        if b is not None:
            return snap.solver.solve_one(*b), FOLD_IN, (), b
    return None, POPULARITY, (), None


def _without_vectors(profile):
    """The profile's ratings without its vectors (none of which matched the version)."""
    return profiles_pb2.UserProfile(rated_item_ids=profile.rated_item_ids,
                                    ratings=profile.ratings, rating_ms=profile.rating_ms)


def _top_k(snap: TenantSnapshot, x: np.ndarray, k: int, own_rows: set[int],
           banned_rows: frozenset[int]) -> tuple[list[tuple[str, float]], int]:
    """The ``k`` best unsuppressed items: walk for ef candidates, double while short (up to the
    suppressed count + k, then further only if the walk's recall fell short); and how many
    suppressed candidates ranked above the last item answered.

    A few dozen candidates are filtered with set lookups (cheaper than ``np.isin`` at this size);
    only the ``k`` answered rows are mapped to ids (each id a likely cache miss on a busy server).
    """
    n_items = len(snap.item_ids)
    ids = snap.item_id_list
    ix = snap.index
    # enough candidates even if every suppressed item ranks first (recall permitting)
    cap = min(n_items, k + len(own_rows) + len(banned_rows))
    # a walk for up to ef candidates costs what one for ef does, and one for cap candidates
    # (a 500-item history, a 2,000-item ban list) costs as much deeper: start at the tuned ef
    n = min(cap, max(k, ix.ef)) if ix.walks(cap) else cap
    while True:
        exact = n >= n_items
        rows, scores = ix.query(x, n, exact=exact)
        picked = [(pos, r, s) for pos, (r, s) in enumerate(zip(rows.tolist(), scores.tolist()))
                  if r not in own_rows and r not in banned_rows]
        if len(picked) >= k or exact:
            # positions above the k-th answer (or the whole list when short) not picked
            dropped = picked[k - 1][0] + 1 - k if len(picked) >= k else len(rows) - len(picked)
            return [(ids[r], s) for _, r, s in picked[:k]], dropped
        # short: go deeper, to cap first; past it only the walk's recall was short
        n = min(cap, n * 2) if n < cap else min(n_items, n * 2)
