"""Serving throughput and latency: Recommend against a trivial grpc.aio echo service.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/serving.py [--items 100000]
        [--users 1000000] [--workers <all cores>] [--seconds 20] [--concurrency 32]
        [--broker tansu|kafka]

Setup: the embedded broker; one tenant with a model of ``--items`` items and f=64 (low-rank
factors, as ALS produces, with an hnswlib index); ``--users`` user profiles on the profiles topic,
each with a nearline vector of that model version and 20 seen items (and their rows in the
model, as the worker writes them). The server runs as
``recsys-stream serve --workers N`` (SO_REUSEPORT processes; the supervisor writes the profiles
into the RocksDB store the processes read as secondaries). The load generator is one more
process: grpc.aio, ``--concurrency`` calls in flight on as many connections, random users, k=10;
then the same generator paced at 1k QPS for latency; then the same load against a trivial
grpc.aio echo service in N processes on one port, and against the *floor*: the server's own
method registration answering a canned 10-item Recommend (what any Python Recommend costs before
it does any work). The generator shares the machine's cores with
the server (as it does with the echo service). Prints QPS, p50/p99, Recommend/echo, the
server's CPU time per request (the figure least moved by other load), its memory (RSS summed
over its processes, and PSS) and the load average next to each figure; asserts nothing.

``--scenarios`` (issue 28) then runs one load per request option beside the plain path, with
QPS and server CPU per call: ``filter`` (a 1 % category: every item is in one of 100),
``session`` (an anonymous session of 5 items), ``rank`` (RankItems of 50 items), ``explain``,
``diversity`` (max 2 per category, MMR 0.3) and ``exploration`` (a second tenant, the same model
and profiles, with 10 % exploration slots over 200 young items). Profile vectors are the exact
fold-in of their 20 (distinct) items, as the worker writes them, so ``explain`` decomposes.

``--profile DIR`` records every server process with py-spy (``--gil``; ``PYSPY_ARGS`` overrides)
through one more run of each scenario and prints the call tree under the request handler.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import add_broker_arg, load_note, start_broker  # noqa: E402
from recsys_stream.broker import free_port, free_port_run  # noqa: E402
from recsys_stream.contracts.ann_index import build_index  # noqa: E402
from recsys_stream.contracts.confidence import ConfidenceSettings  # noqa: E402
from recsys_stream.contracts.keys import make_key  # noqa: E402
from recsys_stream.contracts.model_store import ModelStore  # noqa: E402
from recsys_stream.contracts.pb import profiles_pb2  # noqa: E402
from recsys_stream.kafka import ensure_topics, produce_all, producer  # noqa: E402
from recsys_stream.stack import Stack, load, wait_until, write_config  # noqa: E402

KEY = "bench-key"
KEYX = "bench-explore-key"  # the exploration scenario's tenant
METHOD = "/recsys.v1.Recommender/Recommend"
RANK = "/recsys.v1.Recommender/RankItems"
SCENARIOS = ("plain", "filter", "session", "rank", "explain", "diversity", "exploration")
N_CATEGORIES = 100  # item i is in category c{i % 100}: each category is 1 % of the catalogue
N_YOUNG = 200       # items launched now (the rest a month ago): exploration's candidates
SEEN = 20


def _basis(k: int) -> np.ndarray:
    """The rank-16 span that item and user factors share (ALS factors are far from full rank)."""
    return np.random.default_rng(0).normal(size=(16, k)) / 4


def build_model(store: ModelStore, n_items: int, k: int = 64, tenant: str = "bench"
                ) -> np.ndarray:
    rng = np.random.default_rng(2)
    basis = _basis(k)
    Y = (rng.normal(size=(n_items, 16)) @ basis * rng.gamma(2.0, 0.5, (n_items, 1))
         ).astype(np.float32)
    X = (rng.normal(size=(2000, 16)) @ basis).astype(np.float32)
    t = time.perf_counter()
    store.write(tenant, "als", 1, item_ids=[f"i{j}" for j in range(n_items)], item_factors=Y,
                user_ids=[f"b{j}" for j in range(2000)], user_factors=X,
                popularity=rng.integers(1, 1000, n_items).astype(float),
                manifest={"hyperparameters": {"regularization": 0.1},
                          "confidence": ConfidenceSettings().to_dict()},
                index_writer=lambda p: build_index(Y, p, X[:300]))
    store.set_current(tenant, "als", 1)
    info = store.load(tenant, "als", 1, verify=False).manifest["index"]
    print(f"model: {n_items} items x {k}, index built in {time.perf_counter() - t:.1f}s, "
          f"recall@10 {info['recall_at_10']} at ef={info['ef']} (exact={info['exact']})",
          flush=True)
    return Y


def produce_profiles(cfg, n_users: int, Y: np.ndarray, tenant: str = "bench") -> None:
    from recsys_stream.contracts.foldin import FoldInSolver
    n_items = len(Y)
    solver = FoldInSolver(Y, 0.1)
    rng = np.random.default_rng(1)
    prod = producer(cfg, **{"linger.ms": 50, "batch.size": 1_000_000})
    t = time.perf_counter()

    def records():
        for start in range(0, n_users, 10_000):
            # SEEN distinct items per user (a random start and stride), and the exact fold-in
            first = rng.integers(0, n_items, (10_000, 1))
            stride = rng.integers(1, n_items // SEEN, (10_000, 1))
            seen = (first + stride * np.arange(SEEN)) % n_items
            vecs = solver.solve(np.arange(0, 10_000 * SEEN + 1, SEEN), seen.ravel(),
                                np.full(10_000 * SEEN, 2.0))
            for j in range(min(10_000, n_users - start)):
                u = f"u{start + j}"
                p = profiles_pb2.UserProfile(tenant=tenant, user_id=u,
                                             item_ids=[f"i{s}" for s in seen[j]],
                                             confidences=[2.0] * SEEN)
                # as the worker writes it: the rows of the seen items in this model version
                p.vectors.add(algorithm="als", model_version=1, values=vecs[j].tolist(),
                              suppressed_rows=seen[j].tolist())
                yield make_key(tenant, u), p.SerializeToString()
    n = produce_all(prod, cfg.topics.profiles, records())
    prod.flush(120)
    print(f"profiles of {tenant}: {n} produced in {time.perf_counter() - t:.1f}s", flush=True)


def produce_catalog_items(cfg, n_items: int, tenant: str) -> None:
    """Every item in one of 100 categories; N_YOUNG launched now, the rest 30 days ago."""
    from recsys_stream.catalog_load import produce_catalog
    from recsys_stream.contracts.pb import events_pb2
    now = int(time.time() * 1000)
    produce_catalog(cfg, (events_pb2.CatalogItem(
        tenant=tenant, item_id=f"i{j}", state=events_pb2.AVAILABLE,
        categories=[f"c{j % N_CATEGORIES}"],
        created_ms=now if j < N_YOUNG else now - 30 * 86_400_000) for j in range(n_items)))


def payloads(scenario: str, n_users: int, n_items: int, rng) -> tuple[str, str, list[bytes]]:
    """(method, API key, request bodies) of one scenario."""
    from recsys_stream.contracts.pb import recommender_pb2 as pb
    users = rng.integers(0, n_users, 5000)

    def items(n):
        return [f"i{j}" for j in rng.choice(n_items, n, replace=False)]
    if scenario == "rank":
        return RANK, KEY, [pb.RankItemsRequest(user_id=f"u{u}", item_ids=items(50))
                           .SerializeToString() for u in users]
    extra = {"filter": lambda: {"filter": pb.Filter(
                 include_categories=[f"c{rng.integers(N_CATEGORIES)}"])},
             "explain": lambda: {"explain": True},
             "diversity": lambda: {"diversity": pb.Diversity(max_per_category=2,
                                                             mmr_lambda=0.3)}}
    if scenario == "session":
        return METHOD, KEY, [pb.RecommendRequest(k=10, context_item_ids=items(5))
                             .SerializeToString() for _ in users]
    return METHOD, KEYX if scenario == "exploration" else KEY, [
        pb.RecommendRequest(user_id=f"u{u}", k=10, **extra.get(scenario, dict)())
        .SerializeToString() for u in users]


# -- load generation (own process) ---------------------------------------------------------
def _load(address: str, method: str, seconds: float, concurrency: int, n_users: int,
          rate: float, out, scenario: str = "plain", n_items: int = 0) -> None:
    """``concurrency`` calls in flight (or each paced to ``rate / concurrency`` per second)."""
    import grpc

    from recsys_stream.contracts.pb import recommender_pb2 as pb

    async def main():
        # one connection per caller: the kernel spreads connections (not calls) over the
        # SO_REUSEPORT processes, and one shared connection would all land on one of them
        channels = [grpc.aio.insecure_channel(address,
                                              options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(concurrency)]
        rng = np.random.default_rng(os.getpid())
        if method == METHOD and n_items:  # a scenario of the Recommender (not the echo peer)
            name, key, bodies = payloads(scenario, n_users, n_items, rng)
        else:
            name, key = method, KEY
            bodies = [pb.RecommendRequest(user_id=f"u{u}", k=10).SerializeToString()
                      for u in rng.integers(0, n_users, 5000)]
        calls = [c.unary_unary(name, request_serializer=lambda b: b,
                               response_deserializer=lambda b: b) for c in channels]
        md = (("x-api-key", key),)
        lat, errors = [], 0
        deadline = time.perf_counter() + seconds
        interval = concurrency / rate if rate else 0.0

        async def worker(i):
            nonlocal errors
            n = i
            next_t = time.perf_counter() + (i / rate if rate else 0.0)  # staggered starts
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                if interval:  # open loop: latency counts from the scheduled send time
                    next_t += interval
                    await asyncio.sleep(max(0.0, next_t - t0))
                    t0 = next_t
                try:
                    await calls[i](bodies[n % len(bodies)], metadata=md, timeout=5)
                    lat.append(time.perf_counter() - t0)
                except grpc.RpcError:
                    errors += 1
                n += concurrency
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        for c in channels:
            await c.close()
        out.put((lat, errors))
    asyncio.run(main())


def run_load(address, method, seconds, concurrency, n_users, rate=0.0, server_pids=(),
             scenario="plain", n_items=0):
    """QPS, p50/p99 and errors of one load run, and the CPU the server spent per answer.

    CPU time per request is the figure least bent by other load on a shared machine.
    """
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_load, args=(address, method, seconds, concurrency, n_users, rate, q,
                                        scenario, n_items))
    cpu0 = cpu_by_process(server_pids)
    p.start()
    lat, errors = q.get()
    cpu_each = {name: t - cpu0.get(name, 0.0) for name, t in cpu_by_process(server_pids).items()}
    cpu = sum(cpu_each.values())
    p.join()
    lat = np.array(lat)
    return {"qps": len(lat) / seconds, "p50_ms": np.percentile(lat, 50) * 1e3 if len(lat) else 0,
            "p99_ms": np.percentile(lat, 99) * 1e3 if len(lat) else 0, "errors": errors,
            "cpu_us": cpu / max(len(lat) + errors, 1) * 1e6,
            "cpu_share": {name: t / seconds for name, t in sorted(cpu_each.items())}}


def cpu_by_process(pids) -> dict[str, float]:
    """User + system CPU seconds so far of the processes and their children, by pid."""
    import psutil
    out = {}
    for pid in pids:
        try:
            procs = [psutil.Process(pid)]
            procs += procs[0].children(recursive=True)
        except psutil.Error:
            continue
        for proc in procs:
            try:
                t = proc.cpu_times()
                out[f"{proc.pid}{'*' if proc.pid == pid else ''}"] = t.user + t.system
            except psutil.Error:
                pass
    return out


def profile_run(pid: int, out: Path, address: str, args, scenario: str) -> None:
    """py-spy every server process through one more load run of ``scenario``; print where
    the handler's time goes."""
    import psutil

    from benchmarks._profile import summarise, tree
    out.mkdir(parents=True, exist_ok=True)
    pids = [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    extra = os.environ.get("PYSPY_ARGS", "--gil").split()  # e.g. "--gil", "--native"
    spies = [subprocess.Popen([spy, "record", "--format", "raw", *extra, "-r", "200", "-d", str(int(args.seconds)), "-o",
                               str(out / f"{p}.txt"), "-p", str(p)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for p in pids]
    run_load(address, METHOD, args.seconds, args.concurrency, args.users, scenario=scenario,
             n_items=args.items)
    for s in spies:
        s.wait()
    print(f"\n-- profile of {scenario}", flush=True)
    summarise(sorted(out.glob("*.txt")), top=12)
    tree(sorted(out.glob("*.txt")), "RecommenderService._handle (service.py)")


# -- echo peer -----------------------------------------------------------------------------
def _echo_server(port: int) -> None:
    import grpc

    async def main():
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])

        async def echo(request, context):
            return request
        handler = grpc.method_handlers_generic_handler("recsys.v1.Recommender", {
            "Recommend": grpc.unary_unary_rpc_method_handler(
                echo, request_deserializer=lambda b: b, response_serializer=lambda b: b)})
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()
    from recsys_stream.serving.app import event_loop_factory
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:  # the server's loop
        runner.run(main())


def memory(pid: int) -> dict:
    """RSS and PSS (shared pages split between their users) of a process and its children, MB."""
    import psutil
    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    rss, pss = [], []
    for p in procs:
        try:
            info = p.memory_full_info()
            rss.append(info.rss / 2**20)
            pss.append(info.pss / 2**20)
        except psutil.Error:
            pass
    return {"rss": sum(rss), "pss": sum(pss), "per_process": sorted(rss, reverse=True)}


def wait_ready(stack: Stack, address: str, metrics: int, workers: int, n_users: int) -> None:
    """Every worker's /healthz says its profiles are replayed, and a nearline answer comes back."""
    import json
    import urllib.request

    def caught_up(port):
        try:
            body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                                     timeout=1).read())
            return body.get("status") == "ok" and body.get("profiles_caught_up")
        except (OSError, ValueError):
            return False
    wait_until(lambda: all(caught_up(metrics + i) for i in range(workers)), 900, interval_s=1,
               what="every server process", stack=stack)
    from recsys_stream.serving.client import RecommenderClient
    with RecommenderClient(address, KEY, timeout=10) as c:
        wait_until(lambda: c.recommend(f"u{n_users - 1}", k=10).source == 1, 60,
                   interval_s=1, what="a nearline answer", stack=stack)


