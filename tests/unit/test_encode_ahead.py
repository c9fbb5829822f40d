"""States encoded ahead of the commit (``Worker._encode_ahead``): the commit writes and logs
exactly the bytes it would have encoded itself, whichever users a batch touched again."""

from __future__ import annotations

import time
import zlib

import numpy as np

from recsys_stream.contracts.keys import make_key
from recsys_stream.contracts.pb import events_pb2
from recsys_stream.nearline.state import StateStore
from recsys_stream.nearline.worker import Worker
from tests.conftest import make_config


class _Record:
    def __init__(self, key, value, partition, offset, ts):
        self._k, self._v, self._p, self._o, self._ts = key, value, partition, offset, ts

    def topic(self): return "interactions"
    def partition(self): return self._p
    def offset(self): return self._o
    def key(self): return self._k
    def value(self): return self._v
    def timestamp(self): return (1, self._ts)
    def error(self): return None
    def headers(self): return None


class _Producer:
    def __init__(self):
        self.records = []

    def produce(self, topic, key=None, value=None, partition=-1, headers=None,
                on_delivery=None):
        self.records.append((topic, key, value))
        if on_delivery is not None:  # acknowledged at once
            on_delivery(None, None)

    def flush(self, *_):
        return 0

    def poll(self, *_):
        return 0


class _NoModels:
    def models(self, tenant):
        return {}


_NOW = int(time.time() * 1000) - 60_000  # one clock for both runs


def _batches():
    rng = np.random.default_rng(3)
    now = _NOW
    out, j = [], 0
    for _ in range(30):  # users 0-3 in nearly every batch (heavy), the rest now and then
        batch = []
        for user in [*rng.integers(0, 4, 3), *rng.integers(4, 60, 5)]:
            key = make_key("acme", f"u{user}")
            msg = events_pb2.Interaction(event_id=f"e{j}", tenant="acme", user_id=f"u{user}",
                                         item_id=f"i{rng.integers(0, 40)}",
                                         type=events_pb2.CLICK, timestamp_ms=now + j)
            batch.append(_Record(key, msg.SerializeToString(), zlib.crc32(key) % 4, j, now + j))
            j += 1
        out.append(batch)
    return out


def _run(tmp_path, name, ahead: bool):
    cfg = make_config(tmp_path / name)
    store, prod = StateStore(tmp_path / name / "state"), _Producer()
    worker = Worker(cfg, store, _NoModels(), None, prod)
    if not ahead:
        worker._encode_ahead = lambda first, batch: None
    encoded_ahead = 0
    for n, batch in enumerate(_batches(), 1):
        worker.process(batch)
        encoded_ahead = max(encoded_ahead, len(worker._encoded))
        if n % 7 == 0:
            worker.commit()
    worker.commit()
    changelog = [(k, v) for t, k, v in prod.records if t == cfg.topics.state_changelog]
    states = {k: store.get(k) for k, _ in changelog if not k.startswith(b"\x00")}
    store.close()
    return changelog, states, encoded_ahead


def test_the_commit_logs_and_stores_the_same_bytes_with_states_encoded_ahead(tmp_path):
    logged, stored, n = _run(tmp_path, "ahead", True)
    plain, plain_stored, _ = _run(tmp_path, "plain", False)
    assert n > 0  # some states were encoded ahead
    assert logged == plain  # the changelog: the same records in the same order
    assert {k: h.encode() for k, h in stored.items()} == \
        {k: h.encode() for k, h in plain_stored.items()}
    # the last record of each user is its stored state
    last = dict(logged)
    assert all(last[k] == h.encode() for k, h in stored.items())
