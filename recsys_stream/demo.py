"""``recsys-stream demo``: the whole system on one machine, with generated events.

Starts the embedded broker, the nearline worker, a trainer round and the gRPC server as separate
processes; streams events for two tenants; then shows, through the gRPC API, a brand-new user's
recommendations before any event (popularity), after five events (nearline fold-in, seen items
gone) and the other tenant's answer for the same user id.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np

from recsys_stream.broker import EmbeddedBroker, free_port
from recsys_stream.contracts.events import Event
from recsys_stream.contracts.keys import is_offset_marker, make_key, split_key
from recsys_stream.contracts.pb import events_pb2, recommender_pb2
from recsys_stream.kafka import TopicTail, ensure_topics, producer
from recsys_stream.online import report
from recsys_stream.online.store import OnlineStore
from recsys_stream.catalog_load import produce_catalog
from recsys_stream.produce import produce_events
from recsys_stream.stack import DEMO_KEYS, Stack, load, wait_until, write_config
from recsys_stream.synthetic import catalog_items, generate_events, genre_of, make_world

USERS, EVENTS_PER_USER, ITEMS = 300, 25, 400
NEWCOMER = "newcomer-1"


def _say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _show(title: str, resp, world) -> None:
    src = recommender_pb2.Source.Name(resp.source)
    print(f"\n  {title}\n  tenant={resp.tenant} source={src} model=v{resp.model_version}"
          + (f" reason={resp.reason}" if resp.reason else ""))
    for i, it in enumerate(resp.items, 1):
        print(f"   {i:2d}. {it.item_id:<10} genre {genre_of(world, it.item_id)}  "
              f"score {it.score:8.3f}")
    print(flush=True)


class _ChangelogCounter:
    """Counts distinct users on the worker's state changelog (to know ingest has caught up)."""

    def __init__(self, cfg) -> None:
        self.users: set[tuple[str, str]] = set()
        self.tail = TopicTail(cfg, {cfg.topics.state_changelog: self._on}, name="demo")
        self._lock = threading.Lock()

    def _on(self, msg) -> None:
        if is_offset_marker(msg.key()):
            return
        with self._lock:
            self.users.add(split_key(msg.key()))

    def count(self) -> int:
        with self._lock:
            return len(self.users)


