"""The serving logic on real model files: chain, suppression, exactly-k, invariant 2, tenancy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_stream.contracts.ann_index import build_index
from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.pb import profiles_pb2, recommender_pb2 as pb
from recsys_stream.serving.recommend import UnknownItem, recommend, similar_items
from recsys_stream.serving.snapshots import TenantSnapshot

# three tenants whose item and user ids overlap on purpose
UNIVERSES = {"acme": range(0, 200), "globex": range(100, 300), "initech": range(50, 250)}


def _snapshot(store, tenant, version=1, k=6, seed=0):
    rng = np.random.default_rng(seed + hash(tenant) % 100)
    items = [f"item-{i}" for i in UNIVERSES[tenant]]
    basis = rng.normal(size=(3, k))
    Y = rng.normal(size=(len(items), 3)) @ basis + 0.1 * rng.normal(size=(len(items), k))
    X = rng.normal(size=(40, 3)) @ basis
    store.write(tenant, "als", version, item_ids=items, item_factors=Y,
                user_ids=[f"user-{u}" for u in range(40)], user_factors=X,
                popularity=rng.integers(1, 100, len(items)).astype(float),
                manifest={"hyperparameters": {"regularization": 0.5},
                          "confidence": ConfidenceSettings().to_dict()},
                index_writer=lambda p: build_index(Y, p, X, recall_floor=0.0))
    return TenantSnapshot.from_artifacts(store.load(tenant, "als", version))


@pytest.fixture(scope="module")
def snaps(tmp_path_factory):
    store = ModelStore(tmp_path_factory.mktemp("models"))
    return {t: _snapshot(store, t) for t in UNIVERSES}


def _profile(tenant, user, seen=(), hidden=(), vector=None, version=1, rows_of=None):
    """A profile; with ``rows_of`` (a snapshot) its vector carries the suppressed items' rows
    in that model, as the worker writes them (without: as profiles written before the field)."""
    p = profiles_pb2.UserProfile(tenant=tenant, user_id=user, item_ids=list(seen),
                                 confidences=[3.0] * len(seen), suppressed_item_ids=list(hidden))
    if vector is not None:
        rows = [] if rows_of is None else [rows_of.item_row[i] for i in [*seen, *hidden]
                                           if i in rows_of.item_row]
        p.vectors.add(algorithm="als", model_version=version, values=list(vector),
                      suppressed_rows=rows)
    return p


def test_chain_order_and_sources(snaps):
    s = snaps["acme"]
    vec = np.ones(s.width)
    assert recommend(s, _profile("acme", "u", vector=vec), "u", 5, set(), set()).source == \
        pb.NEARLINE
    # invariant 2: a vector of another version is never scored against this model
    stale = _profile("acme", "user-3", vector=vec, version=99)
    a = recommend(s, stale, "user-3", 5, set(), set())
    assert a.source == pb.BATCH
    top_batch = s.index.query(s.user_factors[3], 5, exact=True)[0]
    assert [i for i, _ in a.items] == [str(s.item_ids[r]) for r in top_batch]
    assert recommend(s, _profile("acme", "new", seen=["item-5"]), "new", 5, set(), set()
                     ).source == pb.PROFILE_FOLD_IN
    trending = [("item-7", 3.0), ("item-9", 2.0)]
    t = recommend(s, None, "nobody", 5, set(), set(), trending)
    assert t.source == pb.TRENDING and [i for i, _ in t.items][:2] == ["item-7", "item-9"]
    assert len(t.items) == 5  # topped up from popularity
    p = recommend(s, None, "nobody", 5, set(), set())
    assert p.source == pb.POPULARITY
    assert [i for i, _ in p.items] == [str(s.item_ids[r]) for r in s.popular_order[:5]]
    e = recommend(None, None, "nobody", 5, set(), set())
    assert e.source == pb.EMPTY and "no model" in e.reason


def test_exactly_k_under_heavy_suppression_on_every_path(snaps):
    s = snaps["acme"]
    all_items = [str(i) for i in s.item_ids]
    hidden = set(all_items[:150])
    for profile, user in ((_profile("acme", "u", seen=all_items[150:180],
                                    vector=np.ones(s.width)), "u"),
                          (None, "user-1"), (_profile("acme", "n", seen=all_items[150:180]), "n"),
                          (None, "nobody")):
        a = recommend(s, profile, user, 15, hidden, {"item-195"})
        got = {i for i, _ in a.items}
        eligible = set(all_items) - hidden - {"item-195"} - set(profile.item_ids if profile
                                                                  else ())
        assert len(a.items) == min(15, len(eligible)) and got <= eligible, a.source
    everything = recommend(s, None, "user-1", 5, set(all_items), set())
    assert everything.items == [] and everything.source == pb.EMPTY and everything.reason


def test_suppressed_counts_the_candidates_dropped_above_the_last_answer(snaps):
    """The suppression-rate metric counts ranked candidates taken out of an answer, not the
    size of the user's suppression set (a tenant's whole ban list would swamp it)."""
    s = snaps["acme"]
    x = np.ones(s.width)
    ranked = [str(s.item_ids[r]) for r in s.index.query(x, len(s.item_ids), exact=True)[0]]
    below = set(ranked[10:30])  # fetched with the over-fetch, but below the 5th answer
    p = _profile("acme", "u", seen=[ranked[0], ranked[2]], hidden=[ranked[6]], vector=x)
    a = recommend(s, p, "u", 5, {ranked[3]} | below, frozenset({ranked[1]}))
    assert [i for i, _ in a.items] == [ranked[i] for i in (4, 5, 7, 8, 9)]
    assert a.suppressed == 5  # ranks 0, 1, 2, 3 and 6; not the 20 below the last answer
    trending = [("item-7", 3.0), ("item-8", 2.0), ("item-7", 1.5), ("item-9", 1.0)]
    t = recommend(s, None, "nobody", 2, {"item-7"}, frozenset(), trending)
    assert [i for i, _ in t.items] == ["item-8", "item-9"] and t.suppressed == 1
    pop = [str(s.item_ids[r]) for r in s.popular_order]
    q = recommend(s, None, "nobody", 3, {pop[1]} | set(pop[-30:]), frozenset({pop[3]}),
                  [(pop[0], 1.0)])
    assert [i for i, _ in q.items] == [pop[0], pop[2], pop[4]] and q.suppressed == 2


def test_a_nearline_vectors_rows_suppress_like_the_ids_they_stand_for(snaps):
    """The worker writes the rows of a profile's seen and hidden items into its vector, so the
    server need not look every id up; answers are those of the ids."""
    s = snaps["acme"]
    x = np.ones(s.width)
    ranked = [str(s.item_ids[r]) for r in s.index.query(x, len(s.item_ids), exact=True)[0]]
    seen, hidden = [ranked[0], ranked[2], "not-in-the-model"], [ranked[5]]
    with_rows = _profile("acme", "u", seen, hidden, x, rows_of=s)
    assert len(with_rows.vectors[0].suppressed_rows) == 3
    ids_only = _profile("acme", "u", seen, hidden, x)
    for exclude, banned in ((set(), frozenset()), ({ranked[3], "nope"}, frozenset()),
                            ({ranked[1]}, frozenset({ranked[4], ranked[0]}))):
        a = recommend(s, with_rows, "u", 5, exclude, banned)
        b = recommend(s, ids_only, "u", 5, exclude, banned)
        assert a.source == b.source == pb.NEARLINE
        assert a.items == b.items and a.suppressed == b.suppressed
        assert not {i for i, _ in a.items} & (set(seen) | set(hidden) | exclude | banned)
    # on the nearline path the rows are what suppresses: a row whose id the profile lacks
    rows_only = _profile("acme", "u", vector=x)
    rows_only.vectors[0].suppressed_rows.append(s.item_row[ranked[0]])
    assert [i for i, _ in recommend(s, rows_only, "u", 3, set(), frozenset()).items] == \
        ranked[1:4]


def test_similar_items_are_cosine_neighbours_without_the_item_itself(snaps):
    s = snaps["globex"]
    got = similar_items(s, "item-150", 5, {"item-151"}, {"item-152"})
    ids = [i for i, _ in got]
    assert len(ids) == 5 and not {"item-150", "item-151", "item-152"} & set(ids)
    Y = s.index.item_factors
    y = Y[s.item_row["item-150"]]
    cos = Y @ y / (np.linalg.norm(Y, axis=1) * np.linalg.norm(y))
    cos[[s.item_row[i] for i in ("item-150", "item-151", "item-152")]] = -np.inf
    assert ids[0] == str(s.item_ids[int(np.argmax(cos))])
    with pytest.raises(UnknownItem):
        similar_items(s, "item-999", 5, set(), set())


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A 3,000-item model: large enough that requests walk the graphs instead of scoring all."""
    rng = np.random.default_rng(3)
    items = [f"item-{i}" for i in range(3000)]
    # low rank with uneven norms, as ALS factors: inner-product neighbours are not cosine ones
    Y = (rng.normal(size=(3000, 4)) @ rng.normal(size=(4, 8)) + 0.05 * rng.normal(
        size=(3000, 8))) * rng.gamma(2.0, 0.5, (3000, 1))
    X = rng.normal(size=(50, 4)) @ rng.normal(size=(4, 8))
    store = ModelStore(tmp_path_factory.mktemp("big"))
    store.write("acme", "als", 1, item_ids=items, item_factors=Y,
                user_ids=[f"u{i}" for i in range(50)], user_factors=X, popularity=np.ones(3000),
                manifest={"hyperparameters": {"regularization": 0.5},
                          "confidence": ConfidenceSettings().to_dict()},
                index_writer=lambda p: build_index(Y, p, X, recall_floor=0.9))
    return TenantSnapshot.from_artifacts(store.load("acme", "als", 1))


