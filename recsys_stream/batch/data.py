"""Training data of a tenant: histories from the worker's state changelog or from an events file.

Both paths end in ``contracts.user_state.UserHistory`` objects built by the same aggregation the
nearline worker runs (``UserHistory.apply`` with the tenant's ``ConfidenceSettings`` and history
cap), so batch and nearline confidences are identical for the same events:

    strength_ui = sum_j weight(type_j) * decay(T_u - t_j)       (T_u = the user's latest event)
    c_ui        = 1 + alpha * log1p(strength_ui),   p_ui = 1

Temporal holdout: for each user with at least ``MIN_EVENTS_FOR_HOLDOUT`` events, the last
``fraction`` of their events by time are held out; users with fewer events keep everything in
train. The user's test items are the items of positive held-out events that are neither in the
train history nor hidden by the user; the train history is aggregated from the earlier events
alone (the same ``apply`` replay stopped at the cut). From the changelog, where single events are
gone, each item's ``first_seen_ms`` is its event time: the items a user met last are held out,
the same "items discovered later" the file path measures. (Holding out by ``last_seen_ms``
instead favours popular items, which are re-seen often and therefore seen late, and makes the
popularity baseline unbeatable for the wrong reason.)
"""

from __future__ import annotations

import csv
import json
import math
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from recsys_stream.config import Config
from recsys_stream.contracts.confidence import EVENT_TYPES, SUPPRESSING_TYPES, \
    ConfidenceSettings
from recsys_stream.contracts.events import ERASE, Event, erase_event
from recsys_stream.contracts.keys import is_offset_marker, split_key
from recsys_stream.contracts.user_state import UserHistory
from recsys_stream.kafka import consumer, read_to_end, watermarks

log = logging.getLogger(__name__)

# Users with fewer events (changelog: items) than this keep all of them in train.
MIN_EVENTS_FOR_HOLDOUT = 5
_MOVIELENS_COLUMNS = {"userId", "movieId", "rating", "timestamp"}


# -- event files ---------------------------------------------------------------------------------
def iter_events_file(path: str | Path, tenant: str | None = None) -> Iterator[Event]:
    """Events of a JSONL or CSV file, in file order.

    Parameters
    ----------
    path : str or Path
        MovieLens ``ratings.csv`` (``userId,movieId,rating,timestamp`` in seconds) becomes
        ``rating`` events of ``tenant`` (required) with ``timestamp_ms = timestamp * 1000`` and
        ``event_id = ml-<user>-<movie>-<timestamp>``. Any other CSV, and JSONL (``.jsonl``,
        ``.ndjson``, ``.json``: one object a line), carries the ``recsys.v1.Interaction``
        columns ``event_id,tenant,user_id,item_id,type,value,timestamp_ms``.
    tenant : str, optional
        Tenant of a MovieLens file; for other files it fills a missing ``tenant`` column.

    Raises
    ------
    ValueError
        A MovieLens file without ``tenant``, or a row with a missing field or an unknown type
        (the message names the file and line).
    """
    path = Path(path)
    with open(path, newline="") as f:
        if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
            for n, line in enumerate(f, start=1):
                if line.strip():
                    yield _event(json.loads(line), tenant, path, n)
            return
        reader = csv.DictReader(f)
        if reader.fieldnames and _MOVIELENS_COLUMNS <= set(reader.fieldnames):
            if not tenant:
                raise ValueError(f"{path}: a MovieLens file needs a tenant")
            for row in reader:
                u, m, ts = row["userId"], row["movieId"], row["timestamp"]
                yield Event(f"ml-{u}-{m}-{ts}", tenant, u, m, "rating", float(row["rating"]),
                            int(ts) * 1000)
            return
        for n, row in enumerate(reader, start=2):  # line 1 is the header
            yield _event(row, tenant, path, n)


