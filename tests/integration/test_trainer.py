"""The trainer on a real broker: state changelog in, verified model and announcement out."""

from __future__ import annotations

import threading

import pytest

from recsys_stream.batch.app import list_models, rollback, run_trainer
from recsys_stream.batch.data import from_events
from recsys_stream.contracts.keys import make_key
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.pb import models_pb2
from recsys_stream.kafka import TopicTail, producer
from recsys_stream.stack import wait_until
from recsys_stream.synthetic import generate_events, make_world

pytestmark = pytest.mark.integration


def test_changelog_to_published_model_to_rollback(cfg):
    world = make_world("acme", 120, genres=4)
    events = generate_events(world, 200, 25, start_ms=1_700_000_000_000, seed=1)
    data = from_events("acme", events, cfg.tenant("acme").confidence, 500, 0.0)
    prod = producer(cfg)
    for user, h in data.histories.items():
        prod.produce(cfg.topics.state_changelog, key=make_key("acme", user), value=h.encode())
    assert prod.flush(10) == 0

    announcements, lock = [], threading.Lock()

    def on(m):
        with lock:
            announcements.append(models_pb2.ModelPublished.FromString(m.value()))
    tail = TopicTail(cfg, {cfg.topics.models: on}, name="test").start()
    try:
        results = run_trainer(cfg, once=True, tenant="acme")
        results += run_trainer(cfg, once=True, tenant="acme")
        assert [r["version"] for r in results] == [1, 2] and not any(r["rejected"] for r in results)
        store = ModelStore(cfg.model_store)
        art = store.load("acme", "als")
        assert art.version == 2 and set(art.user_ids) == set(data.histories)
        wait_until(lambda: len(announcements) == 2, 10, what="two announcements")
        assert [(a.tenant, a.algorithm, a.version) for a in announcements] == [
            ("acme", "als", 1), ("acme", "als", 2)]
        assert announcements[1].artifact_uri == art.uri
        assert announcements[1].checksums == art.manifest["files"]
        assert announcements[1].is_default

        assert rollback(cfg, "acme") == 1
        assert store.current_version("acme", "als") == 1
        wait_until(lambda: len(announcements) == 3, 10, what="the rollback announcement")
        assert announcements[2].version == 1
        states = {r["version"]: r["state"] for r in list_models(cfg)}
        assert states == {1: "current", 2: "kept"}
    finally:
        tail.stop()
