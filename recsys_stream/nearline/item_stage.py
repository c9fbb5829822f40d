"""The item fold-in stage: ``item-interactions`` -> per-item state (RocksDB) -> ``item-vectors``.

Per micro-batch:

1. decode every record (a record that does not decode, or names an unconfigured tenant, goes to
   the DLQ with its reason);
2. apply each item's records in offset order to its state (``nearline.item_state``: replays and
   stale versions change nothing, a newer version starts the item afresh, users bounded);
3. solve every touched item that has ``min_item_users`` distinct users (per tenant), or is young
   (below), one batched
   solve per tenant, algorithm and version (``contracts.item_foldin``), against the Gram of that
   version's batch user factors (formed once per version, loaded from the model store by the
   version the records name), and hand ``item-vectors`` to the producer.

Per commit, every ``items.commit_interval_ms``: wait for the broker to acknowledge everything
produced, then write the touched states and the next input offsets in one RocksDB
``WriteBatch`` (the worker's exactly-once protocol, without a changelog: the stage's state is
rebuilt from ``item-interactions`` itself, which holds every record since the models it names).
A crash replays at most one interval; the replay re-publishes the same vectors (the topic is
compacted) and leaves the states as they were.

An erasure (``ItemInteraction.erase``, forwarded by the worker for every item of the erased
user's history): the user's entry is dropped, the item re-solved without it, or, left below
``min_item_users``, its vector is withdrawn (a tombstone on ``item-vectors``); the changed items'
older values are then compacted out of RocksDB.

Young items (DESIGN.md "Young items"): an item the record's version knows from fewer than
``young_item_users`` training users is seeded, before that version's first record of it
applies, from the version's young slice (``contracts.young_slice``: its training users, their
confidences, their batch vectors), so that its first solve is the trainer's own item step; new
users then add or replace entries like a new item's, every change re-solves it, and its vector
goes out marked ``young`` (servers and workers use it instead of the version's stale row). An
erasure of one of its training users seeds it at once (the newest version) without the user,
so that no later record seeds them back (``_seed_erased``).

A new model version: the first record naming it makes the stage drop (state deleted, tombstone
on ``item-vectors``) every item of that tenant and algorithm the new version knows; the other
items start afresh as their first record of the new version arrives (the worker re-solves
recently active users against a new version and re-emits their new items).

Partitions: ``items.partitions`` assigns them manually; otherwise the stage joins the consumer
group ``<prefix>recsys-items`` and positions each partition at the offset stored with the
state. The state has no changelog: a partition that moves to another stage process is rebuilt
there from the topic's beginning (its offset in the new process's store), correct but slow, so
run one stage process per state directory and keep assignments stable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from recsys_stream.config import Config
from recsys_stream.contracts.item_foldin import ItemFoldInSolver
from recsys_stream.contracts.model_store import ModelStore, load_dir
from recsys_stream.contracts.pb import items_pb2
from recsys_stream.contracts.young_slice import YoungSlice
from recsys_stream.kafka import consume_ready
from recsys_stream.nearline.item_metrics import EVENT_TO_VECTOR, ITEM_DLQ, ITEM_RECORDS, \
    VECTORS_PUBLISHED, YOUNG_SEEDED
from recsys_stream.nearline.item_state import ItemRecord, ItemStore, item_state_key
from recsys_stream.process import PartitionOwner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageModel:
    """What the stage needs of one model version: the Gram of its users, the ids it knows,
    and its young items' training users (``contracts.young_slice``) with the users' rows."""

    version: int
    solver: ItemFoldInSolver
    known: frozenset[str]
    young: dict[str, int] = field(default_factory=dict)  # young item -> its row
    slice: YoungSlice | None = None
    user_ids: np.ndarray | None = None       # only kept when the version has young items
    user_factors: np.ndarray | None = None

    def seed(self, item_id: str) -> dict[str, tuple[float, np.ndarray]] | None:
        """A young item's training users: id -> (confidence, the version's batch vector);
        None when the item is not young in this version."""
        row = self.young.get(item_id)
        if row is None:
            return None
        users, conf = self.slice.column(row)
        return {str(self.user_ids[u]): (float(c), self.user_factors[u])
                for u, c in zip(users, conf)}


class StageModels:
    """Model versions by ``(tenant, algorithm, version)``, loaded from the store on first use.

    The records say which version their user vectors belong to, so the stage needs no
    announcement to follow: a version it has not seen is loaded (and verified) when named.
    A version that cannot be loaded is remembered as unusable (its items are never solved).
    """

    def __init__(self, cfg: Config, keep: int = 2) -> None:
        self.store = ModelStore(cfg.model_store)
        self.keep = keep
        self._models: dict[tuple[str, str, int], StageModel | None] = {}

    def get(self, tenant: str, algorithm: str, version: int) -> StageModel | None:
        key = (tenant, algorithm, version)
        if key not in self._models:
            self._models[key] = self._load(*key)
            mine = sorted(v for (t, a, v) in self._models if (t, a) == (tenant, algorithm))
            for old in mine[:-self.keep]:  # the newest few per tenant and algorithm
                del self._models[(tenant, algorithm, old)]
        return self._models.get(key)

    def _load(self, tenant: str, algorithm: str, version: int) -> StageModel | None:
        try:
            art = load_dir(self.store.version_dir(tenant, algorithm, version))
        except Exception as e:  # missing, corrupt: never solve against it
            log.error("item stage: model %s/%s v%d unusable: %s", tenant, algorithm, version, e)
            return None
        hp = art.manifest.get("hyperparameters", {})
        reg = float(hp.get("foldin_regularization", hp.get("regularization", 0.1)))
        # Spark models weight lambda by the item's user count, as they did in training
        scaling = str(art.manifest.get("regularization_scaling", "none"))
        young = art.young if art.young is not None and len(art.young) else None
        log.info("item stage: %s/%s v%d loaded (%d users, lambda scaling %s, %d young items)",
                 tenant, algorithm, version, len(art.user_ids), scaling,
                 len(young) if young is not None else 0)
        solver = ItemFoldInSolver(art.user_factors, reg, scaling)
        known = frozenset(art.item_ids.tolist())
        if young is None:
            return StageModel(version, solver, known)
        return StageModel(version, solver, known,
                          {str(art.item_ids[r]): int(r) for r in young.items}, young,
                          art.user_ids, art.user_factors)


class ItemStage(PartitionOwner):
    """One stage process's loop over its ``item-interactions`` partitions."""

    def __init__(self, cfg: Config, store: ItemStore, models: StageModels,
                 consumer: Consumer, producer: Producer) -> None:
        self.cfg, self.store, self.models = cfg, store, models
        self.consumer, self.producer = consumer, producer
        self.topic = cfg.topics.item_interactions
        self.partitions: list[int] = []
        self._dirty: dict[bytes, ItemRecord | None] = {}
        self._pending_offsets: dict[tuple[str, int], int] = {}
        self._newest: dict[tuple[str, str], int] = {}
        self._purge: set[bytes] = set()  # items an erasure changed since the commit
        self._last_commit = time.monotonic()
        self.last_poll = time.monotonic()

    # -- assignment ------------------------------------------------------------------------
    def assign(self) -> None:
        self.assign_inputs([self.topic], self.cfg.items.partitions)

    def _positions(self, partitions: list[int]) -> list[TopicPartition]:
        stored = self.store.offsets(self.topic)
        self.partitions = sorted(partitions)
        log.info("item stage: took partitions %s at %s", self.partitions,
                 {p: stored.get(p, 0) for p in self.partitions})
        return [TopicPartition(self.topic, p, stored.get(p) or OFFSET_BEGINNING)
                for p in self.partitions]

    # -- the loop --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self.assign()
        ic = self.cfg.items
        while not stop.is_set():
            self.last_poll = time.monotonic()
            msgs = consume_ready(self.consumer, ic.batch_max_events, ic.batch_timeout_ms / 1000)
            msgs = [m for m in msgs if not m.error()]
            if msgs:
                self.process(msgs)
            if self._pending_offsets and (time.monotonic() - self._last_commit
                                          >= ic.commit_interval_ms / 1000):
                self.commit()
            self.producer.poll(0)
        self.commit()

    def process(self, msgs: list[Message]) -> None:
        """Steps 1-3 of the module docstring for one micro-batch."""
        decoded = []
        for m in msgs:
            try:
                decoded.append((m, items_pb2.ItemInteraction.FromString(m.value() or b""), ""))
            except Exception as e:
                decoded.append((m, None, str(e)))
        # a newer version first: its scan commits what came before this batch, so it must run
        # before this batch's offsets are pending
        for _, rec, _ in decoded:
            if rec is not None and rec.tenant in self.cfg.tenants and not rec.erase:
                self._new_version(rec.tenant, rec.algorithm, rec.model_version)
        offsets = self._pending_offsets
        by_item: dict[bytes, list[tuple[items_pb2.ItemInteraction, Message]]] = defaultdict(list)
        for m, rec, error in decoded:
            tp = (m.topic(), m.partition())
            offsets[tp] = max(offsets.get(tp, 0), m.offset() + 1)
            if rec is None:
                self._dead_letter(m, "undecodable", error)
            elif rec.tenant not in self.cfg.tenants:
                self._dead_letter(m, "unknown_tenant", f"tenant {rec.tenant!r} is not configured")
            elif not rec.item_id or not rec.user_id or not (rec.user_vector or rec.erase):
                self._dead_letter(m, "missing_field", "item_id, user_id and user_vector are "
                                  "required")
            else:
                by_item[item_state_key(rec.tenant, rec.algorithm, rec.item_id)].append((rec, m))
        if not by_item:
            return
        states = {k: self._dirty[k] for k in by_item if self._dirty.get(k) is not None}
        states.update(self.store.get_many([k for k in by_item if k not in states]))
        touched: dict[bytes, ItemRecord] = {}
        trigger_ms: dict[bytes, int] = {}
        erased: dict[bytes, ItemRecord] = {}
        outcome = {"applied": 0, "unchanged": 0}
        for key, recs in by_item.items():
            r0 = recs[0][0]
            st = states.get(key) or ItemRecord(r0.tenant, r0.algorithm, r0.item_id)
            cap = self.cfg.tenants[r0.tenant].max_item_users
            changed = False
            for rec, m in recs:
                if not st.replays(m.partition(), m.offset()):
                    if rec.erase:
                        self._seed_erased(st, rec)
                    elif rec.model_version > st.version:
                        self._seed(st, rec, rec.model_version)
                applied = st.apply(rec, m.partition(), m.offset(), cap)
                outcome["applied" if applied else "unchanged"] += 1
                if applied:
                    changed, trigger_ms[key] = True, rec.event_ms
                    if rec.erase:
                        erased[key] = st
            # offsets moved even when nothing else did: the state is written either way
            self._dirty[key] = st
            if changed:
                touched[key] = st
        for name, n in outcome.items():
            if n:
                ITEM_RECORDS.labels(name).inc(n)
        self._unsolve(erased)
        self._purge.update(erased)
        self._solve(touched, trigger_ms)

    def _seed(self, st: ItemRecord, rec: items_pb2.ItemInteraction, version: int,
              only_with: str | None = None) -> None:
        """Before the first record of a version that knows the item as young: its training
        users, so that the solve starts from what the trainer's item step saw.
        ``only_with``: seed only if this user is among them."""
        model = self.models.get(rec.tenant, rec.algorithm, version)
        seed = model.seed(rec.item_id) if model is not None else None
        if seed is not None and (only_with is None or only_with in seed):
            st.seed(version, seed)
            YOUNG_SEEDED.labels(rec.tenant).inc()

    def _seed_erased(self, st: ItemRecord, rec: items_pb2.ItemInteraction) -> None:
        """An erased user who trained a young item of the newest version (the stage's newest,
        or CURRENT): the item is seeded now, so the erase removes the user from the seed and
        that version's later records never seed them back (an older version's are stale)."""
        version = max(self._newest.get((rec.tenant, rec.algorithm), 0),
                      self.models.store.current_version(rec.tenant, rec.algorithm) or 0)
        if version > st.version:
            self._seed(st, rec, version, only_with=rec.user_id)

    def _unsolve(self, erased: dict[bytes, ItemRecord]) -> None:
        """Items that lost a user to an erasure and now have fewer than ``min_item_users``:
        their vector goes (a tombstone on ``item-vectors``); the others are re-solved by
        ``_solve`` without the user."""
        for key, st in erased.items():
            if not st.young and st.first_solved_ms \
                    and len(st.users) < self.cfg.tenants[st.tenant].min_item_users:
                st.first_solved_ms = 0
                self._produce(key, None)

    def _solve(self, touched: dict[bytes, ItemRecord], trigger_ms: dict[bytes, int]) -> None:
        groups: dict[tuple[str, str, int], list[bytes]] = defaultdict(list)
        for key, st in touched.items():
            # a young item had a vector already: every change re-solves it
            if st.young or len(st.users) >= self.cfg.tenants[st.tenant].min_item_users:
                groups[(st.tenant, st.algorithm, st.version)].append(key)
        now = int(time.time() * 1000)
        for (tenant, algorithm, version), keys in groups.items():
            model = self.models.get(tenant, algorithm, version)
            if model is None:
                continue
            keys = [k for k in keys if touched[k].width == model.solver.width]
            arrays = [touched[k].arrays() for k in keys]
            Y = model.solver.solve([a[0] for a in arrays], [a[1] for a in arrays])
            for key, y in zip(keys, Y):
                st = touched[key]
                st.first_solved_ms = st.first_solved_ms or now
                msg = items_pb2.ItemVector(
                    tenant=tenant, algorithm=algorithm, item_id=st.item_id,
                    model_version=version, values=y.tolist(), users=len(st.users),
                    first_solved_ms=st.first_solved_ms, event_ms=st.event_ms, young=st.young)
                self._produce(key, msg.SerializeToString())
                if trigger_ms.get(key, 0) > 0:
                    EVENT_TO_VECTOR.observe(max(now - trigger_ms[key], 0) / 1000)
            VECTORS_PUBLISHED.labels(tenant).inc(len(keys))

    def _new_version(self, tenant: str, algorithm: str, version: int) -> None:
        """On the first record of a newer version: drop the items that version knows."""
        if version <= self._newest.get((tenant, algorithm), -1):
            return
        self._newest[(tenant, algorithm)] = version
        model = self.models.get(tenant, algorithm, version)
        if model is None:
            return
        self.commit()  # the scan below reads the store: everything applied so far is in it
        dropped = 0
        for key, st in self.store.items():
            if (st.tenant, st.algorithm) == (tenant, algorithm) and st.version < version \
                    and st.item_id in model.known:
                self._dirty[key] = None
                self._produce(key, None)  # tombstone: the item is the model's now
                dropped += 1
        if dropped:
            log.info("item stage: %s/%s v%d knows %d items of older versions; dropped", tenant,
                     algorithm, version, dropped)

    def commit(self) -> None:
        """Make everything applied so far durable (outputs acknowledged first)."""
        self._last_commit = time.monotonic()
        if not self._pending_offsets and not self._dirty:
            return
        self.producer.flush()
        self.store.commit(self._dirty, self._pending_offsets, sorted(self._purge))
        self._dirty, self._pending_offsets = {}, {}
        if self._purge:  # their older values named the erased user
            self.store.purge(sorted(self._purge))
            self._purge.clear()

    # -- output ----------------------------------------------------------------------------
    def _produce(self, key: bytes, value: bytes | None) -> None:
        while True:
            try:
                self.producer.produce(self.cfg.topics.item_vectors, key=key, value=value)
                return
            except BufferError:
                self.producer.poll(0.05)

    def _dead_letter(self, m: Message, reason: str, error: str) -> None:
        headers = [("reason", reason.encode()), ("error", error.encode()[:1000]),
                   ("source.topic", m.topic().encode()),
                   ("source.partition", str(m.partition()).encode()),
                   ("source.offset", str(m.offset()).encode())]
        while True:
            try:
                self.producer.produce(self.cfg.topics.dlq, key=m.key(), value=m.value(),
                                      headers=headers)
                break
            except BufferError:
                self.producer.poll(0.05)
        ITEM_DLQ.labels(reason).inc()

    def health(self) -> dict:
        stalled = time.monotonic() - self.last_poll > 30
        return {"status": "stalled" if stalled else "ok", "partitions": self.partitions}