def _event(d: dict, tenant: str | None, path: Path, line: int) -> Event:
    try:
        tname = str(d.get("type") or "view").strip().lower()
        if tname == ERASE:  # the user's earlier events of the file are never trained on
            user, t = str(d["user_id"]), str(d.get("tenant") or tenant or "")
            if not (t and user):
                raise ValueError("tenant and user_id must not be empty")
            return erase_event(t, user, int(d.get("timestamp_ms") or 1),
                               str(d.get("event_id") or f"{t}-{user}-erase"))
        if tname not in EVENT_TYPES:
            raise ValueError(f"unknown event type {tname!r}")
        value = d.get("value")
        value = float(value) if value not in (None, "") else None
        if value is not None and (not math.isfinite(value)
                                  or (value < 0 and tname not in SUPPRESSING_TYPES)):
            raise ValueError(f"value must be a finite magnitude >= 0, got {value!r}")
        user, item, ts = str(d["user_id"]), str(d["item_id"]), int(d["timestamp_ms"])
        t = str(d.get("tenant") or tenant or "")
        if not (t and user and item):
            raise ValueError("tenant, user_id and item_id must not be empty")
        # Without an id, one derived from the content: re-reading the file re-sends the same ids.
        eid = str(d.get("event_id") or f"{t}-{user}-{item}-{tname}-{ts}")
        return Event(eid, t, user, item, tname, value, ts)
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{path}:{line}: {type(e).__name__}: {e}") from None


# -- per-user histories and the holdout ----------------------------------------------------------
@dataclass
class TenantData:
    """Everything the trainer needs of one tenant.

    ``histories`` (all data) feed the published model, ``train`` (before each user's cut) the
    evaluated one; ``test_items`` are the held-out items per user and ``test_times`` the time
    each of them was first met in the holdout (user -> item -> ms): what tells which test items
    a model trained up to some time cannot have seen.
    """

    tenant: str
    histories: dict[str, UserHistory]
    train: dict[str, UserHistory]
    test_items: dict[str, set[str]] = field(default_factory=dict)
    n_events: int = 0
    window: tuple[int, int] = (0, 0)  # event time range, ms
    test_times: dict[str, dict[str, int]] = field(default_factory=dict)  # user -> item -> ms
    # explicit models: the latest held-out rating of each item the user did not rate in train
    test_ratings: dict[str, dict[str, float]] = field(default_factory=dict)  # user -> item -> r
    # users with an erase record in an events file (their earlier events are dropped); the
    # changelog needs none: an erased user has no state there
    erased: set[str] = field(default_factory=set)

    @property
    def event_count(self) -> int:
        """Events the histories have absorbed (what "new events since the last round" counts)."""
        return sum(h.event_count for h in self.histories.values())


def holdout_cut(n_events: int, fraction: float) -> int:
    """How many of a user's ``n_events`` (in time order) stay in train.

    All of them below ``MIN_EVENTS_FOR_HOLDOUT``; else all but the last
    ``round(n_events * fraction)``, and at least one.
    """
    n_test = int(round(n_events * fraction)) if n_events >= MIN_EVENTS_FOR_HOLDOUT else 0
    return n_events - min(n_test, n_events - 1)


def _copy(h: UserHistory) -> UserHistory:
    return UserHistory.decode(h.encode())


def replay_user(tenant: str, user: str, events: list[Event], settings: ConfidenceSettings,
                cap: int, fraction: float) -> tuple[UserHistory, UserHistory, dict[str, int]]:
    """One user's events (any order) through ``UserHistory.apply``, with the holdout.

    The events are replayed in time order (the given order among equal times); the train history
    is a copy taken at the cut. Returns the full history, the train history (the same object when
    nothing is held out) and the held-out test items with the time of each one's first held-out
    event.
    """
    evs = sorted(events, key=lambda e: e.timestamp_ms)
    cut = holdout_cut(len(evs), fraction)
    h, train = UserHistory(tenant, user), None
    for i, e in enumerate(evs):
        h.apply(e.event_id, e.item_id, e.type, e.value, e.timestamp_ms, settings, cap)
        if i == cut - 1:
            train = _copy(h) if cut < len(evs) else h
    first: dict[str, int] = {}
    if cut < len(evs):
        held = {e.item_id for e in evs[cut:] if e.type not in SUPPRESSING_TYPES}
        held -= set(train.items)
        held -= set(h.suppressed)  # hidden in the end: not something to recommend
        for e in evs[cut:]:  # in time order: the first held-out event of each item
            if e.item_id in held:
                first.setdefault(e.item_id, e.timestamp_ms)
    return h, train, first


