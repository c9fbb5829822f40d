"""A client nobody here wrote: Debian's kcat produces JSON events, as the README shows a user
doing it, and the worker applies them and dead-letters a malformed one with its reason."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from recsys_stream.contracts.keys import make_key
from recsys_stream.kafka import ensure_topics
from recsys_stream.nearline.state import StateStore
from recsys_stream.stack import wait_until

from tests.conftest import make_config
from tests.integration.test_worker import Collect, start_worker, stop_worker

pytestmark = pytest.mark.integration


def test_kcat_json_events_are_applied_and_a_malformed_one_is_dead_lettered(
        tmp_path, apache_kafka_bootstrap):
    # on Apache Kafka: Debian's kcat 1.7 cannot finish its handshake with tansu
    cfg = make_config(tmp_path, apache_kafka_bootstrap)
    ensure_topics(cfg)
    kcat = shutil.which("kcat")
    assert kcat, "kcat is missing: `make test` installs Debian's kcat (make test-tools)"
    now = int(time.time() * 1000)
    events = [{"event_id": f"k{i}", "tenant": "acme", "user_id": "kc-user", "item_id": item,
               "type": "click", "timestamp_ms": now - 1000 + i}
              for i, item in enumerate(["film-1", "film-2", "film-3"])]
    lines = [f"acme\x1fkc-user\t{json.dumps(e)}" for e in events]
    lines.append("acme\x1fkc-bad\t{\"event_id\": \"k9\", \"tenant\": \"acme\", ")  # cut short
    # the README's command: key and value split by a tab, one record per line
    done = subprocess.run([kcat, "-P", "-b", cfg.kafka.bootstrap_servers,
                           "-t", cfg.topics.interactions, "-K", "\t"],
                          input="\n".join(lines) + "\n", text=True, capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    seen = Collect(cfg, cfg.topics.dlq, cfg.topics.profiles)
    handle = start_worker(cfg)
    try:
        wait_until(lambda: seen.get(cfg.topics.dlq), 30, what="the malformed record in the DLQ")
        wait_until(lambda: any(k == make_key("acme", "kc-user")
                               for k, *_ in seen.get(cfg.topics.profiles)), 30,
                   what="kc-user's profile")
    finally:
        stop_worker(handle)
        seen.tail.stop()
    (key, _value, headers), = seen.get(cfg.topics.dlq)
    assert key == make_key("acme", "kc-bad")
    assert headers["reason"].decode() == "undecodable"
    assert b"invalid JSON" in headers["error"]
    store = StateStore(cfg.worker.state_dir)
    try:
        state = store.get(make_key("acme", "kc-user"))
        assert state is not None and set(state.items) == {"film-1", "film-2", "film-3"}
        assert state.event_count == 3
    finally:
        store.close()
