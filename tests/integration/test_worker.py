"""The nearline worker on a real broker and real RocksDB."""

from __future__ import annotations

import gc
import json
import threading
import time
import weakref

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_stream.contracts.ann_index import build_index
from recsys_stream.contracts.events import Event, encode_event
from recsys_stream.contracts.keys import is_offset_marker, make_key, split_key
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.pb import models_pb2, profiles_pb2
from recsys_stream.kafka import TopicTail, producer
from recsys_stream.nearline.app import run_worker
from recsys_stream.nearline.state import StateStore
from recsys_stream.stack import wait_for_count, wait_until

pytestmark = pytest.mark.integration
DAY = 86_400_000


class Collect:
    """Follows topics of a deployment and keeps what arrives."""

    def __init__(self, cfg, *topics):
        self.records: dict[str, list] = {t: [] for t in topics}
        self._lock = threading.Lock()
        self.tail = TopicTail(cfg, {t: self._on for t in topics}, name="collect").start()

    def _on(self, m):
        with self._lock:
            self.records[m.topic()].append((m.key(), m.value(), dict(m.headers() or [])))

    def get(self, topic):
        with self._lock:
            return list(self.records[topic])


def start_worker(cfg):
    """Run the worker on a thread; returns (stop event, thread, the Worker once built)."""
    stop, built = threading.Event(), []
    t = threading.Thread(target=run_worker, args=(cfg, stop, built.append), daemon=True)
    t.start()
    wait_until(lambda: built, 20, what="the worker to start")
    return stop, t, built[0]


def stop_worker(handle):
    stop, t, _ = handle
    stop.set()
    t.join(20)
    assert not t.is_alive()


def produce(cfg, records):
    p = producer(cfg)
    for key, value in records:
        p.produce(cfg.topics.interactions, key=key, value=value)
    assert p.flush(10) == 0


def ev(i, user, item, type_="view", tenant="acme", ts=None, value=None):
    e = Event(f"e{i}", tenant, user, item, type_, value, ts or int(time.time() * 1000) - 1000 + i)
    return e.key, encode_event(e)


def test_aggregates_state_and_dead_letters_every_bad_kind(cfg):
    now = int(time.time() * 1000)
    good = [ev(1, "u1", "a"), ev(2, "u1", "b", "purchase"), ev(3, "u2", "a", "like"),
            ev(4, "u1", "a", "click"), ev(2, "u1", "b", "purchase"),  # re-sent e2 counts once
            ev(5, "u1", "c", "hide"), ev(6, "u3", "x", "rating", value=4.5)]
    json_ok = (make_key("acme", "u4"), json.dumps(
        {"event_id": "j1", "tenant": "acme", "user_id": "u4", "item_id": "z", "type": "click",
         "timestamp_ms": now}).encode())
    bad = {
        "undecodable": (make_key("acme", "u9"), b"\x08\xff\xff garbage"),
        "missing_field": ev(20, "u9", "", "view"),
        "id_too_long": ev(21, "u9", "i" * 300),
        "unknown_type": (make_key("acme", "u9"), json.dumps(
            {"tenant": "acme", "user_id": "u9", "item_id": "a", "type": "teleport",
             "timestamp_ms": now}).encode()),
        "unknown_tenant": ev(22, "u9", "a", tenant="nobody"),
        "bad_value": ev(23, "u9", "a", "rating", value=9.0),
        "timestamp_future": ev(24, "u9", "a", ts=now + 30 * DAY),
        "timestamp_past": ev(25, "u9", "a", ts=now - 20 * 365 * DAY),
        "key_mismatch": (make_key("acme", "someone-else"), ev(26, "u9", "a")[1]),
    }
    records = good[:3] + list(bad.values())[:5] + good[3:] + list(bad.values())[5:] + [json_ok]
    produce(cfg, records)
    seen = Collect(cfg, cfg.topics.dlq, cfg.topics.profiles)
    handle = start_worker(cfg)
    try:
        wait_until(lambda: len(seen.get(cfg.topics.dlq)) >= len(bad), 30, what="DLQ records")
        wait_until(lambda: {split_key(k)[1] for k, *_ in seen.get(cfg.topics.profiles)}
                   >= {"u1", "u2", "u3", "u4"}, 30, what="profiles")
    finally:
        stop_worker(handle)
        seen.tail.stop()
    dlq = seen.get(cfg.topics.dlq)
    assert sorted(h["reason"].decode() for _, _, h in dlq) == sorted(bad)
    for key, value, h in dlq:
        reason = h["reason"].decode()
        assert (key, value) == bad[reason], "the DLQ keeps the original bytes"
        assert h["source.topic"].decode() == cfg.topics.interactions
        assert int(h["source.offset"]) >= 0 and h["error"]
    store = StateStore(cfg.worker.state_dir)
    try:
        u1 = store.get(make_key("acme", "u1"))
        s = cfg.tenant("acme").confidence
        assert set(u1.items) == {"a", "b"} and list(u1.suppressed) == ["c"]
        assert u1.event_count == 4  # e1, e2, e4, e5: the re-sent e2 did not count
        assert u1.items["b"][0] == pytest.approx(s.event_strength("purchase"))
        assert store.get(make_key("acme", "u3")).items["x"][0] == pytest.approx(4.5)
        assert store.get(make_key("acme", "u4")) is not None  # JSON accepted
        assert store.get(make_key("acme", "u9")) is None
        assert sum(store.offsets(cfg.topics.interactions).values()) == len(records)
    finally:
        store.close()


