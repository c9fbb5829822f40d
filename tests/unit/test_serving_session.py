"""Session context and RankItems on real model files: anonymous fold-in from context items,
context joined to a profile, suppression of context items; RankItems answers exactly the
requested ids (less banned and filtered ones), known ones by score, unknown ones after."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.pb import profiles_pb2
from recsys_stream.contracts.pb import recommender_pb2 as pb
from recsys_stream.serving.filters import eligibility, parse_filter
from recsys_stream.serving.rank import rank_items
from recsys_stream.serving.recommend import recommend
from tests.unit.test_serving_filters import N_ITEMS, _catalog, snaps  # noqa: F401 (fixture)

CLICK = float(ConfidenceSettings().confidence(ConfidenceSettings().event_strength("click")))


def test_an_anonymous_session_is_folded_in_from_its_context_items(snaps):  # noqa: F811
    snap = snaps["acme"]
    context = ["item-3", "item-8", "item-40", "not-in-the-model"]
    a = recommend(snap, None, "", 10, set(), frozenset(), (), None, context)
    assert a.source == pb.SESSION and len(a.items) == 10
    assert not {i for i, _ in a.items} & set(context), "context items are suppressed"
    rows = np.array([snap.item_row[i] for i in context[:3]])
    expected = snap.solver.solve_one(rows, np.full(3, CLICK))
    assert np.allclose(a.vector, expected, atol=1e-6)
    # the answer is this vector's exact top 10 among the other items
    s = snap.index.item_factors @ expected
    s[rows] = -np.inf
    assert [i for i, _ in a.items][:3] == [snap.item_id_list[r] for r in np.argsort(-s)[:3]]


def test_context_joins_the_profile_for_this_request_weighted_as_a_click(snaps):  # noqa: F811
    snap = snaps["acme"]
    st_ = ConfidenceSettings()
    profile = profiles_pb2.UserProfile(tenant="acme", user_id="u", item_ids=["item-1", "item-2"],
                                       confidences=[3.0, 2.0])
    profile.vectors.add(algorithm="als", model_version=1, values=[1.0] * snap.width)
    a = recommend(snap, profile, "u", 5, set(), frozenset(), (), None, ["item-2", "item-9"])
    assert a.source == pb.SESSION
    c2 = float(st_.confidence(np.expm1(1.0 / st_.alpha) + st_.event_strength("click")))
    rows, conf = a.basis
    got = dict(zip([snap.item_id_list[r] for r in rows], conf))
    assert got == pytest.approx({"item-1": 3.0, "item-2": c2, "item-9": CLICK}, rel=1e-6)
    assert np.allclose(a.vector, snap.solver.solve_one(rows, conf))
    assert not {i for i, _ in a.items} & {"item-1", "item-2", "item-9"}
    # without context the same user is answered by their nearline vector, as before
    assert recommend(snap, profile, "u", 5, set(), frozenset()).source == pb.NEARLINE


def test_unknown_context_alone_falls_back_and_is_still_suppressed(snaps):  # noqa: F811
    snap = snaps["acme"]
    trending = [("item-5", 9.0), ("item-6", 8.0), ("item-7", 7.0)]
    a = recommend(snap, None, "", 2, set(), frozenset(), trending, None, ["nope", "item-5"][:1])
    assert a.source == pb.TRENDING and [i for i, _ in a.items] == ["item-5", "item-6"]
    b = recommend(snap, None, "", 2, set(), frozenset(), trending, None, ["zzz", "item-5"])
    assert b.source == pb.SESSION and "item-5" not in {i for i, _ in b.items}


@settings(max_examples=80, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(st.integers(0, N_ITEMS - 1), unique=True, min_size=1, max_size=60),
       unknown=st.lists(st.sampled_from([f"new-{i}" for i in range(20)]), unique=True,
                        max_size=5),
       banned=st.sets(st.integers(0, N_ITEMS - 1), max_size=20),
       who=st.sampled_from(["batch", "session", "nobody"]),
       with_filter=st.booleans(), seed=st.integers(0, 1), data=st.randoms())
def test_rank_items_answers_exactly_the_requested_ids(snaps, rows, unknown, banned, who,  # noqa: F811
                                                       with_filter, seed, data):
    snap = snaps["acme"]
    ids = [snap.item_id_list[r] for r in rows] + unknown
    data.shuffle(ids)
    banned_ids = frozenset(snap.item_id_list[r] for r in banned)
    elig = None
    if with_filter:
        _, index = _catalog(snaps, seed)
        elig = eligibility(parse_filter(pb.Filter(exclude_categories=["a"]), "filter", 256),
                           index.get(snap), snap.item_row)
    user, context = {"batch": ("user-2", []), "session": ("", ["item-1", "item-2"]),
                     "nobody": ("stranger", [])}[who]
    trend = [("new-3", 5.0), ("new-1", 4.0)]
    r = rank_items(snap, None, user, context, ids, banned_ids, elig, None, lambda: trend)
    expected = [i for i in ids if i not in banned_ids and (elig is None or elig.admits_id(i))]
    got = [i for i, _ in r.items]
    assert sorted(got) == sorted(expected) and len(got) == len(set(got))
    known = [i for i in got if i in snap.item_row]
    assert got[:len(known)] == known, "unknown items follow the known ones"
    assert set(r.unknown) == set(got) - set(known)
    scores = [s for i, s in r.items if i in snap.item_row]
    assert scores == sorted(scores, reverse=True)
    if r.vector is not None:
        assert np.allclose(scores, [float(snap.index.item_factors[snap.item_row[i]] @ r.vector)
                                    for i in known], atol=1e-5)
    assert r.source == {"batch": pb.BATCH, "session": pb.SESSION, "nobody": pb.POPULARITY}[who]
    tail = got[len(known):]
    assert tail == sorted(tail, key=lambda i: -dict(trend).get(i, 0.0))
