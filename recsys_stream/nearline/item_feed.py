"""The worker's side of the item fold-in: emit ``item-interactions``, use ``item-vectors``.

Emit: for each user the worker folded in against version ``v`` and each item of the user's
micro-batch events that ``v`` does not know or knows as young (``contracts.young_slice``), one ``ItemInteraction`` (the user's confidence for
the item, ``v``, the user's new vector of ``v``) keyed ``tenant \\x1f item``, so every record of
an item lands in one partition of ``item-interactions`` (Kafka Streams' ``through()``). After a
new model version the background re-solve emits every item of the user's history the version
does not know, so that the stage can solve those items again against the new version.

Use: the worker follows ``item-vectors``; once new items of its model version have vectors, its
user fold-in solves against the version's items *and* those vectors (they are v's items now):
a ``FoldInModel`` of the same version whose solver is extended by the new rows
(``FoldInSolver.extended``) and whose young items' rows are replaced by their re-solved
vectors (``FoldInSolver.replaced``). The solver is prepared on the tail's thread at most every
``items.worker_refresh_ms``; the loop thread swaps it in and moves the heavy users' cached
systems onto it (``NormalEquationCache.rebased``: a new item's vector changes every cached
system by the same Gram term, so only users who counted a changed item are formed again). New
items keep their rows across rebuilds, so a re-solved item changes its own row only.

A user whose every item is unknown to the worker's model gets no vector; such a user waits
(``_waiting``, bounded) on those items, and when an extension that adds one of them is swapped
in the worker re-solves the user (``take_ready``): a user whose only event is on a new item
gets a vector once the item has one, not only with their next event.

An extended model's ``item_row`` stays the batch model's: an item is "unknown to v" by it,
however many vectors it has, and the rows a profile carries (``suppressed_rows``) are rows of
the version's item factors, which is what the server reads them as; a new item the user saw is
suppressed by its id (``serving.item_delta``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from recsys_stream.config import Config
from recsys_stream.contracts.keys import SEP, make_key
from recsys_stream.contracts.pb import items_pb2
from recsys_stream.follow import ModelFollower
from recsys_stream.kafka import TopicTail
from recsys_stream.nearline.item_metrics import ITEM_INTERACTIONS, WORKER_NEW_ITEMS, \
    WORKER_YOUNG_ITEMS
from recsys_stream.nearline.models import FoldInModel
from recsys_stream.nearline.normal_cache import NormalEquationCache

log = logging.getLogger(__name__)
ITEM_ALGORITHMS = ("als", "bpr")
_MAX_WAITING = 100_000  # (item, user) pairs kept waiting for a vector; the rest wait for events  # the algorithms whose items fold in by the implicit item step


class _VersionRows:
    """A fold-in whose returned rows are only those of the version's own items."""

    def __init__(self, cache: NormalEquationCache, n_base: int) -> None:
        self.cache, self.n_base = cache, n_base

    def solve(self, keys, histories):
        solved, X, rows = self.cache.solve(keys, histories)
        return solved, X, [r[r < self.n_base] for r in rows]


@dataclass(frozen=True)
class ExtendedModel:
    """A ``FoldInModel`` of one version extended by new items' vectors of the same version."""

    tenant: str
    algorithm: str
    version: int
    item_row: dict[str, int]      # the version's own items (the batch model's rows)
    solver: object                # the extended solver
    confidence: object
    cache: NormalEquationCache    # solves against the extended solver (its item_row has all)
    new_items: int
    young: frozenset[str] = frozenset()  # the batch model's young items
    young_replaced: int = 0       # of them, how many have a re-solved row in ``solver``
    trained_to_ms: int = 0        # the batch model's data window end
    explicit: None = None         # never an mf model (``ItemFeed.models`` skips those)

    @property
    def foldin(self) -> _VersionRows:
        return _VersionRows(self.cache, len(self.item_row))


