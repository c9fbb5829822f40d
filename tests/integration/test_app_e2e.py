"""The app-facing options end to end on the real processes (worker, trainer, server as OS
processes, a real broker) with MovieLens: genres as categories (``catalog load``), a category
filter, an anonymous session, an explained nearline answer, an exploration slot."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import grpc
import pytest

from recsys_stream.broker import free_port
from recsys_stream.catalog_load import iter_catalog_file, produce_catalog
from recsys_stream.contracts.events import Event
from recsys_stream.contracts.pb import events_pb2
from recsys_stream.contracts.pb import recommender_pb2 as pb
from recsys_stream.kafka import ensure_topics
from recsys_stream.produce import produce_events
from recsys_stream.serving.client import RecommenderClient
from recsys_stream.stack import DEMO_KEYS, Stack, load, wait_until, write_config

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
RATINGS, MOVIES = DATA / "movielens-latest-small-ratings.csv", \
    DATA / "movielens-latest-small-movies.csv"


@pytest.fixture
def stack(kafka_bootstrap, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    path = write_config(tmp_path / "config.toml", kafka_bootstrap, tmp_path, address,
                        topic_prefix=f"app{uuid.uuid4().hex[:8]}-")
    # acme: MovieLens-sized factors, and one exploration slot in ten for items nobody touched
    text = path.read_text().replace(
        f'api_key_sha256 = ["{_hash(DEMO_KEYS["acme"])}"]',
        f'api_key_sha256 = ["{_hash(DEMO_KEYS["acme"])}"]\nexploration_share = 0.1\n'
        "exploration_max_users = 0\nexploration_max_age_hours = 24.0", 1)
    text = text.replace("factors = 8\niterations = 10\nregularization = 5.0",
                        "factors = 32\niterations = 10\nregularization = 1.0", 1)
    path.write_text(text)
    cfg = load(path)
    ensure_topics(cfg)
    s = Stack(path, tmp_path)
    s.cfg, s.address, s.path = cfg, address, path
    yield s
    s.stop_all()


def _hash(key):
    from recsys_stream.config import hash_key
    return hash_key(key)


def _horror_by_popularity():
    """Horror films, and the films of no other genre, most rated first (a visitor who looked at
    The Shining, not at The Silence of the Lambs: that one is everybody's film)."""
    items = list(iter_catalog_file(MOVIES, "acme"))
    horror = {i.item_id for i in items if "Horror" in i.categories}
    only = {i.item_id for i in items if list(i.categories) == ["Horror"]}
    with open(RATINGS, newline="") as f:
        counts = Counter(r["movieId"] for r in csv.DictReader(f) if r["movieId"] in only)
    return horror, [m for m, _ in counts.most_common()]


def test_movielens_genres_filters_sessions_explanations_and_exploration(stack):
    cfg = stack.cfg
    horror, popular_horror = _horror_by_popularity()
    out = subprocess.run([sys.executable, "-m", "recsys_stream.cli", "catalog", "load",
                          str(MOVIES), "--tenant", "acme", "--config", str(stack.path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    stack.start("worker", "worker")
    stack.run("trainer", "trainer", "--once", "--events-file", str(RATINGS), "--tenant", "acme")
    stack.start("server", "serve")
    acme = RecommenderClient(stack.address, DEMO_KEYS["acme"])

    def horror_answer():
        try:
            r = acme.recommend("1", k=10, filter=pb.Filter(include_categories=["Horror"]))
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                return None
            raise
        return r if r.model_version and len(r.items) == 10 and \
            {i.item_id for i in r.items} <= horror else None
    r = wait_until(horror_answer, 120, what="a filtered answer of 10 horror films", stack=stack)
    assert r.source == pb.BATCH

    # an anonymous visitor who looked at three horror films gets a mostly horror answer
    three = popular_horror[:3]
    anon = acme.recommend("", k=10, context_item_ids=three)
    assert anon.source == pb.SESSION and len(anon.items) == 10
    assert not {i.item_id for i in anon.items} & set(three)
    share = sum(i.item_id in horror for i in anon.items) / 10
    assert share > 0.5, share

    # a nearline user's explanation names items of their history
    fan = f"fan-{uuid.uuid4().hex[:6]}"
    history = popular_horror[3:8]
    now = int(time.time() * 1000)
    produce_events(cfg, [Event(f"{fan}-{n}", "acme", fan, m, "click", None, now + n)
                         for n, m in enumerate(history)], progress=False)

    def explained():
        a = acme.recommend(fan, k=10, explain=True)
        full = a.source == pb.NEARLINE and not {i.item_id for i in a.items} & set(history)
        return a if full and all(i.because for i in a.items
                                 if i.reason == pb.ScoredItem.PERSONALIZED) else None
    e = wait_until(explained, 60, what="an explained nearline answer", stack=stack)
    named = {b.item_id for i in e.items for b in i.because}
    assert named and named <= set(history)

    # a young item (launched now, nobody has touched it) gets the exploration slot, marked
    produce_catalog(cfg, [events_pb2.CatalogItem(
        tenant="acme", item_id="launch-1", state=events_pb2.AVAILABLE, categories=["Horror"],
        created_ms=int(time.time() * 1000))])

    def explored():
        a = acme.recommend("1", k=10)
        marked = [i.item_id for i in a.items if i.reason == pb.ScoredItem.EXPLORATION]
        return a if marked == ["launch-1"] else None
    x = wait_until(explored, 30, what="an exploration slot for the young item", stack=stack)
    assert len(x.items) == 10
    assert sum(i.reason == pb.ScoredItem.PERSONALIZED for i in x.items) == 9
    stack.check_alive()
    acme.close()
