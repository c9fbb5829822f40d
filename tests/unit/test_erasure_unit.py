"""Pure parts of erasure (issue 31): the erase record's contract, the item stage's erase, the
trainer's events-file erase, the model store's rewrite, and RocksDB's purge of erased bytes."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_stream.batch.data import from_events, iter_events_file
from recsys_stream.batch.scrub import scrub_tenant
from recsys_stream.contracts.events import ERASE, Event, InvalidEvent, decode_event, \
    encode_event, erase_event
from recsys_stream.contracts.keys import make_key
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.pb import items_pb2
from recsys_stream.contracts.young_slice import YoungSlice
from recsys_stream.nearline.item_state import ItemRecord
from recsys_stream.nearline.state import StateStore
from recsys_stream.produce import check_erase_ids

NOW = int(time.time() * 1000)


def _decode(value: bytes, key: bytes | None = None) -> Event:
    return decode_event(key, value, {"acme"}, NOW, 60_000, 365 * 86_400_000)


def test_an_erase_record_round_trips_on_the_users_own_key_without_an_item():
    e = erase_event("acme", "u1", NOW)
    assert e.type == ERASE and e.item_id == "" and e.key == make_key("acme", "u1")
    back = _decode(encode_event(e), e.key)
    assert back == e
    # JSON producers too; an item id and a value are ignored
    raw = json.dumps({"event_id": "x", "tenant": "acme", "user_id": "u1", "item_id": "i",
                      "type": "erase", "value": 3.0, "timestamp_ms": NOW}).encode()
    j = _decode(raw)
    assert (j.type, j.item_id, j.value) == (ERASE, "", None)
    with pytest.raises(InvalidEvent) as err:  # a user id is still required
        _decode(encode_event(Event("y", "acme", "", "", ERASE, None, NOW)))
    assert err.value.reason == "missing_field"


def test_erase_ids_are_checked_as_events_are_naming_the_field():
    assert check_erase_ids("acme", "u1") is None
    assert "user_id" in check_erase_ids("acme", "")
    assert "user_id" in check_erase_ids("acme", "a\x1fb")
    assert "user_id" in check_erase_ids("acme", "x" * 300)
    assert "tenant" in check_erase_ids("", "u1")


def _rec(user: str, version: int = 1, erase: bool = False) -> items_pb2.ItemInteraction:
    if erase:
        return items_pb2.ItemInteraction(tenant="acme", item_id="i", user_id=user,
                                         algorithm="als", erase=True)
    return items_pb2.ItemInteraction(tenant="acme", item_id="i", user_id=user, algorithm="als",
                                     model_version=version, confidence=2.0,
                                     user_vector=[1.0, 0.5])


def test_the_item_stage_drops_an_erased_users_entry_once():
    st = ItemRecord("acme", "als", "i")
    for off, u in enumerate(("a", "b", "c")):
        assert st.apply(_rec(u), 0, off, 10)
    assert st.apply(_rec("b", erase=True), 0, 3, 10)
    assert list(st.users) == ["a", "c"] and st.version == 1
    assert not st.apply(_rec("b", erase=True), 0, 3, 10), "a replayed erase changes nothing"
    assert not st.apply(_rec("zz", erase=True), 0, 4, 10), "a user it never had"
    assert b"b" not in st.encode().replace(b"acme", b"").replace(b"als", b"")


def test_a_training_file_honours_erase_records(tmp_path, offline_cfg):
    path = tmp_path / "events.jsonl"
    rows = [{"tenant": "acme", "user_id": "gone", "item_id": "a", "type": "click",
             "timestamp_ms": NOW - 3000},
            {"tenant": "acme", "user_id": "back", "item_id": "a", "type": "click",
             "timestamp_ms": NOW - 3000},
            {"tenant": "acme", "user_id": "stay", "item_id": "a", "type": "click",
             "timestamp_ms": NOW - 3000},
            {"tenant": "acme", "user_id": "gone", "type": "erase", "timestamp_ms": NOW - 2000},
            {"tenant": "acme", "user_id": "back", "type": "erase", "timestamp_ms": NOW - 2000},
            {"tenant": "acme", "user_id": "back", "item_id": "b", "type": "click",
             "timestamp_ms": NOW - 1000}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    s = offline_cfg.tenant("acme")
    data = from_events("acme", list(iter_events_file(path)), s.confidence, s.history_cap, 0.0)
    assert set(data.histories) == {"back", "stay"}
    assert set(data.histories["back"].items) == {"b"}
    assert data.erased == {"gone", "back"}


def _version(store: ModelStore, version: int, users: list[str], algorithm: str = "als"):
    rng = np.random.default_rng(version)
    extras = {"user_bias": rng.normal(size=len(users)).astype(np.float32),
              "global_mean": np.float32(3.5)} if algorithm == "mf" else None
    store.write("acme", algorithm, version, item_ids=["i1", "i2", "i3"],
                item_factors=rng.normal(size=(3, 4)), user_ids=users,
                user_factors=rng.normal(size=(len(users), 4)), popularity=[3, 2, 1],
                manifest={}, extras=extras,
                # young items i1 (every user) and i3 (the last user): the slice names rows
                young=None if algorithm == "mf" else YoungSlice.from_columns(
                    [0, 2], sp.csc_matrix((np.arange(1.0, len(users) + 2),
                                           (list(range(len(users))) + [len(users) - 1],
                                            [0] * len(users) + [1])),
                                          shape=(len(users), 2))))


def _young_users(art) -> list[tuple[str, str, float]]:
    """(item, user, confidence) of a version's young slice, by id."""
    return [(str(art.item_ids[r]), str(art.user_ids[u]), float(c)) for r in art.young.items
            for u, c in zip(*art.young.column(r))]