class ItemFeed:
    """Emits ``item-interactions`` and keeps the worker's fold-in models extended.

    Parameters
    ----------
    cfg : Config
    follower : the worker's model follower (the batch models)
    produce : ``produce(topic, key, value)`` of the worker (waits for queue space)
    """

    def __init__(self, cfg: Config, follower: ModelFollower[FoldInModel],
                 produce: Callable[[str, bytes, bytes], None]) -> None:
        self.cfg, self.follower, self._produce = cfg, follower, produce
        # (tenant, algorithm) -> version -> item -> vector, written on the tail's thread only
        self._vectors: dict[tuple[str, str], dict[int, dict[str, np.ndarray]]] = {}
        # per (tenant, algorithm): the new items' rows in arrival order (stable across
        # rebuilds, so cached systems keep their rows) and the version they are of
        self._order: dict[tuple[str, str], tuple[int, list[str]]] = {}
        self._built: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self._pending: dict[tuple[str, str], tuple] = {}  # tail thread -> loop thread
        self._extended: dict[tuple[str, str], ExtendedModel] = {}  # loop thread only
        self._changed: set[tuple[str, str]] = set()
        # loop thread only: (tenant, item) -> users with no vector who wait on the item, and the
        # users an extension just made solvable (for the worker's background re-solve)
        self._waiting: dict[tuple[str, str], set[bytes]] = {}
        self._n_waiting = 0
        self._ready: set[bytes] = set()
        self._last_build = 0.0
        self._tail = TopicTail(cfg, {cfg.topics.item_vectors: self._on_vector},
                               name="worker-item-vectors", after_poll=self._rebuild)

    def start(self) -> ItemFeed:
        self._tail.start()
        return self

    def stop(self) -> None:
        self._tail.stop()

    # -- the fold-in models ----------------------------------------------------------------
    def models(self, tenant: str) -> dict:
        """The tenant's fold-in models: each extended by its version's new items, if any.

        Called on the loop thread, which also moves each model's cache of heavy users'
        systems onto a newly prepared extension (``NormalEquationCache.rebased``).
        """
        base = self.follower.models(tenant)
        if not self._extended and not self._pending:
            return base
        out = dict(base)
        for algorithm, model in base.items():
            if getattr(model, "explicit", None) is not None:
                continue  # mf solves users by its own ridge step: no item extension defined
            key = (tenant, algorithm)
            pending = self._pending.pop(key, None)
            if pending is not None:
                self._swap_in(key, model, pending)
            ext = self._extended.get(key)
            if ext is not None and ext.version == model.version:
                out[algorithm] = ext
        return out

    def _swap_in(self, key, base: FoldInModel, pending: tuple) -> None:
        version, solver, row, changed, n_new, n_young = pending
        if version != base.version:
            return
        current = self._extended.get(key)
        before = current.cache.item_row if current is not None and current.version == version \
            else base.item_row
        for item in (set(row) - set(before)) if row is not None else ():
            users = self._waiting.pop((key[0], item), None)
            if users:
                self._n_waiting -= len(users)
                self._ready |= users
        owner = current.cache if current is not None and current.version == version else \
            base.foldin
        if solver is None:
            # no new items left (after a retrain): the batch model again, its cache cold if an
            # extension took it over
            self._extended.pop(key, None)
        else:
            self._extended[key] = ExtendedModel(
                base.tenant, base.algorithm, version, base.item_row, solver, base.confidence,
                owner.rebased(solver, row, changed), n_new, base.young, n_young,
                base.trained_to_ms)
        WORKER_NEW_ITEMS.labels(*key).set(n_new)
        WORKER_YOUNG_ITEMS.labels(*key).set(n_young)

    def _on_vector(self, msg) -> None:
        tenant, algorithm, item = msg.key().decode().split(SEP, 2)
        versions = self._vectors.setdefault((tenant, algorithm), {})
        if msg.value() is None:  # tombstone: a newer model knows the item
            for items in versions.values():
                items.pop(item, None)
        else:
            v = items_pb2.ItemVector.FromString(msg.value())
            versions.setdefault(v.model_version, {})[item] = np.asarray(v.values, np.float32)
        self._changed.add((tenant, algorithm))

    def _rebuild(self) -> None:
        """Prepare extended solvers (tail thread); the loop thread swaps them in."""
        now = time.monotonic()
        if not self._changed or now - self._last_build < self.cfg.items.worker_refresh_ms / 1000:
            return
        self._last_build = now
        changed, self._changed = self._changed, set()
        for key in changed:
            base = self.follower.models(key[0]).get(key[1])
            if base is None:
                continue
            versions = self._vectors.get(key, {})
            for old in [v for v in versions if v < base.version]:
                del versions[old]  # a newer model replaced them
            mine = versions.get(base.version, {})
            width = base.solver.width
            new = {i: y for i, y in mine.items() if i not in base.item_row and len(y) == width}
            # young items: the stage's vector replaces the batch row (FoldInSolver.replaced)
            young = {i: y for i, y in mine.items() if i in base.young and len(y) == width}
            version, order = self._order.get(key, (base.version, []))
            built = self._built.get(key, {})
            if version != base.version or set(order) - set(new):
                # another version, or an item left (a tombstone): rows start over, and every
                # cached system that counted a new item is formed again
                moved, order, built = set(order) | set(new) | set(built), [], {}
            else:
                moved = set()
            order = order + sorted(set(new) - set(order))
            current = {**new, **young}
            moved |= {i for i in current if i not in built or built[i] is not current[i]}
            moved |= set(built) - set(current)  # withdrawn: the batch row again
            self._order[key], self._built[key] = (base.version, order), current
            prev = self._pending.get(key)
            if prev is not None:  # not swapped in yet: its changes are still to be applied
                moved |= prev[3]
            if not order and not young:
                self._pending[key] = (base.version, None, None, moved, 0, 0)
                continue
            solver = base.solver
            if young:
                ids = sorted(young)
                solver = solver.replaced(np.fromiter((base.item_row[i] for i in ids), np.int64,
                                                     len(ids)), np.stack([young[i] for i in ids]))
            row = dict(base.item_row)
            if order:
                solver = solver.extended(np.stack([new[i] for i in order]))
                row.update((i, len(base.item_row) + j) for j, i in enumerate(order))
            self._pending[key] = (base.version, solver, row, moved, len(order), len(young))

    def take_ready(self) -> set[bytes]:
        """Users with no vector whose items an extension just added (loop thread).

        Swaps in what the tail prepared first: ``models`` does so only when a batch is solved,
        and a waiting user's item may get its vector after the user's last event, with no
        batch to follow (a user whose only event came just before its item's first vector
        waited for good)."""
        if self._waiting:
            for tenant in {tenant for tenant, _ in list(self._pending)}:
                self.models(tenant)
        ready, self._ready = self._ready, set()
        return ready

    def _wait(self, tenant: str, solved: list[bytes], histories: dict) -> None:
        """Users of ``histories`` the model could not solve wait on their items."""
        done = set(solved)
        for key, (ids, _) in histories.items():
            if key in done or not len(ids) or self._n_waiting >= _MAX_WAITING:
                continue
            for item in ids:
                users = self._waiting.setdefault((tenant, item), set())
                if key not in users:
                    users.add(key)
                    self._n_waiting += 1

    # -- emitting --------------------------------------------------------------------------
    def emit(self, tenant: str, algorithm: str, model, solved: list[bytes], X: np.ndarray,
             histories: dict[bytes, tuple[list[str], np.ndarray]], users: dict,
             batch_items: dict[bytes, set[str]] | None) -> None:
        """One ``ItemInteraction`` per (solved user, item of theirs ``model`` does not know).

        ``batch_items``: per user the items of this micro-batch's events (``None``: every item
        of the history, after a new model version; of the young ones only those touched after
        the version's data window).
        """
        if algorithm not in ITEM_ALGORITHMS or not self.cfg.items.enabled:
            return
        if len(solved) < len(histories):
            self._wait(tenant, solved, histories)
        known = model.item_row  # the version's own items (an extension's too)
        young = getattr(model, "young", frozenset())  # ... but for these: the stage moves them
        since = getattr(model, "trained_to_ms", 0)
        topic = self.cfg.topics.item_interactions
        n = 0
        for key, x in zip(solved, X):
            ids, conf = histories[key]
            if batch_items is None:
                # after a new version: its unknown items, and its young items touched after
                # its data window (the version itself counted the earlier touches)
                seen = users[key].items if young else {}
                found = [(i, c) for i, c in zip(ids, conf) if i not in known
                         or (i in young and i in seen and seen[i][1] > since)]
            else:
                # the common case costs a lookup per batch item, not per history item
                wanted = sorted(i for i in batch_items.get(key, ())
                                if i not in known or i in young)
                if not wanted:
                    continue
                pos = {i: j for j, i in enumerate(ids)}  # hidden items are not in the history
                found = [(i, conf[pos[i]]) for i in wanted if i in pos]
            if not found:
                continue
            h, vector = users[key], x.tolist()
            for item, c in found:
                rec = items_pb2.ItemInteraction(
                    tenant=tenant, item_id=item, user_id=h.user_id, algorithm=algorithm,
                    model_version=model.version, confidence=float(c), user_vector=vector,
                    event_ms=h.last_event_ms)
                self._produce(topic, make_key(tenant, item), rec.SerializeToString())
                n += 1
        if n:
            ITEM_INTERACTIONS.labels(tenant).inc(n)
