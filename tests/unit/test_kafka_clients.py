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
                if "pb" not in p.parts and re.search(r"\bProducer\(", p.read_text())]
    assert builders == [Path("kafka.py")]
