"""Engines, evaluation, gates and publishing: one contract suite run against every algorithm."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_stream.batch import app
from recsys_stream.batch.algorithms import TRAINERS, Factors, train_als, train_bpr
from recsys_stream.batch.data import Matrix, build_matrix, from_events
from recsys_stream.batch.evaluate import METRIC_KEYS, evaluate
from recsys_stream.batch.gates import Comparison, check
from recsys_stream.batch.metrics import REJECTED
from recsys_stream.config import BprConfig, TrainerConfig
from recsys_stream.contracts.foldin import FoldInSolver
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.synthetic import generate_events, make_world


@pytest.fixture(scope="module")
def events():
    return generate_events(make_world("acme", 120, genres=4), 200, 25,
                           start_ms=1_700_000_000_000, seed=1)


@pytest.fixture
def recorded(monkeypatch):
    """Announcements the trainer makes, without a broker."""
    calls = []
    monkeypatch.setattr(app, "announce", lambda cfg, store, *a: calls.append(a))
    return calls


def _data(cfg, events):
    tc = cfg.tenant("acme")
    return from_events("acme", events, tc.confidence, tc.history_cap,
                       cfg.trainer.holdout_fraction)


def test_als_user_vectors_are_the_exact_fold_in_of_their_history(events, offline_cfg):
    tc = offline_cfg.tenant("acme")
    m = build_matrix(_data(offline_cfg, events).histories, tc.confidence)
    f = train_als(m.C, tc.als, seed=0)
    from implicit.cpu.als import AlternatingLeastSquares
    ref = AlternatingLeastSquares(factors=tc.als.factors, regularization=tc.als.regularization,
                                  alpha=1.0)
    ref.item_factors = f.item_factors
    expected = ref.recalculate_user(np.arange(m.C.shape[0]), m.C)
    rel = np.linalg.norm(f.user_factors - expected, axis=1) / np.linalg.norm(expected, axis=1)
    assert rel.max() < 1e-4
    # the worker folds a user in from their row alone: the same vector
    u = 7
    row = m.C[u]
    x = FoldInSolver(f.item_factors, tc.als.regularization).solve_one(row.indices, row.data)
    assert np.linalg.norm(x - f.user_factors[u]) / np.linalg.norm(x) < 1e-4


def test_bpr_keeps_the_bias_column(events, offline_cfg):
    tc = offline_cfg.tenant("acme")
    m = build_matrix(_data(offline_cfg, events).histories, tc.confidence)
    f = train_bpr(m.C, BprConfig(factors=8, iterations=20), seed=0)
    assert f.item_factors.shape == (m.C.shape[1], 9) and f.user_factors.shape == (m.C.shape[0], 9)
    assert f.bias_column and np.all(f.user_factors[:, -1] == 1.0)
    assert np.std(f.item_factors[:, -1]) > 0  # a learned item bias, not a constant
    assert f.hyperparameters["foldin_regularization"] == BprConfig().foldin_regularization


@pytest.mark.parametrize("algorithm", sorted(TRAINERS))
def test_engine_contract(algorithm, events, offline_cfg, recorded):
    """Every engine: shapes, finite, beats popularity, publishes a verified, indexed model."""
    cfg = offline_cfg.replace(trainer={"algorithms": (algorithm,)})
    store = ModelStore(cfg.model_store)
    (res,) = app.train_tenant(cfg, _data(cfg, events), store)
    assert res["rejected"] == [] and res["version"] == 1
    assert res["metrics"]["ndcg_at_10"] > res["baseline"]["ndcg_at_10"]
    art = store.load("acme", algorithm)  # CURRENT, verified: checksums, shapes, finite
    hp = getattr(cfg.tenant("acme"), algorithm)
    width = hp.factors + (algorithm == "bpr")
    assert art.item_factors.shape == (len(art.item_ids), width)
    assert art.user_factors.shape == (len(art.user_ids), width)
    assert np.isfinite(art.item_factors).all() and np.isfinite(art.user_factors).all()
    man = art.manifest
    assert art.bias_column == (algorithm == "bpr") and man["bias_column"] == art.bias_column
    assert man["hyperparameters"]["regularization"] == hp.regularization
    assert ("foldin_regularization" in man["hyperparameters"]) == (algorithm == "bpr")
    assert man["confidence"] == cfg.tenant("acme").confidence.to_dict()
    assert 0.0 <= man["index"]["recall_at_10"] <= 1.0
    assert man["data_window"]["n_users"] == len(art.user_ids) == 200
    assert man["data_window"]["n_events"] == len(events)
    assert set(METRIC_KEYS) <= set(man["metrics"])
    assert man["baseline_metrics"]["popularity"]["ndcg_at_10"] == res["baseline"]["ndcg_at_10"]
    assert art.popularity.sum() == sum(len(h.items) for h in _data(cfg, events).histories.values())
    assert store.default_algorithm("acme") == algorithm
    assert recorded == [("acme", algorithm, 1)]


def test_default_is_the_better_algorithm_and_a_rejected_model_is_never_current(
        events, offline_cfg, recorded):
    cfg = offline_cfg.replace(trainer={"algorithms": ("als", "bpr")})
    store = ModelStore(cfg.model_store)
    res = {r["algorithm"]: r for r in app.train_tenant(cfg, _data(cfg, events), store)}
    best = max(res, key=lambda a: res[a]["metrics"]["ndcg_at_10"])
    assert store.default_algorithm("acme") == best
    assert sorted(recorded) == [("acme", "als", 1), ("acme", "bpr", 2)]
    # next round: BPR fails a gate (NaN factors), ALS passes
    recorded.clear()
    orig = TRAINERS["bpr"]
    before = REJECTED.labels("acme", "bpr")._value.get()

    def broken(*a, **kw):
        f = orig(*a, **kw)
        f.item_factors[0, 0] = np.nan
        return f
    TRAINERS["bpr"] = broken
    try:
        res2 = {r["algorithm"]: r for r in app.train_tenant(cfg, _data(cfg, events), store)}
    finally:
        TRAINERS["bpr"] = orig
    assert any("NaN" in r for r in res2["bpr"]["rejected"])
    assert store.current_version("acme", "bpr") == 2  # the previous one keeps serving
    assert store.rejected_reasons("acme", "bpr", res2["bpr"]["version"])
    assert recorded == [("acme", "als", res2["als"]["version"])]  # never announced
    assert REJECTED.labels("acme", "bpr")._value.get() == before + 1
    assert {r["version"]: r["state"] for r in app.list_models(cfg)
            if r["algorithm"] == "bpr"} == {2: "current", 4: "rejected"}


def test_metrics_on_a_hand_checked_case():
    # items a..e; user u trained on a; test {c, e, z} (z unknown to the catalogue)
    train = Matrix(["u", "v"], list("abcde"),
                   sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]], np.float32)))
    scores = np.array([[9, 8, 7, 6, 5], [1, 2, 3, 4, 5]], dtype=np.float32)
    m = evaluate(lambda rows: scores[rows], train, {"u": {"c", "e", "z"}}, np.arange(5.0))
    # u's ranking without a: b c d e -> hits at ranks 2 and 4
    dcg = 1 / np.log2(3) + 1 / np.log2(5)
    idcg = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert m["ndcg_at_10"] == pytest.approx(dcg / idcg)
    assert m["precision_at_10"] == pytest.approx(0.2)
    assert m["recall_at_20"] == pytest.approx(2 / 3)
    assert m["map_at_10"] == pytest.approx((1 / 2 + 2 / 4) / 3)
    assert m["coverage"] == pytest.approx(4 / 5) and m["users_evaluated"] == 1
    assert m["popularity_concentration"] == pytest.approx(1 / 4)  # e is the top 10 %


def test_vectorised_metrics_equal_a_per_user_reference():
    rng = np.random.default_rng(0)
    n_users, n_items = 300, 60
    C = sp.random(n_users, n_items, density=0.1, format="csr", random_state=1, dtype=np.float32)
    items = [f"i{j}" for j in range(n_items)]
    train = Matrix([f"u{n}" for n in range(n_users)], items, C)
    test = {f"u{n}": {f"i{j}" for j in rng.choice(n_items, rng.integers(1, 15), replace=False)}
            - {items[j] for j in C[n].indices} for n in range(n_users)}
    test = {u: t for u, t in test.items() if t}
    S = rng.standard_normal((n_users, n_items)).astype(np.float32)
    got = evaluate(lambda rows: S[rows], train, test, np.ones(n_items))
    sums = np.zeros(4)
    for n, u in enumerate(train.user_ids):
        if u not in test:
            continue
        s = S[n].copy()
        s[C[n].indices] = -np.inf
        ranked = [items[j] for j in np.argsort(-s)[:20]]
        rel = np.array([i in test[u] for i in ranked], dtype=float)
        sums[0] += rel[:10].sum() / 10
        sums[1] += rel.sum() / len(test[u])
        sums[2] += (rel[:10] / np.log2(np.arange(2, 12))).sum() / \
            (1 / np.log2(np.arange(2, 2 + min(10, len(test[u]))))).sum()
        sums[3] += (np.cumsum(rel[:10]) / np.arange(1, 11) * rel[:10]).sum() / min(10, len(test[u]))
    ref = sums / len(test)
    assert [got[k] for k in ("precision_at_10", "recall_at_20", "ndcg_at_10", "map_at_10")] \
        == pytest.approx(ref.tolist())


def test_gates():
    tc = TrainerConfig()
    ok = {"ndcg_at_10": 0.3, "users_evaluated": 3}
    base = {"ndcg_at_10": 0.1}
    good = Factors("als", np.ones((4, 2)), np.ones((3, 2)), {}, False)
    assert check(good, 3, 4, ok, base, 0.3, tc) == []

    def reasons(f=good, n_users=3, n_items=4, metrics=ok, current=None):
        return " | ".join(check(f, n_users, n_items, metrics, base, current, tc))
    assert "do not match 5 items" in reasons(n_items=5)
    assert "do not match 2 users" in reasons(n_users=2)
    assert "width" in reasons(Factors("als", np.ones((4, 3)), np.ones((3, 2)), {}, False))
    assert "NaN" in reasons(Factors("als", np.full((4, 2), np.inf), np.ones((3, 2)), {}, False))
    assert "exceeds" in reasons(Factors("als", np.ones((4, 2)) * 1e4, np.ones((3, 2)), {}, False))
    assert "collapsed" in reasons(Factors("als", np.zeros((4, 2)), np.ones((3, 2)), {}, False))
    assert "not above popularity" in reasons(metrics={"ndcg_at_10": 0.1, "users_evaluated": 3})
    assert "not above popularity" in reasons(metrics={"ndcg_at_10": float("nan"),
                                                      "users_evaluated": 3})
    assert "below the current model" in reasons(current=0.4)
    assert reasons(current=0.31) == ""  # within the 5 % tolerance
    # nothing evaluated (no holdout): the quality gates cannot judge, the others still do
    assert reasons(metrics={"ndcg_at_10": 0.0, "users_evaluated": 0}, current=0.4) == ""
    # both scored on the same test: those two figures decide, and the reason names the test
    same = reasons(current=Comparison("holdout", 0.2, 0.25, version=3, users=40))
    assert "NDCG@10 0.2000 is below the current model v3's 0.2500" in same
    assert "held-out items of 40 users" in same
    assert reasons(current=Comparison("holdout", 0.24, 0.25, version=3, users=40)) == ""
    stored = reasons(current=Comparison("stored", 0.3, 0.4, version=3))
    assert "current model v3's 0.4000" in stored and "stored in its manifest" in stored
