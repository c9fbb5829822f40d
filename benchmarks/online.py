"""The loop closed: simulated users with known tastes, the real server and online stage, the
report's verdict; then the stage's throughput.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/online.py [--users 600] [--rounds 8]
        [--rate 5000] [--seconds 20] [--backlog 200000] [--broker kafka|tansu]

0. Closed loop: a synthetic world (genre tastes, Zipf popularity, ``recsys_stream.synthetic``);
   an ALS model trained on the users' histories; the server (in this process, on a real port)
   with the experiment "als-vs-popularity" (50/50 by user hash); the online stage. Each user
   asks ``--rounds`` times for 10 items and clicks each shown item with a probability from
   their true taste (0.25 for their two genres, 0.02 else), 80 % of the clicks with the
   answer's id. The stage's counts are compared with the simulated truth, the report's per-user
   test judges the experiment, and 100 A/A splits of the ALS arm's own answers (clicks re-drawn
   per seed) check that the test is significant at 5 % about 5 % of the time. The tenant has a
   frequency cap of 3 impressions a day and the nearline worker runs beside them: no user may be
   shown an item a fourth time (the clicks go out after the loop, so none lifts a cap).
1. Backlog: ``--backlog`` answers (10 items each) and as many click events (half with the
   answer's id) are produced first, then the stage (``recsys-stream online``, its own process)
   starts and the time until all are committed gives answers + events per second.
2. Paced: ``--rate`` answers/s plus ``--rate`` events/s for ``--seconds``; prints the stage's
   CPU (cores) and how far its committed offsets trailed the input each second (records).

Asserts nothing; prints figures next to the machine's load. The last line sums up the loop.
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
from recsys_stream.contracts.model_store import ModelStore  # noqa: E402
from recsys_stream.contracts.pb import events_pb2, slates_pb2  # noqa: E402
from recsys_stream.kafka import produce_all, producer  # noqa: E402
from recsys_stream.online.store import OnlineStore  # noqa: E402

K = 10
TASTE_CTR, OTHER_CTR, WITH_ID = 0.25, 0.02, 0.8


def closed_loop(dep, n_users: int, rounds: int, seed: int = 0) -> str:
    """Section 0 of the module docstring; returns the summary line."""
    import dataclasses
    import threading

    from recsys_stream.batch import app
    from recsys_stream.batch.data import from_events
    from recsys_stream.broker import free_port
    from recsys_stream.contracts.events import Event
    from recsys_stream.contracts.experiments import bucket
    from recsys_stream.online import report
    from recsys_stream.online.app import run_online_stage
    from recsys_stream.nearline.app import run_worker
    from recsys_stream.online.stats import UserMoments, compare_users
    from recsys_stream.serving.app import run_server
    from recsys_stream.serving.client import RecommenderClient
    from recsys_stream.stack import wait_until
    from recsys_stream.synthetic import make_world, user_preference

    rng = np.random.default_rng(seed)
    world = make_world(TENANT, 400, genres=8, seed=seed)
    tastes, events = {}, []
    for u in range(n_users):
        uid, pref = f"sim-{u}", user_preference(rng, world.genres)
        tastes[uid] = set(np.flatnonzero(pref))
        for j, r in enumerate(world.sample_items(rng, pref, 30)):
            events.append(Event(f"{uid}-h{j}", TENANT, uid, str(world.item_ids[r]), "view",
                                None, int(time.time() * 1000) - 86_400_000 + j * 1000))
    from recsys_stream.config import FrequencyCapConfig
    tc = dataclasses.replace(dep.cfg.tenant(TENANT), frequency_cap=FrequencyCapConfig(3, 24.0),
                             experiments=(
        {"name": "als-vs-popularity", "arms": [
            {"name": "als", "share": 0.5}, {"name": "popularity", "share": 0.5,
                                            "algorithm": "popularity"}]},))
    cfg = dep.cfg.replace(tenants={TENANT: tc},
                          server={"address": f"127.0.0.1:{free_port()}"},
                          online={"commit_interval_ms": 200},
                          worker={"commit_interval_ms": 100})
    app.train_tenant(cfg, from_events(TENANT, events, tc.confidence, tc.history_cap, 0.2),
                     ModelStore(cfg.model_store), announcing="off")
    genre = dict(zip(world.item_ids, world.item_genre))
    stop = threading.Event()
    workers = []  # the nearline worker (frequency caps), once built
    threads = [threading.Thread(target=run_server, args=(cfg, stop), daemon=True),
               threading.Thread(target=run_online_stage, args=(cfg, stop), daemon=True),
               threading.Thread(target=run_worker, args=(cfg, stop, workers.append),
                                daemon=True)]
    for t in threads:
        t.start()
    client = RecommenderClient(cfg.server.address, "bench-key")
    wait_until(lambda: _answers(client), 60, what="the server")
    wait_until(lambda: workers and workers[0].partitions, 60, what="the worker's partitions")

    def worker_counted() -> int:  # answers the worker committed (its caps are in profiles)
        return sum(workers[0].store.offsets(cfg.topics.recommendations).values())
    truth, shown_als = 0, []  # per ALS-arm answer: (user, click probabilities)
    clicks, shown = [], {}  # shown: (user, item) -> times
    t0 = time.perf_counter()
    for r in range(rounds):
        # a cap reaches the server through the worker's commit and the profile's way to the
        # server's read model (~0.1-0.3 s): each round waits for both before the next
        wait_until(lambda: worker_counted() >= r * len(tastes) + 1, 60,
                   what="the worker to count the round's answers")
        time.sleep(0.5)
        for uid in tastes:
            a = client.recommend(uid, k=K)
            probs = [TASTE_CTR if genre[it.item_id] in tastes[uid] else OTHER_CTR
                     for it in a.items]
            if a.arm == "als":
                shown_als.append((uid, probs))
            for it in a.items:
                shown[(uid, it.item_id)] = shown.get((uid, it.item_id), 0) + 1
            for it, p in zip(a.items, probs):
                if rng.random() < p:
                    clicks.append(events_pb2.Interaction(
                        event_id=f"{a.recommendation_id}-{it.item_id}", tenant=TENANT,
                        user_id=uid, item_id=it.item_id, type=events_pb2.CLICK,
                        timestamp_ms=int(time.time() * 1000),
                        recommendation_id=a.recommendation_id if rng.random() < WITH_ID
                        else ""))
                    truth += 1
    served_s = time.perf_counter() - t0
    prod = producer(cfg)
    produce_all(prod, cfg.topics.interactions,
                ((make_key(TENANT, c.user_id), c.SerializeToString()) for c in clicks))
    prod.flush(60)
    answers = rounds * len(tastes) + 1  # + the readiness probe

    def counted():
        try:
            store = OnlineStore(cfg.online.state_dir, read_only=True)
        except FileNotFoundError:
            return [], 0, 0
        try:
            rows = report.rows(store, TENANT)
            counted.moments = store.moments(TENANT)
        finally:
            store.close()
        return rows, sum(x["impressions"] for x in rows), sum(x["clicks"] for x in rows)

    counted.moments = {}
    wait_until(lambda: counted()[2] >= truth and counted()[1] >= answers * K - K, 120,
               what="the stage to count the loop")
    time.sleep(1.0)
    rows, impressions, attributed = counted()
    stop.set()
    for t in threads:
        t.join(15)
    client.close()
    (test,) = report.arm_tests(rows, {"als-vs-popularity": ["popularity", "als"]},
                               counted.moments)
    fourth = sum(n > 3 for n in shown.values())
    log(f"frequency cap 3 a day: {len(shown)} (user, item) pairs shown, {fourth} of them more "
        f"than 3 times (a capped item never appears a fourth time: "
        f"{'yes' if not fourth else 'NO'})")
    log(f"closed loop: {answers} answers in {served_s:.1f}s; {impressions} impressions "
        f"counted; {truth} clicks simulated, {attributed} attributed ({load_note()})")
    aa_significant = 0
    for s in range(100):  # per user, as the report tests: (impressions, clicks) per user
        r2 = np.random.default_rng(1000 + s)
        per_user: dict[str, list[int]] = {}
        for uid, probs in shown_als:
            c = int((r2.random(len(probs)) < np.array(probs)).sum())
            u = per_user.setdefault(uid, [0, 0])
            u[0] += len(probs)
            u[1] += c
        sides = {True: [], False: []}
        for uid, ic in per_user.items():
            sides[bucket(f"aa-{s}", uid) < 5000].append(ic)
        a, b = (np.array(sides[k], dtype=float).reshape(-1, 2) for k in (True, False))
        ma, mb = (UserMoments(len(x), x[:, 0].sum(), x[:, 1].sum(), (x[:, 0] ** 2).sum(),
                              (x[:, 1] ** 2).sum(), (x[:, 0] * x[:, 1]).sum()) for x in (a, b))
        aa_significant += compare_users(ma, mb).p_value < 0.05
    return (f"attribution: {truth} clicks simulated, {attributed} attributed, "
            f"{max(truth - attributed, 0)} lost, {max(attributed - truth, 0)} doubled; "
            f"experiment als vs popularity: CTR {test['ctr']:.4f} vs {test['control_ctr']:.4f}, "
            f"p = {test['p_value']:.2g}; A/A significant at 5 %: {aa_significant} of 100")


def _answers(client) -> bool:
    import grpc
    try:
        return client.recommend("sim-0", k=K).model_version > 0
    except grpc.RpcError:
        return False


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
    ap.add_argument("--users", type=int, default=600, help="simulated users of the loop")
    ap.add_argument("--rounds", type=int, default=8, help="answers per simulated user")
    ap.add_argument("--stream-users", type=int, default=50_000, help="users of the throughput run")
    add_broker_arg(ap)
    args = ap.parse_args()
    with deployment(args.broker) as dep:
        summary = closed_loop(dep, args.users, args.rounds)
    with deployment(args.broker) as dep, tempfile.TemporaryDirectory():
        cfg = dep.cfg
        state = cfg.online.state_dir
        prod = producer(cfg, **{"linger.ms": 20})
        now = int(time.time() * 1000)
        answers, events = records(0, args.backlog, args.stream_users, now, 0)
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
            a, e = records(n, per_tick, args.stream_users, int(time.time() * 1000), 1)
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
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
