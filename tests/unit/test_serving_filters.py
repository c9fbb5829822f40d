"""Filters inside retrieval, on real model files and the real catalog index: every answer
satisfies its filter and its suppression, holds exactly k when k eligible items exist (through
the exact path and the over-fetching walk alike), and never names another tenant's item."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_stream.contracts.ann_index import build_index
from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.pb import events_pb2, profiles_pb2
from recsys_stream.contracts.pb import recommender_pb2 as pb
from recsys_stream.serving import filters
from recsys_stream.serving.catalog_index import Catalog, CatalogIndex, Entry
from recsys_stream.serving.filters import FilterError, eligibility, parse_filter
from recsys_stream.serving.recommend import recommend, similar_items
from recsys_stream.serving.snapshots import TenantSnapshot

N_ITEMS = 600
CATEGORIES = ("a", "b", "c", "d", "rare")
TENANTS = {"acme": "item-", "globex": "g-item-"}


def _snapshot(store, tenant):
    rng = np.random.default_rng(len(tenant))
    items = [f"{TENANTS[tenant]}{i}" for i in range(N_ITEMS)]
    Y = rng.normal(size=(N_ITEMS, 8))
    X = rng.normal(size=(30, 8))
    store.write(tenant, "als", 1, item_ids=items, item_factors=Y,
                user_ids=[f"user-{u}" for u in range(30)], user_factors=X,
                popularity=rng.integers(1, 100, N_ITEMS).astype(float),
                manifest={"hyperparameters": {"regularization": 0.5},
                          "confidence": ConfidenceSettings().to_dict()},
                index_writer=lambda p: build_index(Y, p, X, recall_floor=0.0))
    return TenantSnapshot.from_artifacts(store.load(tenant, "als", 1))


@pytest.fixture(scope="module")
def snaps(tmp_path_factory):
    store = ModelStore(tmp_path_factory.mktemp("models"))
    return {t: _snapshot(store, t) for t in TENANTS}


def _catalog(snaps, seed: int) -> tuple[Catalog, CatalogIndex]:
    """A random catalogue of both tenants: 0-2 categories per item ("rare" on 3 items, 0.5 %),
    a colour attribute, a launch time; a tenth of the items never named by the catalog."""
    rng = np.random.default_rng(seed)
    catalog = Catalog()
    for tenant, snap in snaps.items():
        rare = set(rng.choice(N_ITEMS, 3, replace=False).tolist())
        for row, item in enumerate(snap.item_id_list):
            if rng.random() < 0.1:
                continue
            cats = list(rng.choice(CATEGORIES[:4], rng.integers(0, 3), replace=False))
            if row in rare:
                cats.append("rare")
            catalog.put(tenant, item, events_pb2.CatalogItem(
                tenant=tenant, item_id=item, state=events_pb2.AVAILABLE, categories=cats,
                attributes={"color": str(rng.choice(["red", "green", "blue"]))},
                created_ms=int(rng.integers(0, 1000))), seen_ms=5)
    return catalog, CatalogIndex(catalog, lambda: snaps.values())


filter_st = st.builds(
    pb.Filter,
    include_categories=st.lists(st.sampled_from(CATEGORIES + ("nowhere",)), max_size=2),
    exclude_categories=st.lists(st.sampled_from(CATEGORIES), max_size=2),
    attributes=st.dictionaries(st.just("color"), st.sampled_from(["red", "green", "blue"]),
                               max_size=1),
    created_after_ms=st.sampled_from([0, 0, 300, 900]))


def _eligible_ids(catalog, tenant, snap, spec):
    _, entries = catalog.items(tenant)
    return {i for i in snap.item_id_list if spec.admits(entries.get(i))}


@pytest.mark.parametrize("exact_values", [filters.EXACT_VALUES, 0])  # exact path; the walk
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 3), f=filter_st, k=st.integers(1, 40),
       seen=st.sets(st.integers(0, N_ITEMS - 1), max_size=60),
       banned=st.sets(st.integers(0, N_ITEMS - 1), max_size=30),
       source=st.sampled_from(["nearline", "batch", "fold_in", "none"]),
       tenant=st.sampled_from(sorted(TENANTS)))
def test_every_answer_satisfies_filter_and_suppression_with_exactly_k(
        snaps, monkeypatch, exact_values, seed, f, k, seen, banned, source, tenant):
    monkeypatch.setattr(filters, "EXACT_VALUES", exact_values)
    snap = snaps[tenant]
    catalog, index = _catalog(snaps, seed)
    spec = parse_filter(f, "filter", 256)
    ids = snap.item_id_list
    seen_ids = [ids[r] for r in sorted(seen)]
    banned_ids = frozenset(ids[r] for r in banned)
    profile = profiles_pb2.UserProfile(tenant=tenant, user_id="u", item_ids=seen_ids,
                                       confidences=[2.0] * len(seen_ids))
    if source == "nearline":
        profile.vectors.add(algorithm="als", model_version=1, values=[1.0] * snap.width,
                            suppressed_rows=sorted(seen))
    user = "user-3" if source == "batch" else "u"
    if source == "none":
        profile = None
    elig = eligibility(spec, index.get(snap), snap.item_row) if spec is not None else None
    answer = recommend(snap, profile, user, k, set(), banned_ids, (), elig)
    got = [i for i, _ in answer.items]
    eligible = _eligible_ids(catalog, tenant, snap, spec) if spec is not None else set(ids)
    free = eligible - banned_ids - (set(seen_ids) if profile is not None else set())
    assert len(got) == len(set(got)) == min(k, len(free))
    assert set(got) <= free, "an item outside the filter or suppressed"
    assert all(i.startswith(TENANTS[tenant]) for i in got)  # and never another tenant's
    if not got:
        assert answer.source == pb.EMPTY and answer.reason
    if answer.vector is not None and exact_values and got and spec is not None:
        # a filter's exact path: the true top-k of the eligible, free items (without a filter
        # the plain path walks the index, whose recall is the index's)
        s = snap.index.item_factors @ answer.vector
        best = sorted(free, key=lambda i: -s[snap.item_row[i]])[:k]
        assert np.allclose(sorted(s[snap.item_row[i]] for i in got),
                           sorted(s[snap.item_row[i]] for i in best), atol=1e-5)


def test_a_category_of_half_a_percent_gives_exactly_k_through_the_walk(snaps, monkeypatch):
    monkeypatch.setattr(filters, "EXACT_VALUES", 0)  # force the walk, then its exact fallback
    snap = snaps["acme"]
    catalog, index = _catalog(snaps, 0)
    spec = parse_filter(pb.Filter(include_categories=["rare"]), "filter", 256)
    elig = eligibility(spec, index.get(snap), snap.item_row)
    assert elig.count == 3
    a = recommend(snap, None, "user-1", 3, set(), frozenset(), (), elig)
    assert a.source == pb.BATCH and len(a.items) == 3


def test_a_filter_no_item_satisfies_is_an_empty_answer_with_a_reason(snaps):
    snap = snaps["acme"]
    _, index = _catalog(snaps, 1)
    spec = parse_filter(pb.Filter(include_categories=["nowhere"]), "filter", 256)
    a = recommend(snap, None, "user-1", 5, set(), frozenset(), (),
                  eligibility(spec, index.get(snap), snap.item_row))
    assert a.source == pb.EMPTY and not a.items and "filter" in a.reason


def test_trending_and_popularity_paths_are_filtered(snaps):
    snap = snaps["acme"]
    catalog, index = _catalog(snaps, 2)
    spec = parse_filter(pb.Filter(include_categories=["a"]), "filter", 256)
    elig = eligibility(spec, index.get(snap), snap.item_row)
    trending = [(i, 1.0) for i in snap.item_id_list[:50]] + [("new-thing", 0.5)]
    a = recommend(snap, None, "nobody", 30, set(), frozenset(), trending, elig)
    assert len(a.items) == 30 and all(elig.admits_id(i) for i, _ in a.items)
    assert a.source == pb.TRENDING


def test_similar_items_with_a_filter(snaps):
    snap = snaps["acme"]
    catalog, index = _catalog(snaps, 3)
    spec = parse_filter(pb.Filter(include_categories=["b"], exclude_categories=["a"]),
                        "filter", 256)
    elig = eligibility(spec, index.get(snap), snap.item_row)
    out = similar_items(snap, "item-0", 10, {"item-1"}, frozenset(), elig)
    assert len(out) == 10 and all(elig.admits_id(i) and i not in ("item-0", "item-1")
                                  for i, _ in out)


def test_catalog_records_replace_and_date_unknown_launches_by_first_sight(snaps):
    catalog = Catalog()
    catalog.put("acme", "item-1", events_pb2.CatalogItem(categories=["x"],
                                                         attributes={"lang": "en"}), seen_ms=100)
    catalog.put("acme", "item-1", events_pb2.CatalogItem(categories=["y"]), seen_ms=200)
    _, entries = catalog.items("acme")
    assert entries["item-1"] == Entry(("y",), {}, 100)  # replaced whole, dated by the first
    index = CatalogIndex(catalog, lambda: [snaps["acme"]])
    built = index.get(snaps["acme"])
    assert built.rows_of("y").tolist() == [snaps["acme"].item_row["item-1"]]
    assert not len(built.rows_of("x")) and not len(built.rows_with("lang", "en"))
    catalog.put("acme", "item-2", events_pb2.CatalogItem(categories=["y"], created_ms=7), 300)
    assert index.refresh() == 1 and index.refresh() == 0  # rebuilt once per change
    assert len(index.get(snaps["acme"]).rows_of("y")) == 2


@pytest.mark.parametrize("f, field", [
    (pb.Filter(include_categories=[""]), "filter.include_categories"),
    (pb.Filter(exclude_categories=["x" * 257]), "filter.exclude_categories"),
    (pb.Filter(attributes={"k" * 300: "v"}), "filter.attributes"),
    (pb.Filter(created_after_ms=-5), "filter.created_after_ms"),
])
def test_bad_filters_name_their_field(f, field):
    with pytest.raises(FilterError) as e:
        parse_filter(f, "filter", 256)
    assert str(e.value).split()[0] == field


def test_an_empty_filter_restricts_nothing():
    assert parse_filter(pb.Filter(), "filter", 256) is None
