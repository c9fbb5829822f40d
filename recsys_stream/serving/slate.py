"""One Recommend answer composed from its parts: retrieval and the fallback chain
(``recommend``), the version's new items (``item_delta``), diversity (``diversity``) and
exploration slots (``exploration``), each item with its reason. No I/O: the service passes in
what it read once for the request."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from recsys_stream.serving import exploration
from recsys_stream.serving.catalog_index import RowAttributes
from recsys_stream.serving.diversity import DiversitySpec, diversify, pool_size
from recsys_stream.serving.filters import Eligibility
from recsys_stream.serving.recommend import Answer, recommend


@dataclass
class Request:
    """What a Recommend request asks, checked."""

    user_id: str | None  # None: an erased user (their model row is not used)
    k: int
    exclude: set[str]
    context: list[str]
    eligible: Eligibility | None = None
    diversity: DiversitySpec | None = None


def compose(snap, profile, req: Request, banned, trending, deltas, attrs: RowAttributes | None,
            tenant_cfg, now_ms: int | None = None) -> tuple[Answer, list[int]]:
    """The answer and each item's ``ScoredItem.Reason``."""
    n = pool_size(req.k) if req.diversity is not None else req.k
    while True:
        answer = _answer(snap, profile, req, n, banned, trending, deltas)
        reasons = answer.reasons()
        if req.diversity is None:
            break
        by_id = dict(zip((i for i, _ in answer.items), reasons))
        picked = diversify(answer.items, req.k, req.diversity, _categories(snap, attrs),
                           _vectors(snap, deltas))
        if len(picked) >= req.k or len(answer.items) < n:
            answer.items, reasons = picked, [by_id[i] for i, _ in picked]
            break
        n *= 4  # the caps left the pool short: a deeper one
    share = getattr(tenant_cfg, "exploration_share", 0.0)
    if share > 0 and snap is not None and attrs is not None:
        answer.items, reasons = _explore(snap, profile, req, answer, reasons, banned, deltas,
                                         attrs, tenant_cfg, now_ms or int(time.time() * 1000))
    return answer, reasons


def _answer(snap, profile, req: Request, n: int, banned, trending, deltas) -> Answer:
    delta = _delta(snap, deltas) if snap is not None else None
    answer = recommend(snap, profile, req.user_id, n, req.exclude, banned, trending,
                       req.eligible, req.context,
                       masked=delta.young if delta is not None else frozenset())
    if deltas is not None and snap is not None:
        answer = deltas.merge_recommend(
            snap, answer, profile, n, req.exclude | set(req.context), banned,
            req.eligible.admits_id if req.eligible is not None else None)
    return answer


def _delta(snap, deltas):
    return deltas.get(snap.tenant, snap.algorithm, snap.version) if deltas is not None else None


def _categories(snap, attrs: RowAttributes | None
                ) -> Callable[[Sequence[str]], list[Sequence[str]]]:
    if attrs is None:
        return lambda items: [()] * len(items)
    row_of, by_row, n_rows = snap.item_row, attrs.row_categories, attrs.n_rows

    def of(items):  # a model row's categories by index; other items (new ones) by id
        out = []
        for item in items:
            r = row_of.get(item)
            out.append(by_row[r] if r is not None and r < n_rows
                       else attrs.categories_of(item, row_of))
        return out
    return of


def _vectors(snap, deltas) -> Callable[[Sequence[str]], np.ndarray]:  # diversity's MMR
    """The pool's factor rows: the model's in one gather, a new item's from the delta, zeros
    for an item with neither."""
    if snap is None:
        return lambda items: np.zeros((len(items), 1), np.float32)
    Y, row_of, delta = snap.index.item_factors, snap.item_row, _delta(snap, deltas)

    fresh = delta.young if delta is not None else frozenset()

    def stack(items):
        rows = [-1 if i in fresh else row_of.get(i, -1) for i in items]
        V = Y[rows]  # -1 gathers the last row: overwritten below
        for n, r in enumerate(rows):
            if r < 0:
                d = delta.row.get(items[n]) if delta is not None and \
                    delta.Y.shape[1] == Y.shape[1] else None
                V[n] = delta.Y[d] if d is not None else 0.0
        return V
    return stack


