"""Freshness of the nearline worker at a steady event rate: event produced -> profile published.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/freshness.py [--rate 5000] [--seconds 30]
        [--users 100000] [--items 50000] [--factors 64] [--broker tansu|kafka]

Setup: the embedded broker, a published ALS model (so every batch folds in) and
``recsys-stream worker`` as its own process. A paced producer sends ``--rate`` events/s of
Zipf-skewed users for ``--seconds``; each event's ``timestamp_ms`` is its Kafka message
timestamp (set at ``produce``). A tail consumer follows the profiles topic. An event is fresh
once the first profile of its user with ``last_event_ms >= `` its timestamp is published; its
freshness is that profile record's timestamp (set by the worker's producer) minus the event's,
and, as a check, the tail's receipt time minus the event's. The first second is warm-up and not
counted. Prints the worker's 5-second batch summaries (batches, mean time per batch) and
p50/p90/p99/max; then the broker's own produce -> consume latency at the same rate (the floor
the worker adds to) and the ratio of the two p99s; asserts nothing.
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

from benchmarks._common import TENANT, add_broker_arg, deployment, encode_interaction, load_note, log, \
    publish_model, start_worker, zipf_draws  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from recsys_stream.contracts.pb import profiles_pb2  # noqa: E402
from recsys_stream.kafka import TopicTail, producer  # noqa: E402
from recsys_stream.stack import wait_until  # noqa: E402
from recsys_stream.synthetic import make_world  # noqa: E402

_TICK_S = 0.005


class ProfileTail:
    """Every profile seen: per key, ``(last_event_ms, record timestamp, receipt ms)``."""

    def __init__(self, cfg) -> None:
        self.seen: dict[bytes, list[tuple[int, int, int]]] = defaultdict(list)
        self._lock = threading.Lock()
        self.tail = TopicTail(cfg, {cfg.topics.profiles: self._on}, name="freshness").start()

    def _on(self, m) -> None:
        got = int(time.time() * 1000)
        last = profiles_pb2.UserProfile.FromString(m.value()).last_event_ms
        with self._lock:
            self.seen[m.key()].append((last, m.timestamp()[1], got))

    def latest(self, key: bytes) -> int:
        with self._lock:
            return max((s[0] for s in self.seen.get(key, ())), default=0)


def paced_produce(cfg, rate: float, seconds: float, users, items, types, item_ids,
                  first_id: int = 0) -> list[tuple[bytes, int]]:
    """Send events at ``rate``/s in ticks of 5 ms; returns (key, timestamp_ms) of each.

    Event ids start at ``first_id`` (an id seen before would be skipped as re-sent)."""
    prod = producer(cfg)
    sent, j, t0 = [], 0, time.perf_counter()
    n = int(rate * seconds)
    while j < n:
        due = min(n, int((time.perf_counter() - t0) * rate))
        while j < due:
            ts = int(time.time() * 1000)
            key, value = encode_interaction(first_id + j, users[j], item_ids[items[j]], types[j], ts)
            prod.produce(cfg.topics.interactions, key=key, value=value, timestamp=ts)
            sent.append((key, ts))
            j += 1
        prod.poll(0)
        time.sleep(_TICK_S)
    prod.flush(30)
    elapsed = time.perf_counter() - t0
    log(f"produced {n} events in {elapsed:.1f}s = {n / elapsed:,.0f} events/s ({load_note()})")
    return sent


def broker_floor(cfg, rate: float, seconds: float) -> list[int]:
    """The broker's own produce -> consume latency at ``rate``: the same producer settings
    and the same consumer fetch wait as the worker's, through a scratch topic, no worker in
    between. Returns each record's receipt time minus its timestamp (ms)."""
    from confluent_kafka.admin import NewTopic

    from recsys_stream.kafka import admin, partitions_of
    topic = cfg.topics.prefix + "floor"
    client = admin(cfg)  # held until the topic exists: a dropped client fails its futures
    client.create_topics([NewTopic(topic, cfg.kafka.interaction_partitions, 1)])[topic].result()
    partitions_of(cfg, topic)  # every partition has its leader
    lat: list[int] = []
    tail = TopicTail(cfg, {topic: lambda m: lat.append(int(time.time() * 1000)
                                                        - m.timestamp()[1])},
                     name="floor").start()
    prod = producer(cfg)
    j, n, t0 = 0, int(rate * seconds), time.perf_counter()
    while j < n:
        due = min(n, int((time.perf_counter() - t0) * rate))
        while j < due:
            prod.produce(topic, key=str(j % 10_000).encode(), value=b"x" * 60,
                         timestamp=int(time.time() * 1000))
            j += 1
        prod.poll(0)
        time.sleep(_TICK_S)
    prod.flush(30)
    wait_until(lambda: len(lat) >= n, 60, what="the floor records")
    tail.stop()
    return lat[int(rate):]  # the first second is warm-up, as for the worker