def _record_walks(s, monkeypatch):
    """The candidate counts ``query`` was asked for, with whether exactly."""
    walked = []
    query = s.index.query
    monkeypatch.setattr(s.index, "query", lambda x, n, exact=False: walked.append(
        (n, exact)) or query(x, n, exact=exact))
    return walked, query


@pytest.mark.parametrize("n_seen, n_banned", [(5, 5), (30, 5), (30, 300)])
def test_recommend_through_the_index_returns_exactly_k_of_the_exact_best(big, monkeypatch,
                                                                        n_seen, n_banned):
    """The index path (not the small-catalogue exact one) answers k unsuppressed items, nearly
    all of the exact top k. The first walk is for the tuned ef candidates, not for k plus every
    suppressed item (a long history or ban list would make every walk that much deeper)."""
    s = big
    assert s.index.index is not None and not s.index.info["exact"]
    walked, query = _record_walks(s, monkeypatch)
    rng = np.random.default_rng(9)
    overlap = 0
    for u in range(20):
        x = s.user_factors[u]
        ranked = [str(s.item_ids[r]) for r in query(x, 3000, exact=True)[0]]
        seen = rng.choice(ranked[:80], n_seen, replace=False).tolist()  # among the best: they bite
        banned = frozenset(rng.choice(ranked[1:], n_banned, replace=False).tolist())
        hidden = set(seen) | banned | {ranked[0]}
        del walked[:]
        a = recommend(s, _profile("acme", f"u{u}", seen=seen), f"u{u}", 10, {ranked[0]}, banned)
        got = [i for i, _ in a.items]
        best = [i for i in ranked if i not in hidden][:10]
        assert a.source == pb.BATCH and len(got) == len(set(got)) == 10
        assert not set(got) & hidden
        overlap += len(set(got) & set(best))
        cap = 10 + len(hidden)
        assert walked[0] == (min(cap, s.index.ef), False), walked  # graph walks only
        assert all(n <= cap and not exact for n, exact in walked), walked
    assert overlap >= 0.9 * 200, overlap


