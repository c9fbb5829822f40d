"""Item freshness at a steady event rate: a new item's ``min_item_users``-th user's event -> the
item's vector published, beside the user-side freshness (event -> profile) of the same run.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/item_freshness.py [--rate 5000] \\
        [--seconds 30] [--users 100000] [--items 50000] [--factors 64] [--new-share 0.02] \\
        [--launches-per-s 10] [--young-items 2000] [--young-share 0.02]

Setup as ``benchmarks/freshness.py`` (embedded broker, a published ALS model, ``recsys-stream
worker`` as its own process), plus ``recsys-stream items`` (the item fold-in stage) as its own
process. The paced producer sends ``--rate`` events/s of Zipf-skewed users; a ``--new-share`` of
them go to items the model does not know, ``--launches-per-s`` new items launching every
second (each new item draws its events in its launch second). Tails follow ``profiles`` and
``item-vectors``.

- user side: as ``freshness.py``, an event is fresh once the first profile of its user with
  ``last_event_ms >=`` its timestamp is published (that record's timestamp minus the event's);
- item side: for each new item, the timestamp of the event of its ``min_item_users``-th distinct
  user (3) that the worker can fold in (one with an earlier event on an item of the model), to
  the first ``item-vectors`` record of the item with 3 users (its record timestamp, set by the
  stage's producer; and the tail's receipt as a check).

- young items (issue 30): the model's last ``--young-items`` items are young (2-5 training users
  each, ``contracts.young_slice``) and a ``--young-share`` of the events go to them; a young item
  is due at its first event after warm-up (its user folds in on that very event: the item is
  the model's), to its first ``item-vectors`` record marked young.

Both are "published", not "served": the server follows both topics with the same tail (100 ms
fetch wait), so serving adds the same to each. The first second is warm-up and not counted.
Prints p50 / p90 / p99 of both and their ratio; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import TENANT, deployment, load_note, log, publish_model, \
    start_worker, zipf_draws  # noqa: E402
from benchmarks.freshness import ProfileTail, freshness, paced_produce  # noqa: E402

import numpy as np  # noqa: E402

from recsys_stream.contracts.keys import SEP  # noqa: E402
from recsys_stream.contracts.pb import items_pb2  # noqa: E402
from recsys_stream.kafka import TopicTail  # noqa: E402
from recsys_stream.stack import wait_until  # noqa: E402
from recsys_stream.synthetic import make_world  # noqa: E402

MIN_USERS = 3  # the configured default min_item_users


class VectorTail:
    """First ``item-vectors`` record per item: (record timestamp, receipt ms)."""

    def __init__(self, cfg) -> None:
        self.first: dict[str, tuple[int, int]] = {}
        self.young: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self.tail = TopicTail(cfg, {cfg.topics.item_vectors: self._on}, name="items").start()

    def _on(self, m) -> None:
        got = int(time.time() * 1000)
        if m.value() is None:
            return
        v = items_pb2.ItemVector.FromString(m.value())
        item = m.key().decode().split(SEP, 2)[2]
        with self._lock:
            if v.young:
                self.young.setdefault(item, (m.timestamp()[1], got))
            elif item not in self.first and v.users >= MIN_USERS:
                self.first[item] = (m.timestamp()[1], got)


def vectored(due: dict[str, int], got: dict, what: str, stack) -> dict[str, int]:
    """``due`` items once their vectors are in ``got`` (a minute at most); those that never
    get one are counted in the log and left out."""
    try:
        wait_until(lambda: len(set(due) & set(got)) == len(due), 60, interval_s=0.5,
                   what=f"every due {what} item's vector", stack=stack)
    except TimeoutError:
        log(f"{len(set(due) - set(got))} of {len(due)} due {what} items have no vector")
    return {i: ts for i, ts in due.items() if i in got}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--new-share", type=float, default=0.02)
    ap.add_argument("--launches-per-s", type=int, default=10)
    ap.add_argument("--young-items", type=int, default=2000)
    ap.add_argument("--young-share", type=float, default=0.02)
    args = ap.parse_args()
    n = int(args.rate * args.seconds)
    log(f"item freshness: {args.rate:.0f} events/s for {args.seconds:.0f}s, {args.users} users, "
        f"{args.items} items, f={args.factors}, {args.new_share:.0%} of events on "
        f"{args.launches_per_s} new items launched per second ({load_note()})")
    users, items, types = zipf_draws(n, args.users, args.items, args.zipf)
    rng = np.random.default_rng(7)
    new = np.flatnonzero(rng.random(n) < args.new_share)
    second = (new / args.rate).astype(int)
    new_item = second * args.launches_per_s + rng.integers(0, args.launches_per_s, len(new))
    items[new] = args.items + new_item
    on_young = np.flatnonzero((rng.random(n) < args.young_share) & ~np.isin(np.arange(n), new))
    items[on_young] = rng.integers(args.items - args.young_items, args.items, len(on_young))
    n_new = int(new_item.max()) + 1
    item_ids = np.concatenate([make_world(TENANT, args.items).item_ids,
                               np.array([f"new-{j}" for j in range(n_new)])])
    with deployment() as dep:
        publish_model(dep.cfg, args.items, args.factors, young_items=args.young_items)
        start_worker(dep)
        dep.stack.start("items", "items")
        tail, vectors = ProfileTail(dep.cfg), VectorTail(dep.cfg)
        warm = paced_produce(dep.cfg, 100, 0.1, users, items, types, item_ids, first_id=n)
        wait_until(lambda: tail.latest(warm[-1][0]) >= warm[-1][1], 120, what="the worker",
                   stack=dep.stack)
        sent = paced_produce(dep.cfg, args.rate, args.seconds, users, items, types, item_ids)
        last = {k: ts for k, ts in sent}
        wait_until(lambda: all(tail.latest(k) >= ts for k, ts in last.items()), 120,
                   interval_s=0.5, what="every event's profile", stack=dep.stack)
        # the min_item_users-th distinct user's event of every new item that has one; a user
        # counts once the worker can fold them in (an earlier event on an item of the model):
        # a user whose events are all on new items has no vector to give the item
        due: dict[str, int] = {}
        users_of: dict[str, set[int]] = defaultdict(set)
        foldable = np.zeros(args.users, bool)
        is_new = np.zeros(n, bool)
        is_new[new] = True
        for j in range(n):
            u = int(users[j])
            if not is_new[j]:
                foldable[u] = True
                continue
            item = str(item_ids[items[j]])
            if item in due or not foldable[u]:
                continue
            users_of[item].add(u)
            if len(users_of[item]) == MIN_USERS:
                due[item] = sent[j][1]
        start = sent[0][1] + 1000
        due = {i: ts for i, ts in due.items() if ts >= start}
        due = vectored(due, vectors.first, "new", dep.stack)
        young_due: dict[str, int] = {}
        for j in on_young:
            young_due.setdefault(str(item_ids[items[j]]), sent[j][1])
        young_due = vectored({i: ts for i, ts in young_due.items() if ts >= start},
                             vectors.young, "young", dep.stack)
        tail.tail.stop()
        vectors.tail.stop()
        for line in dep.stack.tail("worker", 200).splitlines():
            if "processed" in line:
                log("worker: " + line.split("processed", 1)[1].strip())
    pub, _ = freshness(sent, tail.seen, skip_ms=1000)
    item_pub = [vectors.first[i][0] - ts for i, ts in due.items()]
    item_got = [vectors.first[i][1] - ts for i, ts in due.items()]
    qu = np.percentile(pub, [50, 90, 99])
    log(f"user side (event -> profile record) over {len(pub)} events: p50 {qu[0]:.0f} ms, "
        f"p90 {qu[1]:.0f} ms, p99 {qu[2]:.0f} ms")
    for name, lat in (("item-vectors record", item_pub), ("tail receipt", item_got)):
        q = np.percentile(lat, [50, 90, 99])
        log(f"item side ({MIN_USERS}rd user's event -> {name}) over {len(lat)} new items: "
            f"p50 {q[0]:.0f} ms, p90 {q[1]:.0f} ms, p99 {q[2]:.0f} ms")
    young_pub = [vectors.young[i][0] - ts for i, ts in young_due.items()]
    if young_pub:
        q = np.percentile(young_pub, [50, 90, 99])
        log(f"young items (first event -> item-vectors record marked young) over "
            f"{len(young_pub)} young items: p50 {q[0]:.0f} ms, p90 {q[1]:.0f} ms, "
            f"p99 {q[2]:.0f} ms")
    qi = np.percentile(item_pub, [50, 99])
    log(f"item / user freshness: p50 {qi[0] / qu[0]:.2f}x, p99 {qi[1] / qu[2]:.2f}x "
        f"({load_note()})")
    if young_pub:
        qy = np.percentile(young_pub, [50, 99])
        log(f"young item / user freshness: p50 {qy[0] / qu[0]:.2f}x, p99 {qy[1] / qu[2]:.2f}x")


if __name__ == "__main__":
    main()
