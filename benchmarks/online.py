"""The online-evaluation stage's throughput: served answers and events in, counts committed.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/online.py [--rate 5000] [--seconds 20]
        [--backlog 200000] [--broker kafka|tansu]

1. Backlog: ``--backlog`` answers (10 items each) and as many click events (half with the
   answer's id) are produced first, then the stage (``recsys-stream online``, its own process)
   starts and the time until all are committed gives answers + events per second.
2. Paced: ``--rate`` answers/s plus ``--rate`` events/s for ``--seconds``; prints the stage's
   CPU (cores) and how far its committed offsets trailed the input each second (records).

The closed-loop simulation through the real server (ids on answers, experiments) is issue 29's
next part. Asserts nothing; prints figures next to the machine's load.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from benchmarks._common import TENANT, add_broker_arg, deployment, load_note, log  # noqa: E402
from recsys_stream.contracts.keys import make_key  # noqa: E402
from recsys_stream.contracts.pb import events_pb2, slates_pb2  # noqa: E402
from recsys_stream.kafka import produce_all, producer  # noqa: E402
from recsys_stream.online.store import OnlineStore  # noqa: E402

K = 10


def records(start: int, n: int, n_users: int, now_ms: int, seed: int):
    """(answers, events) of answers ``start..start+n``: each answer's user clicks one of its
    items, every other time with the answer's id."""
    rng = np.random.default_rng(seed + start)
    users = rng.integers(0, n_users, n)
    items = rng.integers(0, 5000, (n, K))
    answers, events = [], []
    for j in range(n):
        a, uid = start + j, f"u{users[j]}"
        key = make_key(TENANT, uid)
        slate = slates_pb2.ServedSlate(
            recommendation_id=f"r{a}", tenant=TENANT, user_id=uid, algorithm="als",
            model_version=1, source="NEARLINE", served_ms=now_ms, method="Recommend",
            items=[slates_pb2.ServedItem(item_id=f"i{i}", position=p)
                   for p, i in enumerate(items[j])])
        answers.append((key, slate.SerializeToString()))
        ev = events_pb2.Interaction(event_id=f"c{a}", tenant=TENANT, user_id=uid,
                                    item_id=f"i{items[j][a % K]}", type=events_pb2.CLICK,
                                    timestamp_ms=now_ms + 1,
                                    recommendation_id=f"r{a}" if a % 2 else "")
        events.append((key, ev.SerializeToString()))
    return answers, events


def committed(store_dir: str, cfg) -> int:
    try:
        store = OnlineStore(store_dir, read_only=True)
    except FileNotFoundError:
        return 0
    try:
        return sum(sum(store.offsets(t).values())
                   for t in (cfg.topics.recommendations, cfg.topics.interactions))
    finally:
        store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=5000, help="answers/s, and as many events/s")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--backlog", type=int, default=200_000)
    ap.add_argument("--users", type=int, default=50_000)
    add_broker_arg(ap)
    args = ap.parse_args()
    with deployment(args.broker) as dep, tempfile.TemporaryDirectory():
        cfg = dep.cfg
        state = cfg.online.state_dir
        prod = producer(cfg, **{"linger.ms": 20})
        now = int(time.time() * 1000)
        answers, events = records(0, args.backlog, args.users, now, 0)
        produce_all(prod, cfg.topics.recommendations, answers)
        produce_all(prod, cfg.topics.interactions, events)
        assert prod.flush(120) == 0
        total = 2 * args.backlog
        proc = dep.stack.start("online", "online")
        ps = psutil.Process(proc.pid)
        t0 = time.perf_counter()
        while committed(state, cfg) < total:
            dep.stack.check_alive()
            time.sleep(0.2)
        dt = time.perf_counter() - t0
        log(f"backlog: {total} records (answers + events) committed in {dt:.1f}s = "
            f"{total / dt:,.0f} records/s including start-up ({load_note()})")
        # paced
        sent, lags = total, []
        cpu0, t_start = ps.cpu_times(), time.perf_counter()
        per_tick = args.rate // 10
        n = args.backlog
        while time.perf_counter() - t_start < args.seconds:
            tick = time.perf_counter()
            a, e = records(n, per_tick, args.users, int(time.time() * 1000), 1)
            produce_all(prod, cfg.topics.recommendations, a)
            produce_all(prod, cfg.topics.interactions, e)
            prod.poll(0)
            n += per_tick
            sent += 2 * per_tick
            if int(tick - t_start) != int(tick - t_start - 0.1):
                lags.append(sent - committed(state, cfg))
            time.sleep(max(0.0, 0.1 - (time.perf_counter() - tick)))
        prod.flush(60)
        elapsed = time.perf_counter() - t_start
        cpu1 = ps.cpu_times()
        cores = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed
        log(f"paced: {args.rate} answers/s + {args.rate} events/s for {elapsed:.0f}s "
            f"(sent {(sent - total) / elapsed:,.0f} records/s): stage CPU {cores:.2f} cores; "
            f"records behind each second: median {int(np.median(lags))}, max {max(lags)} "
            f"(commit interval {cfg.online.commit_interval_ms} ms) ({load_note()})")
        t1 = time.perf_counter()
        while committed(state, cfg) < sent and time.perf_counter() - t1 < 60:
            time.sleep(0.2)
        log(f"caught up {time.perf_counter() - t1:.1f}s after the load stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
