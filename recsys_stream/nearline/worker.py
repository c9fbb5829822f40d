"""The nearline worker loop: micro-batches of interactions -> state -> fold-in -> profiles.

Per micro-batch:

1. decode and validate every record; rejects go to the DLQ with their reason;
2. apply each user's events in offset order, skipping offsets at or below the user's applied
   offset (so a replayed prefix changes nothing) and re-sent event ids;
3. fold in every touched user, one vectorised solve per tenant and algorithm, and hand the
   profiles that changed to the producer (``Worker._unchanged``). The touched states are now
   *dirty*: applied in memory, not yet committed.

Per commit, every ``worker.commit_interval_ms`` (Kafka Streams' ``commit.interval.ms``):

4. publish the state changelog (each dirty user's record to the changelog partition numbered like
   its input partition); the loop goes on, these states now *in flight* (``nearline.commit``);
5. once the broker acknowledged every output produced up to step 4 (counted by delivery
   reports), commit those states and the next input offsets to RocksDB in one WriteBatch;
6. append an offset marker per input partition to the changelog.

A crash before 5 replays the input since the last commit: the committed state is unchanged by
the replay and the outputs are re-published with the same content (compacted topics keep the
last). Before partitions are given up and at the stop, steps 4-6 run at once (``commit``).

Why commits are not per micro-batch: Zipf traffic touches the same heavy users in nearly every
batch, and encoding, storing and logging a long history is most of what a touch costs, so a
commit per 5 ms batch paid it ~100 times a second per heavy user, and waited for the broker's
acknowledgements in every batch. A commit per interval pays both once per interval; profiles still
leave in every batch, so freshness is unchanged.

Frequency caps (``nearline.caps``): when a tenant has ``frequency_cap`` on, the worker also
consumes ``recommendations`` (partition ``p`` with interactions' ``p``); its answers and the
IMPRESSION events join the batch and go into the users' states, whose commits then carry both
topics' next offsets, and whose changelog carries a marker per topic.

Partitions: with ``worker.partitions`` set, the worker assigns them manually; otherwise it joins
the consumer group ``<prefix>recsys-worker`` (eager rebalancing) and workers share the
partitions. Either way a partition is taken through ``nearline.restore.resume`` (the recovery
protocol is described there): the local RocksDB state if it is current, else the partition's
users from the state changelog, then the consumer is positioned at the resumed offset. A worker
commits before it gives partitions up and before it stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from recsys_stream.config import Config
from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.events import IMPRESSION, Event, InvalidEvent, decode_event
from recsys_stream.contracts.keys import offset_marker_key
from recsys_stream.contracts.pb import profiles_pb2
from recsys_stream.contracts.user_state import UserHistory
from recsys_stream.nearline import caps as cap_feed
from recsys_stream.nearline.commit import Deliveries, InFlight
from recsys_stream.nearline.dlq import dead_letter
from recsys_stream.nearline.erase import Erasures
from recsys_stream.nearline.metrics import BATCH_SECONDS, BATCH_SIZE, COMMIT_PHASE_SECONDS, \
    COMMIT_SECONDS, EVENT_TO_PROFILE, EVENTS, FOLDIN_SECONDS, LAG, PROFILES, USERS_RESOLVED
from recsys_stream.follow import ModelFollower
from recsys_stream.kafka import consume_ready
from recsys_stream.nearline.restore import resume
from recsys_stream.nearline.state import StateStore

log = logging.getLogger(__name__)
_LOG_EVERY_S = 5.0
# On stop, how long to keep polling for a pending group join to complete before leaving anyway.
_SETTLE_S = 15.0
_RESOLVE_CHUNK = 2000
# A vector that moved less than this (relative to its largest entry) is float noise: its
# profile is not published again when nothing else of it changed (``Worker._unchanged``).
PROFILE_TOLERANCE = 1e-6
# On stop, how long the last commit waits for the broker's acknowledgements.
_STOP_FLUSH_S = 20.0
# Commits past phase 1 and not yet landed at most; the next waits (a slow broker).
_MAX_IN_FLIGHT = 2


def _close(x0: np.ndarray, x: np.ndarray) -> bool:
    """``x`` within ``PROFILE_TOLERANCE`` of ``x0``, relative to the largest entry of ``x0``."""
    return len(x) == len(x0) and float(np.abs(x - x0).max(initial=0.0)) <= PROFILE_TOLERANCE \
        * max(float(np.abs(x0).max(initial=0.0)), 1e-30)


class Worker:
    """One worker process's loop over its assigned interaction partitions."""

    def __init__(self, cfg: Config, store: StateStore, models: ModelFollower | None,
                 consumer: Consumer, producer: Producer) -> None:
        self.cfg, self.store, self.models = cfg, store, models
        self.consumer, self.producer = consumer, producer
        self.topic = cfg.topics.interactions
        self._tenants = frozenset(cfg.tenants)
        self._scales = {t: (tc.rating_min, tc.rating_max) for t, tc in cfg.tenants.items()}
        self._resolve_pending: set[str] = set()
        self._resolve_lock = threading.Lock()
        self._resolve_keys: list[bytes] = []
        self._stats = defaultdict(int)
        self._last_log = time.monotonic()
        self._last_lag = 0.0
        self.partitions: list[int] = []
        # applied since the last commit: states (also possibly in the store's cache, which a
        # failed batch makes forget them) and the next input offset per (topic, partition)
        self._dirty: dict[bytes, UserHistory] = {}
        self._dirty_items = 0
        # dirty states encoded ahead of the commit (``_encode_ahead``): key -> (the history
        # object, its bytes), valid while that object is the dirty one and untouched since
        self._encoded: dict[bytes, tuple[UserHistory, bytes]] = {}
        self._first_touched: list[bytes] = []  # made dirty by the last batch
        self._pending_offsets: dict[tuple[str, int], int] = {}
        # commits past phase 1, oldest first, and the outputs they wait for (nearline.commit)
        self._inflight: deque[InFlight] = deque()
        self._deliveries = Deliveries()
        self._last_commit = time.monotonic()
        self._settled = True  # False while a group (re)join is pending: see run()
        self.last_poll = time.monotonic()
        self.item_feed = None  # nearline.item_feed.ItemFeed: new items in and out (issue 19)
        self.erasures = Erasures(self)  # erase records (nearline.erase)
        # frequency caps: tenants with a cap, and the answers' topic when any has one
        self.caps = cap_feed.rules(cfg)
        self.served_topic = cfg.topics.recommendations if self.caps else None
        self._next: dict[tuple[str, int], int] = {}  # committed next offsets (the markers)

    # -- assignment ------------------------------------------------------------------------
    def assign(self) -> None:
        """Assign ``worker.partitions`` manually when configured, else join the worker group."""
        if self.cfg.worker.partitions:
            self.consumer.assign(self._take(list(self.cfg.worker.partitions)))
        else:
            self._settled = False
            self.consumer.subscribe([self.topic, *([self.served_topic] if self.caps else [])],
                                    on_assign=self._on_assign,
                                    on_revoke=self._on_revoke, on_lost=self._on_revoke)
            log.info("joining consumer group for %s", self.topic)

    def _take(self, partitions: list[int]) -> list[TopicPartition]:
        """Restore what is not current (``nearline.restore``); the positions to consume from."""
        partitions = sorted(set(partitions))  # with caps, each comes once per topic
        resumed = resume(self.cfg, self.store, partitions, self.served_topic)
        if resumed.republish:
            self._publish(resumed.republish)
        self.partitions = partitions
        out = [TopicPartition(self.topic, p, resumed.offsets[p] or OFFSET_BEGINNING)
               for p in self.partitions]
        self._next.update(((self.topic, p), o) for p, o in resumed.offsets.items())
        if self.served_topic:
            out += [TopicPartition(self.served_topic, p,
                                   resumed.served_offsets.get(p) or OFFSET_BEGINNING)
                    for p in self.partitions]
            self._next.update(((self.served_topic, p), o)
                              for p, o in resumed.served_offsets.items())
        # A process killed between a commit's RocksDB write and the delivery of its markers
        # leaves its local state ahead of the changelog's last marker, and nothing marked it
        # again until new input came to that partition. Mark where this start resumes from
        # its own store: every output up to there was acknowledged before the store was written.
        self._mark(p for p, o in resumed.offsets.items() if o and p not in resumed.restored)
        self.producer.flush()
        return out

    def _on_assign(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        # eager protocol: ``tps`` is the whole new assignment; assigning it here with our own
        # offsets replaces the client's automatic assignment from group-committed offsets
        consumer.assign(self._take([tp.partition for tp in tps]))
        self._settled = True

    def _on_revoke(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        # The loop is synchronous (no batch is half done): commit, and deliver the offset markers
        # so the next owner need not restore; re-solve keys of these partitions are dropped lazily.
        self.commit()
        self.producer.flush(10)
        self._settled = False
        gone = {tp.partition for tp in tps}
        self.partitions = [p for p in self.partitions if p not in gone]
        for p in gone:  # the new owner reports their lag now
            try:
                LAG.remove(str(p))
            except KeyError:
                pass
        log.info("partitions %s revoked; owning %s", sorted(gone), self.partitions)

    def request_resolve(self, tenant: str, algorithm: str, version: int) -> None:
        """Called by the model follower: re-solve the tenant's recent users in the background."""
        with self._resolve_lock:
            self._resolve_pending.add(tenant)

    # -- the loop --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self.assign()
        wc = self.cfg.worker
        settle_until = None
        while not stop.is_set() or not self._settled:
            if stop.is_set():
                # Leave only once a pending join completed: tansu 0.6 wedges the group for good
                # when a member sends LeaveGroup while its JoinGroup is pending (the next
                # generation names the departed member leader; nobody ever gets an assignment).
                settle_until = settle_until or time.monotonic() + _SETTLE_S
                if time.monotonic() > settle_until:
                    log.warning("stopping with a group join still pending")
                    break
            self.last_poll = time.monotonic()
            msgs = consume_ready(self.consumer, wc.batch_max_events, wc.batch_timeout_ms / 1000)
            msgs = [m for m in msgs if not m.error()]
            if msgs:
                self.process(msgs)
            if self._commit_due():
                self._begin_commit()
            self.producer.poll(0)  # delivery reports: a commit in flight lands once all are in
            self._land_ready()
            self._resolve_step()
            self._housekeeping()
        # stopping: wait for the broker a bounded time (a worker told to stop while the broker
        # is down hung here for good); what is not acknowledged stays uncommitted and replays
        self.commit(flush_timeout_s=_STOP_FLUSH_S)

    def process(self, msgs: list[Message]) -> None:
        """Steps 1-3 of the module docstring for one micro-batch (``commit`` does the rest)."""
        t0 = time.perf_counter()
        BATCH_SIZE.observe(len(msgs))
        now = int(time.time() * 1000)
        wc = self.cfg.worker
        offsets = self._pending_offsets
        by_user: dict[bytes, list[tuple[Event, Message]]] = defaultdict(list)
        for m in msgs:
            tp = (m.topic(), m.partition())
            offsets[tp] = max(offsets.get(tp, 0), m.offset() + 1)
            if m.topic() == self.served_topic:  # an answer, for the frequency caps
                served = cap_feed.decode_served(m.key(), m.value(), self.caps)
                if served is not None:
                    by_user[served.key].append((served, m))
                continue
            try:
                ev = decode_event(m.key(), m.value(), self._tenants, now, wc.max_future_ms,
                                  wc.max_past_ms, self._scales)
            except InvalidEvent as err:
                dead_letter(self._produce, self.cfg.topics.dlq, m, err)
                self._stats["invalid"] += 1
                continue
            if ev.type == IMPRESSION and ev.tenant not in self.caps:
                continue  # for the online stage; no preference, no state
            by_user[ev.key].append((ev, m))

        try:
            self.erasures.apply(by_user)
            first = self._first_touched
            self._first_touched = []
            self._apply_and_publish(by_user)
            self._encode_ahead(first, by_user)
        except BaseException:
            # the loop ends here and nothing uncommitted may survive in memory: the cache may
            # share dirty histories, and this batch's may be half applied
            self.store.forget(list(by_user))
            self._abort()
            raise
        busy = time.perf_counter() - t0
        BATCH_SECONDS.observe(busy)
        self._stats["events"] += len(msgs)
        self._stats["batches"] += 1
        self._stats["busy_s"] += busy

    def _apply_and_publish(self, by_user: dict[bytes, list[tuple[Event, Message]]]) -> None:
        """Steps 2-3 of the module docstring for one decoded micro-batch."""
        dirty = self._dirty
        states = self._states(by_user)
        touched: dict[bytes, UserHistory] = {}
        caps_only: dict[bytes, UserHistory] = {}  # changed, but nothing the profile shows
        produced_ms: dict[bytes, int] = {}
        outcomes = {"applied": 0, "duplicate": 0, "replayed": 0}  # one metric update per batch
        for key, items in by_user.items():
            ev0 = items[0][0]
            h = states.get(key) or UserHistory(ev0.tenant, ev0.user_id)
            settings = self._settings(ev0.tenant)
            cap = self.cfg.tenants[ev0.tenant].history_cap
            rule = self.caps.get(ev0.tenant)
            changed = shows = False
            revision = h.revision
            for ev, m in items:
                if ev.type == cap_feed.SERVED:  # an answer: recognised by its id on a replay
                    if h.input_partition < 0:  # the changelog partition of a new user
                        h.input_partition = m.partition()
                    cap_feed.apply(h, ev, None, m.offset(), rule)
                    changed = True
                    continue
                if m.offset() <= h.applied_offset and m.partition() == h.input_partition:
                    outcomes["replayed"] += 1
                    continue
                if ev.type == IMPRESSION:  # only a tenant with caps gets here
                    cap_feed.apply(h, ev, m.value(), m.offset(), rule)
                    applied = False
                else:
                    applied = h.apply(ev.event_id, ev.item_id, ev.type, ev.value,
                                      ev.timestamp_ms, settings, cap)
                    if applied and rule is not None:
                        cap_feed.apply(h, ev, None, m.offset(), rule)
                    shows = True
                h.applied_offset, h.input_partition = m.offset(), m.partition()
                outcomes["applied" if applied else "duplicate"] += 1
                changed = True
                produced_ms[key] = max(produced_ms.get(key, 0), m.timestamp()[1])
            if shows or (changed and h.revision != revision):  # the capped set changed
                touched[key] = h
            elif changed:
                caps_only[key] = h
        for outcome, n in outcomes.items():
            if n:
                EVENTS.labels(outcome).inc(n)
        for key, h in caps_only.items():  # committed with the rest; no profile to publish
            if key not in dirty:
                dirty[key] = h
                self._dirty_items += len(h.items) + 1
                self._first_touched.append(key)
        if not touched:
            return
        shown = (cap_feed.SERVED, IMPRESSION)  # no preference: no item-interaction
        published = self._publish(touched, {k: {ev.item_id for ev, _ in by_user[k]
                                                if ev.type not in shown} for k in touched})
        # to the producer (or found unchanged); the commit waits for the broker's ack
        handed = time.time() * 1000
        for ts in produced_ms.values():
            if ts > 0:
                EVENT_TO_PROFILE.observe(max(handed - ts, 0) / 1000)
        for key, h in touched.items():
            if key not in dirty:
                dirty[key] = h
                self._dirty_items += len(h.items) + 1
                self._first_touched.append(key)
        self._stats["users"] += len(touched)
        self._stats["profiles"] += published
        PROFILES.labels("published").inc(published)
        if len(touched) > published:
            PROFILES.labels("unchanged").inc(len(touched) - published)

    def _encode_ahead(self, first: list[bytes], batch: dict) -> None:
        """Encode, after a batch's profiles left, the states the batch before made dirty and
        this one left alone; drop the encodings of this batch's users (changed since).

        Why: at 5k events/s most users are touched once per commit interval, and encoding
        every dirty state at the commit stalled the loop ~40 ms every 0.5 s (the commit's
        ``encode`` phase), the events arriving meanwhile waiting behind it: the freshness
        p99. Spread over the batches, the same encodes cost each batch a few ms after its
        profiles were handed over. A state touched again is encoded again at the commit (for
        a user of the previous batch that is not tried: heavy users, touched in nearly every
        batch, are encoded once, at the commit, as before).
        """
        encoded, dirty = self._encoded, self._dirty
        for key in batch:
            encoded.pop(key, None)
        for key in first:
            h = dirty.get(key)
            if h is not None and key not in batch:
                encoded[key] = (h, h.encode())

    def _forget_encoded(self) -> None:
        self._encoded.clear()
        self._first_touched = []

    def _commit_due(self) -> bool:
        # the dirty states are pinned in memory until committed: bound them like the cache
        interval_s = self.cfg.worker.commit_interval_ms / 1000
        return bool(self._pending_offsets) and (
            time.monotonic() - self._last_commit >= interval_s
            or self._dirty_items > max(self.cfg.worker.state_cache_items, 100_000))

    def commit(self, flush_timeout_s: float | None = None) -> bool:
        """Steps 4-6 of the module docstring at once: make everything applied so far durable
        (before partitions are given up, and at the stop). The loop's periodic commits run in
        two phases instead (``_begin_commit``, ``_land_ready``; ``nearline.commit``).

        ``flush_timeout_s``: how long to wait for the broker's acknowledgements (None: as long
        as it takes, riding out a broker outage). When they do not all arrive in time nothing
        more is committed and False is returned: a restart replays the input since the last
        commit that landed (idempotent, as after a crash)."""
        self._begin_commit()
        if not self._inflight:
            return True
        # everything produced so far, the commits in flight's outputs among it
        if flush_timeout_s is None:
            self.producer.flush()
        elif self.producer.flush(flush_timeout_s) > 0:
            log.error("the broker did not acknowledge %d outputs within %.0fs: %d user states "
                      "left uncommitted (the next start replays their input)",
                      len(self.producer), flush_timeout_s,
                      sum(len(c.states) for c in self._inflight))
            self._abort()
            return False
        self._land_ready()
        return not self._inflight

    def _begin_commit(self) -> None:
        """Phase 1: encode the dirty states, log them to the changelog, close the generation of
        outputs they depend on; they become a commit in flight (``nearline.commit``)."""
        self._last_commit = time.monotonic()
        if not self._pending_offsets:
            return
        while len(self._inflight) >= _MAX_IN_FLIGHT:  # a slow broker: wait, memory is bounded
            self.producer.poll(0.01)
            self._land_ready()
        t0 = time.perf_counter()
        dirty = self._dirty
        encoded, ahead = {}, self._encoded
        for key, h in dirty.items():
            early = ahead.get(key)
            # encoded ahead from this very object, untouched since (``_encode_ahead``)
            encoded[key] = state = early[1] if early is not None and early[0] is h \
                else h.encode()
            self._produce(self.cfg.topics.state_changelog, key, state, h.input_partition)
        self._forget_encoded()
        deleted = self.erasures.tombstones()
        self._inflight.append(InFlight(
            self._deliveries.close(), encoded, dirty, self._pending_offsets,
            set(self.erasures.take()), deleted, t0, time.perf_counter() - t0))
        self._dirty, self._dirty_items, self._pending_offsets = {}, 0, {}

    def _land_ready(self) -> None:
        """Phase 2 of every commit in flight whose outputs are all acknowledged, oldest first:
        the states and offsets in one WriteBatch, then the offset markers."""
        d = self._deliveries
        while self._inflight and d.acked(self._inflight[0].generation):
            if d.error is not None:  # nothing more may land: its outputs may be lost
                raise RuntimeError(f"the broker refused an output ({d.error}); the uncommitted "
                                   f"input replays at the next start")
            c = self._inflight.popleft()
            t0 = time.perf_counter()
            self.store.commit(c.encoded, c.offsets, c.states, deleted=c.deleted)
            took = time.perf_counter() - t0
            self.erasures.committed(list(c.erased))
            self._next.update(c.offsets)
            self._mark({p for _, p in c.offsets})
            # the acknowledgements were waited for off the loop: phase 1's end to phase 2
            acks = t0 - c.started - c.encode_s
            COMMIT_SECONDS.observe(c.encode_s + took)
            for phase, seconds in (("encode", c.encode_s), ("acks", acks), ("store", took)):
                COMMIT_PHASE_SECONDS.labels(phase).observe(seconds)
                self._stats[f"commit_{phase}_s"] += seconds
            self._stats["commit_s"] += c.encode_s + took
            self._stats["commits"] += 1

    def _mark(self, partitions) -> None:
        """The offset markers of ``partitions`` at their committed next offsets (with caps,
        both topics' markers of every partition: restore needs both)."""
        for partition in partitions:
            for topic, source in ((self.topic, ""), (self.served_topic, "recommendations")):
                nxt = self._next.get((topic, partition))
                if topic is not None and nxt is not None:
                    self._produce(self.cfg.topics.state_changelog,
                                  offset_marker_key(partition, source), str(nxt).encode(),
                                  partition)

    def _abort(self) -> None:
        """Nothing uncommitted survives in memory (the input since the last landed commit
        replays at the next start, as after a crash)."""
        self.store.forget([*self._dirty, *(k for c in self._inflight for k in c.states)])
        self._inflight.clear()
        self._dirty, self._dirty_items, self._pending_offsets = {}, 0, {}
        self._forget_encoded()
        self.erasures.reset()

    def _states(self, keys) -> dict[bytes, UserHistory]:
        """The newest state of each key that has one: applied since the last commit, else of a
        commit in flight (none if that commit erased the user), else the store's."""
        out: dict[bytes, UserHistory] = {}
        stored = []
        for key in keys:
            h = self._dirty.get(key)
            if h is None:
                if self.erasures.is_erased(key):
                    continue  # erased since the last commit: no state
                # the newest commit in flight that holds the user, or erased them
                c = next((c for c in reversed(self._inflight)
                          if key in c.states or key in c.erased), None)
                if c is None:
                    stored.append(key)
                    continue
                h = c.states.get(key)  # None: that commit erased the user
            if h is not None:
                out[key] = h
        out.update(self.store.get_many(stored))
        return out

    # -- fold-in and publishing ------------------------------------------------------------
    def _settings(self, tenant: str) -> ConfidenceSettings:
        """The aggregation settings: the manifest's of the model folded into, else the config's."""
        models = self.models.models(tenant)
        model = models.get("als") or next((m for m in models.values()
                                           if m.explicit is None), None) \
            or next(iter(models.values()), None)
        return model.confidence if model is not None else self.cfg.tenants[tenant].confidence

    def _publish(self, users: dict[bytes, UserHistory],
                 batch_items: dict[bytes, set[str]] | None = None) -> int:
        """Fold in every user and hand the profiles that changed to the producer.

        ``batch_items``: per user the items of the micro-batch's events (None: a re-solve).
        Returns the number of profiles produced (see ``_unchanged``)."""
        now = int(time.time() * 1000)
        by_tenant: dict[str, list[bytes]] = defaultdict(list)
        for key, h in users.items():
            by_tenant[h.tenant].append(key)
        produced = 0
        for tenant, keys in by_tenant.items():
            settings = self._settings(tenant)
            conf = {k: users[k].confidences(settings) for k in keys}
            vectors = self._fold_in(tenant, keys, users, settings, conf, batch_items)
            for key in keys:
                h, vecs = users[key], vectors.get(key, [])
                ids, c = conf[key]
                if self._unchanged(h, vecs, c):
                    continue
                profile = profiles_pb2.UserProfile(
                    tenant=h.tenant, user_id=h.user_id, item_ids=ids, confidences=c.tolist(),
                    suppressed_item_ids=list(h.suppressed), last_event_ms=h.last_event_ms,
                    updated_ms=now, vectors=vecs)
                rule = self.caps.get(tenant)
                if rule is not None and h.caps is not None:  # suppressed until their time
                    capped = h.caps.capped(rule, now)
                    profile.capped_item_ids.extend(capped)
                    profile.capped_until_ms.extend(capped.values())
                if h.ratings:  # the server's mf fold-in fallback folds these in
                    profile.rated_item_ids.extend(h.ratings)
                    profile.ratings.extend(v[0] for v in h.ratings.values())
                    profile.rating_ms.extend(v[1] for v in h.ratings.values())
                self._produce(self.cfg.topics.profiles, key, profile.SerializeToString())
                produced += 1
        return produced

    @staticmethod
    def _unchanged(h: UserHistory, vectors: list[profiles_pb2.ProfileVector],
                   confidences: np.ndarray) -> bool:
        """Whether the profile ``h`` would get says nothing new to the server; notes it if not.

        The server reads a profile's vectors (their versions, values and suppressed rows), its
        history and suppressed ids (what it suppresses) and, without a vector of its version,
        the confidences and ratings to fold in itself. Unchanged: the same ids as the profile
        last published from this very object (``UserHistory.revision``: no item, suppression
        or rating added or dropped since), the same model versions, and every vector and the
        confidences within ``PROFILE_TOLERANCE`` (relative to the largest entry) of the
        published ones: the events moved nothing beyond float noise (a re-sent event, a view
        of a hidden item, recency decay of a moment). A history decoded from the store (a
        cache miss, a restart) carries no note and is published.
        """
        # the cheap tests first: most updates add an item (another revision) and stop there
        note = (h.revision, vectors, confidences)
        last, h.published = h.published, note
        if last is None or last[0] != note[0] or len(last[1]) != len(vectors) \
                or not _close(last[2], confidences):
            return False
        for v0, v in zip(last[1], vectors):
            if (v0.algorithm, v0.model_version) != (v.algorithm, v.model_version) \
                    or not _close(np.array([*v0.values, v0.user_bias], np.float32),
                                  np.array([*v.values, v.user_bias], np.float32)):
                return False
        h.published = last  # compare the next one with what the server has, not with this
        return True

    def _fold_in(self, tenant: str, keys: list[bytes], users: dict[bytes, UserHistory],
                 settings: ConfidenceSettings, conf: dict[bytes, tuple[list[str], np.ndarray]],
                 batch_items: dict[bytes, set[str]] | None = None
                 ) -> dict[bytes, list[profiles_pb2.ProfileVector]]:
        """One vectorised solve per algorithm over every user in ``keys``.

        ``conf`` holds each user's confidences under ``settings``; a model whose manifest has
        the same settings reuses them instead of recomputing.
        """
        out: dict[bytes, list] = defaultdict(list)
        feed = self.item_feed
        models = feed.models(tenant) if feed is not None else self.models.models(tenant)
        for algorithm, model in models.items():
            t0 = time.perf_counter()
            if model.explicit is not None:  # mf: [x_u, b_u] from the latest ratings
                for key, vec in model.explicit.vectors(keys, users).items():
                    out[key].append(vec)
                FOLDIN_SECONDS.observe(time.perf_counter() - t0)
                continue
            same = model.confidence == settings
            histories = [conf[key] if same else users[key].confidences(model.confidence)
                         for key in keys]
            # a user the model knows nothing of gets no vector (the server falls back); heavy
            # users' systems are updated from the last batch's (nearline.normal_cache)
            solved, X, rows = model.foldin.solve(keys, histories)
            if feed is not None:  # events on items this version does not know
                feed.emit(tenant, algorithm, model, solved, X, dict(zip(keys, histories)),
                          users, batch_items)
            row_of = model.item_row
            for key, x, seen in zip(solved, X, rows):
                # the rows of what the profile suppresses: its item_ids (the history under
                # ``settings``; the solve's own rows when the model counts it alike) and hidden
                seen = seen.tolist() if same else [r for r in map(row_of.get, conf[key][0])
                                                   if r is not None]
                seen += [r for r in map(row_of.get, users[key].suppressed) if r is not None]
                out[key].append(profiles_pb2.ProfileVector(
                    algorithm=algorithm, model_version=model.version, values=x.tolist(),
                    suppressed_rows=seen))
            FOLDIN_SECONDS.observe(time.perf_counter() - t0)
        return out

    def _produce(self, topic: str, key: bytes, value: bytes | None,
                 partition: int = -1, headers: list | None = None) -> None:
        """Produce, waiting for queue space; ``partition=-1`` lets the key partitioner choose.
        Every output goes through here: a commit lands only once its outputs are acknowledged
        (``nearline.commit.Deliveries``)."""
        deliveries = self._deliveries
        deliveries.sent()
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, partition=partition,
                                      headers=headers, on_delivery=deliveries.callback)
                return
            except BufferError:
                self.producer.poll(0.05)

    def health(self) -> dict:
        """``/healthz``: stalled when the loop has not polled for 30 s."""
        stalled = time.monotonic() - self.last_poll > 30
        return {"status": "stalled" if stalled else "ok", "partitions": self.partitions,
                "models": {t: {a: m.version for a, m in self.models.models(t).items()}
                           for t in self.cfg.tenants}}

    # -- background re-solve after a new model ---------------------------------------------
    def _resolve_step(self) -> None:
        """Re-solve one chunk of recently active users of tenants with a new model (and of
        users with no vector whose items just got vectors, ``ItemFeed.take_ready``)."""
        if self.item_feed is not None:
            ready = self.item_feed.take_ready()
            if ready:
                self._resolve_keys = sorted(ready - set(self._resolve_keys)) + self._resolve_keys
        if not self._resolve_keys:
            with self._resolve_lock:
                tenants, self._resolve_pending = self._resolve_pending, set()
            if not tenants:
                return
            horizon = int(time.time() * 1000) - int(self.cfg.worker.resolve_active_days
                                                    * 86_400_000)
            # keys only: the chunk is read fresh below, after any batch committed meanwhile
            owned = set(self.partitions)
            self._resolve_keys = [k for k, h in self.store.users()
                                  if h.tenant in tenants and h.last_event_ms >= horizon
                                  and h.input_partition in owned]
            log.info("re-solving %d recently active users of %s against the new model",
                     len(self._resolve_keys), sorted(tenants))
        chunk, self._resolve_keys = (self._resolve_keys[:_RESOLVE_CHUNK],
                                     self._resolve_keys[_RESOLVE_CHUNK:])
        owned = set(self.partitions)  # a rebalance may have taken some away since
        users = {k: h for k, h in self._states(chunk).items() if h.input_partition in owned}
        if users:
            self._publish(users)
            self.producer.flush()
            USERS_RESOLVED.inc(len(users))

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_lag > 5.0:
            self._last_lag = now
            for tp in self.consumer.position(
                    [TopicPartition(self.topic, p) for p in self.partitions]):
                _, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if tp.offset >= 0 and high >= 0:
                    LAG.labels(str(tp.partition)).set(max(high - tp.offset, 0))
        if now - self._last_log > _LOG_EVERY_S and self._stats["batches"]:
            s, self._stats = self._stats, defaultdict(int)
            n = max(s["commits"], 1)
            log.info("processed %d batches (%.1f ms each): %d records, %d users updated (%d "
                     "profiles changed), %d to the DLQ; %d commits (%.1f ms each on the loop: "
                     "encode %.1f, store %.1f; acks %.1f off it)", s["batches"],
                     1000 * s["busy_s"] / s["batches"], s["events"], s["users"],
                     s["profiles"], s["invalid"], s["commits"], 1000 * s["commit_s"] / n,
                     1000 * s["commit_encode_s"] / n, 1000 * s["commit_store_s"] / n,
                     1000 * s["commit_acks_s"] / n)
            self._last_log = now