def _bytes_under(root, needle: bytes) -> list[str]:
    """Files holding ``needle`` as UTF-8 or as UTF-32 (numpy's string arrays)."""
    forms = (needle, needle.decode().encode("utf-32-le"))
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
            if any(n in open(os.path.join(d, f), "rb").read() for n in forms)]


def test_kept_versions_are_rewritten_without_erased_rows_and_still_verify(tmp_path):
    store = ModelStore(tmp_path / "models")
    _version(store, 1, ["u1", "erase-me-7f3a", "u2"])
    _version(store, 2, ["u1", "u2", "erase-me-7f3a"])
    _version(store, 3, ["u1", "erase-me-7f3a"], algorithm="mf")
    store.set_current("acme", "als", 2)
    before = {v: store.load("acme", "als", v) for v in (1, 2)}
    assert _bytes_under(tmp_path / "models", b"erase-me-7f3a")
    out = scrub_tenant(store, "acme", live={"u1", "u2"})
    assert out == {"als": {1: 1, 2: 1}, "mf": {3: 1}}
    assert not _bytes_under(tmp_path / "models", b"erase-me-7f3a")
    for v in (1, 2):
        art = store.load("acme", "als", v)  # verified: checksums and shapes agree
        assert art.user_ids.tolist() == ["u1", "u2"]
        keep = [i for i, u in enumerate(before[v].user_ids.tolist()) if u != "erase-me-7f3a"]
        np.testing.assert_array_equal(art.user_factors, before[v].user_factors[keep])
        np.testing.assert_array_equal(art.item_factors, before[v].item_factors)
        # the young slice: the erased user's entries gone, the others' rows renumbered
        assert _young_users(art) == [t for t in _young_users(before[v])
                                     if t[1] != "erase-me-7f3a"]
        assert len(_young_users(art)) < len(_young_users(before[v]))
    mf = store.load("acme", "mf", 3, verify=False)  # a fake mf: no bias column
    assert mf.user_ids.tolist() == ["u1"] and mf.user_bias.shape == (1,)
    assert store.current_version("acme", "als") == 2
    assert scrub_tenant(store, "acme", live={"u1", "u2"}) == {}  # nothing more to drop
    # from an events file: only the users it erases
    _version(store, 4, ["u1", "u2"])
    assert scrub_tenant(store, "acme", erased={"u2"}) == {"als": {1: 1, 2: 1, 4: 1}}
    assert store.load("acme", "als", 4).user_ids.tolist() == ["u1"]


