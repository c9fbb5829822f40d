"""Frequency caps: counting answers and impressions, positives, expiry, encoding (pure logic)."""

from __future__ import annotations

import itertools

from recsys_stream.contracts.caps import CapRule, ImpressionCaps
from recsys_stream.contracts.events import Event, encode_event
from recsys_stream.contracts.pb import events_pb2, profiles_pb2
from recsys_stream.contracts.user_state import UserHistory
from recsys_stream.nearline import caps as feed
from recsys_stream.serving.caps import capped_items

H = 3_600_000
RULE = CapRule(3, 24 * H)


def test_third_answer_caps_until_the_oldest_of_three_leaves_the_window():
    c = ImpressionCaps()
    c.served("r1", 0, ["a", "b"], RULE)
    c.served("r2", 1 * H, ["a"], RULE)
    assert c.capped(RULE) == {}
    c.served("r3", 2 * H, ["a", "c"], RULE)
    assert c.capped(RULE) == {"a": 24 * H}
    assert c.capped(RULE, now_ms=24 * H) == {}  # the window passed: it may be shown again
    # a fourth impression after the first left the window caps it again, from the second on
    c.served("r4", 24 * H + H // 2, ["a"], RULE)
    assert c.capped(RULE) == {"a": 25 * H}  # 1 h, 2 h, 24.5 h: until the 1 h one leaves


def test_a_positive_event_lifts_the_cap_and_counting_starts_again():
    c = ImpressionCaps()
    for n in range(3):
        c.served(f"r{n}", n * H, ["a"], RULE)
    assert "a" in c.capped(RULE)
    c.positive_event("a", 3 * H, RULE)
    assert c.capped(RULE) == {}
    for n in range(3, 5):
        c.served(f"r{n}", (n + 1) * H, ["a"], RULE)
    assert c.capped(RULE) == {}
    c.served("r9", 6 * H, ["a"], RULE)
    assert c.capped(RULE) == {"a": 4 * H + 24 * H}


def test_a_replayed_answer_counts_once():
    c = ImpressionCaps()
    for _ in range(5):
        c.served("r1", 0, ["a"], RULE)
    c.served("r2", 1, ["a"], RULE)
    assert c.capped(RULE) == {}


def test_reported_impressions_replace_the_answer_in_any_order():
    # answer r1 served a, b, c; the client displayed only a (twice reported)
    facts = [("served", "r1", 0, ["a", "b", "c"]), ("rep", "r1", 5, "a"), ("rep", "r1", 6, "a"),
             ("served", "r2", 10, ["b"]), ("served", "r3", 20, ["b", "a"]),
             ("pos", None, 7, "c"), ("served", "r4", 30, ["a"])]
    results = set()
    for order in itertools.permutations(facts):
        c = ImpressionCaps()
        for kind, rid, t, items in order:
            if kind == "served":
                c.served(rid, t, items, RULE)
            elif kind == "rep":
                c.reported(rid, items, t, RULE)
            else:
                c.positive_event(items, t, RULE)
        imp = c.impressions()
        results.add((tuple(sorted((k, tuple(v)) for k, v in imp.items())),
                     tuple(sorted(c.capped(RULE).items()))))
    # one outcome whatever the order: a shown 3 times (r1 reported once, r3, r4), b twice
    # (r2, r3: r1's b was not displayed), c never counted (not displayed; and clicked)
    assert results == {((("a", (5, 20, 30)), ("b", (10, 20))), (("a", 5 + 24 * H),))}


def test_facts_out_of_the_window_are_dropped_and_never_count():
    c = ImpressionCaps()
    c.served("old", 0, ["a"], RULE)
    c.served("new", 30 * H, ["a"], RULE)
    assert list(c.shown) == ["new"]
    c.served("late", 1 * H, ["a"], RULE)  # older than the window by the latest time
    assert list(c.shown) == ["new"]


def test_encoding_round_trips_inside_the_user_state():
    h = UserHistory("t", "u")
    h.caps = ImpressionCaps()
    h.caps.served("r1", 10, ["a", "b"], RULE)
    h.caps.reported("r2", "c", 12, RULE)
    h.caps.reported("r2", "d", 11, RULE)
    h.caps.positive_event("b", 15, RULE)
    back = UserHistory.decode(h.encode())
    assert back.caps == h.caps
    assert back.caps.shown["r2"] == [11, True, {"c": 12, "d": 11}]
    assert UserHistory.decode(UserHistory("t", "u").encode()).caps is None


def test_worker_feed_counts_served_impressions_and_positives_and_bumps_the_revision():
    h = UserHistory("t", "u")
    served = [feed.Served("t", "u", f"r{n}", ("a", "b"), n * 1000) for n in range(3)]
    for n, s in enumerate(served[:2]):
        feed.apply(h, s, None, n, RULE)
    rev = h.revision
    # the client reports only "a" of r2: b was shown twice, a three times
    imp = events_pb2.Interaction(event_id="e1", tenant="t", user_id="u", item_id="a",
                                 type=events_pb2.IMPRESSION, timestamp_ms=2500,
                                 recommendation_id="r2").SerializeToString()
    ev = Event("e1", "t", "u", "a", "impression", None, 2500)
    feed.apply(h, ev, imp, 7, RULE)
    feed.apply(h, served[2], None, 8, RULE)  # r2's reports stand: its answer adds nothing
    assert set(h.caps.capped(RULE)) == {"a"} and h.revision == rev + 1
    click = Event("e2", "t", "u", "a", "click", None, 3000)
    feed.apply(h, click, encode_event(click), 9, RULE)
    assert h.caps.capped(RULE) == {} and h.revision == rev + 2


def test_decode_served_counts_only_users_of_tenants_with_caps():
    from recsys_stream.contracts.keys import make_key
    from recsys_stream.contracts.pb import slates_pb2
    slate = slates_pb2.ServedSlate(recommendation_id="r", tenant="t", user_id="u",
                                   items=[slates_pb2.ServedItem(item_id="a")], served_ms=5)
    raw = slate.SerializeToString()
    got = feed.decode_served(make_key("t", "u"), raw, {"t": RULE})
    assert got is not None and got.items == ("a",) and got.timestamp_ms == 5
    assert feed.decode_served(make_key("t", "u"), raw, {}) is None
    assert feed.decode_served(make_key("t", "x"), raw, {"t": RULE}) is None
    assert feed.decode_served(make_key("t", "u"), b"\xff\xff", {"t": RULE}) is None
    slate.anonymous = True  # keyed by a session id: no user's caps
    assert feed.decode_served(make_key("t", "u"), slate.SerializeToString(), {"t": RULE}) is None


def test_serving_suppresses_only_caps_still_running():
    p = profiles_pb2.UserProfile(capped_item_ids=["a", "b"], capped_until_ms=[100, 200])
    assert capped_items(p, now_ms=150) == {"b"}
    assert capped_items(p, now_ms=250) == set()
    assert capped_items(None) == set()


def test_the_item_index_agrees_with_a_full_recount(monkeypatch):
    """Random served, reported and positive facts, with pruning by the window and the bound on
    answers: the per-item index (the worker's check) equals counting every answer again."""
    import random

    from recsys_stream.contracts import caps as caps_module
    monkeypatch.setattr(caps_module, "MAX_SHOWN", 6)
    rng = random.Random(4)
    rule = CapRule(2, 50)
    c = ImpressionCaps()
    c.capped(rule, only={"i0"})  # the index is built early and kept in step from here
    for n in range(600):
        t = n + rng.randint(-20, 5)
        kind, item = rng.random(), f"i{rng.randint(0, 5)}"
        if kind < 0.5:
            c.served(f"r{rng.randint(0, n)}", t, [f"i{rng.randint(0, 5)}" for _ in range(3)],
                     rule)
        elif kind < 0.8:
            c.reported(f"r{rng.randint(0, n)}", item, t, rule)
        else:
            c.positive_event(item, t, rule)
        items = [f"i{j}" for j in range(6)]
        full = {i: v for i, v in c.impressions().items()}
        assert c.impressions(only=items) == full, n
        fresh = ImpressionCaps.from_proto(c.to_proto())
        assert fresh.impressions(only=items) == full, n