def from_events(tenant: str, events: list[Event], settings: ConfidenceSettings, cap: int,
                fraction: float) -> TenantData:
    """Aggregate a tenant's events per user through ``UserHistory.apply``, with the holdout.

    Events of other tenants are ignored; each user is :func:`replay_user`. A test item's time
    is that of its first held-out event. An erase record (type ``erase``) drops the user's
    events before it in file order (the order of ``interactions``); the user is in ``erased``.
    """
    by_user: dict[str, list[Event]] = defaultdict(list)
    erased: set[str] = set()
    for e in events:
        if e.tenant == tenant:
            if e.type == ERASE:
                by_user.pop(e.user_id, None)
                erased.add(e.user_id)
            else:
                by_user[e.user_id].append(e)
    full, train, test, times, rated = {}, {}, {}, {}, {}
    lo = hi = None
    for user, evs in by_user.items():
        t0, t1 = min(e.timestamp_ms for e in evs), max(e.timestamp_ms for e in evs)
        lo, hi = (t0, t1) if lo is None else (min(lo, t0), max(hi, t1))
        full[user], train[user], first = replay_user(tenant, user, evs, settings, cap, fraction)
        if train[user] is not full[user]:
            # items first rated after the cut are the explicit test
            late = {i: v[0] for i, v in full[user].ratings.items()
                    if i not in train[user].ratings}
            if late:
                rated[user] = late
        if first:
            test[user], times[user] = set(first), first
    n = sum(len(v) for v in by_user.values())
    return TenantData(tenant, full, train, test, n, (lo or 0, hi or 0), times, rated, erased)


def split_history(h: UserHistory, fraction: float) -> tuple[UserHistory, dict[str, int]]:
    """The changelog's holdout of one user: the items met last (by ``first_seen_ms``) are held
    out. Returns the train history (``h`` itself when nothing is held out) and the test items
    with their ``first_seen_ms``."""
    items = sorted(h.items.items(), key=lambda kv: kv[1][2])  # stable: ties keep order
    n_test = int(round(len(items) * fraction)) if len(items) >= MIN_EVENTS_FOR_HOLDOUT else 0
    n_test = min(n_test, len(items) - 1)
    if n_test <= 0:
        return h, {}
    t = _copy(h)
    t.items = dict(items[:-n_test])
    # decay refers to the latest train event, as a replay stopped at the cut would
    t.last_event_ms = max(v[1] for v in t.items.values())
    test = {i: v[2] for i, v in items[-n_test:]}
    # the held-out items' ratings are the explicit test; the rest stay in train
    t.ratings = {i: v for i, v in h.ratings.items() if i not in test}
    return t, test


def history_window(h: UserHistory) -> tuple[int, int] | None:
    """(earliest first_seen_ms, latest last_seen_ms) of a history's items; None without any."""
    if not h.items:
        return None
    return min(v[2] for v in h.items.values()), max(v[1] for v in h.items.values())


def from_histories(tenant: str, histories: dict[str, UserHistory],
                   fraction: float) -> TenantData:
    """The changelog path: hold out the items each user met last (:func:`split_history`).

    A test item's time is its ``first_seen_ms``: the item is not in the train history, so its
    first sighting is its first held-out event.
    """
    train, test, times, rated = {}, {}, {}, {}
    lo = hi = None
    for user, h in histories.items():
        w = history_window(h)
        if w:
            lo, hi = w if lo is None else (min(lo, w[0]), max(hi, w[1]))
        train[user], first = split_history(h, fraction)
        if first:
            test[user], times[user] = set(first), first
            late = {i: h.ratings[i][0] for i in first if i in h.ratings}
            if late:
                rated[user] = late
    return TenantData(tenant, histories, train, test,
                      sum(h.event_count for h in histories.values()), (lo or 0, hi or 0), times,
                      rated)