@pytest.mark.parametrize("flushed", [False, True])
def test_a_deleted_users_bytes_leave_the_rocksdb_files(tmp_path, flushed):
    """In the memtable only (the flush then writes the delete marker to a file that a plain
    range compaction would move down as it is), or in a table file whose boundary is the key."""
    from recsys_stream.contracts.user_state import UserHistory
    store = StateStore(tmp_path / "state")
    users = {make_key("acme", f"user-{i:03d}"): UserHistory("acme", f"user-{i:03d}")
             for i in range(50)}
    gone = make_key("acme", "erase-me-7f3a")
    users[gone] = UserHistory("acme", "erase-me-7f3a", items={"x": [1.0, 1, 1]})
    store.commit(users, {("t", 0): 10})
    if flushed:
        store._db.flush()
    store.commit({}, {("t", 0): 11}, deleted=[gone])
    store.purge([gone])
    assert store.get(gone) is None and store.get(make_key("acme", "user-001")) is not None
    assert not _bytes_under(tmp_path / "state", b"erase-me-7f3a")
    store.close()
    reopened = StateStore(tmp_path / "state")
    assert len(list(reopened.users())) == 50
    reopened.close()


def test_a_worker_killed_between_its_commit_and_its_purge_purges_at_the_next_open(tmp_path):
    from recsys_stream.contracts.user_state import UserHistory
    store = StateStore(tmp_path / "state")
    gone = make_key("acme", "erase-me-7f3a")
    store.commit({gone: UserHistory("acme", "erase-me-7f3a"),
                  make_key("acme", "other"): UserHistory("acme", "other")}, {("t", 0): 2})
    store._db.flush()
    store.commit({}, {("t", 0): 3}, deleted=[gone])  # ... and no purge: killed here
    store.close()
    assert _bytes_under(tmp_path / "state", b"erase-me-7f3a")
    reopened = StateStore(tmp_path / "state")
    assert not _bytes_under(tmp_path / "state", b"erase-me-7f3a")
    assert [k for k, _ in reopened.users()] == [make_key("acme", "other")]
    reopened.close()


class _Msg:
    """The parts of a consumed record the online stage reads."""

    def __init__(self, topic, partition, offset, key, value):
        self._t = (topic, partition, offset, key, value)

    def topic(self):
        return self._t[0]

    def partition(self):
        return self._t[1]

    def offset(self):
        return self._t[2]

    def key(self):
        return self._t[3]

    def value(self):
        return self._t[4]


def test_the_online_stage_drops_an_erased_users_rows_and_their_bytes(tmp_path, offline_cfg):
    from recsys_stream.contracts.pb import slates_pb2
    from recsys_stream.online.stage import OnlineStage
    from recsys_stream.online.store import OnlineStore
    cfg = offline_cfg
    user, other = "erase-me-7f3a", "other"
    store = OnlineStore(tmp_path / "online")
    stage = OnlineStage(cfg, store, consumer=None)
    msgs = []
    for i, u in enumerate((user, other)):
        slate = slates_pb2.ServedSlate(
            recommendation_id=f"r{i}", tenant="acme", user_id=u, served_ms=NOW,
            algorithm="als", model_version=1, source="NEARLINE", method="Recommend",
            items=[slates_pb2.ServedItem(item_id="a", position=0)])
        msgs.append(_Msg(cfg.topics.recommendations, 0, i, make_key("acme", u),
                         slate.SerializeToString()))
    stage.process(msgs)
    stage.commit()
    store._db.flush()
    assert _bytes_under(tmp_path / "online", b"erase-me-7f3a")
    erase = erase_event("acme", user, NOW)
    stage.process([_Msg(cfg.topics.interactions, 0, 0, erase.key, encode_event(erase))])
    stage.commit()
    assert not _bytes_under(tmp_path / "online", b"erase-me-7f3a")
    rows = store.users([make_key("acme", user), make_key("acme", other)])
    assert rows[make_key("acme", user)].empty and not rows[make_key("acme", other)].empty
    assert sum(c[0] for _, c in store.counts()) == 2  # the impressions counters stay
    store.close()