def _floor_server(port: int) -> None:
    """The floor under any Python Recommend: the server's own registration (request parsed by
    ``serving.handlers``, response serialised), the API key read from the metadata, and a
    canned answer of 10 items with a fresh id, with no retrieval, profile or log at all."""
    import grpc

    from recsys_stream.contracts.pb import recommender_pb2 as pb
    from recsys_stream.serving.handlers import add_to_server
    from recsys_stream.serving.served_log import new_recommendation_id

    class Floor:
        async def Recommend(self, request, context):
            key = [v for k, v in context.invocation_metadata() or () if k == "x-api-key"]
            out = pb.RecommendResponse(tenant="bench", algorithm="als", model_version=1,
                                       source=pb.NEARLINE, reason=str(len(key)))
            out.items.extend(pb.ScoredItem(item_id=f"i{j}", score=1.0 - j / 10)
                             for j in range(request.k))
            out.recommendation_id = new_recommendation_id()
            return out

        def __getattr__(self, name):  # every other method of the service: not measured
            async def unimplemented(request, context):
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, name)
            return unimplemented

    async def main():
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
        add_to_server(Floor(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()
    from recsys_stream.serving.app import event_loop_factory
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(main())


def echo_load(workers: int, seconds: float, concurrency: int, peer: str = "_echo_server"
              ) -> dict:
    """The same load against ``workers`` processes of a peer (``_echo_server``: bytes back;
    ``_floor_server``: a canned Recommend) sharing one port."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c",
                               f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                               f"from benchmarks.serving import {peer}; "
                               f"{peer}({port})"]) for _ in range(workers)]
    try:
        time.sleep(3)
        address = f"127.0.0.1:{port}"
        run_load(address, METHOD, 3, concurrency, 1000)
        return run_load(address, METHOD, seconds, concurrency, 1000,
                        server_pids=[p.pid for p in procs])
    finally:
        for p in procs:
            p.terminate()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS[1:]),
                    help=f"request options measured beside the plain path ({', '.join(SCENARIOS[1:])}"
                         "); '' = none")
    ap.add_argument("--served-log", choices=("on", "off"), default="on",
                    help="the server's log of its answers onto `recommendations` (issue 29): "
                         "run once with each, back to back, for its cost per call")
    ap.add_argument("--profile", metavar="DIR",
                    help="also record each server process with py-spy (collapsed stacks, "
                         "DIR/<pid>.txt) during one more plain run, and print where the "
                         "time goes (needs py-spy: pip install py-spy)")
    add_broker_arg(ap)
    args = ap.parse_args()
    scenarios = [x for x in args.scenarios.split(",") if x]
    if set(scenarios) - set(SCENARIOS):
        ap.error(f"unknown scenarios {sorted(set(scenarios) - set(SCENARIOS))}")
    print(f"machine: {load_note()}; broker {args.broker}; served log {args.served_log}; "
          f"server --workers {args.workers}; "
          f"load generator: 1 process, concurrency {args.concurrency}", flush=True)
    with start_broker(args.broker) as broker, tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        address = f"127.0.0.1:{free_port()}"
        metrics = free_port_run(args.workers)  # process i: metrics on metrics + i
        explore = "exploration" in scenarios
        keys = {"bench": KEY, "benchx": KEYX} if explore else {"bench": KEY}
        path = write_config(wd / "c.toml", broker.bootstrap_servers, wd, address,
                            keys=keys, metrics_ports=(0, 0, metrics))
        if args.served_log == "off":
            path.write_text(path.read_text().replace("[server]\n", "[server]\nserved_log = false\n", 1))
        if explore:  # the second tenant gives a tenth of the slots to young items
            from recsys_stream.config import hash_key
            line = f'api_key_sha256 = ["{hash_key(KEYX)}"]'
            path.write_text(path.read_text().replace(line, line + (
                "\nexploration_share = 0.1\nexploration_max_users = 100000"), 1))
        cfg = load(path)
        ensure_topics(cfg)
        for tenant in keys:
            Y = build_model(ModelStore(cfg.model_store), args.items, tenant=tenant)
            produce_profiles(cfg, args.users, Y, tenant)
            if scenarios:
                produce_catalog_items(cfg, args.items, tenant)
        stack = Stack(path, wd)
        try:
            t = time.perf_counter()
            proc = stack.start("server", "serve", "--workers", str(args.workers))
            wait_ready(stack, address, metrics, args.workers, args.users)
            mem0 = memory(proc.pid)
            print(f"server ready (model loaded, {args.users} profiles in the store, every "
                  f"process caught up) "
                  f"in {time.perf_counter() - t:.1f}s; RSS {mem0['rss']:.0f} MB", flush=True)
            run_load(address, METHOD, 3, args.concurrency, args.users)
            rec = run_load(address, METHOD, args.seconds, args.concurrency, args.users,
                           server_pids=[proc.pid])
            rec["load"] = load_note()
            print(f"Recommend at full speed done ({rec['load']})", flush=True)
            paced = run_load(address, METHOD, min(args.seconds, 15), args.concurrency,
                             args.users, rate=1000, server_pids=[proc.pid])
            paced["load"] = load_note()
            options = {}
            for name in scenarios:
                run_load(address, METHOD, 2, args.concurrency, args.users, scenario=name,
                         n_items=args.items)  # warm-up (the catalog index of the version)
                options[name] = run_load(address, METHOD, args.seconds, args.concurrency,
                                         args.users, server_pids=[proc.pid], scenario=name,
                                         n_items=args.items)
                options[name]["load"] = load_note()
                print(f"scenario {name} done ({options[name]['load']})", flush=True)
            if args.profile:
                for name in ["plain"] + scenarios:
                    profile_run(proc.pid, Path(args.profile) / name, address, args, name)
            mem = memory(proc.pid)
            store_mb = sum(f.stat().st_size for f in (wd / "server-profiles").rglob("*")
                           if f.is_file()) / 2**20
        finally:
            stack.stop_all()
    echo = echo_load(args.workers, args.seconds, args.concurrency)
    echo["load"] = load_note()
    floor = echo_load(args.workers, args.seconds, args.concurrency, peer="_floor_server")
    floor["load"] = load_note()
    print(f"\nRecommend (k=10, nearline users, concurrency {args.concurrency}): "
          f"{rec['qps']:.0f} QPS, p50 {rec['p50_ms']:.2f} ms, p99 {rec['p99_ms']:.2f} ms, "
          f"errors {rec['errors']} [{rec['load']}]")
    print(f"Recommend paced at 1k QPS (latency from the scheduled send): achieved "
          f"{paced['qps']:.0f} QPS, p50 {paced['p50_ms']:.2f} ms, p99 {paced['p99_ms']:.2f} ms, "
          f"errors {paced['errors']} [{paced['load']}]")
    print(f"echo ({args.workers} processes, same load): {echo['qps']:.0f} QPS, p50 "
          f"{echo['p50_ms']:.2f} ms, p99 {echo['p99_ms']:.2f} ms [{echo['load']}]")
    print(f"floor: the server's registration answering a canned Recommend ({args.workers} "
          f"processes, same load): {floor['qps']:.0f} QPS, server CPU {floor['cpu_us']:.0f} us "
          f"per call = {floor['cpu_us'] / max(echo['cpu_us'], 1):.2f}x echo's [{floor['load']}]")
    print(f"Recommend / echo: {rec['qps'] / max(echo['qps'], 1):.2f}")
    print(f"server CPU per request: Recommend {rec['cpu_us']:.0f} us (paced run "
          f"{paced['cpu_us']:.0f} us), echo {echo['cpu_us']:.0f} us; cores busy at full speed "
          f"by server process (* = the one started): "
          f"{', '.join(f'{k} {v:.2f}' for k, v in rec['cpu_share'].items())}")
    if options:
        print("\nrequest options (same server, same load; plain = the Recommend run above):")
        print(f"{'scenario':<12} {'QPS':>7} {'x echo':>7} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'CPU us/call':>11} {'x plain':>8} errors  load")
        for name, r in [("plain", rec)] + list(options.items()):
            print(f"{name:<12} {r['qps']:7.0f} {r['qps'] / max(echo['qps'], 1):7.2f} "
                  f"{r['p50_ms']:7.2f} {r['p99_ms']:7.2f} {r['cpu_us']:11.0f} "
                  f"{r['cpu_us'] / max(rec['cpu_us'], 1):8.2f} {r['errors']:6d}  [{r['load']}]")
    print(f"server memory ({args.workers} worker(s){' + supervisor' if args.workers > 1 else ''}"
          f", {args.users} profiles): RSS "
          f"{mem['rss']:.0f} MB (per process {', '.join(f'{m:.0f}' for m in mem['per_process'])})"
          f", PSS {mem['pss']:.0f} MB; profile store {store_mb:.0f} MB of files (page cache, "
          f"shared by the processes, counted in neither)")


if __name__ == "__main__":
    main()
