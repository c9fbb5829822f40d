"""The periodic trainer on a real broker: it trains when the changelog grows, skips otherwise,
reads the last state per key (tombstones delete), announces each version, and stops on request."""

from __future__ import annotations

import threading
import time

import pytest

from recsys_stream.batch.app import run_trainer
from recsys_stream.batch.data import from_events
from recsys_stream.contracts.keys import make_key
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.pb import models_pb2
from recsys_stream.kafka import TopicTail, producer
from recsys_stream.stack import wait_until
from recsys_stream.synthetic import generate_events, make_world

pytestmark = pytest.mark.integration


def test_periodic_rounds_follow_the_changelog(cfg):
    cfg = cfg.replace(trainer={"interval_s": 0.3, "min_new_events": 10})
    events = generate_events(make_world("acme", 120, genres=4), 200, 25,
                             start_ms=1_700_000_000_000, seed=1)
    s = cfg.tenant("acme").confidence
    first = from_events("acme", [e for e in events if e.timestamp_ms < events[-1].timestamp_ms
                                 - 3 * 86_400_000], s, 500, 0.0).histories
    full = from_events("acme", events, s, 500, 0.0).histories
    prod = producer(cfg)

    def write(histories, tombstones=()):
        for user, h in histories.items():
            prod.produce(cfg.topics.state_changelog, key=make_key("acme", user), value=h.encode())
        for user in tombstones:
            prod.produce(cfg.topics.state_changelog, key=make_key("acme", user), value=None)
        assert prod.flush(10) == 0

    write(first)
    announcements, lock = [], threading.Lock()

    def on(m):
        with lock:
            announcements.append(models_pb2.ModelPublished.FromString(m.value()))
    tail = TopicTail(cfg, {cfg.topics.models: on}, name="test").start()
    stop = threading.Event()
    results: list = []
    trainer = threading.Thread(target=lambda: results.extend(
        run_trainer(cfg, once=False, tenant="acme", stop=stop)), daemon=True)
    trainer.start()
    try:
        store = ModelStore(cfg.model_store)
        wait_until(lambda: len(announcements) >= 1, 30, what="the first model")
        assert store.current_version("acme", "als") == 1
        time.sleep(1.0)  # about three more rounds: nothing new on the changelog
        assert len(announcements) == 1 and store.versions("acme", "als") == [1]

        gone = sorted(full)[0]
        write({u: h for u, h in full.items() if u != gone}, tombstones=[gone])
        wait_until(lambda: len(announcements) >= 2, 30, what="the second model")
        art = store.load("acme", "als")
        assert (announcements[1].version, announcements[1].artifact_uri) == (2, art.uri)
        assert gone not in set(art.user_ids)  # the tombstone deleted the user
        assert art.manifest["data_window"]["n_events"] == sum(
            h.event_count for u, h in full.items() if u != gone)  # last value per key
    finally:
        stop.set()
        trainer.join(10)
        tail.stop()
    assert not trainer.is_alive()
    assert [r["version"] for r in results] == [1, 2]
