"""New items of a model version, served beside its snapshot (DESIGN.md "Serving", invariant 2).

The server follows ``item-vectors``. Per tenant, algorithm and version it keeps an immutable
``Delta``: the vectors of items that version does not know, rebuilt after each poll that changed
it and swapped in with one assignment (a request reads it once). A delta of version ``v`` is
only ever merged into an answer whose user vector is of ``v`` (the snapshot's version, taken
once per request); a new snapshot starts with the delta of its own version, empty until the
item stage solves items against it, so a retrain drops every delta of the old version at once.

Young items (DESIGN.md "Young items"): the item stage also re-solves the items a version knows
from fewer than ``young_item_users`` training users, and marks their vectors ``young``. Their
index rows are stale: a user vector's index walk passes over them (``recommend``'s ``masked``,
with the banned rows, so exactly ``k`` still come back), the merge below scores them from the
delta, and SimilarItems uses the delta's vector both as the query and as a neighbour. Ranking,
explanations, diversity and exploration read a young item's vector from the delta too.

Scoring is exact: a delta holds the items launched since the last retrain that reached
``min_item_users``, hundreds to a few thousand, and ``D x`` over them is one small matrix-vector
product (``n k`` multiply-adds), no more than the index walk itself costs for that ``n``; an
incremental index would only pay off for deltas far larger than a retrain cadence leaves.
Suppression is by id (the profile's items and hidden items, catalog bans, the request's
exclusions), and the merge keeps exactly ``k``: the index's top-k and the delta's top-k over
unsuppressed items, merged by score.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from recsys_stream.config import Config
from recsys_stream.contracts.keys import SEP
from recsys_stream.contracts.pb import items_pb2
from recsys_stream.kafka import READ_MODEL_FETCH_WAIT_MS, TopicTail
from recsys_stream.serving.metrics import NEW_ITEM_ANSWERS, NEW_ITEM_FIRST_SOLVED, \
    NEW_ITEM_VECTORS, RECOMMEND_ANSWERS, child
from recsys_stream.serving.recommend import Answer, UnknownItem, similar_items
from recsys_stream.serving.snapshots import TenantSnapshot

_KEEP_VERSIONS = 2  # per tenant and algorithm: the served one and the next


@dataclass(frozen=True)
class Delta:
    """The new items of one version: ids, vectors (rows aligned) and their row per id."""

    version: int
    ids: list[str]
    Y: np.ndarray           # (n, width) float32
    row: dict[str, int]
    norms: np.ndarray       # |y| per row, for SimilarItems' cosine
    users: dict[str, int] = field(default_factory=dict)  # distinct users behind each solve
    # young items: the version knows them, but from few users; the delta's vector replaces
    # the index's stale row (masked in the walk, scored here)
    young: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self.ids)


class ItemDeltas:
    """The deltas of every tenant, algorithm and version, kept live from ``item-vectors``.

    ``served(tenant, algorithm)``: the served version (the model follower's), for the gauges
    of the served delta's size and age; without it they follow the newest version seen.
    """

    def __init__(self, cfg: Config,
                 served: Callable[[str, str], int | None] | None = None) -> None:
        self.cfg, self.served = cfg, served
        self._last_gauges = 0.0
        # tail thread only: (tenant, algorithm) -> version -> item -> (vector, first solved ms)
        self._raw: dict[tuple[str, str], dict[int, dict[str, tuple[np.ndarray, int]]]] = {}
        self._changed: set[tuple[str, str]] = set()
        self._deltas: dict[tuple[str, str, int], Delta] = {}
        self._lock = threading.Lock()
        self._tail = TopicTail(cfg, {cfg.topics.item_vectors: self._on_vector},
                               name="server-item-vectors", after_poll=self._rebuild,
                               fetch_wait_ms=READ_MODEL_FETCH_WAIT_MS)

    def start(self) -> ItemDeltas:
        self._tail.start()
        return self

    def stop(self) -> None:
        self._tail.stop()

    def wait_caught_up(self, timeout_s: float) -> bool:
        return self._tail.wait_caught_up(timeout_s)

    def get(self, tenant: str, algorithm: str, version: int) -> Delta | None:
        return self._deltas.get((tenant, algorithm, version))

    # -- following the topic ---------------------------------------------------------------
    def _on_vector(self, msg) -> None:
        tenant, algorithm, item = msg.key().decode().split(SEP, 2)
        if tenant not in self.cfg.tenants:
            return
        versions = self._raw.setdefault((tenant, algorithm), {})
        if msg.value() is None:  # tombstone: a newer version knows the item
            for items in versions.values():
                items.pop(item, None)
        else:
            v = items_pb2.ItemVector.FromString(msg.value())
            y = np.asarray(v.values, dtype=np.float32)
            if not len(y) or not np.isfinite(y).all():
                return  # never served
            versions.setdefault(v.model_version, {})[item] = (y, v.first_solved_ms, v.users,
                                                              v.young)
            for old in sorted(versions)[:-_KEEP_VERSIONS]:
                del versions[old]
        self._changed.add((tenant, algorithm))

    def _rebuild(self) -> None:
        if time.monotonic() - self._last_gauges > 1.0:  # a swap changes the served delta too
            self._gauges()
        if not self._changed:
            return
        changed, self._changed = self._changed, set()
        deltas = dict(self._deltas)
        for tenant, algorithm in changed:
            for key in [k for k in deltas if k[:2] == (tenant, algorithm)]:
                del deltas[key]
            versions = self._raw.get((tenant, algorithm), {})
            for version, items in versions.items():
                if not items:
                    continue
                ids = sorted(items)
                widths = {len(items[i][0]) for i in ids}
                if len(widths) != 1:  # one version has one width; anything else is not served
                    continue
                Y = np.stack([items[i][0] for i in ids])
                deltas[(tenant, algorithm, version)] = Delta(
                    version, ids, Y, {i: j for j, i in enumerate(ids)},
                    np.linalg.norm(Y, axis=1), {i: items[i][2] for i in ids},
                    frozenset(i for i in ids if items[i][3]))
        self._deltas = deltas  # one assignment
        self._gauges()

    def _gauges(self) -> None:
        """Size and oldest first solve of each tenant's served delta."""
        self._last_gauges = time.monotonic()
        for tenant, algorithm in self._raw:
            versions = self._raw[(tenant, algorithm)]
            version = self.served(tenant, algorithm) if self.served is not None else \
                max(versions, default=None)
            items = versions.get(version, {}) if version is not None else {}
            child(NEW_ITEM_VECTORS, tenant, algorithm).set(len(items))
            child(NEW_ITEM_FIRST_SOLVED, tenant, algorithm).set(
                min((t[1] for t in items.values()), default=0) / 1000)

    # -- answering -------------------------------------------------------------------------
    def merge_recommend(self, snap: TenantSnapshot, answer: Answer, profile, k: int,
                        exclude: set[str], banned, admit=None) -> Answer:
        """``answer`` with the snapshot version's new items merged into its top-``k``
        (``admit(item_id)``: a request filter's test, ``serving.filters``)."""
        child(RECOMMEND_ANSWERS, snap.tenant).inc()
        delta = self.get(snap.tenant, snap.algorithm, snap.version)
        x = answer.vector
        # invariant 2: only a user vector of the delta's very version scores the delta
        if delta is None or x is None or answer.version != delta.version \
                or len(x) != delta.Y.shape[1]:
            return answer
        scores = delta.Y @ x
        own = set(exclude)
        if profile is not None:
            own.update(profile.item_ids)
            own.update(profile.suppressed_item_ids)
        picked = []
        for j in np.argsort(-scores, kind="stable"):
            item = delta.ids[j]
            if item in own or item in banned \
                    or (item in snap.item_row and item not in delta.young) \
                    or (admit is not None and not admit(item)):
                continue
            picked.append((item, float(scores[j])))
            if len(picked) == k:
                break
        if not picked:
            return answer
        merged = sorted(answer.items + picked, key=lambda t: -t[1])[:k]
        new = sum(1 for item, _ in merged if item in delta.row)
        if new:
            child(NEW_ITEM_ANSWERS, snap.tenant).inc()
        answer.items = merged
        return answer

    def similar(self, snap: TenantSnapshot, item_id: str, k: int, exclude: set[str],
                banned, eligible=None) -> list[tuple[str, float]]:
        """SimilarItems over the snapshot's items and its version's new items, either of
        which may be the query; suppression and exactly-k as ``recommend.similar_items``."""
        delta = self.get(snap.tenant, snap.algorithm, snap.version)
        if delta is None or not len(delta):
            return similar_items(snap, item_id, k, exclude, banned, eligible)
        hidden = set(exclude) | set(banned) | {item_id}
        young = delta.young  # the index's rows of these are stale: the delta answers for them
        if item_id in snap.item_row and item_id not in young:
            base = similar_items(snap, item_id, k, set(exclude) | young if young else exclude,
                                 banned, eligible)
            q = snap.index.item_factors[snap.item_row[item_id]]
        elif item_id in delta.row:
            q = delta.Y[delta.row[item_id]]
            Y = snap.index.item_factors
            cos = (Y @ q) / np.maximum(np.linalg.norm(Y, axis=1) * np.linalg.norm(q), 1e-12)
            base = []
            for r in np.argsort(-cos, kind="stable"):
                item = snap.item_id_list[r]
                if item not in hidden and item not in young \
                        and (eligible is None or eligible.mask[r]):
                    base.append((item, float(cos[r])))
                    if len(base) == k:
                        break
        else:
            raise UnknownItem(item_id)
        cos = (delta.Y @ q) / np.maximum(delta.norms * max(float(np.linalg.norm(q)), 1e-12),
                                         1e-12)
        extra = [(delta.ids[j], float(cos[j])) for j in np.argsort(-cos, kind="stable")
                 if delta.ids[j] not in hidden
                 and (delta.ids[j] not in snap.item_row or delta.ids[j] in young)
                 and (eligible is None or eligible.admits_id(delta.ids[j]))][:k]
        return sorted(base + extra, key=lambda t: -t[1])[:k]
