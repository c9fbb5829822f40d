"""Resident memory of one worker process holding the state of many distinct users.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/worker_rss.py [--users 1000000]
        [--events 1200000] [--items 50000] [--factors 64]

Setup: the embedded broker, a published ALS model (so every batch folds in), and ``--events``
interactions pre-produced: the first ``--users`` visit every user once, the rest are Zipf-skewed.
``recsys-stream worker`` then runs as its own process until its RocksDB has committed every
offset. Prints the worker's RSS (psutil) at the end and the peak seen while ingesting (sampled
every 0.5 s), the number of users in its state, and the size of its RocksDB directory; asserts
nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import OffsetWatch, deployment, load_note, log, preproduce, \
    publish_model, rss_mb, start_worker, wait_for_state_dir, zipf_records  # noqa: E402

from recsys_stream.nearline.state import StateStore  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=1_200_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args()
    log(f"worker RSS: {args.events} events of {args.users} distinct users, {args.items} items, "
        f"f={args.factors} ({load_note()})")
    with deployment() as dep:
        publish_model(dep.cfg, args.items, args.factors)
        n = preproduce(dep.cfg, zipf_records(args.events, args.users, args.items,
                                             distinct_first=True), args.events)
        t0 = time.time()
        proc = start_worker(dep)
        wait_for_state_dir(dep)
        watch = OffsetWatch(dep.cfg.worker.state_dir, dep.cfg.topics.interactions,
                            dep.workdir / "secondary")
        peak, last_log = 0.0, t0
        try:
            while (done := watch.committed()) < n:
                dep.stack.check_alive()
                peak = max(peak, rss_mb(proc.pid))
                if time.time() - last_log > 15:
                    log(f"{done}/{n} committed, RSS {rss_mb(proc.pid):.0f} MB ({load_note()})")
                    last_log = time.time()
                if time.time() - t0 > args.timeout:
                    raise TimeoutError(f"worker committed {done}/{n} in {args.timeout}s")
                time.sleep(0.5)
            rss = rss_mb(proc.pid)
        finally:
            watch.close()
        elapsed = time.time() - t0
        dep.stack.stop("worker")
        store = StateStore(dep.cfg.worker.state_dir)
        n_users = sum(1 for _ in store.users())
        store.close()
        size = sum(f.stat().st_size for f in Path(dep.cfg.worker.state_dir).rglob("*")
                   if f.is_file())
    log(f"worker ingested {n} events in {elapsed:.0f}s; state holds {n_users} users, RocksDB "
        f"{size / 2**20:.0f} MB on disk")
    log(f"worker RSS with {n_users} users' state: {rss:.0f} MB at the end, peak {max(peak, rss):.0f}"
        f" MB ({load_note()})")


if __name__ == "__main__":
    main()
