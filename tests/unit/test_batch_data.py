"""Trainer inputs: event files, the shared aggregation, the temporal holdout, the matrix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys_stream.batch.data import MIN_EVENTS_FOR_HOLDOUT, build_matrix, from_events, \
    from_histories, iter_events_file
from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.events import Event
from recsys_stream.contracts.user_state import UserHistory, cap_slack
from recsys_stream.synthetic import generate_events, make_world

S = ConfidenceSettings()
T0 = 1_700_000_000_000


@pytest.fixture(scope="module")
def events():
    return generate_events(make_world("acme", 80, genres=4), 60, 20, start_ms=T0, seed=3)


def test_generic_csv_and_jsonl_rows(tmp_path):
    csv_path = tmp_path / "events.csv"
    csv_path.write_text("event_id,tenant,user_id,item_id,type,value,timestamp_ms\n"
                        "e1,acme,u1,i1,PURCHASE,,1000\n"
                        ",,u1,i2,rating,4.5,2000\n")
    a, b = iter_events_file(csv_path, tenant="globex")
    assert a == Event("e1", "acme", "u1", "i1", "purchase", None, 1000)
    # a missing tenant is filled, a missing id is derived from the content (stable on re-read)
    assert (b.tenant, b.type, b.value, b.timestamp_ms) == ("globex", "rating", 4.5, 2000)
    assert b.event_id == list(iter_events_file(csv_path, tenant="globex"))[1].event_id
    assert b.event_id != a.event_id
    js = tmp_path / "e.jsonl"
    js.write_text(json.dumps({"event_id": "x", "tenant": "acme", "user_id": "u",
                              "item_id": "i", "type": "click", "timestamp_ms": 5}) + "\n\n")
    assert list(iter_events_file(js)) == [Event("x", "acme", "u", "i", "click", None, 5)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"tenant": "acme", "user_id": "u", "item_id": "i",
                               "type": "teleport", "timestamp_ms": 1}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: .*teleport"):
        list(iter_events_file(bad))
    missing = tmp_path / "missing.csv"
    missing.write_text("tenant,user_id,item_id,type\nacme,u,i,view\n")
    with pytest.raises(ValueError, match=r"missing.csv:2: .*timestamp_ms"):
        list(iter_events_file(missing))


def test_movielens_ids_and_times(tmp_path):
    ml = tmp_path / "ratings.csv"
    ml.write_text("userId,movieId,rating,timestamp\n7,42,4.0,1000\n")
    (e,) = iter_events_file(ml, tenant="ml")
    assert e == Event("ml-7-42-1000", "ml", "7", "42", "rating", 4.0, 1_000_000)
    with pytest.raises(ValueError, match="tenant"):
        list(iter_events_file(ml))


def test_every_history_equals_the_workers_replay_in_any_arrival_order(events):
    shuffled = list(events)
    np.random.default_rng(0).shuffle(shuffled)
    data = from_events("acme", shuffled, S, 500, 0.0)
    for user in list(data.histories)[:20]:
        h = UserHistory("acme", user)
        for e in sorted((e for e in events if e.user_id == user), key=lambda e: e.timestamp_ms):
            h.apply(e.event_id, e.item_id, e.type, e.value, e.timestamp_ms, S, 500)
        assert data.histories[user] == h
    assert data.test_items == {} and data.train == data.histories
    assert data.n_events == len(events)
    assert data.window == (min(e.timestamp_ms for e in events),
                           max(e.timestamp_ms for e in events))


def test_capped_histories_equal_the_workers_replay(events):
    data = from_events("acme", events, S, 5, 0.0)  # cap 5: _cap runs on most events
    user = events[0].user_id
    h = UserHistory("acme", user)
    for e in sorted((e for e in events if e.user_id == user), key=lambda e: e.timestamp_ms):
        h.apply(e.event_id, e.item_id, e.type, e.value, e.timestamp_ms, S, 5)
    assert 5 <= len(h.items) <= 5 + cap_slack(5)
    assert data.histories[user].encode() == h.encode()


def test_holdout_is_the_tail_by_time_and_disjoint_from_train(events):
    data = from_events("acme", events, S, 500, 0.25)
    by_user: dict[str, list[Event]] = {}
    for e in sorted(events, key=lambda e: e.timestamp_ms):
        by_user.setdefault(e.user_id, []).append(e)
    assert data.test_items
    for user, evs in by_user.items():
        n_test = round(len(evs) * 0.25)
        train = data.train[user]
        # train = a replay of the events before the cut, nothing after it
        assert train.event_count == len(evs) - n_test
        assert train.last_event_ms == max(e.timestamp_ms for e in evs[:len(evs) - n_test])
        test = data.test_items.get(user, set())
        assert test <= {e.item_id for e in evs[len(evs) - n_test:]}
        assert not test & set(train.items)
        # a test item's time: its first held-out event
        assert data.test_times.get(user, {}) == {
            i: min(e.timestamp_ms for e in evs[len(evs) - n_test:] if e.item_id == i)
            for i in test}


def test_short_histories_stay_in_train_and_hidden_items_are_no_test_items():
    evs = [Event(f"e{n}", "acme", "u", f"i{n}", "view", None, T0 + n) for n in range(4)]
    data = from_events("acme", evs, S, 500, 0.5)
    assert len(evs) < MIN_EVENTS_FOR_HOLDOUT
    assert data.test_items == {} and data.train["u"].event_count == 4
    evs += [Event("e4", "acme", "u", "i4", "view", None, T0 + 4),
            Event("e5", "acme", "u", "i5", "view", None, T0 + 5),
            Event("e6", "acme", "u", "i6", "view", None, T0 + 6),
            Event("h", "acme", "u", "i6", "hide", None, T0 + 7)]
    data = from_events("acme", evs, S, 500, 0.5)
    assert data.test_items == {"u": {"i4", "i5"}}  # i6 was hidden in the end
    assert data.test_times == {"u": {"i4": T0 + 4, "i5": T0 + 5}}


def test_changelog_holdout_takes_the_items_met_last():
    h = UserHistory("acme", "u")
    for n in range(10):
        h.apply(f"e{n}", f"i{n}", "view", None, T0 + n * 1000, S, 500)
    h.apply("again", "i0", "view", None, T0 + 20_000, S, 500)  # old item re-seen last
    short = UserHistory("acme", "v")
    short.apply("x", "i1", "view", None, T0, S, 500)
    data = from_histories("acme", {"u": h, "v": short}, 0.2)
    assert data.test_items == {"u": {"i8", "i9"}}
    assert data.test_times == {"u": {"i8": T0 + 8000, "i9": T0 + 9000}}  # first_seen_ms
    assert set(data.train["u"].items) == {f"i{n}" for n in range(8)}
    assert data.train["u"].last_event_ms == T0 + 20_000
    assert data.train["v"] is short and data.histories["u"] is h
    assert data.window == (T0, T0 + 20_000)


def test_matrix_holds_the_confidences_of_the_histories(events):
    data = from_events("acme", events, S, 500, 0.0)
    m = build_matrix(data.histories, S)
    assert m.user_ids == sorted(data.histories) and m.item_ids == sorted(m.item_ids)
    user = m.user_ids[3]
    ids, c = data.histories[user].confidences(S)
    row = dict(zip((m.item_ids[j] for j in m.C[3].indices), m.C[3].data))
    assert row == pytest.approx(dict(zip(ids, c.tolist())))
    assert (m.C.data >= 1.0).all()  # c = 1 + alpha*log1p(s) >= 1
    assert m.event_counts[3] == data.histories[user].event_count
    assert m.popularity.sum() == m.C.nnz
    # aligned to another model's columns: unknown items are dropped
    sub = build_matrix(data.histories, S, item_ids=m.item_ids[:5])
    assert sub.C.shape == (len(m.user_ids), 5)
    np.testing.assert_array_equal(sub.C.toarray(), m.C[:, :5].toarray())


def test_reading_an_events_file_shows_a_bar_only_when_asked(tmp_path, offline_cfg, capsys):
    from recsys_stream.batch.app import load_data
    path = tmp_path / "e.jsonl"
    path.write_text("".join(json.dumps({"tenant": "acme", "user_id": f"u{i % 3}",
                                        "item_id": f"i{i}", "type": "view",
                                        "timestamp_ms": 1_700_000_000_000 + i}) + "\n"
                            for i in range(30)))
    (quiet,) = load_data(offline_cfg, str(path), "acme")
    assert "events file" not in capsys.readouterr().err
    (shown,) = load_data(offline_cfg, str(path), "acme", progress=True)
    err = capsys.readouterr().err
    assert "events file" in err and "30" in err
    assert shown.n_events == quiet.n_events == 30
