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


def _history(user: str, n_items: int) -> UserHistory:
    s = ConfidenceSettings()
    h = UserHistory("acme", user)
    for i in range(n_items):
        h.apply(f"{user}-e{i}", f"item-{i}", "view", None, 1_000 + i, s, 100)
    return h


def test_the_cache_hands_out_committed_histories_and_respects_its_budget(tmp_path):
    store = StateStore(tmp_path / "db", cache_items=12)  # a user counts len(items) + 1
    a, b, c = (make_key("acme", u) for u in "abc")
    ha, hb, hc = _history("a", 5), _history("b", 5), _history("c", 5)
    store.commit({a: ha.encode(), b: hb.encode()}, {}, {a: ha, b: hb})
    assert store.get_many([a, b])[a] is ha  # not decoded again
    store.get_many([a])  # a is now the most recently used
    store.commit({c: hc.encode()}, {}, {c: hc})  # 18 items > 12: b, the least recent, goes
    got = store.get_many([a, b, c])
    assert got[a] is ha and got[c] is hc
    assert got[b] is not hb and got[b] == hb  # decoded from disk, same content


def test_forget_and_restore_drop_cached_histories_so_disk_is_the_truth(tmp_path):
    store = StateStore(tmp_path / "db", cache_items=1000)
    a = make_key("acme", "a")
    ha = _history("a", 3)
    store.commit({a: ha.encode()}, {}, {a: ha})
    cached = store.get_many([a])[a]
    cached.apply("late", "item-99", "purchase", None, 9_000, ConfidenceSettings(), 100)
    store.forget([a])  # a failed batch changed it without committing
    assert store.get_many([a])[a] == _history("a", 3)

    hb = _history("a", 7)
    store.commit({a: hb.encode()}, {}, {a: hb})
    store.restore("interactions", 0, {a: _history("a", 1).encode()}, 5)
    assert store.get_many([a])[a] == _history("a", 1)
    assert store.offsets("interactions") == {0: 5}