def test_hiding_the_best_items_doubles_the_walk_until_k_are_left(big, monkeypatch):
    """A history that covers a user's whole top (a heavy user) still gets k of the rest: the
    walk doubles while short, up to the suppressed count + k, and finds what one walk that deep
    finds (on this 8-dimensional graph ~55 % of the exact best 10 behind 200 hidden items)."""
    s = big
    walked, query = _record_walks(s, monkeypatch)
    overlap = one_deep_walk = 0
    for u in range(10):
        x = s.user_factors[u]
        ranked = [str(s.item_ids[r]) for r in query(x, 3000, exact=True)[0]]
        best = set(ranked[200:210])
        deep = [str(s.item_ids[r]) for r in query(x, 210)[0]]
        one_deep_walk += len(set([i for i in deep if i not in ranked[:200]][:10]) & best)
        del walked[:]
        a = recommend(s, _profile("acme", f"u{u}", seen=ranked[:200]), f"u{u}", 10, set(),
                      frozenset())
        assert len(a.items) == 10 and not {i for i, _ in a.items} & set(ranked[:200])
        overlap += len({i for i, _ in a.items} & best)
        ns = [n for n, _ in walked]
        assert ns[0] == s.index.ef and ns == sorted(ns) and max(ns) <= 210, ns
    assert overlap >= 0.95 * one_deep_walk, (overlap, one_deep_walk)


def test_when_nearly_everything_is_suppressed_every_item_is_scored(big):
    s = big
    x = s.user_factors[0]
    order = [str(s.item_ids[r]) for r in np.argsort(-(s.index.item_factors @ x), kind="stable")]
    keep = [str(i) for i in s.item_ids[::250]]
    banned = frozenset(str(i) for i in s.item_ids) - set(keep)
    assert [i for i, _ in recommend(s, None, "u0", 10, set(), banned).items] == \
        [i for i in order if i in keep][:10]


