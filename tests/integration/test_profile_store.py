"""The shared profile store: the writer's RocksDB primary, read by a secondary process."""

from __future__ import annotations

import multiprocessing as mp

import pytest
from rocksdict import Options, Rdict

from recsys_stream.contracts.keys import make_key
from recsys_stream.kafka import producer
from recsys_stream.serving.profile_store import ProfileReader, ProfileWriter, readers_dir
from recsys_stream.stack import wait_until

pytestmark = pytest.mark.integration


def _reader(path: str, secondary_dir: str, conn) -> None:
    """A secondary in its own process, answering ("caught_up",) and ("get", key) over ``conn``."""
    reader = ProfileReader(path, secondary_dir)
    try:
        while (cmd := conn.recv()) != ("stop",):
            conn.send(reader.wait_caught_up(0) if cmd[0] == "caught_up" else reader.get(cmd[1]))
    finally:
        reader.close()


def _produce(cfg, records, partition: int = -1):
    prod = producer(cfg)
    for key, value in records:
        prod.produce(cfg.topics.profiles, key=key, value=value, partition=partition)
    assert prod.flush(10) == 0


def test_a_secondary_process_reads_what_the_primary_wrote_tombstones_delete(cfg):
    a, b, c = (make_key("acme", u) for u in ("a", "b", "c"))
    _produce(cfg, [(a, b"profile-a"), (b, b"profile-b-old"), (b, b"profile-b")])
    writer = ProfileWriter(cfg).start()
    parent, child = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(
        target=_reader, args=(cfg.server.profile_dir, str(readers_dir(cfg) / "r0"), child))
    proc.start()

    def ask(*cmd):
        parent.send(cmd)
        return parent.recv()
    try:
        wait_until(lambda: ask("caught_up"), 30, what="the secondary to catch up")
        # caught up means the whole topic as of the writer's start, the last value per key
        assert ask("get", a) == b"profile-a" and ask("get", b) == b"profile-b"
        assert ask("get", c) is None
        _produce(cfg, [(a, None), (c, b"profile-c")])  # a tombstone and a new profile
        wait_until(lambda: ask("get", c) == b"profile-c", 15, what="the new profile")
        assert ask("get", a) is None and ask("get", b) == b"profile-b"
        # again, several times: each delete purges, and the secondary must never show a value
        # older than what it already showed (a catch-up took in the purge's flush while its
        # memtable still held the deleted value: a get in between served the erased profile)
        for n in range(8):
            x, y = make_key("acme", f"x{n}"), make_key("acme", f"y{n}")
            _produce(cfg, [(x, b"x")], partition=0)
            wait_until(lambda: ask("get", x) == b"x", 15, what=f"x{n}")
            _produce(cfg, [(x, None), (y, b"y")], partition=0)  # in this order, one partition
            wait_until(lambda: ask("get", y) == b"y", 15, what=f"y{n}")
            assert ask("get", x) is None, f"round {n}: the deleted x{n} served after y{n}"
    finally:
        parent.send(("stop",))
        proc.join(15)
        writer.stop()
    assert proc.exitcode == 0


def test_the_writer_rebuilds_its_store_and_refuses_a_directory_in_use(cfg):
    key, stale = make_key("acme", "kept"), make_key("acme", "stale")
    _produce(cfg, [(key, b"v1")])
    first = ProfileWriter(cfg).start()
    try:
        reader = ProfileReader(cfg.server.profile_dir, db=first.db)
        wait_until(lambda: reader.wait_caught_up(0), 30, what="the in-process reader")
        assert reader.get(key) == b"v1"
        reader.close()
        with pytest.raises(RuntimeError, match="in use"):
            ProfileWriter(cfg).start()  # a second server on the same directory
    finally:
        first.stop()
    db = Rdict(cfg.server.profile_dir, options=Options(raw_mode=True))
    db.put(stale, b"not on the topic")
    db.close()
    # the store is rebuilt from the topic at start: what the topic does not have is gone
    second = ProfileWriter(cfg).start()
    try:
        reader = ProfileReader(cfg.server.profile_dir, db=second.db)
        wait_until(lambda: reader.wait_caught_up(0), 30, what="the rebuilt store")
        assert reader.get(stale) is None and reader.get(key) == b"v1"
        reader.close()
    finally:
        second.stop()
