"""Explicit ratings: latest-rating state, the ridge step, biased MF by ALS and SGD, the mf round."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from recsys_stream.batch import app
from recsys_stream.batch.data import from_events, from_histories
from recsys_stream.batch.explicit import rating_gates
from recsys_stream.batch.mf import train_mf, user_step, validation_split
from recsys_stream.batch.mf_sgd import _epoch
from recsys_stream.batch.ratings import baseline_biases, build_ratings, rating_metrics
from recsys_stream.config import MfConfig, TrainerConfig
from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.model_store import ModelStore, ModelVerificationError
from recsys_stream.contracts.ridge import BiasedRidgeSolver
from recsys_stream.contracts.user_state import UserHistory
from recsys_stream.synthetic import generate_ratings

ALS = MfConfig(solver="als", factors=4, regularization=2.0, bias_regularization=2.0,
               iterations=10)
SGD = MfConfig(solver="sgd", factors=4, regularization=0.02, learning_rate=0.01,
               iterations=60, early_stopping=0.2, patience=3)


def rating_events(tenant="acme", **kw):
    return generate_ratings(tenant, **kw)


@pytest.fixture(scope="module")
def data():
    return from_events("acme", rating_events(), ConfidenceSettings(), 500, 0.2)


# -- state -------------------------------------------------------------------------------------
def test_a_re_rating_replaces_and_a_late_older_one_does_not():
    s, h = ConfidenceSettings(), UserHistory("acme", "u")
    h.apply("e1", "a", "rating", 4.0, 1000, s, 500)
    h.apply("e2", "a", "rating", 2.0, 3000, s, 500)
    h.apply("e3", "a", "rating", 5.0, 2000, s, 500)  # older than e2, arriving late
    h.apply("e4", "b", "rating", 3.5, 1500, s, 500)
    assert h.ratings == {"a": [2.0, 3000], "b": [3.5, 1500]}
    # the implicit strength still adds every rating (as before)
    assert h.items["a"][0] > 2.0
    assert UserHistory.decode(h.encode()).ratings == h.ratings
    # any arrival order gives the same latest ratings
    g = UserHistory("acme", "u")
    for eid, item, r, t in (("e3", "a", 5.0, 2000), ("e4", "b", 3.5, 1500),
                            ("e2", "a", 2.0, 3000), ("e1", "a", 4.0, 1000)):
        g.apply(eid, item, "rating", r, t, s, 500)
    assert g.ratings == h.ratings


def test_ratings_are_bounded_like_the_history_oldest_first():
    s, h = ConfidenceSettings(), UserHistory("acme", "u")
    for n in range(20):
        h.apply(f"e{n}", f"i{n}", "rating", 3.0, 1000 + n, s, history_cap=10)
    assert len(h.ratings) <= 11 and "i19" in h.ratings and "i0" not in h.ratings


def test_holdout_keeps_the_latest_ratings_apart(data):
    assert data.test_ratings
    for user, test in data.test_ratings.items():
        assert not set(test) & set(data.train[user].ratings)
        assert set(test) <= set(data.histories[user].ratings)
    n_all = sum(len(h.ratings) for h in data.histories.values())
    n_test = sum(map(len, data.test_ratings.values()))
    assert 0.15 < n_test / n_all < 0.25
    # the changelog path holds out the items met last, with their ratings
    ch = from_histories("acme", data.histories, 0.2)
    for user, test in ch.test_ratings.items():
        assert set(test) == ch.test_items[user] and not set(test) & set(ch.train[user].ratings)


# -- the ridge step ----------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_ridge_step_is_the_closed_form_per_row(scale, weighted):
    rng = np.random.default_rng(3)
    F = rng.normal(size=(30, 5))
    lengths = [0, 1, 3, 7, 12, 30]
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = np.concatenate([rng.choice(30, n, replace=False) for n in lengths])
    t = rng.normal(size=len(indices))
    wts = rng.uniform(0.1, 1.0, len(indices)) if weighted else None
    w, b = BiasedRidgeSolver(F, 0.7, 0.3, scale).solve(indptr, indices, t, wts)
    for r, n in enumerate(lengths):
        sl = slice(indptr[r], indptr[r + 1])
        cols, tt = indices[sl], t[sl]
        W = np.diag(wts[sl] if weighted else np.ones(n))
        Fa = np.hstack([F[cols], np.ones((n, 1))])
        lam = np.diag([0.7] * 5 + [0.3]) * (np.trace(W) if scale else 1)
        ref = np.linalg.solve(Fa.T @ W @ Fa + lam, Fa.T @ W @ tt) if n else np.zeros(6)
        np.testing.assert_allclose(np.append(w[r], b[r]), ref, atol=1e-10)


def test_recency_weights_halve_per_half_life_on_the_users_own_clock():
    from recsys_stream.contracts.ridge import recency_weights
    day = 86_400_000
    w = recency_weights(np.array([0, 3, 3, 4]), np.array([10 * day, 0, 5 * day, 7]), 5.0)
    np.testing.assert_allclose(w, [1.0, 0.25, 0.5, 1.0])
    assert recency_weights(np.array([0, 1]), np.array([5]), 0.0) is None


# -- training ----------------------------------------------------------------------------------
def _rmse(model, train, test):
    from recsys_stream.batch.ratings import test_triples
    u, i, r = test_triples(test, train.user_row, train.item_row)
    return rating_metrics(model.predict(u, i, 0.5, 5.0), r, (u >= 0) & (i >= 0))["rmse"]


@pytest.mark.parametrize("hp", [ALS, SGD, dataclasses.replace(ALS, recency_half_life_days=0.01)],
                         ids=["als", "sgd", "als-recency"])
def test_mf_beats_the_baseline_and_its_users_are_the_exact_user_step(data, hp):
    train = build_ratings(data.train)
    model = train_mf(train, hp, seed=1)
    mu, bu, bi = baseline_biases(train.R, hp.damping)
    from recsys_stream.batch.mf import MfModel
    base = MfModel(mu, np.zeros((len(bu), 0)), bu, np.zeros((len(bi), 0)), bi)
    assert _rmse(model, train, data.test_ratings) < 0.9 * _rmse(base, train, data.test_ratings)
    # the stored users are the closed-form step against the final items (= nearline fold-in)
    X, b_u = user_step(train, model.mu, model.Y, model.b_i, model.hyperparameters["foldin"])
    np.testing.assert_allclose(model.X, X, atol=1e-9)
    np.testing.assert_allclose(model.b_u, b_u, atol=1e-9)
    f = model.factors()
    assert f.item_factors.shape == (len(train.item_ids), hp.factors + 1) and f.bias_column
    np.testing.assert_allclose(f.user_factors[:, -1], 1.0)
    # the index's inner product [x_u, 1]·[y_i, b_i] + μ + b_u is the predicted rating
    u, i = 3, 5
    assert abs(f.user_factors[u] @ f.item_factors[i] + model.mu + model.b_u[u]
               - model.predict(np.array([u]), np.array([i]), -1e9, 1e9)[0]) < 1e-4


def test_sgd_early_stopping_runs_at_most_iterations_and_picks_the_best_epoch(data):
    train = build_ratings(data.train)
    model = train_mf(train, SGD, seed=1)
    hist = model.history
    assert 1 <= model.hyperparameters["epochs"] <= SGD.iterations
    assert model.hyperparameters["epochs"] == int(np.argmin(hist)) + 1
    assert len(hist) == SGD.iterations or len(hist) - np.argmin(hist) - 1 == SGD.patience


def test_validation_split_holds_out_each_users_latest_ratings(data):
    train = build_ratings(data.train)
    fit, held = validation_split(train, 0.25)
    assert fit.nnz + held.sum() == train.nnz
    R, T = train.R, train.times
    for u in range(R.shape[0]):
        a, b = R.indptr[u], R.indptr[u + 1]
        if held[a:b].any():
            assert T[a:b][held[a:b]].min() >= T[a:b][~held[a:b]].max()
        row = fit.R[u]
        np.testing.assert_array_equal(row.indices, R.indices[a:b][~held[a:b]])


def test_compiled_sgd_epoch_equals_the_python_updates():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 5, 40), rng.integers(0, 7, 40)
    r = rng.uniform(1, 5, 40)
    order = rng.permutation(40)
    P, Q = rng.normal(0, .1, (5, 3)), rng.normal(0, .1, (7, 3))
    bu, bi = np.zeros(5), np.zeros(7)
    P2, Q2, bu2, bi2 = P.copy(), Q.copy(), bu.copy(), bi.copy()
    _epoch(users, items, r, order, 3.0, bu, bi, P, Q, 0.05, 0.1)
    for n in order:
        u, i = users[n], items[n]
        e = r[n] - (3.0 + bu2[u] + bi2[i] + P2[u] @ Q2[i])
        bu2[u] += 0.05 * (e - 0.1 * bu2[u])
        bi2[i] += 0.05 * (e - 0.1 * bi2[i])
        P2[u], Q2[i] = P2[u] + 0.05 * (e * Q2[i] - 0.1 * P2[u]), Q2[i] + 0.05 * (e * P2[u]
                                                                              - 0.1 * Q2[i])
    for a, b in ((P, P2), (Q, Q2), (bu, bu2), (bi, bi2)):
        np.testing.assert_allclose(a, b, atol=1e-12)


# -- gates and the store -----------------------------------------------------------------------
def test_rating_gates():
    cfg = TrainerConfig(rmse_tolerance=0.02)
    ok = {"rmse": 0.85, "ratings_evaluated": 10}
    assert rating_gates(ok, {"rmse": 0.9}, None, cfg) == []
    assert "baseline" in rating_gates(ok, {"rmse": 0.85}, None, cfg)[0]
    assert rating_gates(ok, {"rmse": 0.9}, 0.84, cfg) == []           # within 2 %
    assert "current" in rating_gates(ok, {"rmse": 0.9}, 0.8, cfg)[0]  # 6 % worse
    assert rating_gates({"rmse": float("nan"), "ratings_evaluated": 1}, {"rmse": 1}, None, cfg)
    assert rating_gates({"ratings_evaluated": 0}, {}, None, cfg) == []


@pytest.fixture
def recorded(monkeypatch):
    calls = []
    monkeypatch.setattr(app, "announce", lambda cfg, store, *a: calls.append(a))
    return calls


def test_mf_round_publishes_biases_with_checksums_and_rejects_a_corrupt_one(offline_cfg,
                                                                             recorded):
    tenants = {t: dataclasses.replace(tc, mf=ALS) for t, tc in offline_cfg.tenants.items()}
    cfg = offline_cfg.replace(trainer={"algorithms": ("als", "mf")}, tenants=tenants)
    data = from_events("acme", rating_events(), cfg.tenant("acme").confidence, 500, 0.2)
    store = ModelStore(cfg.model_store)
    results = {r["algorithm"]: r for r in app.train_tenant(cfg, data, store)}
    mf = results["mf"]
    assert not mf["rejected"], mf["rejected"]
    assert mf["metrics"]["rmse"] < 1.0 and "ndcg_at_10" in mf["metrics"]
    art = store.load("acme", "mf")
    m = art.manifest
    assert m["metrics"]["rmse"] < m["baseline_metrics"]["baseline_predictor"]["rmse"] \
        < m["baseline_metrics"]["global_mean"]["rmse"]
    assert {"user_bias.npy", "global_mean.npy"} <= set(m["files"])
    assert art.user_bias.shape == (len(art.user_ids),) and 2.5 < art.global_mean < 4.0
    assert art.bias_column and art.item_factors.shape[1] == ALS.factors + 1
    assert m["index"]["dim"] == ALS.factors + 1  # the index is over [y_i, b_i]
    assert ("acme", "mf", art.version) in [tuple(c[:3]) for c in recorded]
    # a damaged bias file is never served
    np.save(art.path / "user_bias.npy", np.asarray(art.user_bias) + 1.0)
    with pytest.raises(ModelVerificationError, match="user_bias.npy does not match"):
        store.load("acme", "mf")
    # a second round that is much worse than the current model is rejected
    worse = {t: dataclasses.replace(tc, mf=dataclasses.replace(ALS, regularization=5e3,
                                                               bias_regularization=5e3))
             for t, tc in tenants.items()}
    again = app.train_tenant(cfg.replace(tenants=worse), data, store)
    reasons = next(r["rejected"] for r in again if r["algorithm"] == "mf")
    assert any("baseline" in r or "current" in r for r in reasons)
