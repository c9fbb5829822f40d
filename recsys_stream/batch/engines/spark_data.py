"""The Spark engine's data path: Spark tasks read and aggregate, the driver gets ids and samples.

Changelog: one task per partition of the worker's state changelog. Each task reads its
partition to the end with confluent-kafka (``kafka.read_to_end``), keeps the latest record per
key as compaction would (a tombstone deletes, the worker's offset markers are not users),
decodes each state with ``UserHistory.decode`` and splits it by the trainer's holdout
(``data.split_history``). Events file: Spark reads the lines, each task parses its lines with
the trainer's own parser (``data._event``; MovieLens mapped as ``data.iter_events_file`` does),
groups them by user, and replays each user through ``UserHistory.apply`` with the holdout
(``data.replay_user``). Either way the result is one record per user (:data:`USER_FIELDS`);
:func:`rating_rows` turns it into ``(tenant, user, item, r_full, r_train)`` rows with
``r = log1p(strength)``, the strengths decayed with the tenant's confidence settings.

A record that cannot be decoded is counted and skipped, as ``data.read_changelog`` does; when
no user state decodes at all, the engine's load fails with one line naming the first error.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from recsys_stream.batch.data import _MOVIELENS_COLUMNS, _event, replay_user, split_history
from recsys_stream.config import Config
from recsys_stream.contracts.events import ERASE, Event
from recsys_stream.contracts.keys import is_offset_marker, split_key
from recsys_stream.contracts.user_state import UserHistory
from recsys_stream.kafka import partitions_of, read_to_end

# One record per user: kind "user" (or "bad": a record that does not decode, then
# (kind, partition, offset, error)); full / train: encoded UserHistory (train None: the same);
# test: [(item, first held-out ms)]; lo / hi: event-time range; n_events: events behind it
# (file) or absorbed (changelog); event_count: events the history absorbed.
# Smallest rating handed to MLlib. A strength decayed to (about) 0 still counts in the project:
# c = 1, p = 1 (and lambda's item count). MLlib takes a rating <= 0 as p = 0 and leaves it out of
# n_u, so r is floored at a value that keeps c = 1 + alpha*r = 1 in float32 yet is > 0 (9,313
# of MovieLens' 80,672 train entries decay to 0 at a 30-day half-life).
R_MIN = 1e-30

USER_FIELDS = ("kind", "tenant", "user", "full", "train", "test", "lo", "hi", "n_events",
               "event_count", "n_full_items", "n_train_items")


def _record(tenant, user, full: UserHistory, full_bytes, train: UserHistory, first, n_events,
            lo=None, hi=None):
    if lo is None:
        times = [v[2] for v in full.items.values()] + [v[1] for v in full.items.values()]
        lo, hi = (min(times), max(times)) if times else (None, None)
    return ("user", tenant, user, full_bytes or full.encode(),
            None if train is full else train.encode(), sorted(first.items()), lo, hi,
            int(n_events), int(full.event_count), len(full.items), len(train.items))


def summary(rec: tuple) -> tuple:
    """What the driver collects of every user: (kind, tenant, user, has items, has test items,
    lo, hi, n_events, event_count, has train items); a "bad" record as it is."""
    if rec[0] != "user":
        return rec
    return ("user", rec[1], rec[2], rec[10] > 0, bool(rec[5]), rec[6], rec[7], rec[8], rec[9],
            rec[11] > 0)


def item_split_counts(row: tuple) -> tuple:
    """((tenant, item), (1 if in the train split, 1 if in all data)) of a rating row."""
    return (row[0], row[2]), (int(row[4] is not None), int(row[3] is not None))


def add_pairs(a: tuple, b: tuple) -> tuple:
    return a[0] + b[0], a[1] + b[1]


def merge_summaries(a: tuple, b: tuple) -> tuple:
    """(lo, hi, n_events, event_count) of two sets of users; lo / hi None: no items."""
    lo = b[0] if a[0] is None else a[0] if b[0] is None else min(a[0], b[0])
    hi = b[1] if a[1] is None else a[1] if b[1] is None else max(a[1], b[1])
    return lo, hi, a[2] + b[2], a[3] + b[3]


def changelog_records(spark, cfg: Config, tenants: list[str]):
    """RDD of per-user records of ``tenants``, one Spark task per changelog partition."""
    topic = cfg.topics.state_changelog
    parts = partitions_of(cfg, topic)
    wanted, frac, timeout = set(tenants), cfg.trainer.holdout_fraction, \
        cfg.trainer.spark.read_timeout_s

    def read(partitions):
        for p in partitions:
            latest: dict[bytes, tuple] = {}
            for m in read_to_end(cfg, topic, [p], timeout_s=timeout):
                k = m.key()
                if k is not None and not is_offset_marker(k):
                    latest[k] = (m.value(), m.offset())  # compacted: the last value wins
            for k, (v, offset) in latest.items():
                if v is None:
                    continue  # tombstone: the user's state was deleted
                try:
                    tenant, user = split_key(k)
                    h = UserHistory.decode(v)
                except Exception as e:  # counted by the driver; the rest still trains
                    yield ("bad", p, offset, f"{type(e).__name__}: {e}"[:200])
                    continue
                if tenant in wanted:
                    train, first = split_history(h, frac)
                    yield _record(tenant, user, h, v, train, first, h.event_count)
    return spark.sparkContext.parallelize(parts, max(len(parts), 1)).mapPartitions(read)


def file_records(spark, cfg: Config, tenants: list[str], path: str, file_tenant: str | None):
    """RDD of per-user records of ``tenants`` from a CSV / JSONL events file read by Spark.

    The file must be readable at ``path`` by every executor (a shared or local file system).
    """
    p = Path(path)
    with open(p, newline="") as f:  # the header only: the format is decided once
        header = f.readline()
    jsonl = p.suffix.lower() in (".jsonl", ".json", ".ndjson")
    fields = [] if jsonl else next(csv.reader([header]))
    movielens = not jsonl and _MOVIELENS_COLUMNS <= set(fields)
    if movielens and not file_tenant:
        raise ValueError(f"{p}: a MovieLens file needs a tenant")
    wanted = set(tenants)
    settings = {t: (cfg.tenant(t).confidence, cfg.tenant(t).history_cap) for t in tenants}
    frac = cfg.trainer.holdout_fraction

    def parse(pair):
        line, n = pair
        if (not jsonl and n == 0) or not line.strip():
            return []
        if jsonl:
            e = _event(json.loads(line), file_tenant, p, n + 1)
        else:
            row = dict(zip(fields, next(csv.reader([line]))))
            if movielens:
                u, m, ts = row["userId"], row["movieId"], row["timestamp"]
                e = Event(f"ml-{u}-{m}-{ts}", file_tenant, u, m, "rating",
                          float(row["rating"]), int(ts) * 1000)
            else:
                e = _event(row, file_tenant, p, n + 1)
        return [((e.tenant, e.user_id), (n, e))] if e.tenant in wanted else []

    def user(kv):
        (tenant, uid), evs = kv
        evs = [e for _, e in sorted(evs, key=lambda x: x[0])]  # file order: ties keep it
        # an erase line drops the user's earlier lines (batch.data.from_events alike)
        last = max((i for i, e in enumerate(evs) if e.type == ERASE), default=-1)
        evs = evs[last + 1:]
        if not evs:
            return []
        s, cap = settings[tenant]
        full, train, first = replay_user(tenant, uid, evs, s, cap, frac)
        ts = [e.timestamp_ms for e in evs]
        return [_record(tenant, uid, full, None, train, first, len(evs), min(ts), max(ts))]

    lines = spark.sparkContext.textFile(str(p.resolve())).zipWithIndex()
    return lines.flatMap(parse).groupByKey().flatMap(user)


def rating_rows(records, cfg: Config, tenants: list[str]):
    """``(tenant, user, item, r_full, r_train)`` rows of the user records, ``r = log1p(s)`` with
    ``s`` the item's strength decayed to the user's latest (train) event; ``r_train`` is None
    for items outside the train split.

    With Spark's ``implicitPrefs`` and ``alpha = α`` this is the project's confidence
    ``c = 1 + α·r = 1 + α·log1p(s)`` and ``p = 1`` for every item (``r >= R_MIN``).
    """
    settings = {t: cfg.tenant(t).confidence for t in tenants}

    def rows(rec):
        if rec[0] != "user":
            return
        _, tenant, uid, full_b, train_b, *_ = rec
        s = settings[tenant]
        full = UserHistory.decode(full_b)
        ids, st = full.strengths_now(s)
        r_full = dict(zip(ids, st.tolist()))
        if train_b is None:
            r_train = r_full
        else:
            tid, tst = UserHistory.decode(train_b).strengths_now(s)
            r_train = dict(zip(tid, tst.tolist()))
        for item in r_full.keys() | r_train.keys():
            f, t = r_full.get(item), r_train.get(item)
            yield (tenant, uid, item,
                   None if f is None else max(math.log1p(max(f, 0.0)), R_MIN),
                   None if t is None else max(math.log1p(max(t, 0.0)), R_MIN))
    return records.flatMap(rows)
