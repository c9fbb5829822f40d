"""Erasure is exactly once like every other event (issue 31): kill -9 anywhere around erase
records, and a restore from the changelog, end in the state of an uninterrupted run, without the
erased users (a user with events after the erase is a new user made of those events only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
from rocksdict import AccessType, Rdict

from recsys_stream.contracts.events import encode_event, erase_event
from recsys_stream.contracts.keys import make_key, offset_marker_key, split_key
from recsys_stream.kafka import producer, read_to_end
from recsys_stream.lifeline import child_env
from recsys_stream.nearline.restore import resume
from recsys_stream.contracts.rocks import store_options
from recsys_stream.nearline.state import StateStore, stored_offsets
from recsys_stream.stack import wait_until

from tests.integration.test_worker_recovery import ALL, Markers, deployment, dump, \
    make_records, stream, takes, uninterrupted

pytestmark = pytest.mark.integration
KILLS = 6


def stored_total(cfg) -> int:
    """Input records the running worker has committed: its store's offsets, read through a
    RocksDB secondary (the worker holds the primary's lock)."""
    sec = tmp = None
    try:
        tmp = tempfile.mkdtemp(prefix="erasure-secondary-")
        sec = Rdict(cfg.worker.state_dir, options=store_options(),
                    access_type=AccessType.secondary(tmp))
        return sum(stored_offsets(sec, cfg.topics.interactions).values())
    except Exception:  # not created yet
        return 0
    finally:
        if sec is not None:
            sec.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def with_erasures(records, n_users: int, seed: int):
    """``records`` with erase records of ``n_users`` users of acme inserted at random points
    after some of their events; returns the records, the erased users who have events after
    their erasure (new users) and those who have none."""
    rng = np.random.default_rng(seed)
    now = int(time.time() * 1000) - 86_400_000
    first: dict[bytes, int] = {}
    for i, (key, _) in enumerate(records):
        if key.startswith(b"acme\x1f"):
            first.setdefault(key, i)
    keys = sorted(first)
    chosen = [keys[j] for j in rng.choice(len(keys), n_users, replace=False)]
    out = list(records)
    placed = {}
    for key in chosen:
        pos = int(rng.integers(first[key] + 1, len(records)))
        placed[key] = pos
    for key, pos in sorted(placed.items(), key=lambda kv: -kv[1]):
        _, user = split_key(key)
        e = erase_event("acme", user, now_ms=now, event_id=f"erase-{user}")
        out.insert(pos, (e.key, encode_event(e)))
    later = {k for k, pos in placed.items()
             if any(key == k for key, _ in records[pos:])}
    return out, later, set(placed) - later


def test_kill_9_around_erasures_and_a_changelog_restore_end_in_the_uninterrupted_state(
        tmp_path, kafka_bootstrap):
    rng = np.random.default_rng(31)
    base = make_records(users_per_tenant=600, events_per_user=20, seed=11)
    records, reborn, gone = with_erasures(base, 40, seed=5)
    assert reborn and gone
    cfg, stack = deployment(tmp_path, kafka_bootstrap, "killed")
    markers = Markers(cfg)
    streamer = threading.Thread(target=stream, args=(cfg, records, 10.0), daemon=True)
    try:
        stack.start("worker", "worker", "--partitions", ALL)
        streamer.start()
        for k in range(1, KILLS + 1):
            committed = markers.total()
            wait_until(lambda: len(takes(stack, "worker")) >= k, 60, stack=stack,
                       what=f"start {k} to take its partitions")
            wait_until(lambda: markers.total() > committed or not streamer.is_alive(), 60,
                       stack=stack, what=f"start {k} to commit a batch")
            time.sleep(rng.uniform(0.0, 0.5))
            stack.kill("worker")
            stack.start("worker", "worker", "--partitions", ALL)
        streamer.join(120)
        # the store's offsets, not the changelog's markers: a kill between a commit and the
        # delivery of its markers loses them, and a restart with nothing left to read writes
        # none (the local state is current; markers serve other workers' restores)
        wait_until(lambda: stored_total(cfg) == len(records), 90, stack=stack,
                   what="the worker to commit every record")
        wait_until(lambda: len(takes(stack, "worker")) >= KILLS + 1, 60, stack=stack,
                   what="the last start to take its partitions")
        assert stack.stop("worker") == 0
    finally:
        stack.stop_all()
        markers.tail.stop()

    final = dump(cfg.worker.state_dir)
    reference = uninterrupted(tmp_path, kafka_bootstrap, records)
    assert final == reference
    assert not gone & set(final), "an erased user without later events has no state"
    assert reborn <= set(final)
    # a reborn user is made of the events after the erase record only
    erase_at = {key: i for i, (key, value) in enumerate(records)
                if key in reborn and b"erase-" in value}
    for key in reborn:
        after = sum(1 for i, (k, v) in enumerate(records) if k == key and i > erase_at[key]
                    and b"garbage" not in v)
        assert 0 < final[key][2] <= after, key

    # the last record per key on the compacted topics: no profile and no state of the erased
    last_profile, last_state = {}, {}
    for m in read_to_end(cfg, cfg.topics.profiles):
        last_profile[m.key()] = m.value()
    for m in read_to_end(cfg, cfg.topics.state_changelog):
        last_state[m.key()] = m.value()
    for key in gone:
        assert last_profile.get(key, b"absent") is None, "the profile ends in a tombstone"
        assert last_state.get(key, b"absent") is None, "the changelog ends in a tombstone"
    for key in reborn:
        assert last_profile[key] is not None and last_state[key] is not None

    # a worker that loses its disk restores from the changelog: the same state, no erased user
    shutil.rmtree(cfg.worker.state_dir)
    store = StateStore(cfg.worker.state_dir)
    try:
        r = resume(cfg, store, [0, 1, 2, 3])
        assert sum(r.restored.values()) > 0
    finally:
        store.close()
    restored = dump(cfg.worker.state_dir)
    assert restored == reference


def test_erase_command_and_a_replayed_erasure_change_nothing(cfg, tmp_path):
    """``recsys-stream erase`` produces the record; replaying the partition from the start
    (a worker with no local state and the changelog's marker) ends in the same state."""
    from tests.integration.test_worker import ev, produce, start_worker, stop_worker
    produce(cfg, [ev(i, "erase-me-7f3a", f"item-{i % 5}") for i in range(10)]
            + [ev(100 + i, f"other-{i}", f"item-{i % 5}") for i in range(10)])
    config = tmp_path / "erase.toml"
    config.write_text(f'[kafka]\nbootstrap_servers = "{cfg.kafka.bootstrap_servers}"\n'
                      f'topic_prefix = "{cfg.kafka.topic_prefix}"\n[tenants.acme]\n')
    out = subprocess.run([sys.executable, "-m", "recsys_stream.cli", "erase", "--config",
                          str(config), "--tenant", "acme", "--user", "erase-me-7f3a"],
                         capture_output=True, text=True, timeout=120, env=child_env(dict(os.environ)))
    assert out.returncode == 0, out.stderr
    assert "erase record" in out.stdout and "offset" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "recsys_stream.cli", "erase", "--config",
                          str(config), "--tenant", "acme", "--user", "a\x01b"],
                         capture_output=True, text=True, timeout=120, env=child_env(dict(os.environ)))
    assert bad.returncode == 2 and "user_id" in bad.stderr
    produce(cfg, [ev(200, "erase-me-7f3a", "item-new")])  # after the erasure: a new user

    handle = start_worker(cfg)
    key = make_key("acme", "erase-me-7f3a")
    try:
        wait_until(lambda: sum(handle[2].store.offsets(cfg.topics.interactions).values())
                   == 22, 60, what="the worker to commit every record")
    finally:
        stop_worker(handle)
    first = dump(cfg.worker.state_dir)
    assert set(first[key][0]) == {"item-new"} and first[key][2] == 1
    assert len(first) == 11

    # replay everything from offset 0 on a fresh store (no changelog restore: offsets 0)
    fresh = cfg.replace(worker={"state_dir": str(tmp_path / "replay")})
    store = StateStore(fresh.worker.state_dir)
    store.commit({}, {(cfg.topics.interactions, p): 0 for p in range(4)})
    store.close()
    p = producer(cfg)
    for part in range(4):  # markers at 0: the replay starts at the beginning
        p.produce(cfg.topics.state_changelog, key=offset_marker_key(part), value=b"0",
                  partition=part)
    assert p.flush(10) == 0
    handle = start_worker(fresh)
    try:
        wait_until(lambda: sum(handle[2].store.offsets(cfg.topics.interactions).values())
                   == 22, 60, what="the replay to commit every record")
    finally:
        stop_worker(handle)
    assert dump(fresh.worker.state_dir) == first
