"""The trainer's changelog reader reads only what was appended since its last round and
still sees exactly what a read from the start sees (updates, tombstones, markers)."""

from __future__ import annotations

import pytest

from recsys_stream.batch.data import ChangelogReader, read_changelog
from recsys_stream.contracts.keys import make_key, offset_marker_key
from recsys_stream.contracts.user_state import UserHistory
from recsys_stream.kafka import ensure_topics, producer

from tests.conftest import make_config

pytestmark = pytest.mark.integration


def _state(tenant, user, *items, offset=0):
    h = UserHistory(tenant, user, input_partition=0, applied_offset=offset,
                    event_count=len(items))
    h.items = {i: [1.0, 1000, 1000] for i in items}
    return h


def _write(cfg, records):
    p = producer(cfg)
    for partition, key, value in records:
        p.produce(cfg.topics.state_changelog, key=key, value=value, partition=partition)
    assert p.flush(10) == 0


def _view(by_tenant):
    return {t: {u: sorted(h.items) for u, h in users.items()} for t, users in by_tenant.items()}


def test_a_second_read_takes_only_the_new_records_and_equals_a_full_read(cfg):
    first = [(u % 4, make_key("acme", f"u{u}"), _state("acme", f"u{u}", "a", "b").encode())
             for u in range(20)]
    first.append((1, offset_marker_key(1), b"7"))
    _write(cfg, first)
    reader = ChangelogReader(cfg)
    assert len(reader.read()["acme"]) == 20
    assert reader.last_records == len(first)

    later = [(3, make_key("acme", "u3"), _state("acme", "u3", "z").encode()),   # an update
             (1, make_key("acme", "u5"), None),                                 # a tombstone
             (2, make_key("globex", "g1"), _state("globex", "g1", "q").encode()),
             (2, make_key("acme", "u6"), b"\x08\xff corrupt")]                  # undecodable
    _write(cfg, later)
    incremental = reader.read()
    assert reader.last_records == len(later)
    assert _view(incremental) == _view(read_changelog(cfg))
    assert sorted(incremental["acme"]["u3"].items) == ["z"]
    assert "u5" not in incremental["acme"] and "u6" not in incremental["acme"]
    assert _view(incremental)["globex"] == {"g1": ["q"]}

    assert reader.read() and reader.last_records == 0  # nothing new: nothing read


def test_a_partition_appended_past_its_compacted_size_is_read_again_from_its_start(
        tmp_path, apache_kafka_bootstrap):
    # Apache Kafka: the choice needs true high watermarks (tansu reports them short)
    cfg = make_config(tmp_path, apache_kafka_bootstrap)
    ensure_topics(cfg)
    key = make_key("acme", "busy")
    _write(cfg, [(0, key, _state("acme", "busy", "a").encode())])
    reader = ChangelogReader(cfg)
    reader.read()
    # many versions of one user: more appended records than the partition's whole first read
    _write(cfg, [(0, key, _state("acme", "busy", "a", f"i{j}").encode()) for j in range(5)])
    latest = reader.read()
    assert reader.last_records == 6  # the partition again from its start (uncompacted here)
    assert sorted(latest["acme"]["busy"].items) == ["a", "i4"]
    assert _view(latest) == _view(read_changelog(cfg))
