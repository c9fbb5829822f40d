"""RocksDB state: states and offsets written together survive a reopen."""

from __future__ import annotations

from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.keys import make_key
from recsys_stream.contracts.user_state import UserHistory
from recsys_stream.nearline.state import StateStore


def test_states_and_offsets_round_trip_through_a_reopen(tmp_path):
    s = ConfidenceSettings()
    h = UserHistory("acme", "u1", input_partition=2, applied_offset=41)
    h.apply("e1", "item-1", "purchase", None, 1_000, s, 10)
    h.apply("e2", "item-2", "hide", None, 2_000, s, 10)
    store = StateStore(tmp_path / "db")
    store.commit({make_key("acme", "u1"): h}, {("interactions", 2): 42, ("interactions", 0): 7})
    store.close()

    store = StateStore(tmp_path / "db")
    try:
        assert store.get(make_key("acme", "u1")) == h
        assert store.get(make_key("globex", "u1")) is None
        assert store.offsets("interactions") == {0: 7, 2: 42}
        assert store.offsets("other") == {}
        assert [k for k, _ in store.users()] == [make_key("acme", "u1")]
        got = store.get_many([make_key("acme", "u1"), make_key("acme", "nobody")])
        assert list(got) == [make_key("acme", "u1")]
    finally:
        store.close()