def freshness(sent: list[tuple[bytes, int]], seen: dict, skip_ms: int) -> tuple[list, list]:
    """Per event: (profile timestamp - event timestamp, receipt - event timestamp) in ms."""
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for key, ts in sent:
        by_key[key].append(ts)
    start = sent[0][1] + skip_ms
    pub, got, missing = [], [], 0
    for key, stamps in by_key.items():
        profiles = seen.get(key, [])
        for ts in stamps:
            if ts < start:
                continue
            first = next((p for p in profiles if p[0] >= ts), None)
            if first is None:
                missing += 1
                continue
            pub.append(first[1] - ts)
            got.append(first[2] - ts)
    if missing:
        log(f"{missing} events never reached a profile")
    return pub, got


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--zipf", type=float, default=1.0)
    add_broker_arg(ap)
    args = ap.parse_args()
    n = int(args.rate * args.seconds)
    log(f"freshness: {args.rate:.0f} events/s for {args.seconds:.0f}s, {args.users} users (Zipf "
        f"{args.zipf}), {args.items} items, f={args.factors}, broker {args.broker} "
        f"({load_note()})")
    users, items, types = zipf_draws(n, args.users, args.items, args.zipf)
    item_ids = make_world(TENANT, args.items).item_ids
    with deployment(args.broker) as dep:
        publish_model(dep.cfg, args.items, args.factors)
        worker = psutil.Process(start_worker(dep).pid)
        tail = ProfileTail(dep.cfg)
        # warm-up: one event through the whole path, so the worker is assigned and folding in
        warm = paced_produce(dep.cfg, 100, 0.1, users, items, types, item_ids, first_id=n)
        wait_until(lambda: tail.latest(warm[-1][0]) >= warm[-1][1], 120, what="the worker",
                   stack=dep.stack)
        # who uses the 2 cores while paced: the worker, the broker, and this process (the
        # paced producer and the tail that parses every profile)
        procs = {"worker": worker, "broker": psutil.Process(dep.broker.pid),
                 "producer + tail": psutil.Process()}
        cpu0, t0 = {n: sum(p.cpu_times()[:2]) for n, p in procs.items()}, time.time()
        sent = paced_produce(dep.cfg, args.rate, args.seconds, users, items, types, item_ids)
        busy = {n: (sum(p.cpu_times()[:2]) - cpu0[n]) / (time.time() - t0)
                for n, p in procs.items()}
        last = {k: ts for k, ts in sent}
        wait_until(lambda: all(tail.latest(k) >= ts for k, ts in last.items()), 120,
                   interval_s=0.5, what="every event's profile", stack=dep.stack)
        log("CPU while paced, in cores: " + ", ".join(f"{n} {b:.2f}" for n, b in busy.items())
            + f" ({load_note()})")
        for line in dep.stack.tail("worker", 200).splitlines():  # its 5-second batch summaries
            if "processed" in line:
                log("worker: " + line.split("processed", 1)[1].strip())
        tail.tail.stop()
        floor = broker_floor(dep.cfg, args.rate, min(args.seconds, 15.0))
    pub, got = freshness(sent, tail.seen, skip_ms=1000)
    fq = np.percentile(floor, [50, 90, 99, 100])
    log(f"broker floor ({args.broker}) produce -> consume at {args.rate:.0f}/s over {len(floor)} "
        f"records: p50 {fq[0]:.0f} ms, p90 {fq[1]:.0f} ms, p99 {fq[2]:.0f} ms, max {fq[3]:.0f} ms")
    for name, lat in (("profile record timestamp", pub), ("tail receipt", got)):
        q = np.percentile(lat, [50, 90, 99, 100])
        log(f"freshness to {name} over {len(lat)} events: p50 {q[0]:.0f} ms, p90 {q[1]:.0f} ms, "
            f"p99 {q[2]:.0f} ms, max {q[3]:.0f} ms ({load_note()})")
    q99 = np.percentile(pub, 99)
    log(f"event -> profile p99 / broker floor p99 = {q99:.0f} / {fq[2]:.0f} ms = "
        f"{q99 / max(fq[2], 1):.1f}x (target <= 5x) on {args.broker}")


if __name__ == "__main__":
    main()
