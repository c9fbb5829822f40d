"""The state changelog really compacts on Apache Kafka, and a partition restored from the
compacted changelog equals the worker's own state (DESIGN.md: the changelog is compacted; a
worker that takes a partition restores from it)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from recsys_stream.contracts.user_state import UserHistory
from recsys_stream.kafka import consumer, ensure_topics, read_to_end
from recsys_stream.nearline.restore import read_changelog_partitions
from recsys_stream.nearline.state import StateStore
from recsys_stream.stack import wait_until

from tests.conftest import make_config
from tests.integration.test_worker import ev, produce, start_worker, stop_worker

pytestmark = pytest.mark.integration
USERS, ROUNDS = 12, 8


def _written(cfg) -> int:
    """Records ever appended to the changelog: the sum of its high watermarks."""
    c = consumer(cfg, group_id="watermarks-unused")
    try:
        parts = range(cfg.kafka.interaction_partitions)
        return sum(c.get_watermark_offsets(TopicPartition(cfg.topics.state_changelog, p),
                                           timeout=10)[1] for p in parts)
    finally:
        c.close()


def test_the_changelog_compacts_and_a_restore_from_it_equals_the_worker_state(
        tmp_path, apache_kafka_bootstrap):
    cfg = make_config(tmp_path, apache_kafka_bootstrap)
    ensure_topics(cfg)
    admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})
    res = ConfigResource(ConfigResource.Type.TOPIC, cfg.topics.state_changelog)
    conf = admin.describe_configs([res])[res].result()
    assert conf["cleanup.policy"].value == "compact"
    assert conf["segment.ms"].value == str(cfg.kafka.compacted_segment_ms)

    handle = start_worker(cfg)
    try:
        n = 0
        # Each round rewrites every user's state once; the pauses let segments roll
        # (segment.ms) so that the cleaner has closed segments to compact.
        for r in range(ROUNDS):
            produce(cfg, [ev(n + u, f"user-{u}", f"item-{r}-{u % 3}") for u in range(USERS)])
            n += USERS
            time.sleep(cfg.kafka.compacted_segment_ms / 1000 + 0.3)

        wait_until(lambda: _written(cfg) >= n, 30, what="the changelog of every event")

        def live() -> int:
            return sum(1 for _ in read_to_end(cfg, cfg.topics.state_changelog))

        written = _written(cfg)
        # one more write after the last roll interval closes the active segment
        produce(cfg, [ev(n, "user-0", "item-last")])
        n += 1
        wait_until(lambda: live() < written / 2, 60,
                   what=f"the cleaner to compact the changelog below {written // 2} of "
                        f"{written} records")
    finally:
        stop_worker(handle)

    remaining = sum(1 for _ in read_to_end(cfg, cfg.topics.state_changelog))
    print(f"changelog: {_written(cfg)} records written, {remaining} after compaction "
          f"({USERS} users, {cfg.kafka.interaction_partitions} offset markers at most)")
    assert remaining < _written(cfg) / 2

    # every partition restored from what is left equals the worker's RocksDB state
    restored = read_changelog_partitions(cfg, list(range(cfg.kafka.interaction_partitions)))
    store = StateStore(cfg.worker.state_dir)
    try:
        local = {k: h for k, h in store.users()}
        from_log = {k: UserHistory.decode(v) for part in restored.values()
                    for k, v in part.states.items() if v is not None}
        assert len(local) == USERS
        assert from_log.keys() == local.keys()
        for k, h in local.items():
            assert from_log[k].encode() == h.encode(), k
        offsets = store.offsets(cfg.topics.interactions)
        for p, part in restored.items():
            if p in offsets:
                assert part.marker == offsets[p], "the last marker survives compaction"
    finally:
        store.close()
