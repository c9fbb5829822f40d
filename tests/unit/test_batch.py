"""The trainer's parts: inputs, engines (one contract suite for both), evaluation, gates."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys_stream.batch.algorithms import TRAINERS, Factors, train_als
from recsys_stream.batch.app import rollback, train_tenant
from recsys_stream.batch.data import Matrix, build_matrix, from_events, iter_events_file
from recsys_stream.batch.evaluate import evaluate, popularity_scorer, sample_users
from recsys_stream.batch.gates import check
from recsys_stream.config import TrainerConfig
from recsys_stream.contracts.foldin import FoldInSolver
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.user_state import UserHistory
from recsys_stream.synthetic import generate_events, make_world

import scipy.sparse as sp


@pytest.fixture(scope="module")
def events():
    world = make_world("acme", 120, genres=4)
    return generate_events(world, 200, 25, start_ms=1_700_000_000_000, seed=1)


def test_movielens_and_jsonl_files_parse(tmp_path):
    ml = tmp_path / "ratings.csv"
    ml.write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n")
    evs = list(iter_events_file(ml, tenant="ml"))
    assert [(e.user_id, e.item_id, e.type, e.value, e.timestamp_ms) for e in evs] == [
        ("1", "31", "rating", 2.5, 1260759144000), ("1", "1029", "rating", 3.0, 1260759179000)]
    js = tmp_path / "e.jsonl"
    js.write_text(json.dumps({"event_id": "x", "tenant": "acme", "user_id": "u", "item_id": "i",
                              "type": "PURCHASE", "timestamp_ms": 5}) + "\n")
    (e,) = iter_events_file(js)
    assert (e.tenant, e.type, e.timestamp_ms) == ("acme", "purchase", 5)
    with pytest.raises(ValueError, match="tenant"):
        list(iter_events_file(ml))


def test_aggregation_equals_the_workers_replay_and_holdout_is_temporal(events, offline_cfg):
    s = offline_cfg.tenant("acme").confidence
    data = from_events("acme", events, s, 500, 0.2)
    user = events[0].user_id
    h = UserHistory("acme", user)
    mine = sorted((e for e in events if e.user_id == user), key=lambda e: e.timestamp_ms)
    for e in mine:
        h.apply(e.event_id, e.item_id, e.type, e.value, e.timestamp_ms, s, 500)
    assert data.histories[user] == h
    cut = len(mine) - round(len(mine) * 0.2)
    assert data.train[user].last_event_ms == mine[cut - 1].timestamp_ms
    assert data.test_items.get(user, set()) <= {e.item_id for e in mine[cut:]}
    assert not data.test_items.get(user, set()) & set(data.train[user].items)


def test_als_user_vectors_are_the_exact_fold_in(events, offline_cfg):
    m = build_matrix(from_events("acme", events, offline_cfg.tenant("acme").confidence, 500,
                                 0.2).histories, offline_cfg.tenant("acme").confidence)
    f = train_als(m.C, offline_cfg.tenant("acme").als, seed=0)
    from implicit.cpu.als import AlternatingLeastSquares
    ref_model = AlternatingLeastSquares(factors=f.item_factors.shape[1], regularization=0.1)
    ref_model.item_factors = f.item_factors
    ref = ref_model.recalculate_user(np.arange(m.C.shape[0]), m.C)
    rel = np.linalg.norm(f.user_factors - ref, axis=1) / np.linalg.norm(ref, axis=1)
    assert rel.max() < 1e-4
    again = FoldInSolver(f.item_factors, 0.1).solve(m.C.indptr, m.C.indices, m.C.data)
    np.testing.assert_allclose(again, f.user_factors, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("algorithm", sorted(TRAINERS))
def test_model_contract(algorithm, events, offline_cfg):
    """Every engine: shapes, finite, beats popularity, publishes a verified, indexed model."""
    cfg = offline_cfg.replace(trainer={"algorithms": (algorithm,)})
    data = from_events("acme", events, cfg.tenant("acme").confidence, 500, 0.2)
    store = ModelStore(cfg.model_store)
    announced = []
    import recsys_stream.batch.app as app
    orig, app.announce = app.announce, lambda *a: announced.append(a[2:])
    try:
        (res,) = train_tenant(cfg, data, store)
    finally:
        app.announce = orig
    assert res["rejected"] == [], res
    assert res["metrics"]["ndcg_at_10"] > res["baseline"]["ndcg_at_10"]
    art = store.load("acme", algorithm)  # verified: checksums, shapes, finite
    k = getattr(cfg.tenant("acme"), algorithm).factors
    width = k + (1 if algorithm == "bpr" else 0)
    assert art.item_factors.shape == (len(art.item_ids), width)
    assert art.user_factors.shape == (len(art.user_ids), width)
    assert art.bias_column == (algorithm == "bpr")
    if algorithm == "bpr":
        assert np.all(art.user_factors[:, -1] == 1.0)
    assert art.manifest["index"]["recall_at_10"] is not None
    assert art.manifest["confidence"] == cfg.tenant("acme").confidence.to_dict()
    assert store.default_algorithm("acme") == algorithm
    assert announced == [("acme", algorithm, art.version)]


def test_metrics_on_a_hand_checked_case():
    train = Matrix(["u"], ["a", "b", "c", "d"],
                   sp.csr_matrix(np.array([[1.0, 0, 0, 0]], dtype=np.float32)))
    pop = np.array([9.0, 3.0, 2.0, 1.0], dtype=np.float32)
    m = evaluate(popularity_scorer(pop), train, {"u": {"c"}}, pop)
    # ranking without the train item a: b, c, d -> the hit is at rank 2
    assert m["ndcg_at_10"] == pytest.approx(1 / np.log2(3))
    assert m["precision_at_10"] == pytest.approx(0.1)
    assert m["recall_at_20"] == 1.0 and m["map_at_10"] == pytest.approx(0.5)
    assert m["coverage"] == pytest.approx(3 / 4)


def test_evaluation_samples_at_most_eval_max_users(events, offline_cfg):
    test = {f"u{j}": {f"i{j}"} for j in range(50)}
    a, b = sample_users(test, 20, seed=1), sample_users(test, 20, seed=1)
    assert len(a) == 20 and a == b and all(test[u] == a[u] for u in a)
    assert sample_users(test, 20, seed=2) != a
    assert sample_users(test, 0, seed=1) == test == sample_users(test, 50, seed=1)
    cfg = offline_cfg.replace(trainer={"eval_max_users": 7, "max_vector_norm": 1e-6})
    data = from_events("acme", events, cfg.tenant("acme").confidence, 500, 0.2)
    assert len(data.test_items) > 7
    (res,) = train_tenant(cfg, data, ModelStore(cfg.model_store))
    assert res["metrics"]["users_evaluated"] == res["baseline"]["users_evaluated"] == 7


def test_gates_reject_nan_shape_and_worse_than_popularity():
    tc = TrainerConfig()
    good = Factors("als", np.ones((4, 2)), np.ones((3, 2)), {}, False)
    ok = {"ndcg_at_10": 0.3, "users_evaluated": 3}
    assert check(good, 3, 4, ok, {"ndcg_at_10": 0.1}, None, tc) == []
    bad = Factors("als", np.full((4, 2), np.nan), np.ones((2, 2)), {}, False)
    reasons = check(bad, 3, 4, {"ndcg_at_10": 0.05, "users_evaluated": 3},
                    {"ndcg_at_10": 0.1}, 0.3, tc)
    text = " | ".join(reasons)
    assert "NaN" in text and "do not match 3 users" in text
    assert "not above popularity" in text and "below the current model" in text


def test_rejected_model_is_never_current_and_rollback_is_verified(events, offline_cfg):
    cfg = offline_cfg.replace(trainer={"max_vector_norm": 1e-6})  # every model fails this gate
    data = from_events("acme", events, cfg.tenant("acme").confidence, 500, 0.2)
    store = ModelStore(cfg.model_store)
    (res,) = train_tenant(cfg, data, store)
    assert res["rejected"] and store.current_version("acme", "als") is None
    assert store.rejected_reasons("acme", "als", res["version"])
    with pytest.raises(SystemExit, match="missing or rejected"):
        rollback(cfg, "acme", version=res["version"], algorithm="als")
