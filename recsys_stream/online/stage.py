"""The online-evaluation stage's loop: served answers and interactions in, counters out.

One consumer reads both ``recommendations`` and ``interactions``. Both are keyed by
``tenant \\x1f user`` and have ``kafka.interaction_partitions`` partitions, so a user's answers
and events share a partition number; the range assignor gives partition p of both topics to
the same stage process (Kafka Streams' co-partitioning), and every user's state is local.

Per micro-batch, records are applied in the order received to the users' attribution states
(:mod:`recsys_stream.online.attribution`); counter deltas accumulate in memory. Every
``online.commit_interval_ms`` the states, the counters and both topics' next offsets are written
in one RocksDB ``WriteBatch`` (:mod:`recsys_stream.online.store`): a kill -9 replays at most
one interval, from offsets that match the state, and nothing is counted twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from google.protobuf.message import DecodeError

from recsys_stream.config import Config
from recsys_stream.contracts.events import ERASE, IMPRESSION, InvalidEvent, decode_event, \
    recommendation_id_of
from recsys_stream.contracts.keys import make_key
from recsys_stream.contracts.pb import slates_pb2
from recsys_stream.kafka import consume_ready
from recsys_stream.online.attribution import UserAttribution
from recsys_stream.online.metrics import ATTRIBUTED, COUNTED, RECORDS
from recsys_stream.online.store import OnlineStore
from recsys_stream.process import PartitionOwner

log = logging.getLogger(__name__)


class OnlineStage(PartitionOwner):
    """One stage process's loop over its partitions of both topics."""

    def __init__(self, cfg: Config, store: OnlineStore, consumer: Consumer) -> None:
        self.cfg, self.store, self.consumer = cfg, store, consumer
        self.topics = (cfg.topics.recommendations, cfg.topics.interactions)
        self.partitions: list[int] = []
        self._dirty: dict[bytes, UserAttribution] = {}
        self._deltas: Counter = Counter()
        self._moments: Counter = Counter()  # per-user test sums (UserAttribution.user_moments)
        self._offsets: dict[tuple[str, int], int] = {}
        self._erased: set[bytes] = set()  # users erased since the commit (purged after it)
        self._last_commit = time.monotonic()
        self.last_poll = time.monotonic()
        self._rating_scales = {t: (tc.rating_min, tc.rating_max)
                               for t, tc in cfg.tenants.items()}

    # -- assignment ------------------------------------------------------------------------
    def assign(self) -> None:
        self.assign_inputs(self.topics, self.cfg.online.partitions)

    def _positions(self, partitions: list[int]) -> list[TopicPartition]:
        self.partitions = sorted(set(partitions))
        out = []
        for topic in self.topics:
            stored = self.store.offsets(topic)
            out += [TopicPartition(topic, p, stored.get(p) or OFFSET_BEGINNING)
                    for p in self.partitions]
        log.info("online stage: took partitions %s", self.partitions)
        return out

    # -- the loop --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self.assign()
        oc = self.cfg.online
        while not stop.is_set():
            self.last_poll = time.monotonic()
            msgs = [m for m in consume_ready(self.consumer, oc.batch_max_events,
                                             oc.batch_timeout_ms / 1000) if not m.error()]
            if msgs:
                self.process(msgs)
            if self._offsets and (time.monotonic() - self._last_commit
                                  >= oc.commit_interval_ms / 1000):
                self.commit()
        self.commit()

    def process(self, msgs: list[Message]) -> None:
        """Apply one micro-batch to the users' states, in the order received."""
        keys = {m.key() for m in msgs if m.key()}
        states = {k: self._dirty[k] for k in keys if k in self._dirty}
        states.update(self.store.users([k for k in keys if k not in states]))
        now = int(time.time() * 1000)
        for m in msgs:
            tp = (m.topic(), m.partition())
            self._offsets[tp] = max(self._offsets.get(tp, 0), m.offset() + 1)
            # this record's counter deltas apart first: they move its user's experiment totals
            total, self._deltas = self._deltas, Counter()
            if m.topic() == self.cfg.topics.recommendations:
                key = self._served(m, states)
            else:
                key = self._acted(m, states, now)
            counts, self._deltas = self._deltas, total
            if counts:
                total.update(counts)
                if key is not None and key in states:
                    states[key].user_moments(counts, self._moments)

    def _served(self, m: Message, states: dict[bytes, UserAttribution]) -> bytes | None:
        try:
            slate = slates_pb2.ServedSlate.FromString(m.value() or b"")
        except DecodeError:
            RECORDS.labels("undecodable").inc()
            return
        tc = self.cfg.tenants.get(slate.tenant)
        # an answer with no user or session (SimilarItems) is logged under its own id
        key = make_key(slate.tenant, slate.user_id or slate.recommendation_id)
        if tc is None or not slate.recommendation_id or key != m.key():
            RECORDS.labels("invalid").inc()  # the server writes these: a bug, not input
            return
        st = states.setdefault(key, UserAttribution())
        st.served(slate, int(tc.attribution_window_s * 1000), self._deltas)
        self._dirty[key] = st
        RECORDS.labels("served").inc()
        return key

    def _acted(self, m: Message, states: dict[bytes, UserAttribution],
               now: int) -> bytes | None:
        wc = self.cfg.worker
        try:
            e = decode_event(m.key(), m.value(), self.cfg.tenants, now, wc.max_future_ms,
                             wc.max_past_ms, self._rating_scales)
        except InvalidEvent:
            RECORDS.labels("invalid").inc()  # the worker dead-letters it
            return
        if e.type == ERASE:  # the user's answers and pending events go; the counters stay
            states[e.key] = self._dirty[e.key] = UserAttribution()  # empty: deleted at commit
            self._erased.add(e.key)
            RECORDS.labels("erased").inc()
            return
        tc = self.cfg.tenants[e.tenant]
        rec_id = recommendation_id_of(m.value())
        if e.type == IMPRESSION:
            if not rec_id:  # which answer it was shown in is unknown: nothing to count
                RECORDS.labels("other").inc()
                return
            st = states.setdefault(e.key, UserAttribution())
            st.shown(rec_id, e.item_id, e.timestamp_ms, int(tc.attribution_window_s * 1000),
                     self._deltas)
            self._dirty[e.key] = st
            RECORDS.labels("impression").inc()
            return e.key
        kind = "clicks" if e.type in tc.click_types else \
            "conversions" if e.type in tc.conversion_types else None
        if kind is None:
            RECORDS.labels("other").inc()
            return
        st = states.setdefault(e.key, UserAttribution())
        outcome = st.acted(rec_id, e.item_id, kind, e.timestamp_ms,
                           int(tc.attribution_window_s * 1000), self._deltas)
        self._dirty[e.key] = st
        ATTRIBUTED.labels(e.tenant, outcome).inc()
        RECORDS.labels("positive").inc()
        return e.key

    def commit(self) -> None:
        """Make everything applied so far durable; metrics count what was committed."""
        self._last_commit = time.monotonic()
        if not self._offsets and not self._dirty:
            return
        deltas = self._deltas
        self.store.commit(self._dirty, deltas, self._offsets, sorted(self._erased),
                          self._moments)
        # committed: nothing of it may be written again, whatever follows
        self._dirty, self._deltas, self._offsets = {}, Counter(), {}
        self._moments = Counter()
        if self._erased:
            self.store.purge(sorted(self._erased))
            self._erased.clear()
        for (dims, kind), n in deltas.items():
            if not n:
                continue
            _, tenant, algorithm, version, source, experiment, arm, _, _ = dims
            # a Prometheus counter only grows: served impressions that reported ones replace
            # are counted apart (impressions - impressions_withdrawn = the report's figure)
            COUNTED.labels(tenant, algorithm, str(version), source, experiment, arm,
                           kind if n > 0 else f"{kind}_withdrawn").inc(abs(n))

    def health(self) -> dict:
        stalled = time.monotonic() - self.last_poll > 30
        return {"status": "stalled" if stalled else "ok", "partitions": self.partitions}
