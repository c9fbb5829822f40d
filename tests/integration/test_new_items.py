"""New and young items across the real processes (issues 19, 30): worker, item stage, trainer
and server as OS processes on a real broker.

An item the model does not know, bought by 3 users of one genre, appears in Recommend for a
4th user of that genre and in SimilarItems of that genre's items within seconds; a user who
touched only the new item, before it had a vector, gets a nearline vector with no further event
of theirs (the worker folds new items in and re-solves the users who waited); a banned new
item never appears. An item launched just before the cut-off with 2 training users of another
genre (young: its vector is theirs), then clicked by 10 users of the genre, rises into that
genre's user's Recommend and gets that genre's neighbours in SimilarItems within seconds.
After a retrain both items are the model's and the served delta is empty.
"""

from __future__ import annotations

import re
import time
import urllib.request
import uuid

import grpc
import numpy as np
import pytest

from recsys_stream.broker import free_port
from recsys_stream.contracts.events import Event
from recsys_stream.contracts.keys import is_offset_marker, make_key
from recsys_stream.contracts.pb import events_pb2, items_pb2, recommender_pb2
from recsys_stream.kafka import ensure_topics, producer, read_to_end
from recsys_stream.nearline.item_state import item_state_key
from recsys_stream.produce import produce_events
from recsys_stream.serving.client import RecommenderClient
from recsys_stream.stack import DEMO_KEYS, Stack, load, wait_until, write_config
from recsys_stream.synthetic import generate_events, genre_of, make_world

pytestmark = pytest.mark.integration

USERS, EVENTS, ITEMS = 150, 20, 200
GENRE = 0


@pytest.fixture
def stack(tmp_path, kafka_bootstrap):
    address, metrics = f"127.0.0.1:{free_port()}", free_port()
    path = write_config(tmp_path / "config.toml", kafka_bootstrap, tmp_path, address,
                        topic_prefix=f"new{uuid.uuid4().hex[:8]}-", metrics_ports=(0, 0, metrics))
    cfg = load(path)
    ensure_topics(cfg)
    s = Stack(path, tmp_path)
    s.cfg, s.address, s.metrics = cfg, address, metrics
    yield s
    s.stop_all()


def _answer(fn):
    try:
        return fn()
    except grpc.RpcError as e:
        if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
            return None
        raise


def _ids(resp) -> list[str]:
    return [i.item_id for i in resp.items]


def _changelog_users(cfg) -> int:
    return len({m.key() for m in read_to_end(cfg, cfg.topics.state_changelog)
                if not is_offset_marker(m.key())})


def _served_delta(stack) -> float | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics}/metrics", timeout=5
                                  ).read().decode()
    m = re.search(r'recsys_server_new_item_vectors\{algorithm="als",tenant="acme"\} (\S+)', text)
    return float(m[1]) if m else None


