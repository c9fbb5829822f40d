"""Training data of a tenant: histories from the worker's state changelog or from an events file.

Both paths end in ``contracts.user_state.UserHistory`` objects built by the same aggregation the
nearline worker runs, so batch and nearline confidences are identical for the same events.

Temporal holdout: for each user with at least ``MIN_EVENTS_FOR_HOLDOUT`` events, the last
``fraction`` of their events by time are held out. Items that appear only in the held-out part
are the user's test items; train histories are aggregated from the earlier events alone. From
the changelog (where single events are gone) the items the user met last (``first_seen_ms``)
are held out: the same "items discovered later" that the file path measures.
"""

from __future__ import annotations

import csv
import json
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from recsys_stream.config import Config
from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.events import Event
from recsys_stream.contracts.keys import split_key
from recsys_stream.contracts.user_state import UserHistory
from recsys_stream.kafka import consumer, partitions_of

MIN_EVENTS_FOR_HOLDOUT = 5


def iter_events_file(path: str | Path, tenant: str | None = None) -> Iterator[Event]:
    """Events of a JSONL or CSV file.

    MovieLens ``ratings.csv`` (``userId,movieId,rating,timestamp`` in seconds) becomes rating
    events of ``tenant``; other files carry the ``recsys.v1.Interaction`` columns
    (``event_id,tenant,user_id,item_id,type,value,timestamp_ms``), ``tenant`` filling a missing one.
    """
    path = Path(path)
    with open(path, newline="") as f:
        if path.suffix in (".jsonl", ".json", ".ndjson"):
            for n, line in enumerate(f):
                if line.strip():
                    yield _event(json.loads(line), tenant, n)
            return
        reader = csv.DictReader(f)
        if reader.fieldnames and {"userId", "movieId", "rating"} <= set(reader.fieldnames):
            if not tenant:
                raise ValueError("a MovieLens file needs a tenant")
            for row in reader:
                yield Event(f"ml-{row['userId']}-{row['movieId']}-{row['timestamp']}", tenant,
                            row["userId"], row["movieId"], "rating", float(row["rating"]),
                            int(row["timestamp"]) * 1000)
            return
        for n, row in enumerate(reader):
            yield _event(row, tenant, n)


def _event(d: dict, tenant: str | None, n: int) -> Event:
    value = d.get("value")
    return Event(str(d.get("event_id") or f"line-{n}"), str(d.get("tenant") or tenant or ""),
                 str(d["user_id"]), str(d["item_id"]), str(d.get("type", "view")).lower(),
                 float(value) if value not in (None, "") else None, int(d["timestamp_ms"]))


@dataclass
class TenantData:
    """Everything the trainer needs of one tenant."""

    tenant: str
    histories: dict[str, UserHistory]                  # all data: the published model
    train: dict[str, UserHistory]                      # before the holdout cut
    test_items: dict[str, set[str]] = field(default_factory=dict)
    n_events: int = 0
    window: tuple[int, int] = (0, 0)                   # event time range, ms

    @property
    def event_count(self) -> int:
        return sum(h.event_count for h in self.histories.values())


def from_events(tenant: str, events: list[Event], settings: ConfidenceSettings, cap: int,
                fraction: float) -> TenantData:
    """Aggregate a tenant's events per user, with the temporal holdout."""
    by_user: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        if e.tenant == tenant:
            by_user[e.user_id].append(e)
    full, train, test = {}, {}, {}
    lo, hi = None, None
    for user, evs in by_user.items():
        evs.sort(key=lambda e: e.timestamp_ms)
        lo = evs[0].timestamp_ms if lo is None else min(lo, evs[0].timestamp_ms)
        hi = evs[-1].timestamp_ms if hi is None else max(hi, evs[-1].timestamp_ms)
        cut = len(evs) - int(round(len(evs) * fraction)) \
            if len(evs) >= MIN_EVENTS_FOR_HOLDOUT else len(evs)
        h = UserHistory(tenant, user)
        for i, e in enumerate(evs):
            h.apply(e.event_id, e.item_id, e.type, e.value, e.timestamp_ms, settings, cap)
            if i == cut - 1:
                train[user] = UserHistory.decode(h.encode())  # a copy at the cut
        full[user] = h
        if cut < len(evs):
            held = {e.item_id for e in evs[cut:]} - set(train[user].items)
            if held:
                test[user] = held
    n = sum(len(v) for v in by_user.values())
    return TenantData(tenant, full, train, test, n, (lo or 0, hi or 0))