def _publish_model(cfg, n_items=60, k=8):
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits
    C = sp.random(80, n_items, density=0.1, random_state=0, format="csr", dtype=np.float32)
    C.data = 1 + 2 * np.log1p(C.data * 4)
    with threadpool_limits(1, "blas"):  # as the trainer does (implicit warns otherwise)
        m = AlternatingLeastSquares(factors=k, regularization=0.1, iterations=3, random_state=0)
        m.fit(C, show_progress=False)
    store = ModelStore(cfg.model_store)
    v = store.next_version("acme")
    path = store.write("acme", "als", v, item_ids=[f"i{j}" for j in range(n_items)],
                       item_factors=m.item_factors, user_ids=[f"old{j}" for j in range(80)],
                       user_factors=m.user_factors, popularity=np.asarray(C.sum(0)).ravel(),
                       manifest={"hyperparameters": {"regularization": 0.1},
                                 "confidence": cfg.tenant("acme").confidence.to_dict()},
                       index_writer=lambda p: build_index(m.item_factors, p))
    store.set_current("acme", "als", v)
    p = producer(cfg)
    p.produce(cfg.topics.models, key=b"acme", value=models_pb2.ModelPublished(
        tenant="acme", algorithm="als", version=v, artifact_uri=path.as_uri()).SerializeToString())
    p.flush(10)
    return m, v


def test_profile_vector_equals_implicit_recalculate_user(cfg):
    model, version = _publish_model(cfg)
    seen = Collect(cfg, cfg.topics.profiles)
    handle = start_worker(cfg)
    try:
        time.sleep(1.0)  # the worker picks the model up from the store and the topic
        # the hide goes first: every profile with the three history items has it too
        produce(cfg, [ev(0, "fresh", "i11", "hide"), ev(1, "fresh", "i3", "purchase"),
                      ev(2, "fresh", "i7"), ev(3, "fresh", "i7", "click"),
                      ev(4, "fresh", "unknown-item")])

        def profile():
            for key, value, _ in reversed(seen.get(cfg.topics.profiles)):
                p = profiles_pb2.UserProfile.FromString(value)
                if p.user_id == "fresh" and p.vectors and len(p.item_ids) == 3:
                    return p
        prof = wait_until(profile, 30, what="a folded-in profile")
    finally:
        stop_worker(handle)
        seen.tail.stop()
    assert prof.vectors[0].model_version == version
    row = {f"i{j}": j for j in range(60)}
    known = [(row[i], c) for i, c in zip(prof.item_ids, prof.confidences) if i in row]
    C = sp.csr_matrix(([c for _, c in known], ([0] * len(known), [r for r, _ in known])),
                      shape=(1, 60), dtype=np.float32)
    ref = model.recalculate_user(0, C)
    got = np.array(prof.vectors[0].values)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-4
    # the server suppresses by these rows: the known history and the hidden item, no others
    assert list(prof.suppressed_item_ids) == ["i11"]
    assert sorted(prof.vectors[0].suppressed_rows) == sorted([r for r, _ in known] + [11])


