"""A worker told to stop while the broker is down stops, commits nothing it could not deliver,
and loses nothing: the next start replays what was uncommitted (seen in a soak: a worker whose
broker had died waited in its last commit's flush for good)."""

from __future__ import annotations

import threading
import time

import pytest

from recsys_stream.contracts.events import encode_event
from recsys_stream.kafka import ensure_topics, produce_all, producer
from recsys_stream.kafka_cluster import KafkaCluster
from recsys_stream.nearline import worker as worker_mod
from recsys_stream.nearline.app import run_worker
from recsys_stream.nearline.state import StateStore
from recsys_stream.stack import wait_until
from recsys_stream.synthetic import generate_events, make_world
from tests.conftest import make_config

pytestmark = pytest.mark.integration


def _applied(worker) -> int:
    return sum(worker._pending_offsets.values())


@pytest.mark.timeout(300)
def test_stop_with_the_broker_down_commits_nothing_and_a_restart_replays_it(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(worker_mod, "_STOP_FLUSH_S", 5.0)
    events = generate_events(make_world("acme", 100), 40, 10,
                             int(time.time() * 1000) - 31 * 86_400_000, seed=3)
    with KafkaCluster(nodes=1, data_dir=tmp_path / "kafka") as kafka:
        cfg = make_config(tmp_path, kafka.bootstrap_servers)
        # nothing is committed by the interval: everything applied is pending at the stop
        cfg = cfg.replace(worker={"partitions": (0, 1, 2, 3), "commit_interval_ms": 3_600_000})
        ensure_topics(cfg)
        prod = producer(cfg)
        produce_all(prod, cfg.topics.interactions, [(e.key, encode_event(e)) for e in events])
        assert prod.flush(30) == 0

        box, stop = {}, threading.Event()
        t = threading.Thread(target=run_worker, args=(cfg, stop), daemon=True,
                             kwargs={"on_start": lambda w: box.setdefault("w", w)})
        t.start()
        wait_until(lambda: "w" in box and _applied(box["w"]) >= len(events), 60,
                   what="the worker to apply every event")
        kafka.kill_node(kafka.nodes[0])
        stop.set()
        t0 = time.monotonic()
        t.join(120)
        assert not t.is_alive(), "the worker hung in its last commit with the broker down"
        took = time.monotonic() - t0

        store = StateStore(cfg.worker.state_dir)
        try:
            # only the resume point of the start (offset 0) is stored: nothing applied since
            offsets = store.offsets(cfg.topics.interactions)
            assert set(offsets.values()) <= {0}, f"committed undelivered work: {offsets}"
            assert list(store.users()) == []
        finally:
            store.close()

        # the broker back on its log: a new worker replays it all, once
        kafka.start_node(kafka.nodes[0])
        kafka.wait_ready()
        box.clear()
        stop = threading.Event()
        t = threading.Thread(target=run_worker, args=(cfg, stop), daemon=True,
                             kwargs={"on_start": lambda w: box.setdefault("w", w)})
        t.start()
        wait_until(lambda: "w" in box and _applied(box["w"]) >= len(events), 60,
                   what="the restarted worker to replay every event")
        stop.set()
        t.join(60)
        assert not t.is_alive()
        store = StateStore(cfg.worker.state_dir)
        try:
            counted = sum(h.event_count for _, h in store.users())
            assert sum(store.offsets(cfg.topics.interactions).values()) == len(events)
        finally:
            store.close()
        assert counted == len(events)  # none lost, none twice
    print(f"\nstopped {took:.1f}s after the broker died and the stop was asked")