def run_demo(keep_running: bool = False, workdir: str = "var/demo") -> int:
    from recsys_stream.serving.client import RecommenderClient

    t0 = time.monotonic()
    wd = Path(workdir).resolve()
    shutil.rmtree(wd, ignore_errors=True)
    wd.mkdir(parents=True)
    broker = EmbeddedBroker().start()
    address = f"127.0.0.1:{free_port()}"
    config_path = write_config(wd / "config.toml", broker.bootstrap_servers, wd, address)
    cfg = load(config_path)
    stack = Stack(config_path, wd)
    counter = None
    try:
        _say(f"embedded broker on {broker.bootstrap_servers}; config {config_path}")
        ensure_topics(cfg)
        stack.start("worker", "worker")
        stack.start("items", "items")
        stack.start("online", "online")
        _say("nearline worker, item fold-in stage and online evaluation stage started")

        worlds = {t: make_world(t, ITEMS) for t in DEMO_KEYS}
        start = int(time.time() * 1000) - 30 * 86_400_000
        history = [e for i, t in enumerate(DEMO_KEYS)
                   for e in generate_events(worlds[t], USERS, EVENTS_PER_USER, start, seed=i)]
        n = produce_events(cfg, history, total=len(history), progress=False)
        _say(f"produced {n} generated events for tenants {', '.join(DEMO_KEYS)} "
             f"({USERS} users x ~{EVENTS_PER_USER} events, {ITEMS} items each)")
        n = produce_catalog(cfg, [i for w in worlds.values() for i in catalog_items(w)])
        _say(f"published {n} catalog items with their genre as category (genre-0..7)")

        counter = _ChangelogCounter(cfg)
        counter.tail.start()
        wait_until(lambda: counter.count() >= USERS * len(DEMO_KEYS), 90,
                   what="the worker to ingest every user", stack=stack)
        _say(f"worker holds the state of {counter.count()} users in RocksDB")

        stack.run("trainer", "trainer", "--once")
        _say("trainer round done: first ALS model per tenant published")
        stack.start("server", "serve")
        acme = RecommenderClient(address, DEMO_KEYS["acme"])
        globex = RecommenderClient(address, DEMO_KEYS["globex"])
        wait_until(lambda: _ready(acme, NEWCOMER), 60, what="the gRPC server", stack=stack)
        _say(f"gRPC server answering on {address}")

        world = worlds["acme"]
        _show(f"acme / {NEWCOMER}, before any event:", acme.recommend(NEWCOMER, k=10), world)

        # five clicks of a newcomer who likes one genre: the five most popular items of genre 3
        in_genre = np.flatnonzero(world.item_genre == 3)
        seen = world.item_ids[in_genre[np.argsort(-world.popularity[in_genre])][:5]].tolist()
        now = int(time.time() * 1000)
        events = [Event(f"demo-{i}", "acme", NEWCOMER, item, "click", None, now + i)
                  for i, item in enumerate(seen)]
        t_sent = time.monotonic()
        produce_events(cfg, events, progress=False)
        print(f"  {NEWCOMER} clicks: " + ", ".join(
            f"{i} (genre {genre_of(world, i)})" for i in seen), flush=True)
        resp = wait_until(lambda: _personalised(acme, NEWCOMER), 30,
                          what="a personalised answer", stack=stack)
        _show(f"acme / {NEWCOMER}, {time.monotonic() - t_sent:.2f}s after 5 events:", resp, world)
        leaked = set(seen) & {it.item_id for it in resp.items}
        liked = Counter(genre_of(world, i) for i in seen)
        share = np.mean([genre_of(world, it.item_id) in liked for it in resp.items])
        print(f"  seen items in the answer: {len(leaked)}; share of the answer in the clicked "
              f"genre: {share:.0%}\n", flush=True)

        # the loop closed: a click on the answer's first item, sent back with its id
        click = events_pb2.Interaction(
            event_id="demo-click", tenant="acme", user_id=NEWCOMER, item_id=resp.items[0].item_id,
            type=events_pb2.CLICK, timestamp_ms=int(time.time() * 1000),
            recommendation_id=resp.recommendation_id)
        prod = producer(cfg)
        prod.produce(cfg.topics.interactions, key=make_key("acme", NEWCOMER),
                     value=click.SerializeToString())
        prod.flush(10)
        rows = wait_until(lambda: _clicked(cfg), 30, what="the online stage's count",
                          stack=stack)
        print(f"  clicked {resp.items[0].item_id} of answer {resp.recommendation_id}; "
              "`recsys-stream report --tenant acme` now says:", flush=True)
        print("  " + report.render(rows, []).replace("\n", "\n  ") + "\n", flush=True)

        _show(f"acme / {NEWCOMER}, filtered to category genre-5 (items of genre 5 only):",
              acme.recommend(NEWCOMER, k=10, filter=recommender_pb2.Filter(
                  include_categories=["genre-5"])), world)

        _show("acme / an anonymous visitor who looked at the same five items (a session, "
              "no user id):", acme.recommend("", k=10, context_item_ids=seen), world)

        _show(f"globex / {NEWCOMER} (same user id, other tenant):",
              globex.recommend(NEWCOMER, k=10), worlds["globex"])
        try:
            acme.recommend(NEWCOMER, k=10, tenant="globex")
            print("  !! acme's key was allowed to read globex")
            return 1
        except grpc.RpcError as e:
            print(f"  acme's key asking for tenant globex: {e.code().name} ({e.details()})\n")

        if keep_running:
            _say(f"stack is up: `recsys-stream recommend --address {address} --api-key "
                 f"{DEMO_KEYS['acme']} --user user-1`; Ctrl-C stops it")
            try:
                while True:
                    stack.check_alive()
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        acme.close()
        globex.close()
        _say(f"done in {time.monotonic() - t0:.1f}s; stopping")
        return 0 if not leaked else 1
    finally:
        if counter is not None:
            counter.tail.stop()
        stack.stop_all()
        broker.stop()


def _clicked(cfg):
    """acme's report rows once the online stage has committed a click, else None."""
    try:
        store = OnlineStore(cfg.online.state_dir, read_only=True)
    except FileNotFoundError:
        return None
    try:
        rows = report.rows(store, "acme")
    finally:
        store.close()
    return rows if any(r["clicks"] for r in rows) else None


def _ready(client, user) -> bool:
    try:
        client.recommend(user, k=1)
        return True
    except grpc.RpcError as e:
        if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return False
        raise


def _personalised(client, user):
    resp = client.recommend(user, k=10)
    personal = (recommender_pb2.NEARLINE, recommender_pb2.BATCH, recommender_pb2.PROFILE_FOLD_IN)
    return resp if resp.source in personal else None