def _young(snap, attrs: RowAttributes, delta, tc, now_ms: int):
    """The young items that pass the user-independent tests (age, users so far), with their
    model row (-1: none) and delta row (-1: none); memoised per snapshot for a minute of the
    clock and this catalog build and delta, so a request only applies its own suppression."""
    key = ("young", now_ms // 60_000, tc.exploration_max_age_hours, tc.exploration_max_users)
    hit = snap.cache.get(key)
    if hit is not None and hit[0] is attrs and hit[1] is delta:
        return hit[2]

    def users(item: str) -> float:
        r = snap.item_row.get(item)
        if r is not None:
            return float(snap.popularity[r])
        return float(delta.users.get(item, 0)) if delta is not None else 0.0
    young = exploration.young_items(attrs.newest, now_ms, tc.exploration_max_age_hours,
                                    lambda item: users(item) <= tc.exploration_max_users)
    width = snap.width
    rows = [(created, item, snap.item_row.get(item, -1),
             delta.row.get(item, -1) if delta is not None and delta.Y.shape[1] == width else -1)
            for created, item in young]
    # one entry per snapshot: the key's minute moves on, the old entry is dropped
    for old in [k for k in snap.cache if isinstance(k, tuple) and k[:1] == ("young",)]:
        snap.cache.pop(old, None)
    snap.cache[key] = (attrs, delta, rows)
    return rows


def _explore(snap, profile, req: Request, answer: Answer, reasons, banned, deltas,
             attrs: RowAttributes, tc, now_ms: int):
    own = set(req.exclude) | set(req.context)
    if profile is not None:
        own.update(profile.item_ids)
        own.update(profile.suppressed_item_ids)
    delta = _delta(snap, deltas)
    admit = req.eligible.admits_id if req.eligible is not None else None
    young = [t for t in _young(snap, attrs, delta, tc, now_ms)
             if t[1] not in own and t[1] not in banned and (admit is None or admit(t[1]))]
    n = min(exploration.slots(tc.exploration_share, req.k), len(young))
    if not n:
        return answer.items, reasons
    x = answer.vector
    scores: list[float | None] = [None] * len(young)
    if x is not None and len(x) == snap.width:
        # a re-solved young item of the model (delta row too) is scored by its delta vector
        in_model = [j for j, t in enumerate(young) if t[2] >= 0 and t[3] < 0]
        if in_model:
            s = snap.index.item_factors[[young[j][2] for j in in_model]] @ x
            for j, v in zip(in_model, s.tolist()):
                scores[j] = v
        in_delta = [j for j, t in enumerate(young) if t[3] >= 0]
        if in_delta:
            s = delta.Y[[young[j][3] for j in in_delta]] @ x
            for j, v in zip(in_delta, s.tolist()):
                scores[j] = v
    liked: dict[str, float] = {}
    if any(s is None for s in scores):  # the user's categories, only when some item needs them
        if profile is not None:
            for item, c in zip(profile.item_ids, profile.confidences):
                for cat in attrs.categories_of(item, snap.item_row):
                    liked[cat] = liked.get(cat, 0.0) + float(c)
        for item in req.context:
            for cat in attrs.categories_of(item, snap.item_row):
                liked[cat] = liked.get(cat, 0.0) + 1.0
    chosen = exploration.choose(
        [(t[0], t[1]) for t in young], n, scores,
        lambda item: sum(liked.get(c, 0.0) for c in attrs.categories_of(item, snap.item_row)))
    key = f"{snap.tenant}/{req.user_id or ','.join(sorted(req.context))}"
    at = exploration.positions(key, now_ms, req.k, len(chosen))
    return exploration.merge(answer.items, reasons, chosen, at, req.k)