def test_new_and_young_items_join_recommend_and_similar_items_and_a_banned_one_never(stack):
    cfg = stack.cfg
    world = make_world("acme", ITEMS)
    start = int(time.time() * 1000) - 31 * 86_400_000
    stack.start("worker", "worker")
    stack.start("items", "items")
    other = [str(i) for i, g in zip(world.item_ids, world.item_genre) if g != GENRE]
    # young-1, launched just before the cut-off: its only 2 training users like other genres
    early = [Event(f"early-{u}-{j}", "acme", f"early-{u}", item, "click", None,
                   start + 30 * 86_400_000 + j) for u in range(2)
             for j, item in enumerate(other[u * 6:u * 6 + 6] + ["young-1"])]
    produce_events(cfg, generate_events(world, USERS, EVENTS, start, seed=0) + early,
                   progress=False)
    wait_until(lambda: _changelog_users(cfg) >= USERS + 2, 90, what="worker ingest",
               stack=stack)
    stack.run("trainer", "trainer", "--once")
    stack.start("server", "serve")
    client = RecommenderClient(stack.address, DEMO_KEYS["acme"])
    first = wait_until(lambda: (r := _answer(lambda: client.recommend("nobody", k=5)))
                       and r.model_version and r, 60, what="the server", stack=stack)
    v1 = first.model_version
    assert v1 >= 1

    # ban the second new item before anyone touches it
    prod = producer(cfg)
    prod.produce(cfg.topics.catalog, key=make_key("acme", "launch-2"),
                 value=events_pb2.CatalogItem(tenant="acme", item_id="launch-2",
                                              state=events_pb2.BANNED).SerializeToString())
    prod.flush(10)

    genre_items = [str(i) for i, g in zip(world.item_ids, world.item_genre) if g == GENRE]
    by_pop = sorted(genre_items, key=lambda i: -world.popularity[int(i.split("-")[1])])
    rng = np.random.default_rng(5)
    now = int(time.time() * 1000)

    def taste(user: str, n: int = 8) -> list[Event]:
        picks = rng.choice(by_pop[:15], n, replace=False)
        return [Event(f"{user}-{j}", "acme", user, str(it), "click", None, now + j)
                for j, it in enumerate(picks)]

    probe = taste("probe-4")
    produce_events(cfg, probe, progress=False)
    wait_until(lambda: client.recommend("probe-4", k=10).source == recommender_pb2.NEARLINE, 30,
               what="the worker to fold the probe in", stack=stack)
    before = client.recommend("probe-4", k=10)
    assert "launch-1" not in _ids(before)
    with pytest.raises(grpc.RpcError) as e:
        client.similar_items("launch-1", k=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND

    # a user whose only event is on launch-1, sent before launch-1 has a vector: no batch of
    # theirs follows the one the vector comes after, so the worker re-solves them unprompted
    fans = [Event("only-new-0", "acme", "only-new", "launch-1", "click", None, now + 50)]
    for f in range(3):
        user = f"fan-{f}"
        fans += taste(user)
        fans += [Event(f"{user}-l{j}-{n}", "acme", user, item, "purchase", None, now + 100 + j)
                 for j, item in enumerate(("launch-1", "launch-2")) for n in range(2)]
    produce_events(cfg, fans, progress=False)
    t_sent = time.monotonic()

    # within seconds: SimilarItems knows the new item, and the probe's top-10 holds it
    sim = wait_until(lambda: _answer(lambda: client.similar_items("launch-1", k=10)), 20,
                     interval_s=0.1, what="launch-1 in SimilarItems", stack=stack)
    rec = wait_until(lambda: (r := client.recommend("probe-4", k=10)) and "launch-1" in _ids(r)
                     and r, 20, interval_s=0.1, what="launch-1 in the probe's top-10",
                     stack=stack)
    took = time.monotonic() - t_sent
    print(f"launch-1 served {took:.1f} s after its users' events, rank "
          f"{_ids(rec).index('launch-1') + 1} of the probe's top-10")
    assert took < 20
    assert rec.model_version == v1 and rec.source == recommender_pb2.NEARLINE
    assert len(rec.items) == 10 and not set(_ids(rec)) & {e.item_id for e in probe}
    assert sim.model_version == v1 and len(sim.items) == 10
    # its neighbours are its buyers' genre, and it is among the neighbours of that genre's items
    neighbours = [i for i in _ids(sim) if i.startswith("item-")]
    assert sum(genre_of(world, i) == GENRE for i in neighbours) >= 0.6 * len(neighbours)
    assert "launch-1" in _ids(client.similar_items(neighbours[0], k=10))

    # the banned new item got a vector, and is never served
    vectors = {m.key() for m in read_to_end(cfg, cfg.topics.item_vectors)}
    assert item_state_key("acme", "als", "launch-2") in vectors
    for user in ("probe-4", "fan-0", "nobody"):
        assert "launch-2" not in _ids(client.recommend(user, k=50))
    assert "launch-2" not in _ids(client.similar_items("launch-1", k=50))
    assert "launch-2" not in _ids(client.similar_items(neighbours[0], k=50))
    # as a query it answers (as a banned model item does), never holding itself
    assert "launch-2" not in _ids(client.similar_items("launch-2", k=10))
    # the fans' own new item is suppressed for them as seen
    assert "launch-1" not in _ids(client.recommend("fan-0", k=50))

    # the worker folds new items in: the user who touched only launch-1 gets a nearline vector
    only = wait_until(lambda: (r := client.recommend("only-new", k=10)).source
                      == recommender_pb2.NEARLINE and r, 20, what="only-new's nearline vector",
                      stack=stack)
    assert "launch-1" not in _ids(only)
    assert _served_delta(stack) >= 2

    # young-1: the model knows it, from its 2 early users of other genres
    def of_genre(resp) -> int:
        return sum(genre_of(world, i) == GENRE for i in _ids(resp) if i.startswith("item-"))
    assert "young-1" not in _ids(client.recommend("probe-4", k=10))
    stale = of_genre(client.similar_items("young-1", k=10))
    fans = []
    for f in range(10):
        user = f"young-fan-{f}"
        fans += taste(user) + [Event(f"{user}-y", "acme", user, "young-1", "purchase", None,
                                     now + 700)]
    produce_events(cfg, fans, progress=False)
    t_sent = time.monotonic()
    rec = wait_until(lambda: (r := client.recommend("probe-4", k=10)) and "young-1" in _ids(r)
                     and r, 20, interval_s=0.1, what="young-1 in the probe's top-10",
                     stack=stack)
    print(f"young-1 served {time.monotonic() - t_sent:.1f} s after its fans' events, rank "
          f"{_ids(rec).index('young-1') + 1} of the probe's top-10")
    assert rec.model_version == v1 and len(rec.items) == 10
    sim = wait_until(lambda: (r := client.similar_items("young-1", k=10)) and of_genre(r) >= 6
                     and r, 20, interval_s=0.1, what="young-1's neighbours of the fans' genre",
                     stack=stack)
    print(f"young-1's neighbours of the fans' genre: {stale} of 10 before, {of_genre(sim)} after")
    assert of_genre(sim) > stale and "young-1" not in _ids(sim) and len(sim.items) == 10
    vectors = {m.key(): m.value() for m in read_to_end(cfg, cfg.topics.item_vectors)}
    assert items_pb2.ItemVector.FromString(vectors[item_state_key("acme", "als", "young-1")]
                                           ).young

    # a retrain: launch-1 is the model's now, the served delta is empty
    stack.run("trainer-2", "trainer", "--once")
    wait_until(lambda: client.recommend("probe-4", k=10).model_version > v1, 60,
               what="the server to swap in the retrain", stack=stack)
    sim2 = client.similar_items("launch-1", k=10)
    assert sim2.model_version > v1 and len(sim2.items) == 10
    assert len(client.similar_items("young-1", k=10).items) == 10
    wait_until(lambda: _served_delta(stack) == 0, 10, what="an empty served delta", stack=stack)
    assert "launch-2" not in _ids(client.recommend("probe-4", k=50))
    client.close()
