"""Attribution rules of the online stage (pure logic; the stage's exactly-once is tested on a
real broker in tests/integration/test_online.py)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings, strategies as st

from recsys_stream.contracts.pb import slates_pb2
from recsys_stream.online.attribution import UserAttribution

W = 60_000  # attribution window (ms)


def slate(rec_id, served_ms, items, algorithm="als", arm=""):
    return slates_pb2.ServedSlate(
        recommendation_id=rec_id, tenant="acme", user_id="u", served_ms=served_ms,
        algorithm=algorithm, model_version=3, source="NEARLINE", arm=arm,
        experiment="e" if arm else "", method="Recommend",
        items=[slates_pb2.ServedItem(item_id=i, position=p) for p, i in enumerate(items)])


def totals(counts):
    out = Counter()
    for (dims, kind), n in counts.items():
        out[(dims[7], kind)] += n  # by position
    return Counter({k: n for k, n in out.items() if n})  # a taken-back count nets to 0


def test_impressions_per_position_and_a_click_by_id_counted_once():
    st_, c = UserAttribution(), Counter()
    st_.served(slate("r1", 1000, ["a", "b", "c"]), W, c)
    assert st_.acted("r1", "b", "clicks", 2000, W, c) == "attributed"
    assert st_.acted("r1", "b", "clicks", 2500, W, c) == "organic"  # the same slot again
    assert st_.acted("r1", "z", "clicks", 2600, W, c) == "organic"  # not in that answer
    assert totals(c) == {(0, "impressions"): 1, (1, "impressions"): 1, (2, "impressions"): 1,
                         (1, "clicks"): 1}
    (dims, _), = [k for k in c if k[1] == "clicks"]
    assert dims[1:7] == ("acme", "als", 3, "NEARLINE", "", "") and dims[0] == 0  # hour 0


def test_without_an_id_the_latest_answer_in_the_window_that_holds_the_item_gets_it():
    st_, c = UserAttribution(), Counter()
    st_.served(slate("r1", 1000, ["a", "b"]), W, c)
    st_.served(slate("r2", 5000, ["x", "a"]), W, c)
    assert st_.acted("", "a", "clicks", 6000, W, c) == "attributed"
    assert c[(slate_dims(st_, "r2", 1), "clicks")] == 1  # r2's position 1, not r1's 0
    # after the window: nothing to join; it waits, and no later answer claims it
    assert st_.acted("", "b", "clicks", 1000 + W + 1, W, c) == "pending"
    st_.served(slate("r3", 1000 + 2 * W, ["b"]), W, c)  # served after the event
    assert sum(n for (d, k), n in c.items() if k == "clicks") == 1


def slate_dims(st_, rec_id, position):
    return next(s for s in st_.slates if s.rec_id == rec_id).dims_at(position)


def test_a_click_read_before_its_answer_waits_for_it_by_id_or_by_window():
    st_, c = UserAttribution(), Counter()
    assert st_.acted("r1", "a", "clicks", 2000, W, c) == "pending"
    assert st_.acted("", "b", "conversions", 2100, W, c) == "pending"
    st_.served(slate("r1", 1000, ["a", "b"]), W, c)
    assert totals(c) == {(0, "impressions"): 1, (1, "impressions"): 1, (0, "clicks"): 1,
                         (1, "conversions"): 1}
    assert st_.pending == []


def test_state_survives_its_encoding():
    st_, c = UserAttribution(), Counter()
    st_.served(slate("r1", 1000, ["a", "b"], arm="treat"), W, c)
    st_.acted("r1", "a", "clicks", 1500, W, c)
    st_.acted("r9", "q", "clicks", 1600, W, c)
    again = UserAttribution.decode(st_.encode())
    assert again == st_
    assert again.acted("r1", "a", "clicks", 1700, W, Counter()) == "organic"  # remembered


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from("abcd"), st.booleans()),
                min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_counts_do_not_depend_on_how_answers_and_clicks_interleave(clicks, rnd):
    """Answers r0..r5 served 1 s apart, each holding all of a-d; clicks by id (or, when
    unambiguous, by window); the two streams merged in a random order keep their own order."""
    answers = [("served", slate(f"r{n}", 1000 * (n + 1), list("abcd"))) for n in range(6)]
    events = [("acted", (f"r{n}", item, 1000 * (n + 1) + 500)) for n, item, _ in clicks]
    merged, a, e = [], list(answers), list(events)
    while a or e:
        take_a = a and (not e or rnd.random() < 0.5)
        merged.append(a.pop(0) if take_a else e.pop(0))

    def run(records):
        st_, c = UserAttribution(), Counter()
        for kind, r in records:
            if kind == "served":
                st_.served(r, 10 * W, c)
            else:
                st_.acted(r[0], r[1], "clicks", r[2], 10 * W, c)
        return c
    assert run(merged) == run(answers + events)


def test_reported_impressions_replace_the_served_ones_whatever_the_order():
    def run(order):
        st_, c = UserAttribution(), Counter()
        for step in order:
            if step == "served":
                st_.served(slate("r1", 1000, ["a", "b", "c", "d"]), W, c)
            else:
                st_.shown("r1", step, 1200, W, c)
        return totals(c)
    want = {(0, "impressions"): 1, (2, "impressions"): 1}  # a and c were displayed
    assert run(["served", "a", "c", "a", "z"]) == want  # a twice, z not in the answer
    assert run(["a", "served", "c"]) == want
    assert run(["c", "a", "served"]) == want
    assert run(["served"]) == {(p, "impressions"): 1 for p in range(4)}  # no report: all shown


def test_an_impression_is_no_preference_for_the_worker_or_the_trainer():
    from recsys_stream.contracts.confidence import ConfidenceSettings
    from recsys_stream.contracts.events import decode_event, encode_event, Event
    from recsys_stream.contracts.user_state import UserHistory
    ev = Event("i1", "acme", "u", "a", "impression", None, 1_700_000_000_000)
    got = decode_event(ev.key, encode_event(ev), {"acme"}, 1_700_000_000_000, 10**9, 10**12)
    assert got.type == "impression"
    h = UserHistory("acme", "u")
    assert not h.apply("i1", "a", "impression", None, 1, ConfidenceSettings(), 500)
    assert h.items == {} and h.event_count == 0