def test_similar_items_through_the_cosine_graph_agree_with_exact_cosine(big, monkeypatch):
    """Large catalogues take candidates from the model's cosine graph instead of scoring every
    item: the answer matches exact cosine, suppression and exactly-k included."""
    import recsys_stream.serving.recommend as rec
    s = big
    sim = s.index.info["similar"]
    assert sim["space"] == "cosine" and not sim["exact"] and sim["recall_at_10"] >= 0.9
    walks = []
    real = s.index.similar_candidates
    monkeypatch.setattr(s.index, "similar_candidates",
                        lambda row, n: walks.append(n) or real(row, n))
    exact = [similar_items(s, f"item-{i}", 5, {"item-121"}, {"item-122"}) for i in range(120, 140)]
    assert not walks  # 3000 x 8 values: scored exactly
    monkeypatch.setattr(rec, "_EXACT_SIMILAR_VALUES", 0)
    graph = [similar_items(s, f"item-{i}", 5, {"item-121"}, {"item-122"}) for i in range(120, 140)]
    assert walks and set(walks) <= {5 + 2, 5 + 3}  # k + the hidden: the item, 121, 122
    hits = sum(len({i for i, _ in a} & {i for i, _ in b}) for a, b in zip(graph, exact))
    assert hits >= 0.95 * 5 * 20, hits  # the cosine neighbours, not inner-product ones
    # a long ban list: the first walk is for the graph's ef candidates, not for every ban
    banned = frozenset(f"item-{i}" for i in range(1000, 1300))
    del walks[:]
    deep = [similar_items(s, f"item-{i}", 5, set(), banned) for i in range(120, 140)]
    monkeypatch.setattr(rec, "_EXACT_SIMILAR_VALUES", 10**9)
    truth = [similar_items(s, f"item-{i}", 5, set(), banned) for i in range(120, 140)]
    assert walks and walks[0] == s.index.similar_ef and max(walks) <= 4 * s.index.similar_ef
    assert all(len(a) == 5 and not {i for i, _ in a} & banned for a in deep)
    hits = sum(len({i for i, _ in a} & {i for i, _ in b}) for a, b in zip(deep, truth))
    assert hits >= 0.95 * 5 * 20, hits
    assert all(len(a) == 5 and not {"item-121", "item-122"} & {i for i, _ in a} for a in graph)
    # a deep exclusion list still gets exactly k: over-fetch doubles, then exact
    many = {f"item-{i}" for i in range(0, 3000, 2)}
    deep = similar_items(s, "item-1", 5, many, set())
    assert len(deep) == 5 and not many & {i for i, _ in deep}
    top = [i for i, _ in deep]
    monkeypatch.setattr(rec, "_EXACT_SIMILAR_VALUES", 10**9)
    assert top == [i for i, _ in similar_items(s, "item-1", 5, many, set())]


ids = st.integers(0, 320).map(lambda i: f"item-{i}")


@settings(max_examples=10_000, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(tenant=st.sampled_from(sorted(UNIVERSES)), user=st.integers(0, 60),
       k=st.integers(1, 60), exclude=st.sets(ids, max_size=40), seen=st.lists(ids, max_size=30),
       hidden=st.lists(ids, max_size=10), banned=st.sets(ids, max_size=40),
       kind=st.sampled_from(["nearline", "nearline-rows", "stale", "none", "profile"]),
       trending=st.lists(st.integers(0, 320), max_size=20))
def test_property_no_foreign_or_suppressed_item_and_exactly_k(snaps, tenant, user, k, exclude,
                                                               seen, hidden, banned, kind,
                                                               trending):
    s = snaps[tenant]
    universe = {f"item-{i}" for i in UNIVERSES[tenant]}
    vec = np.linspace(-1, 1, s.width)
    profile = None if kind == "none" else _profile(
        tenant, f"user-{user}", seen, hidden, None if kind == "profile" else vec,
        version=7 if kind == "stale" else 1, rows_of=s if kind == "nearline-rows" else None)
    # the tenant's own trending: only items of its own events
    tr = [(f"item-{i}", 1.0 / (n + 1)) for n, i in enumerate(trending)
          if f"item-{i}" in universe]
    a = recommend(s, profile, f"user-{user}", k, exclude, banned, tr)
    got = [i for i, _ in a.items]
    suppressed = set(exclude) | set(banned)
    if profile is not None:  # the server knows what the user saw and hid from the profile
        suppressed |= set(seen) | set(hidden)
    assert set(got) <= universe, "an item of another tenant"
    assert not set(got) & suppressed, "a suppressed item"
    assert len(got) == len(set(got)) == min(k, len(universe - suppressed))
