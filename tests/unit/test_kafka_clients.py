"""Every output of every process is written by an idempotent producer (issue 17: a retried
send is written once), and the only place a producer is built is ``kafka.producer``."""

from __future__ import annotations

import re
from pathlib import Path

from recsys_stream import kafka
from recsys_stream.config import Config

PACKAGE = Path(kafka.__file__).resolve().parent


def test_the_projects_producer_is_idempotent_with_acks_from_all_replicas(monkeypatch):
    seen = {}
    monkeypatch.setattr(kafka, "Producer", lambda conf: seen.update(conf) or object())
    kafka.producer(Config())
    assert seen["enable.idempotence"] is True
    # idempotence implies acks=all; a caller may not weaken it by accident
    assert seen.get("acks", "all") in ("all", -1, "-1")


def test_no_module_builds_a_producer_of_its_own():
    builders = [p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py")
                if "pb" not in p.parts and re.search(r"\bProducer\(|\(Producer,", p.read_text())]
    assert builders == [Path("kafka.py")]


def test_every_client_gets_the_kafka_client_settings_and_the_routed_log(monkeypatch):
    """``[kafka.client]`` (security) reaches producers, consumers and admin clients alike, and
    librdkafka logs through Python logging instead of writing to stderr."""
    seen = []
    for cls in ("Producer", "Consumer", "AdminClient"):
        monkeypatch.setattr(kafka, cls, lambda conf: seen.append(conf) or object())
    cfg = Config().replace(kafka={"client": {"security.protocol": "SASL_SSL",
                                             "sasl.mechanism": "SCRAM-SHA-512"}})
    kafka.producer(cfg), kafka.consumer(cfg, "g"), kafka.admin(cfg)
    assert len(seen) == 3
    for conf in seen:
        assert conf["security.protocol"] == "SASL_SSL"
        assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
        assert conf["logger"] is kafka.LIBRDKAFKA_LOG


def test_no_module_builds_a_consumer_or_admin_client_of_its_own():
    # kafka_cluster.py launches the project's own broker and asks it directly whether it is up
    builders = sorted(p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py")
                      if "pb" not in p.parts
                      and re.search(r"\b(Consumer|AdminClient)\(|\((Consumer|AdminClient),",
                                   p.read_text()))
    assert builders == [Path("kafka.py"), Path("kafka_cluster.py")]


def test_a_repeated_librdkafka_line_is_let_through_once_per_interval():
    import logging
    limit = kafka._RateLimit(interval_s=60)

    def rec(msg):
        return logging.LogRecord("x", logging.ERROR, __file__, 1, msg, None, None)

    first = rec("Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms)")
    assert limit.filter(first)
    # the same failure with other numbers (another attempt, another port) is held back
    assert not limit.filter(rec("Connect to ipv4#127.0.0.1:9093 failed: Connection refused "
                                "(after 1ms)"))
    assert limit.filter(rec("another message"))
    limit._last = {k: (v[0] - 61, v[1]) for k, v in limit._last.items()}
    again = rec("Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 5ms)")
    assert limit.filter(again) and "1 alike" in again.msg


class _Queue:
    """A consumer whose local queue holds ``queued`` records; notes each consume's timeout."""

    def __init__(self, queued: list) -> None:
        self.queued, self.timeouts = queued, []

    def consume(self, num_messages: int, timeout: float) -> list:
        self.timeouts.append(timeout)
        out, self.queued = self.queued[:num_messages], self.queued[num_messages:]
        return out


def test_consume_ready_takes_fetched_records_without_waiting_and_waits_only_when_empty():
    q = _Queue(["a", "b", "c"])
    assert kafka.consume_ready(q, 2, 0.005) == ["a", "b"]
    assert q.timeouts == [0]  # records were there: no wait for the batch to fill
    assert kafka.consume_ready(q, 2, 0.005) == ["c"]
    assert q.timeouts == [0, 0]
    assert kafka.consume_ready(q, 2, 0.005) == []
    assert q.timeouts == [0, 0, 0, 0.005]  # nothing there: one wait, not a spin
