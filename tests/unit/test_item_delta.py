"""New items beside a snapshot: merge into Recommend and SimilarItems, suppression, exactly-k,
invariant 2; and the stage's per-item record (replays, versions, the user bound)."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_stream.contracts.ann_index import build_index
from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.pb import items_pb2, profiles_pb2
from recsys_stream.nearline.item_state import ItemRecord, item_state_key
from recsys_stream.serving.item_delta import ItemDeltas
from recsys_stream.serving.recommend import UnknownItem, recommend
from recsys_stream.serving.snapshots import TenantSnapshot

K = 6


@pytest.fixture(scope="module")
def snap(tmp_path_factory):
    store = ModelStore(tmp_path_factory.mktemp("models"))
    rng = np.random.default_rng(0)
    items = [f"item-{i}" for i in range(150)]
    Y = rng.normal(size=(150, K))
    X = rng.normal(size=(30, K))
    store.write("acme", "als", 1, item_ids=items, item_factors=Y,
                user_ids=[f"user-{u}" for u in range(30)], user_factors=X,
                popularity=rng.integers(1, 100, 150).astype(float),
                manifest={"hyperparameters": {"regularization": 0.5},
                          "confidence": ConfidenceSettings().to_dict()},
                index_writer=lambda p: build_index(Y, p, X, recall_floor=0.0))
    return TenantSnapshot.from_artifacts(store.load("acme", "als", 1))


class _Msg:
    def __init__(self, key: bytes, value: bytes | None) -> None:
        self._k, self._v = key, value

    def key(self):
        return self._k

    def value(self):
        return self._v


def _deltas(cfg, vectors: dict[str, np.ndarray], version=1, young=()) -> ItemDeltas:
    d = ItemDeltas(cfg)
    for item, y in vectors.items():
        v = items_pb2.ItemVector(tenant="acme", algorithm="als", item_id=item,
                                 model_version=version, values=list(y), users=3,
                                 first_solved_ms=1000, young=item in young)
        d._on_vector(_Msg(item_state_key("acme", "als", item), v.SerializeToString()))
    d._rebuild()
    return d


def _profile(x, seen=(), hidden=(), version=1):
    p = profiles_pb2.UserProfile(tenant="acme", user_id="u", item_ids=list(seen),
                                 confidences=[3.0] * len(seen), suppressed_item_ids=list(hidden))
    p.vectors.add(algorithm="als", model_version=version, values=list(x))
    return p


def _answer(snap, deltas, profile, k=10, exclude=(), banned=frozenset()):
    delta = deltas.get("acme", "als", snap.version)  # as serving.slate asks: young rows masked
    a = recommend(snap, profile, "u", k, set(exclude), banned,
                  masked=delta.young if delta is not None else frozenset())
    return deltas.merge_recommend(snap, a, profile, k, set(exclude), banned)


def test_new_items_join_the_top_k_exactly_k_and_suppressed_never(offline_cfg, snap):
    x = np.ones(K, np.float32)
    news = {f"new-{j}": 10.0 * x * (1 + j) for j in range(4)}  # score far above every item
    deltas = _deltas(offline_cfg, news)
    a = _answer(snap, deltas, _profile(x))
    ids = [i for i, _ in a.items]
    assert len(ids) == 10 and ids[:4] == ["new-3", "new-2", "new-1", "new-0"]
    scores = [s for _, s in a.items]
    assert scores == sorted(scores, reverse=True)
    # seen, hidden, excluded and banned new items never appear; still exactly k
    a = _answer(snap, deltas, _profile(x, seen=["new-3"], hidden=["new-2"]), exclude=["new-1"],
                banned=frozenset({"new-0"}))
    assert len(a.items) == 10 and not {i for i, _ in a.items} & set(news)


def test_a_delta_of_another_version_is_never_scored(offline_cfg, snap):
    x = np.ones(K, np.float32)
    deltas = _deltas(offline_cfg, {"new-0": 10 * x}, version=2)  # the snapshot is v1
    a = _answer(snap, deltas, _profile(x))
    assert "new-0" not in {i for i, _ in a.items} and len(a.items) == 10
    # a v2 user vector is not scored against v1's snapshot, nor its delta, either
    d1 = _deltas(offline_cfg, {"new-0": 10 * x}, version=1)
    a = _answer(snap, d1, _profile(x, version=2))
    assert a.vector is None or a.version == 1
    assert "new-0" not in {i for i, _ in a.items}


def test_similar_items_with_a_new_item_as_query_and_as_neighbour(offline_cfg, snap):
    Y = snap.index.item_factors
    twin = Y[7] * 1.01  # a new item almost identical to item-7
    deltas = _deltas(offline_cfg, {"new-7": twin, "new-x": -Y[7]})
    got = deltas.similar(snap, "new-7", 5, set(), frozenset())
    assert len(got) == 5 and got[0][0] == "item-7"
    got = deltas.similar(snap, "item-7", 5, set(), frozenset())
    assert got[0][0] == "new-7" and "item-7" not in {i for i, _ in got}
    got = deltas.similar(snap, "item-7", 5, set(), frozenset({"new-7"}))
    assert len(got) == 5 and "new-7" not in {i for i, _ in got}
    with pytest.raises(UnknownItem):
        deltas.similar(snap, "never-seen", 5, set(), frozenset())


def test_a_young_item_is_scored_from_its_delta_vector_never_from_its_stale_row(offline_cfg,
                                                                              snap):
    x = np.ones(K, np.float32)
    Y = snap.index.item_factors
    top = [snap.item_id_list[r] for r in np.argsort(-(Y @ x))[:3]]
    low = snap.item_id_list[int(np.argmin(Y @ x))]
    # the model's three best items for x are young and re-solved far down; its worst one is
    # young and re-solved to the top
    young = {top[0]: -x, top[1]: -x, top[2]: -x, low: 20.0 * x}
    deltas = _deltas(offline_cfg, young, young=set(young))
    a = _answer(snap, deltas, _profile(x))
    ids = [i for i, _ in a.items]
    assert len(ids) == 10 and ids[0] == low and a.items[0][1] == pytest.approx(20.0 * K)
    assert not set(top) & set(ids)
    # the rest are the index's best among the other items, in order (exactly k kept)
    rest = [snap.item_id_list[r] for r in np.argsort(-(Y @ x)) if snap.item_id_list[r]
            not in young][:9]
    assert ids[1:] == rest
    # suppressed by id like any item: seen, or excluded
    a = _answer(snap, deltas, _profile(x, seen=[low]))
    assert low not in {i for i, _ in a.items} and len(a.items) == 10
    # the same vectors not marked young: the index's rows stand, the delta adds nothing
    plain = _answer(snap, _deltas(offline_cfg, young), _profile(x))
    assert [i for i, _ in plain.items][:3] == top


def test_similar_items_use_a_young_item_s_delta_vector_both_ways(offline_cfg, snap):
    Y = snap.index.item_factors
    stale = snap.item_id_list[3]
    deltas = _deltas(offline_cfg, {stale: Y[7] * 1.01}, young={stale})  # now item-7's twin
    got = deltas.similar(snap, stale, 5, set(), frozenset())
    assert len(got) == 5 and got[0][0] == "item-7" and stale not in {i for i, _ in got}
    got = deltas.similar(snap, "item-7", 5, set(), frozenset())
    assert len(got) == 5 and got[0][0] == stale
    assert got[0][1] == pytest.approx(1.0, abs=1e-4)
    # never twice, and never by its stale row: another item's neighbours
    far = deltas.similar(snap, "item-7", 149, set(), frozenset())
    assert [i for i, _ in far].count(stale) == 1


def test_a_tombstone_drops_the_item(offline_cfg, snap):
    x = np.ones(K, np.float32)
    deltas = _deltas(offline_cfg, {"new-0": 10 * x, "new-1": 9 * x})
    deltas._on_vector(_Msg(item_state_key("acme", "als", "new-0"), None))
    deltas._rebuild()
    assert deltas.get("acme", "als", 1).ids == ["new-1"]


def _rec(user, version=1, c=3.0, x=(1.0, 0.0)):
    return items_pb2.ItemInteraction(tenant="acme", item_id="n", user_id=user, algorithm="als",
                                     model_version=version, confidence=c, user_vector=list(x),
                                     event_ms=5)


def test_item_record_replays_versions_and_the_user_bound():
    r = ItemRecord("acme", "als", "n")
    assert r.apply(_rec("a"), 0, 10, max_users=2)
    assert not r.apply(_rec("a", c=9.0), 0, 10, max_users=2)  # replayed offset
    assert r.users["a"][0] == 3.0
    assert r.apply(_rec("a", c=5.0), 0, 11, max_users=2)      # the user's latest wins
    assert r.apply(_rec("b"), 0, 12, max_users=2)
    assert not r.apply(_rec("c"), 0, 13, max_users=2)         # over the bound
    assert list(r.users) == ["a", "b"] and r.users["a"][0] == 5.0
    assert r.apply(_rec("c", version=2, x=(0.0, 1.0)), 0, 14, max_users=2)  # afresh
    assert r.version == 2 and list(r.users) == ["c"]
    assert not r.apply(_rec("a", version=1), 0, 15, max_users=2)  # stale version
    back = ItemRecord.decode(r.encode())
    assert back.version == 2 and list(back.users) == ["c"] and back.applied_offset == 15
    np.testing.assert_array_equal(back.users["c"][1], [0.0, 1.0])
