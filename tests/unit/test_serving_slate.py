"""Diversity and exploration on real model files and the real catalog index (``slate``):
per-category caps hold with exactly k, MMR raises intra-list diversity, young items get their
share of slots at positions stable within the hour, marked EXPLORATION."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_stream.config import TenantConfig
from recsys_stream.contracts.pb import events_pb2, profiles_pb2
from recsys_stream.contracts.pb import recommender_pb2 as pb
from recsys_stream.serving.catalog_index import CatalogIndex
from recsys_stream.serving.diversity import DiversityError, DiversitySpec, parse_diversity
from recsys_stream.serving.filters import eligibility, parse_filter
from recsys_stream.serving.slate import Request, compose
from tests.unit.test_serving_filters import N_ITEMS, _catalog, snaps  # noqa: F401 (fixture)

EXPLORE = pb.ScoredItem.EXPLORATION
NOW = 1_800_000_000_000


def _ild(snap, items):
    V = np.stack([snap.index.item_factors[snap.item_row[i]] for i, _ in items])
    V = V / np.linalg.norm(V, axis=1, keepdims=True)
    c = V @ V.T
    n = len(V)
    return float((1 - c)[~np.eye(n, dtype=bool)].mean())


@settings(max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(0, 3), cap=st.integers(1, 3), k=st.integers(1, 40),
       lam=st.sampled_from([0.0, 0.3]), user=st.sampled_from(["user-1", "stranger"]),
       seen=st.sets(st.integers(0, N_ITEMS - 1), max_size=40))
def test_category_caps_hold_with_exactly_k(snaps, seed, cap, k, lam, user, seen):  # noqa: F811
    snap = snaps["acme"]
    catalog, index = _catalog(snaps, seed)
    attrs = index.get(snap)
    ids = [snap.item_id_list[r] for r in seen]
    profile = profiles_pb2.UserProfile(tenant="acme", user_id=user, item_ids=ids,
                                       confidences=[2.0] * len(ids)) if ids else None
    req = Request(user, k, set(), [], None, DiversitySpec(cap, lam))
    answer, reasons = compose(snap, profile, req, frozenset(), (), None, attrs, TenantConfig())
    got = [i for i, _ in answer.items]
    assert len(got) == len(set(got)) == min(k, N_ITEMS - len(ids))
    assert not set(got) & set(ids)
    counts: dict[str, int] = {}
    for i in got:
        for c in attrs.categories_of(i, snap.item_row):
            counts[c] = counts.get(c, 0) + 1
    assert max(counts.values(), default=0) <= cap
    assert len(reasons) == len(got)


def test_mmr_raises_intra_list_diversity(snaps):  # noqa: F811
    snap = snaps["acme"]
    _, index = _catalog(snaps, 0)
    attrs = index.get(snap)
    for user in ("user-1", "user-2", "user-3"):
        plain, _ = compose(snap, None, Request(user, 10, set(), []), frozenset(), (), None,
                           attrs, TenantConfig())
        mmr, _ = compose(snap, None, Request(user, 10, set(), [], None, DiversitySpec(0, 0.5)),
                         frozenset(), (), None, attrs, TenantConfig())
        assert len(mmr.items) == 10 and _ild(snap, mmr.items) > _ild(snap, plain.items)
        assert mmr.items[0] == plain.items[0]  # the most relevant item still leads


@pytest.mark.parametrize("d, field", [
    (pb.Diversity(max_per_category=-1), "diversity.max_per_category"),
    (pb.Diversity(mmr_lambda=1.5), "diversity.mmr_lambda"),
    (pb.Diversity(mmr_lambda=float("nan")), "diversity.mmr_lambda"),
])
def test_bad_diversity_names_its_field(d, field):
    with pytest.raises(DiversityError) as e:
        parse_diversity(d, "diversity")
    assert str(e.value).split()[0] == field


def _young_catalog(snaps, young):  # noqa: F811
    """The random catalogue, plus ``young``: item -> (categories, hours since launch)."""
    catalog, _ = _catalog(snaps, 0)
    for item, (cats, hours) in young.items():
        catalog.put("acme", item, events_pb2.CatalogItem(
            tenant="acme", item_id=item, categories=cats,
            created_ms=int(NOW - hours * 3_600_000)), seen_ms=1)
    return CatalogIndex(catalog, lambda: snaps.values())


def test_young_items_get_their_share_of_slots_stable_within_the_hour(snaps):  # noqa: F811
    snap = snaps["acme"]
    young = {f"fresh-{i}": (["a"], 1 + i) for i in range(6)}
    young["too-old"] = (["a"], 500)
    young["item-7"] = (["b"], 2)  # known to the model: a vector, chosen by the user's score
    attrs = _young_catalog(snaps, young).get(snap)
    tc = TenantConfig(exploration_share=0.2, exploration_max_users=10_000)
    req = Request("user-1", 10, {"fresh-0"}, [])
    a, reasons = compose(snap, None, req, frozenset(), (), None, attrs, tc, now_ms=NOW)
    explored = [i for (i, _), r in zip(a.items, reasons) if r == EXPLORE]
    assert len(a.items) == 10 and len(explored) == 2
    assert "item-7" in explored, "a young item with a vector goes by the user's score"
    assert "too-old" not in explored and "fresh-0" not in explored  # age; suppression
    pos = [n for n, r in enumerate(reasons) if r == EXPLORE]
    later, r2 = compose(snap, None, req, frozenset(), (), None, attrs, tc, now_ms=NOW + 60_000)
    assert [n for n, r in enumerate(r2) if r == EXPLORE] == pos and later.items == a.items
    # at least one slot when the share rounds to none; none at share 0; filters apply
    one, r3 = compose(snap, None, Request("user-1", 3, set(), []), frozenset(), (), None,
                      attrs, TenantConfig(exploration_share=0.01), now_ms=NOW)
    assert r3.count(EXPLORE) == 1
    _, r4 = compose(snap, None, req, frozenset(), (), None, attrs, TenantConfig(), now_ms=NOW)
    assert EXPLORE not in r4
    only_b = eligibility(parse_filter(pb.Filter(include_categories=["b"]), "filter", 256),
                         attrs, snap.item_row)
    fb, r5 = compose(snap, None, Request("user-1", 10, set(), [], only_b), frozenset(), (),
                     None, attrs, tc, now_ms=NOW)
    assert [i for (i, _), r in zip(fb.items, r5) if r == EXPLORE] == ["item-7"]
    assert all(only_b.admits_id(i) for i, _ in fb.items)


def test_exploration_without_a_vector_follows_the_users_categories(snaps):  # noqa: F811
    snap = snaps["acme"]
    attrs = _young_catalog(snaps, {"new-a": (["a"], 1), "new-rare": (["rare"], 3),
                                   "newest": ([], 0.5)}).get(snap)
    tc = TenantConfig(exploration_share=0.1)
    rare = [i for i in snap.item_id_list if "rare" in attrs.categories_of(i, snap.item_row)]
    profile = profiles_pb2.UserProfile(tenant="acme", user_id="anon", item_ids=rare[:2],
                                       confidences=[5.0, 5.0])
    profile.vectors.add(algorithm="als", model_version=99, values=[1.0] * snap.width)  # stale
    a, reasons = compose(snap, profile, Request("nobody-with-vector", 10, set(), []),
                         frozenset(), (), None, attrs, tc, now_ms=NOW)
    # the profile's stale vector is not used (another version): folded in, so a vector exists;
    # the young items have none, so the user's strongest category decides
    assert [i for (i, _), r in zip(a.items, reasons) if r == EXPLORE] == ["new-rare"]
    b, r2 = compose(snap, None, Request("stranger", 10, set(), []), frozenset(), (), None,
                    attrs, tc, now_ms=NOW)
    assert [i for (i, _), r in zip(b.items, r2) if r == EXPLORE] == ["newest"]  # recency
