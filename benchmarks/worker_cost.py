"""What the nearline worker costs per event and per updated user, at paced rates, on Apache Kafka.

    OPENBLAS_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/worker_cost.py
        [--rates 1000,2000,5000] [--histories 10,50,500] [--seconds 6] [--items 50000]
        [--factors 64] [--broker kafka|tansu]

Setup: one broker (Apache Kafka from the project's jars by default), a published ALS model (so
every touched user is folded in) and ``recsys-stream worker`` as its own process, alone. For
each history length H a group of users is pre-filled to H distinct items each (pre-produced,
ingested as a backlog, not measured); then events are paced at each rate for ``--seconds`` from
that group's users (uniformly drawn; half the events repeat an item of the user's history, half
bring a new one; view/click/cart/purchase/like mixed as in the synthetic world). The group is
large enough that the paced events grow a history by a few items only.

Per (history, rate), from the start of pacing until the worker has committed every event:

- worker CPU (user + system of its process, ``psutil``) per event and per updated user; an
  updated user is one user whose state a micro-batch changed (the worker's
  ``recsys_worker_event_to_profile_seconds`` count: one observation per such user and batch);
- batches: their number, mean events and mean milliseconds (the worker's own histograms);
- lag: events produced but not yet committed by the worker (its RocksDB input offsets, read as
  a secondary), sampled every 0.2 s: mean and max (includes up to one commit interval);
- changelog: records and bytes (key + value) per event, read back from the topic.

Prints every figure with the machine's load; asserts nothing. Run it at two commits back to back
for a before/after comparison (the README's "Worker cost" section).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import TENANT, OffsetWatch, add_broker_arg, deployment, \
    encode_interaction, load_note, log, preproduce, publish_model, start_worker, \
    wait_for_state_dir  # noqa: E402
from benchmarks.freshness import paced_produce  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from recsys_stream.broker import free_port  # noqa: E402
from recsys_stream.kafka import TopicTail, consumer, partitions_of, watermarks  # noqa: E402
from recsys_stream.stack import wait_until  # noqa: E402
from recsys_stream.synthetic import _TYPES, make_world  # noqa: E402

# users per group: history length -> users (large enough that paced events barely grow them)
_GROUP_USERS = {10: 10_000, 50: 4_000, 500: 600}
_GROUP_BASE = 1_000_000  # user numbers of group g start at g * _GROUP_BASE


def scrape(port: int) -> dict[str, float]:
    """The worker's Prometheus series, ``name{labels}`` -> value (unlabelled names only)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


class ChangelogCount:
    """Records and key + value bytes of the state changelog, counted as they arrive."""

    def __init__(self, cfg) -> None:
        self.cfg, self.records, self.bytes = cfg, 0, 0
        self._cons = consumer(cfg, group_id="worker-cost-unused")
        self._lock = threading.Lock()
        self.tail = TopicTail(cfg, {cfg.topics.state_changelog: self._on},
                              name="worker-cost").start()

    def _on(self, m) -> None:
        with self._lock:
            self.records += 1
            self.bytes += len(m.key() or b"") + len(m.value() or b"")

    def end(self) -> int:
        """Records in the topic now (the sum of its partitions' high watermarks)."""
        topic = self.cfg.topics.state_changelog
        return sum(watermarks(self._cons, topic, p)[1] for p in partitions_of(self.cfg, topic))

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.records, self.bytes


def history_items(user: int, h: int, n_items: int) -> np.ndarray:
    """The ``h`` distinct item rows user ``user`` is pre-filled with."""
    return (user * 7919 + np.arange(h) * 13) % n_items


def prefill(dep, group: int, h: int, n_users: int, n_items: int, first_id: int) -> int:
    """Pre-produce ``h`` views of distinct items for each user of the group; returns events."""
    ids = make_world(TENANT, n_items).item_ids
    now = int(time.time() * 1000)
    span = 3_600_000
    total = n_users * h

    def records():
        j = 0
        for u in range(n_users):
            user = group * _GROUP_BASE + u
            for item in history_items(u, h, n_items):
                ts = now - span + j * span // total
                yield (*encode_interaction(first_id + j, user, ids[item], "view", ts), ts)
                j += 1
    return preproduce(dep.cfg, records(), total)