def from_histories(tenant: str, histories: dict[str, UserHistory], fraction: float) -> TenantData:
    """The changelog path: hold out the items each user met most recently."""
    train, test = {}, {}
    times = [v[1] for h in histories.values() for v in h.items.values()]
    for user, h in histories.items():
        items = sorted(h.items.items(), key=lambda kv: kv[1][2])
        n_test = int(round(len(items) * fraction)) if len(items) >= MIN_EVENTS_FOR_HOLDOUT else 0
        t = UserHistory.decode(h.encode())
        if n_test:
            t.items = dict(items[:-n_test])
            test[user] = {i for i, _ in items[-n_test:]}
        train[user] = t
    return TenantData(tenant, histories, train, test,
                      sum(h.event_count for h in histories.values()),
                      (min(times, default=0), max(times, default=0)))


def read_changelog(cfg: Config, timeout_s: float = 30.0) -> dict[str, dict[str, UserHistory]]:
    """The latest state of every user on the changelog, by tenant, up to the end seen at start."""
    topic = cfg.topics.state_changelog
    cons = consumer(cfg, group_id=f"{cfg.kafka.topic_prefix}trainer-read")
    try:
        targets = {}
        for p in partitions_of(cfg, topic):
            _, high = cons.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > 0:
                targets[p] = high
        cons.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in targets])
        latest: dict[bytes, bytes] = {}
        deadline = time.monotonic() + timeout_s
        while targets:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took over {timeout_s}s")
            for m in cons.consume(10_000, timeout=0.5):
                if m.error():
                    continue
                latest[m.key()] = m.value()  # compacted topic: the last value per key wins
                if m.offset() + 1 >= targets.get(m.partition(), 0):
                    targets.pop(m.partition(), None)
    finally:
        cons.close()
    out: dict[str, dict[str, UserHistory]] = defaultdict(dict)
    for key, value in latest.items():
        tenant, user = split_key(key)
        out[tenant][user] = UserHistory.decode(value)
    return out


@dataclass
class Matrix:
    """Users x items confidences ``c = 1 + alpha*log1p(strength)`` (CSR, float32)."""

    user_ids: list[str]
    item_ids: list[str]
    C: sp.csr_matrix

    @property
    def item_row(self) -> dict[str, int]:
        return {i: n for n, i in enumerate(self.item_ids)}


def build_matrix(histories: dict[str, UserHistory], settings: ConfidenceSettings,
                 item_ids: list[str] | None = None) -> Matrix:
    """CSR of confidences; with ``item_ids`` the columns follow them (unknown items dropped)."""
    users = sorted(histories)
    if item_ids is None:
        item_ids = sorted({i for h in histories.values() for i in h.items})
    col = {i: n for n, i in enumerate(item_ids)}
    indptr, indices, data = [0], [], []
    for u in users:
        ids, c = histories[u].confidences(settings)
        keep = [(col[i], x) for i, x in zip(ids, c) if i in col]
        keep.sort()
        indices.extend(k for k, _ in keep)
        data.extend(x for _, x in keep)
        indptr.append(len(indices))
    C = sp.csr_matrix((np.array(data, dtype=np.float32), np.array(indices, dtype=np.int32),
                       np.array(indptr, dtype=np.int64)), shape=(len(users), len(item_ids)))
    return Matrix(users, list(item_ids), C)
