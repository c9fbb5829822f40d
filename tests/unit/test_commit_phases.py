"""The worker's commit in two phases (``nearline.commit``): states are stored only once every
output produced before their phase 1 is acknowledged; meanwhile they are the newest states of
their users (an erasure in flight too), and a delivery the broker refused stops the worker before
anything after it is stored."""

from __future__ import annotations

import time
import zlib

import pytest

from recsys_stream.contracts.events import encode_event, erase_event
from recsys_stream.contracts.keys import make_key
from recsys_stream.contracts.pb import events_pb2
from recsys_stream.nearline.state import StateStore
from recsys_stream.nearline.worker import Worker
from tests.conftest import make_config
from tests.unit.test_encode_ahead import _NoModels, _Record

_NOW = int(time.time() * 1000) - 60_000


class _HeldProducer:
    """Records outputs; acknowledges them only when told (librdkafka calls back from poll)."""

    def __init__(self) -> None:
        self.records, self.waiting = [], []

    def produce(self, topic, key=None, value=None, partition=-1, headers=None,
                on_delivery=None):
        self.records.append((topic, key, value))
        self.waiting.append(on_delivery)

    def ack(self, n: int | None = None, err=None) -> None:
        n = len(self.waiting) if n is None else n
        done, self.waiting = self.waiting[:n], self.waiting[n:]
        for cb in done:
            cb(err, _Msg())

    def poll(self, *_):
        return 0

    def flush(self, *_):
        self.ack()
        return 0

    def __len__(self):
        return len(self.waiting)


class _Msg:
    def topic(self): return "profiles"
    def partition(self): return 0


class _Offsets:
    def __init__(self):
        self.j = 0

    def record(self, user: str, item: str = "", erase: bool = False) -> _Record:
        key = make_key("acme", user)
        if erase:
            value = encode_event(erase_event("acme", user, _NOW + self.j))
        else:
            value = events_pb2.Interaction(
                event_id=f"e{self.j}", tenant="acme", user_id=user, item_id=item,
                type=events_pb2.CLICK, timestamp_ms=_NOW + self.j).SerializeToString()
        rec = _Record(key, value, zlib.crc32(key) % 4, self.j, _NOW + self.j)
        self.j += 1
        return rec


@pytest.fixture
def setup(tmp_path):
    cfg = make_config(tmp_path)
    store, prod = StateStore(tmp_path / "state"), _HeldProducer()
    yield Worker(cfg, store, _NoModels(), None, prod), store, prod, _Offsets()
    store.close()


def test_a_commit_is_stored_only_once_its_outputs_are_acknowledged(setup):
    worker, store, prod, recs = setup
    a = make_key("acme", "a")
    worker.process([recs.record("a", "i1")])
    worker._begin_commit()
    worker._land_ready()
    assert store.get(a) is None  # produced, not acknowledged: nothing stored
    # the next batch builds on the state in flight, not on the (empty) store
    worker.process([recs.record("a", "i2")])
    assert list(worker._dirty[a].items) == ["i1", "i2"]
    prod.ack()
    worker._land_ready()
    assert list(store.get(a).items) == ["i1"]  # phase 1's state, not what came after it
    assert not worker._inflight
    assert worker.commit()
    assert list(store.get(a).items) == ["i1", "i2"]


def test_outputs_after_phase_1_do_not_hold_its_commit_back(setup):
    worker, store, prod, recs = setup
    worker.process([recs.record("a", "i1")])
    worker._begin_commit()
    before = len(prod.waiting)
    worker.process([recs.record("b", "i1")])  # a profile of the next generation
    prod.ack(before)  # only what phase 1 depends on
    worker._land_ready()
    assert list(store.get(make_key("acme", "a")).items) == ["i1"]
    assert prod.waiting  # b's profile still unacknowledged, and it did not matter


def test_a_user_erased_in_a_commit_in_flight_is_not_read_back_from_the_store(setup):
    worker, store, prod, recs = setup
    u = make_key("acme", "u")
    worker.process([recs.record("u", "old")])
    assert worker.commit()
    assert list(store.get(u).items) == ["old"]
    worker.process([recs.record("u", erase=True)])
    worker._begin_commit()  # the erasure in flight; the store still holds "old"
    assert list(store.get(u).items) == ["old"]
    worker.process([recs.record("u", "new")])
    assert list(worker._dirty[u].items) == ["new"]  # a new user, not "old" + "new"
    prod.ack()
    worker._land_ready()
    assert store.get(u) is None  # the delete landed
    assert worker.commit()
    assert list(store.get(u).items) == ["new"]


def test_a_refused_delivery_stops_the_worker_before_anything_after_it_is_stored(setup):
    worker, store, prod, recs = setup
    worker.process([recs.record("a", "i1")])
    worker._begin_commit()
    prod.ack(err="MSG_TIMED_OUT")
    with pytest.raises(RuntimeError, match="refused an output"):
        worker._land_ready()
    assert store.get(make_key("acme", "a")) is None
