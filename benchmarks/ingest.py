"""Ingest throughput of one nearline worker process, end to end through the embedded broker, and
of a Faust agent doing the same aggregation and fold-in.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/ingest.py [--events 1000000]
        [--users 100000] [--items 50000] [--factors 64] [--zipf 1.0] [--no-faust]
        [--broker tansu|kafka]

Setup: the embedded broker; a published ALS model (``--items`` x ``--factors``) for the tenant,
so every micro-batch folds in; ``--events`` interactions of ``--users`` Zipf-skewed users
pre-produced to the interactions topic. Then ``recsys-stream worker`` is started as its own
process (as ``recsys_stream.stack`` starts it) and timed until its RocksDB holds committed
offsets for every event, watched through a RocksDB secondary instance. The rate is reported
including start-up (process launch to last commit) and excluding it (first commit to last
commit, over the events committed in between). Then the Faust peer (``benchmarks/_faust_peer``)
runs over the same records in its own process, timed the same two ways. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import OffsetWatch, add_broker_arg, deployment, load_note, log, preproduce, \
    publish_model, rss_mb, start_worker, wait_for_state_dir, zipf_records  # noqa: E402


def time_worker(dep, n: int, timeout_s: float) -> dict:
    t0 = time.time()
    proc = start_worker(dep)
    wait_for_state_dir(dep)
    watch = OffsetWatch(dep.cfg.worker.state_dir, dep.cfg.topics.interactions,
                        dep.workdir / "secondary")
    first = None
    last_log = time.time()
    try:
        while True:
            done = watch.committed()
            now = time.time()
            if done and first is None:
                first = (now - t0, done)
            if done >= n:
                break
            if now - t0 > timeout_s:
                raise TimeoutError(f"worker committed {done}/{n} in {timeout_s}s")
            dep.stack.check_alive()
            if now - last_log > 10:
                log(f"worker: {done}/{n} committed ({load_note()})")
                last_log = now
            time.sleep(0.02)
        end = time.time() - t0
        rss = rss_mb(proc.pid)
    finally:
        watch.close()
        dep.stack.stop("worker")
    return {"all_s": end, "first_s": first[0], "first_events": first[1], "rss_mb": rss}


def time_faust(dep, n: int, timeout_s: float) -> dict:
    t0 = time.time()
    out, log_path = dep.workdir / "faust.json", dep.workdir / "logs" / "faust.log"
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks._faust_peer",
                             str(dep.config_path), str(n), str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"))
    progress, last_log = Path(f"{out}.progress"), time.time()
    try:
        while not out.exists():  # the peer writes its result when it is done
            if time.time() - last_log > 10 and progress.exists():
                log(f"faust agent: {progress.read_text()}/{n} applied ({load_note()})")
                last_log = time.time()
            if proc.poll() is not None:
                raise RuntimeError(f"faust peer exited: {log_path.read_text()[-3000:]}")
            if time.time() - t0 > timeout_s:
                raise TimeoutError(f"faust peer not done in {timeout_s}s")
            time.sleep(0.05)
        wall = time.time() - t0
        res = json.loads(out.read_text())
    finally:
        proc.kill()
        proc.wait()
    # the peer times from its own start; launch-to-start is the interpreter start-up
    return {"all_s": wall, "first_s": wall - res["all_s"] + res["first_batch_s"],
            "first_events": None, **res}


def report(name: str, n: int, r: dict) -> float:
    incl = n / r["all_s"]
    excl_n = n - (r["first_events"] or 0)
    excl = excl_n / max(r["all_s"] - r["first_s"], 1e-9)
    log(f"{name}: {n} events in {r['all_s']:.1f}s incl. start-up = {incl:,.0f} events/s; "
        f"first batch done at {r['first_s']:.1f}s, then {excl:,.0f} events/s ({load_note()})")
    return excl


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--zipf", type=float, default=1.0, help="user skew exponent")
    ap.add_argument("--no-faust", action="store_true", help="time the worker only")
    ap.add_argument("--timeout", type=float, default=1800)
    add_broker_arg(ap)
    args = ap.parse_args()
    log(f"ingest on {args.broker}: {args.events} events, {args.users} users (Zipf {args.zipf}), {args.items} "
        f"items, f={args.factors} ({load_note()})")
    with deployment(args.broker) as dep:
        publish_model(dep.cfg, args.items, args.factors)
        n = preproduce(dep.cfg, zipf_records(args.events, args.users, args.items, args.zipf),
                       args.events)
        w = time_worker(dep, n, args.timeout)
        w_rate = report("worker", n, w)
        log(f"worker RSS at the end: {w['rss_mb']:.0f} MB")
        if args.no_faust:
            return
        f = time_faust(dep, n, args.timeout)
        f_rate = report("faust agent", n, f)
        log(f"worker / faust: {n / w['all_s'] / (n / f['all_s']):.1f}x incl. start-up, "
            f"{w_rate / f_rate:.1f}x excl. ({load_note()})")


if __name__ == "__main__":
    main()
