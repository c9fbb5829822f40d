"""Crash safety and scale-out of the nearline worker as separate OS processes (issue 3).

Both tests compare the final RocksDB state with the state of an uninterrupted run of the same
records (a worker thread on a deployment of its own, fed the same records in the same order, so
every record lands on the same partition at the same offset).
"""

from __future__ import annotations

import re
import threading
import time
import uuid

import numpy as np
import pytest

from recsys_stream.contracts.events import Event, encode_event
from recsys_stream.contracts.keys import is_offset_marker, make_key, offset_marker_key
from recsys_stream.contracts.pb import profiles_pb2
from recsys_stream.contracts.user_state import UserHistory
from recsys_stream.kafka import TopicTail, ensure_topics, produce_all, producer, read_to_end
from recsys_stream.nearline.app import run_worker
from recsys_stream.nearline.restore import resume
from recsys_stream.nearline.state import StateStore
from recsys_stream.stack import Stack, load, wait_for_count, wait_until, write_config
from recsys_stream.synthetic import generate_events, make_world

pytestmark = pytest.mark.integration

DAY = 86_400_000
ALL = "0,1,2,3"


# -- inputs --------------------------------------------------------------------------------------
def make_records(users_per_tenant: int, events_per_user: int, seed: int
                 ) -> list[tuple[bytes, bytes]]:
    """Events of two tenants (300 items each), with malformed and re-sent records mixed in."""
    rng = np.random.default_rng(seed)
    start = int(time.time() * 1000) - 31 * DAY  # generate_events spans 30 days
    events = [e for i, t in enumerate(("acme", "globex"))
              for e in generate_events(make_world(t, 300), users_per_tenant, events_per_user,
                                       start, seed=seed + i)]
    events.sort(key=lambda e: e.timestamp_ms)
    records = [(e.key, encode_event(e)) for e in events]
    for pos in sorted(rng.integers(0, len(records), len(records) // 200), reverse=True):
        key = records[pos][0]
        kind = rng.integers(0, 3)
        if kind == 0:    # undecodable bytes under a real user's key -> DLQ
            records.insert(pos, (key, b"\x08\xff\xff garbage"))
        elif kind == 1:  # a tenant nobody configured -> DLQ
            e = Event(f"x{pos}", "nobody", "u", "i", "view", None, start + DAY)
            records.insert(pos, (make_key("nobody", "u"), encode_event(e)))
        else:            # a producer retry: the same event again, later -> counted once
            records.insert(min(pos + 50, len(records)), records[pos])
    return records


def stream(cfg, records, seconds: float, chunks: int = 40) -> None:
    """Produce ``records`` in order, spread over about ``seconds``.

    With the Java client's partitioner (murmur2): the worker's own producer hashes keys
    differently (librdkafka's CRC32), so a changelog placed by key would not line up with the
    input partitions, and a restore would miss users.
    """
    prod = producer(cfg, partitioner="murmur2_random")
    step = -(-len(records) // chunks)
    for i in range(0, len(records), step):
        produce_all(prod, cfg.topics.interactions, records[i:i + step])
        assert prod.flush(30) == 0
        time.sleep(seconds / chunks)


# -- deployments ---------------------------------------------------------------------------------
def deployment(tmp_path, bootstrap, name: str, prefix: str | None = None, **worker_keys):
    """A config file (topic ``prefix``, extra ``[worker]`` keys), its Config and a Stack."""
    workdir = tmp_path / name
    workdir.mkdir()
    path = write_config(workdir / "config.toml", bootstrap, workdir, "127.0.0.1:1",
                        topic_prefix=prefix or f"rec{uuid.uuid4().hex[:8]}-")
    extra = "".join(f"{k} = {v}\n" for k, v in worker_keys.items())
    path.write_text(path.read_text().replace("[worker]\n", "[worker]\n" + extra, 1))
    cfg = load(path)
    ensure_topics(cfg)
    return cfg, Stack(path, workdir)


class Markers:
    """The worker's offset markers on the state changelog: the committed input, per partition."""

    def __init__(self, cfg) -> None:
        self.at: dict[int, int] = {}
        self._lock = threading.Lock()
        self.tail = TopicTail(cfg, {cfg.topics.state_changelog: self._on}, name="markers").start()

    def _on(self, m) -> None:
        if is_offset_marker(m.key()):
            with self._lock:
                self.at[m.partition()] = max(self.at.get(m.partition(), 0), int(m.value()))

    def total(self) -> int:
        with self._lock:
            return sum(self.at.values())


def takes(stack: Stack, name: str) -> list[str]:
    """The worker's "took partitions" log lines so far (one per assignment it received)."""
    path = stack.logs / f"{name}.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return [line for line in text.splitlines() if "took partitions" in line]


def taken(line: str) -> tuple[list[int], dict[int, int]]:
    """Partitions of a "took partitions" line, and the users it restored per partition."""
    parts = [int(p) for p in re.search(r"took partitions \[([\d, ]*)\]", line)[1].split(",")]
    restored = re.search(r"restored from the changelog: (\{[^}]*\}|none)", line)[1]
    return parts, ({} if restored == "none" else
                   {int(k): int(v) for k, v in re.findall(r"(\d+): (\d+)", restored)})


def dump(state_dir) -> dict:
    """Every user's state: items with strengths and times, suppressions, counts, offsets."""
    store = StateStore(state_dir)
    try:
        return {k: (h.items, list(h.suppressed), h.event_count, h.last_event_ms,
                    h.input_partition, h.applied_offset) for k, h in store.users()}
    finally:
        store.close()


def uninterrupted(tmp_path, bootstrap, records) -> dict:
    """The final state of one worker that ran through ``records`` without interruption."""
    cfg, _ = deployment(tmp_path, bootstrap, "uninterrupted", partitions="[0, 1, 2, 3]")
    stream(cfg, records, 0.0, chunks=1)
    stop, built = threading.Event(), []
    t = threading.Thread(target=run_worker, args=(cfg, stop, built.append), daemon=True)
    t.start()
    wait_until(lambda: built, 30, what="the reference worker to start")
    try:
        wait_for_count(lambda: sum(built[0].store.offsets(cfg.topics.interactions).values()),
                       len(records), 60, what="the reference run")
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    return dump(cfg.worker.state_dir)


def assert_last_profiles_match(cfg, states: dict) -> None:
    """Every user's last profile on the topic describes the user's final state."""
    last = {}
    for m in read_to_end(cfg, cfg.topics.profiles):
        last[m.key()] = profiles_pb2.UserProfile.FromString(m.value())
    assert set(last) == set(states)
    store = StateStore(cfg.worker.state_dir)
    try:
        for key, h in store.users():
            p = last[key]
            ids, conf = h.confidences(cfg.tenant(h.tenant).confidence)
            assert list(p.item_ids) == ids, key
            np.testing.assert_allclose(p.confidences, conf, rtol=1e-6)
            assert list(p.suppressed_item_ids) == list(h.suppressed), key
            assert p.last_event_ms == h.last_event_ms, key
    finally:
        store.close()


# -- the proofs ----------------------------------------------------------------------------------
def _user(name: str, partition: int, offset: int, *items: str) -> UserHistory:
    h = UserHistory("acme", name, input_partition=partition, applied_offset=offset,
                    event_count=len(items))
    h.items = {i: [1.0, 1000, 1000] for i in items}
    return h


def test_resume_keeps_a_current_local_state_and_restores_a_stale_one(cfg, tmp_path):
    topic, changelog = cfg.topics.interactions, cfg.topics.state_changelog
    u0, u1, u2 = (make_key("acme", u) for u in ("u0", "u1", "u2"))
    prod = producer(cfg)
    for partition, key, value in [
            (0, u0, _user("u0", 0, 9, "a").encode()), (0, offset_marker_key(0), b"10"),
            (1, u1, _user("u1", 1, 2, "a").encode()), (1, offset_marker_key(1), b"3"),
            (1, u1, _user("u1", 1, 4, "a", "b").encode()), (1, offset_marker_key(1), b"5"),
            # a batch whose worker died before its marker: u2 is past the marker
            (1, u2, _user("u2", 1, 7, "c").encode())]:
        prod.produce(changelog, key=key, value=value, partition=partition)
    assert prod.flush(10) == 0
    store = StateStore(tmp_path / "local")
    try:
        # partition 0: committed past the marker (its marker was lost): current;
        # partition 1: taken over by another worker since offset 3: stale
        local_u0 = _user("u0", 0, 11, "a", "z")
        store.commit({u0: local_u0, u1: _user("u1", 1, 2, "a")}, {(topic, 0): 12, (topic, 1): 3})
        r = resume(cfg, store, [0, 1, 2])
        assert r.offsets == {0: 12, 1: 5, 2: 0}
        assert r.restored == {1: 2, 2: 0}
        assert set(r.republish) == {u2}
        assert store.get(u0) == local_u0
        assert set(store.get(u1).items) == {"a", "b"} and store.get(u2).applied_offset == 7
        assert store.offsets(topic) == {0: 12, 1: 5, 2: 0}
    finally:
        store.close()


class _NoModels:
    def models(self, tenant):
        return {}


def test_a_start_from_a_local_state_past_the_last_marker_marks_where_it_resumes(cfg, tmp_path):
    """Killed between a commit's RocksDB write and its markers' delivery, a worker restarts
    from its own store: the changelog is marked there at once, not at the next input."""
    from recsys_stream.nearline.restore import read_changelog_partitions
    from recsys_stream.nearline.worker import Worker
    topic, u0 = cfg.topics.interactions, make_key("acme", "u0")
    prod = producer(cfg)
    for key, value in [(u0, _user("u0", 0, 9, "a").encode()), (offset_marker_key(0), b"10")]:
        prod.produce(cfg.topics.state_changelog, key=key, value=value, partition=0)
    assert prod.flush(10) == 0
    store = StateStore(tmp_path / "local")
    try:
        store.commit({u0: _user("u0", 0, 11, "a", "z")}, {(topic, 0): 12})
        worker = Worker(cfg, store, _NoModels(), None, producer(cfg))
        taken = worker._take([0, 1])
        assert [(tp.partition, tp.offset) for tp in taken if tp.partition == 0] == [(0, 12)]
        logged = read_changelog_partitions(cfg, [0, 1])
        assert logged[0].marker == 12  # was 10
        assert logged[1].marker is None  # nothing taken from a store there: nothing to mark
    finally:
        store.close()


KILLS = 12


def test_kill_9_at_random_points_ends_in_the_uninterrupted_state(tmp_path, kafka_bootstrap):
    rng = np.random.default_rng(20261125)
    records = make_records(users_per_tenant=2500, events_per_user=20, seed=7)
    assert len(records) >= 100_000
    cfg, stack = deployment(tmp_path, kafka_bootstrap, "killed")
    markers = Markers(cfg)
    streamer = threading.Thread(target=stream, args=(cfg, records, 18.0), daemon=True)
    try:
        stack.start("worker", "worker", "--partitions", ALL)
        streamer.start()
        during_stream = 0
        for k in range(1, KILLS + 1):
            # SIGKILL at a random moment once the k-th start has committed a batch, so the kill
            # points spread over the whole stream (mid-batch, mid-publish, idle, ...)
            committed = markers.total()
            wait_until(lambda: len(takes(stack, "worker")) >= k, 60, stack=stack,
                       what=f"start {k} to take its partitions")
            wait_until(lambda: markers.total() > committed or not streamer.is_alive(), 60,
                       stack=stack, what=f"start {k} to commit a batch")
            time.sleep(rng.uniform(0.0, 0.5))
            during_stream += streamer.is_alive()
            stack.kill("worker")
            stack.start("worker", "worker", "--partitions", ALL)
        streamer.join(120)
        wait_for_count(markers.total, len(records), 60, stack=stack,
                       what="the worker to commit every record")
        # the killed start may have committed every record already: without this wait the last
        # start could get its SIGTERM while still importing, before it handles SIGTERM
        wait_until(lambda: len(takes(stack, "worker")) >= KILLS + 1, 60, stack=stack,
                   what="the last start to take its partitions")
        assert stack.stop("worker") == 0
    finally:
        stack.stop_all()
        markers.tail.stop()
    print(f"{KILLS} kills, {during_stream} of them while events streamed")

    final = dump(cfg.worker.state_dir)
    assert final == uninterrupted(tmp_path, kafka_bootstrap, records)
    assert len(final) == 5000
    assert_last_profiles_match(cfg, final)


def test_two_workers_share_a_group_and_the_survivor_restores_a_killed_ones_partitions(
        tmp_path, kafka_bootstrap):
    records = make_records(users_per_tenant=500, events_per_user=20, seed=11)
    third = len(records) // 3
    cfg, stack = deployment(tmp_path, kafka_bootstrap, "group", session_timeout_ms=6000)
    markers = Markers(cfg)
    state = {n: str(tmp_path / f"state-{n}") for n in ("a", "b")}
    try:
        stack.start("a", "worker", "--state-dir", state["a"])
        wait_until(lambda: takes(stack, "a"), 60, stack=stack, what="a to join")
        stream(cfg, records[:third], 0.0, chunks=1)
        wait_until(lambda: markers.total() == third, 60, stack=stack, what="a's first third")

        stack.start("b", "worker", "--state-dir", state["b"])
        wait_until(lambda: takes(stack, "b") and len(takes(stack, "a")) >= 2, 60, stack=stack,
                   what="the rebalance onto two workers")
        a_parts, _ = taken(takes(stack, "a")[-1])
        b_parts, b_restored = taken(takes(stack, "b")[-1])
        assert sorted(a_parts + b_parts) == [0, 1, 2, 3] and a_parts and b_parts
        # b had no local state: every user of its partitions came from the changelog
        assert set(b_restored) == set(b_parts) and min(b_restored.values()) > 0
        stream(cfg, records[third:2 * third], 0.0, chunks=1)
        wait_until(lambda: markers.total() == 2 * third, 60, stack=stack,
                   what="the second third on two workers")

        # kill b while the last third streams in; a gets b's partitions once b's session ends
        streamer = threading.Thread(target=stream, args=(cfg, records[2 * third:], 3.0),
                                    daemon=True)
        streamer.start()
        time.sleep(1.0)
        stack.kill("b")
        wait_until(lambda: len(takes(stack, "a")) >= 3, 60, stack=stack,
                   what="a to take b's partitions")
        streamer.join(60)
        wait_for_count(markers.total, len(records), 60, stack=stack,
                       what="the survivor to commit every record")
        a_parts, a_restored = taken(takes(stack, "a")[-1])
        assert a_parts == [0, 1, 2, 3]
        # a's own copy of b's partitions is from before b took them: stale, so restored
        assert set(a_restored) == set(b_parts)
        assert stack.stop("a") == 0
    finally:
        stack.stop_all()
        markers.tail.stop()
    assert dump(state["a"]) == uninterrupted(tmp_path, kafka_bootstrap, records)
