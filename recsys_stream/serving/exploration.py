"""Exploration slots for young items (DESIGN.md "Serving"; seed 003 §19).

Per tenant, ``exploration_share`` of a Recommend answer's ``k`` slots (at least one when the
share is above 0 and an eligible young item exists) go to items launched within
``exploration_max_age_hours`` (the catalog's ``created_ms``, else the first record naming the
item) that at most ``exploration_max_users`` users have touched so far (the version's delta
counts the users behind each new item's solve; the model's popularity, the training window's
users, for an item it knows). Which young items, in this order:

1. the user's score ``x . y_i`` where the item has a vector (the item fold-in's delta or the
   model) and the request has a user vector;
2. else the user's strongest categories: the summed confidences of the profile's (and the
   session's) items in the item's categories;
3. else recency.

The slots' positions are drawn from a hash of (tenant, user or session, hour), so a reload
within the hour shows the young items where it showed them before. Suppression and the
request's filter apply to young items as to any other; each is marked ``EXPLORATION``.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence


from recsys_stream.serving.recommend import EXPLORATION

HOUR_MS = 3_600_000
MAX_SCANNED = 2000  # young items looked at per request at most (newest first)


def slots(share: float, k: int) -> int:
    return 0 if share <= 0 else min(k, max(1, round(share * k)))


def positions(key: str, now_ms: int, k: int, n: int) -> list[int]:
    """``n`` slot positions in ``[0, k)``, the same for ``key`` within one clock hour."""
    rng = random.Random(zlib.crc32(f"{key}/{now_ms // HOUR_MS}".encode()))
    return sorted(rng.sample(range(k), n))


def young_items(newest: Sequence[tuple[int, str]], now_ms: int, max_age_hours: float,
                ok: Callable[[str], bool]) -> list[tuple[int, str]]:
    """``(created_ms, id)`` of young items that ``ok`` admits, newest first."""
    cutoff = now_ms - max_age_hours * HOUR_MS
    out = []
    for n, (created, item) in enumerate(newest):
        if created < cutoff or n >= MAX_SCANNED:
            break
        if ok(item):
            out.append((created, item))
    return out


def choose(young: Sequence[tuple[int, str]], n: int, scores: Sequence[float | None],
           affinity: Callable[[str], float]) -> list[tuple[str, float]]:
    """The ``n`` young items to show, with their scores: by the user's score where there is
    one (``scores[j]``, None: no vector), else category affinity, else recency."""
    ranked = []
    for (created, item), s in zip(young, scores):
        if s is not None:
            ranked.append(((0, -s, -created), item, s))
        else:
            a = affinity(item)
            ranked.append(((1, -a, -created) if a > 0 else (2, 0.0, -created), item, 0.0))
    ranked.sort(key=lambda t: t[0])
    return [(item, s) for _, item, s in ranked[:n]]


def merge(items: list[tuple[str, float]], reasons: list[int], chosen: list[tuple[str, float]],
          at: list[int], k: int) -> tuple[list[tuple[str, float]], list[int]]:
    """``items`` with ``chosen`` placed at positions ``at``; still at most ``k`` items."""
    picked = {i for i, _ in chosen}
    base = [(it, r) for it, r in zip(items, reasons) if it[0] not in picked]
    base = base[:max(0, k - len(chosen))]
    out: list = []
    slots_ = dict(zip(at, chosen))
    b = iter(base)
    for pos in range(k):
        if pos in slots_:
            out.append((slots_[pos], EXPLORATION))
        else:
            nxt = next(b, None)
            if nxt is None:
                continue
            out.append(nxt)
    return [o[0] for o in out], [o[1] for o in out]