# -- the worker's state changelog ----------------------------------------------------------------
class ChangelogReader:
    """The latest state of every user on the changelog, kept between training rounds.

    The first ``read()`` reads every partition from its beginning; later ones only what was
    appended since the offsets the last one reached, and decode only the users it changed.
    A periodic trainer's read then costs what the worker wrote since the last round, not the
    whole uncompacted head of the topic again (the soak's rounds took 4, 8, 16, 18 s on tansu,
    which never compacts, re-reading from the start) -- or, where the worker appended more
    records since than the partition's last read from the start took, that read again
    (``_plan``): a round costs the smaller of the two. The copy lives in the trainer's memory,
    the size of the compacted topic: a restarted trainer reads the topic once from its start,
    which compaction keeps near users x state size, so a file of it would buy little.

    The topic is compacted: the last value per key wins, a tombstone deletes the user, and the
    worker's offset markers are not users. A partition whose records come back below the
    offset asked for (recreated, or truncated) is forgotten and taken as read from there.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.next_offset: dict[int, int] = {}
        self._raw: dict[int, dict[bytes, bytes | None]] = defaultdict(dict)
        self._decoded: dict[bytes, tuple[str, str, UserHistory]] = {}
        self.last_records = 0  # records the last read() consumed
        self._full_records: dict[int, int] = {}  # records of each partition's last full read

    def read(self, timeout_s: float = 60.0, progress: bool = False
             ) -> dict[str, dict[str, UserHistory]]:
        """Read what is new (everything, the first time) and return every user's state.

        Raises
        ------
        TimeoutError
            When the end of every partition is not reached within ``timeout_s``.
        """
        topic = self.cfg.topics.state_changelog
        t0, n = time.perf_counter(), 0
        changed: set[bytes] = set()
        asked = self._plan(changed)
        per_partition: dict[int, int] = defaultdict(int)
        # a counting bar: tansu's high watermarks are unreliable, so there is no honest total
        for m in tqdm(read_to_end(self.cfg, topic, timeout_s=timeout_s, start_at=asked),
                      desc="state changelog", unit="record", disable=not progress):
            p, key = m.partition(), m.key()
            if p in asked and m.offset() < asked[p]:
                log.warning("%s[%d] restarted below offset %d: re-reading it", topic, p, asked[p])
                for k in self._raw.pop(p, {}):
                    self._decoded.pop(k, None)
                    changed.add(k)
                del asked[p]
            self.next_offset[p] = m.offset() + 1
            n += 1
            per_partition[p] += 1
            if key is not None and not is_offset_marker(key):
                self._raw[p][key] = m.value()  # compacted: the last value per key wins
                changed.add(key)
        for p, count in per_partition.items():
            if p not in asked:
                self._full_records[p] = count
        bad = self._decode(changed)
        if bad:
            log.warning("%s: %d undecodable records skipped", topic, bad)
        out: dict[str, dict[str, UserHistory]] = defaultdict(dict)
        for tenant, user, h in self._decoded.values():
            out[tenant][user] = h
        self.last_records = n
        mode = ("incremental" if asked and len(asked) == len(self.next_offset) else
                "from the start" if not asked else
                f"incremental in {len(asked)} of {len(self.next_offset)} partitions")
        log.info("read %d changelog records (%s) in %.1fs: %d user states of %d tenants",
                 n, mode, time.perf_counter() - t0,
                 sum(map(len, out.values())), len(out))
        return out

    def _plan(self, changed: set[bytes]) -> dict[int, int]:
        """Where to start each partition: after what was read, unless more was appended since
        than a read from the start took (the worker rewrites a user's whole state per batch,
        so between rounds the appended versions can outweigh the compacted topic: in the soak,
        5 minutes at 2k events/s appended more records than the whole compacted partition
        held). Such a partition is forgotten and read from its start."""
        if not self.next_offset:
            return {}
        asked = dict(self.next_offset)
        cons = consumer(self.cfg, group_id=f"{self.cfg.kafka.topic_prefix}trainer-plan-unused")
        try:
            for p, start in list(asked.items()):
                _, high = watermarks(cons, self.cfg.topics.state_changelog, p)
                if p in self._full_records and high - start > self._full_records[p]:
                    for k in self._raw.pop(p, {}):
                        self._decoded.pop(k, None)
                        changed.add(k)
                    del asked[p]
        finally:
            cons.close()
        return asked

    def _decode(self, keys: set[bytes]) -> int:
        """Decode the latest value of ``keys``; returns how many were undecodable."""
        bad = 0
        for key in keys:
            value = next((part[key] for part in self._raw.values() if key in part), None)
            if value is None:
                self._decoded.pop(key, None)  # tombstone (or forgotten): deleted
                continue
            try:
                self._decoded[key] = (*split_key(key), UserHistory.decode(value))
            except Exception:  # a corrupt record must not stop training of everyone else
                self._decoded.pop(key, None)
                bad += 1
        return bad


def read_changelog(cfg: Config, timeout_s: float = 60.0,
                   progress: bool = False) -> dict[str, dict[str, UserHistory]]:
    """The latest state of every user on the changelog, by tenant, read from the start
    (``ChangelogReader`` keeps it between reads)."""
    return ChangelogReader(cfg).read(timeout_s, progress)


# -- matrices ------------------------------------------------------------------------------------
@dataclass
class Matrix:
    """A tenant's users x items confidences ``c = 1 + alpha*log1p(strength)`` (CSR, float32).

    ``event_counts[u]`` is how many events user row ``u`` absorbed.
    """

    user_ids: list[str]
    item_ids: list[str]
    C: sp.csr_matrix
    event_counts: np.ndarray | None = None

    @property
    def item_row(self) -> dict[str, int]:
        return {i: n for n, i in enumerate(self.item_ids)}

    @property
    def popularity(self) -> np.ndarray:
        """Users who interacted with each item (the popularity baseline and fallback)."""
        return np.bincount(self.C.indices, minlength=self.C.shape[1]).astype(np.float32)


def build_matrix(histories: dict[str, UserHistory], settings: ConfidenceSettings,
                 item_ids: list[str] | None = None) -> Matrix:
    """CSR of confidences, rows = users sorted by id, columns = items sorted by id.

    With ``item_ids`` the columns follow them and unknown items are dropped.
    """
    users = sorted(histories)
    if item_ids is None:
        item_ids = sorted({i for h in histories.values() for i in h.items})
    col = {i: n for n, i in enumerate(item_ids)}
    indptr = np.zeros(len(users) + 1, dtype=np.int64)
    indices, data = [], []
    for n, u in enumerate(users):
        ids, c = histories[u].confidences(settings)
        cols = np.fromiter((col.get(i, -1) for i in ids), np.int64, len(ids))
        keep = cols >= 0
        cols, c = cols[keep], c[keep]
        order = np.argsort(cols)
        indices.append(cols[order])
        data.append(c[order])
        indptr[n + 1] = indptr[n] + len(order)
    C = sp.csr_matrix((np.concatenate(data).astype(np.float32) if data else
                       np.zeros(0, np.float32),
                       np.concatenate(indices).astype(np.int32) if indices else
                       np.zeros(0, np.int32), indptr), shape=(len(users), len(item_ids)))
    counts = np.array([histories[u].event_count for u in users], dtype=np.int64)
    return Matrix(users, list(item_ids), C, counts)