def paced_draws(group: int, h: int, n_users: int, n_items: int, n: int, seed: int):
    """Users, item rows and types of ``n`` paced events of the group (see the module doc)."""
    rng = np.random.default_rng(seed)
    u = rng.integers(0, n_users, n)
    repeat = rng.random(n) < 0.5
    own = (u * 7919 + rng.integers(0, h, n) * 13) % n_items
    items = np.where(repeat, own, rng.integers(0, n_items, n))
    return group * _GROUP_BASE + u, items, rng.choice(_TYPES, n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="1000,2000,5000")
    ap.add_argument("--histories", default="10,50,500")
    ap.add_argument("--seconds", type=float, default=6.0, help="paced seconds per rate")
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--factors", type=int, default=64)
    add_broker_arg(ap)
    ap.set_defaults(broker="kafka")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    histories = [int(h) for h in args.histories.split(",")]
    port = free_port()
    log(f"worker cost: histories {histories}, rates {rates}/s for {args.seconds:.0f}s each, "
        f"{args.items} items, f={args.factors}, broker {args.broker} ({load_note()})")
    rows = []
    with deployment(args.broker, worker_metrics_port=port) as dep:
        publish_model(dep.cfg, args.items, args.factors)
        worker = psutil.Process(start_worker(dep).pid)
        wait_for_state_dir(dep)
        watch = OffsetWatch(dep.cfg.worker.state_dir, dep.cfg.topics.interactions,
                            dep.workdir / "secondary")
        changelog = ChangelogCount(dep.cfg)
        item_ids = make_world(TENANT, args.items).item_ids
        produced = next_id = 0
        for g, h in enumerate(histories):
            n_users = _GROUP_USERS.get(h, max(600, 300_000 // h))
            n = prefill(dep, g, h, n_users, args.items, next_id)
            produced, next_id = produced + n, next_id + n
            wait_until(lambda: watch.committed() >= produced, 900, interval_s=0.5,
                       what="the pre-fill ingested", stack=dep.stack)
            log(f"pre-filled {n_users} users to {h} items ({load_note()})")
            for rate in rates:
                n = int(rate * args.seconds)
                users, items, types = paced_draws(g, h, n_users, args.items, n, seed=g * 7 + n)
                m0, c0 = scrape(port), changelog.snapshot()
                cpu0 = sum(worker.cpu_times()[:2])
                lags, stop = [], threading.Event()

                t0 = time.perf_counter()

                def sample(base=produced, t0=t0, n=n, rate=rate):
                    # events produced so far (the paced producer keeps to its rate) minus
                    # events committed by the worker
                    while not stop.wait(0.2):
                        due = min(n, int((time.perf_counter() - t0) * rate))
                        lags.append(max(base + due - watch.committed(), 0))
                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                sent = paced_produce(dep.cfg, rate, args.seconds, users, items, types,
                                     item_ids, first_id=next_id)
                produced, next_id = produced + len(sent), next_id + len(sent)
                wait_until(lambda: watch.committed() >= produced, 600, interval_s=0.05,
                           what="the paced events committed", stack=dep.stack)
                wall = time.perf_counter() - t0
                cpu = sum(worker.cpu_times()[:2]) - cpu0
                stop.set()
                sampler.join()
                m1 = scrape(port)
                # the changelog of the last commit is on the broker before its offsets commit:
                # count up to the topic's end (nothing is compacted away this soon)
                end = changelog.end()
                wait_until(lambda: changelog.snapshot()[0] >= end, 60, what="the changelog")
                c1 = changelog.snapshot()

                def delta(name):
                    return m1.get(name, 0.0) - m0.get(name, 0.0)
                users_upd = delta("recsys_worker_event_to_profile_seconds_count")
                batches = delta("recsys_worker_batch_size_count")
                row = dict(
                    history=h, rate=rate, events=len(sent), wall_s=wall, cpu_s=cpu,
                    us_per_event=1e6 * cpu / len(sent),
                    us_per_user=1e6 * cpu / max(users_upd, 1), users=users_upd,
                    batches=batches, batch_events=delta("recsys_worker_batch_size_sum")
                    / max(batches, 1),
                    batch_ms=1000 * delta("recsys_worker_batch_seconds_sum") / max(batches, 1),
                    commit_ms=1000 * delta("recsys_worker_commit_seconds_sum")
                    / max(delta("recsys_worker_commit_seconds_count"), 1),
                    lag_mean=float(np.mean(lags)) if lags else 0.0,
                    lag_max=max(lags, default=0),
                    cl_records=(c1[0] - c0[0]) / len(sent), cl_bytes=(c1[1] - c0[1]) / len(sent))
                rows.append(row)
                log(f"history {h:4d}, {rate:5.0f}/s: worker CPU {row['us_per_event']:6.1f} us "
                    f"per event, {row['us_per_user']:6.1f} us per updated user "
                    f"({users_upd:.0f} updates); {batches:.0f} batches of "
                    f"{row['batch_events']:.1f} events, {row['batch_ms']:.1f} ms; commits "
                    f"{row['commit_ms']:.1f} ms; lag mean {row['lag_mean']:.0f} max "
                    f"{row['lag_max']:.0f}; changelog {row['cl_records']:.3f} records, "
                    f"{row['cl_bytes']:.0f} B per event ({load_note()})")
        watch.close()
        changelog.tail.stop()
    print(f"\n{'history':>7} {'rate/s':>7} {'us/event':>9} {'us/user':>8} {'batch ev':>8} "
          f"{'batch ms':>8} {'lag mean':>8} {'lag max':>7} {'cl rec/ev':>9} {'cl B/ev':>8}")
    for r in rows:
        print(f"{r['history']:>7} {r['rate']:>7.0f} {r['us_per_event']:>9.1f} "
              f"{r['us_per_user']:>8.1f} {r['batch_events']:>8.1f} {r['batch_ms']:>8.1f} "
              f"{r['lag_mean']:>8.0f} {r['lag_max']:>7.0f} {r['cl_records']:>9.3f} "
              f"{r['cl_bytes']:>8.0f}")
    print(f"({load_note()})")


if __name__ == "__main__":
    main()