def test_restart_midway_ends_in_the_same_state_as_an_uninterrupted_run(cfg, tmp_path):
    rng = np.random.default_rng(3)
    base = int(time.time() * 1000) - DAY
    records = [ev(i, f"u{rng.integers(0, 40)}", f"i{rng.integers(0, 30)}",
                  ["view", "click", "purchase", "hide"][rng.integers(0, 4)], ts=base + i * 1000)
               for i in range(3000)]
    produce(cfg, records[:1500])
    interrupted = cfg.replace(worker={"state_dir": str(tmp_path / "interrupted")})
    h = start_worker(interrupted)
    time.sleep(1.5)
    stop_worker(h)
    produce(cfg, records[1500:])
    # run to completion twice: the interrupted one resumes from its stored offsets
    for c in (interrupted, cfg.replace(worker={"state_dir": str(tmp_path / "straight")})):
        h = start_worker(c)
        worker = h[2]
        wait_for_count(lambda: sum(worker.store.offsets(c.topics.interactions).values()),
                       len(records), 30, what="worker catch-up")
        stop_worker(h)
    a, b = _dump(tmp_path / "interrupted"), _dump(tmp_path / "straight")
    assert a == b and len(a) == 40


def _dump(path):
    store = StateStore(path)
    try:
        return {k: (h.items, list(h.suppressed), h.event_count) for k, h in store.users()}
    finally:
        store.close()


def test_state_is_committed_per_interval_and_before_stopping(cfg):
    # Profiles leave with every micro-batch; state, offsets and changelog wait for the commit.
    slow = cfg.replace(worker={"commit_interval_ms": 600_000})
    records = [ev(i, f"u{i % 5}", f"i{i}") for i in range(50)]
    produce(slow, records)
    seen = Collect(slow, slow.topics.profiles, slow.topics.state_changelog)
    handle = start_worker(slow)
    try:
        wait_until(lambda: {split_key(k)[1] for k, *_ in seen.get(slow.topics.profiles)}
                   >= {f"u{i}" for i in range(5)}, 30, what="profiles")
        time.sleep(1.0)  # the changelog would have arrived by now had it been committed
        assert seen.get(slow.topics.state_changelog) == []
        assert sum(handle[2].store.offsets(slow.topics.interactions).values()) == 0
    finally:
        stop_worker(handle)
    wait_until(lambda: len(seen.get(slow.topics.state_changelog)) >= 5, 30, what="changelog")
    seen.tail.stop()
    states = [k for k, *_ in seen.get(slow.topics.state_changelog) if not is_offset_marker(k)]
    assert sorted(states) == sorted({k for k, _ in records})
    store = StateStore(slow.worker.state_dir)
    try:
        assert sum(store.offsets(slow.topics.interactions).values()) == len(records)
        assert sum(store.get(make_key("acme", f"u{i}")).event_count for i in range(5)) == 50
    finally:
        store.close()


def test_a_stopped_worker_is_freed_at_once_with_its_kafka_clients(cfg):
    # The worker process runs the cyclic collector rarely (nearline/app.py GC_THRESHOLDS), so
    # a stopped worker left in a reference cycle kept its producer connected until much later:
    # in a process that runs many workers (tests, benchmarks) they piled up. With the
    # collector off, only reference counting can free it.
    gc.disable()
    try:
        handle = start_worker(cfg)
        worker = weakref.ref(handle[2])
        follower_tail = weakref.ref(handle[2].models._tail)
        stop_worker(handle)
        del handle
        assert worker() is None, "the stopped worker is still referenced"
        assert follower_tail() is None, "the model follower's tail is still referenced"
    finally:
        gc.enable()
