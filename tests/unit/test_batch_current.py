"""The model currently published, scored on the new round's holdout: the fair test, the fold-in,
and the tolerance gate on that comparison (or on the stored NDCG@10 when too few users)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from recsys_stream.batch import app
from recsys_stream.batch.algorithms import TRAINERS, Factors
from recsys_stream.batch.compare import compare_with_current
from recsys_stream.batch.data import build_matrix, from_events
from recsys_stream.batch.evaluate import current_scorer, evaluate, factor_scorer, fold_in, \
    held_out_after, popularity_scorer
from recsys_stream.config import AlsConfig
from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.events import Event
from recsys_stream.contracts.foldin import FoldInSolver
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.synthetic import generate_events, make_world

T0 = 1_700_000_000_000
TO_MS = T0 + 100  # end of the current model's data window

# User u trains on a, o1, o2 and holds out L (met before TO_MS: the current model has seen it)
# and N (met after: unseen). Fillers put every item in the train catalogue and make p, q the
# popular ones.
_EVENTS = [("u", "a", 1), ("u", "o1", 2), ("u", "o2", 3), ("u", "L", 50), ("u", "N", 200)] + \
    [(f, i, 1) for f in ("f1", "f2", "f3") for i in ("p", "q")] + \
    [("f4", i, 1 + n) for n, i in enumerate(("L", "N", "o1", "o2"))]

# First factor column only: every user vector is a positive multiple of e1 (axis-aligned item
# factors make YtY diagonal, so the fold-in of u's a, o1, o2 lies on e1 too), and u's ranking
# without its train items follows these numbers.
CURRENT = {"a": 1.0, "o1": 1.0, "o2": 1.0, "L": 0.9, "p": 0.7, "N": 0.5}  # q: unknown to it
WORSE = {"a": 1.0, "o1": 1.0, "o2": 1.0, "L": 0.9, "p": 0.7, "q": 0.6, "N": 0.5}
# NDCG@10 with T_u = {N}: current ranks L p N (q unrankable) -> 1/log2(4) = 0.5;
# the worse candidate ranks L p q N -> 1/log2(5) = 0.4307 (14 % below). With the leaked L in
# T_u as well, the current model would score (1 + 0.5) / (1 + 1/log2(3)) = 0.92.
NDCG_CURRENT, NDCG_WORSE = 1 / np.log2(4), 1 / np.log2(5)


@pytest.fixture
def data(offline_cfg):
    evs = [Event(f"{u}-{i}", "acme", u, i, "view", None, T0 + t) for u, i, t in _EVENTS]
    return from_events("acme", evs, offline_cfg.tenant("acme").confidence, 500, 0.4)


@pytest.fixture
def recorded(monkeypatch):
    calls = []
    monkeypatch.setattr(app, "announce", lambda cfg, store, *a: calls.append(a))
    return calls


def _write_current(store: ModelStore, first_column: dict, stored_ndcg: float,
                   algorithm: str = "als", hyperparameters: dict | None = None,
                   confidence: ConfidenceSettings | None = None, item_factors=None,
                   bias_column: bool = False, to_ms: int = TO_MS) -> int:
    ids = list(first_column)
    Y = np.array([[first_column[i], 0.0] for i in ids], dtype=np.float32) \
        if item_factors is None else item_factors
    v = store.next_version("acme")
    store.write("acme", algorithm, v, item_ids=ids, item_factors=Y, user_ids=["f1"],
                user_factors=np.ones((1, Y.shape[1]), np.float32),
                popularity=np.ones(len(ids), np.float32),
                manifest={"confidence": (confidence or ConfidenceSettings()).to_dict(),
                          "hyperparameters": hyperparameters or {"regularization": 0.1},
                          "bias_column": bias_column, "data_window": {"to_ms": to_ms},
                          "metrics": {"ndcg_at_10": stored_ndcg}})
    store.set_current("acme", algorithm, v)
    return v


def _crafted(first_column: dict):
    """A trainer returning fixed factors: users e1, items (first_column[i], 0)."""
    def train(C, hp, seed, progress=False):
        assert C.shape[1] == len(first_column)  # train and full catalogue are the same here
        Y = np.array([[first_column[i], 0.0] for i in sorted(first_column)], np.float32)
        X = np.tile(np.array([1.0, 0.0], np.float32), (C.shape[0], 1))
        return Factors("als", Y, X, {"regularization": 0.1}, False)
    return train


def test_held_out_after_keeps_only_items_first_met_after_the_window(data):
    assert data.test_items == {"u": {"L", "N"}}
    assert data.test_times == {"u": {"L": T0 + 50, "N": T0 + 200}}
    assert held_out_after(data.test_items, data.test_times, TO_MS) == {"u": {"N"}}
    assert held_out_after(data.test_items, data.test_times, T0 + 200) == {}  # dropped
    assert held_out_after(data.test_items, {}, TO_MS) == {}  # no time: not provably unseen


def test_the_current_model_is_scored_on_the_items_it_cannot_have_seen(data, offline_cfg,
                                                                      monkeypatch):
    cfg = offline_cfg.replace(trainer={"min_compare_users": 1})
    store = ModelStore(cfg.model_store)
    v = _write_current(store, CURRENT, stored_ndcg=0.99)
    train = build_matrix(data.train, cfg.tenant("acme").confidence)
    cand = _crafted(WORSE)(train.C, None, 0)
    entry, comparison = compare_with_current(
        cfg, data, store, "als", train, factor_scorer(cand.user_factors, cand.item_factors),
        {"ndcg_at_10": 0.877})
    assert entry["users"] == 1 and entry["gate"] == "holdout" and entry["version"] == v
    assert str(TO_MS) in entry["test"] and entry["stored_ndcg_at_10"] == 0.99
    # only N counts: with the leaked L the current model would have 0.92
    assert entry["current"]["ndcg_at_10"] == pytest.approx(NDCG_CURRENT)
    assert entry["candidate"]["ndcg_at_10"] == pytest.approx(NDCG_WORSE)
    assert (comparison.basis, comparison.version, comparison.users) == ("holdout", v, 1)
    assert comparison.current_ndcg == pytest.approx(NDCG_CURRENT)
    assert comparison.candidate_ndcg == pytest.approx(NDCG_WORSE)


@pytest.mark.parametrize("tolerance, rejected", [(0.05, True), (0.2, False)])
def test_the_gate_compares_with_the_current_model_on_the_same_test(
        data, offline_cfg, monkeypatch, recorded, tolerance, rejected):
    cfg = offline_cfg.replace(trainer={"min_compare_users": 1, "ndcg_tolerance": tolerance})
    store = ModelStore(cfg.model_store)
    # stored NDCG@10 far below: today's comparison would pass anything above popularity
    v = _write_current(store, CURRENT, stored_ndcg=0.01)
    monkeypatch.setitem(TRAINERS, "als", _crafted(WORSE))
    (res,) = app.train_tenant(cfg, data, store)
    man = store.load("acme", "als", res["version"], verify=False).manifest
    cur = man["baseline_metrics"]["current"]
    assert cur["gate"] == "holdout" and cur["version"] == v and cur["users"] == 1
    assert cur["current"]["ndcg_at_10"] == pytest.approx(NDCG_CURRENT)
    assert cur["candidate"]["ndcg_at_10"] == pytest.approx(NDCG_WORSE)
    assert res["metrics"]["ndcg_at_10"] > res["baseline"]["ndcg_at_10"]  # beats popularity
    if rejected:  # 0.4307 < 0.5 * 0.95
        (reason,) = res["rejected"]
        assert f"below the current model v{v}'s 0.5000" in reason
        assert "held-out items of 1 users first met after its data window" in reason
        assert store.current_version("acme", "als") == v and recorded == []
    else:  # 0.4307 >= 0.5 * 0.8
        assert res["rejected"] == [] and store.current_version("acme", "als") == res["version"]


def _round_against(cfg, data, store, stored_ndcg, monkeypatch):
    """A round of the WORSE candidate against a CURRENT model stored with ``stored_ndcg``;
    returns (current version, result, the manifest's ``baseline_metrics["current"]``)."""
    v = _write_current(store, CURRENT, stored_ndcg=stored_ndcg)
    monkeypatch.setitem(TRAINERS, "als", _crafted(WORSE))
    (res,) = app.train_tenant(cfg, data, store)
    cur = store.load("acme", "als", res["version"], verify=False).manifest[
        "baseline_metrics"]["current"]
    return v, res, cur


def test_too_few_users_fall_back_to_the_stored_ndcg_and_the_manifest_says_so(
        data, offline_cfg, monkeypatch, recorded):
    cfg = offline_cfg.replace(trainer={"min_compare_users": 2})  # only u qualifies
    store = ModelStore(cfg.model_store)
    v, res, cur = _round_against(cfg, data, store, 0.99, monkeypatch)
    assert cur["gate"] == "stored" and cur["stored_ndcg_at_10"] == 0.99 and cur["users"] == 1
    assert cur["current"]["ndcg_at_10"] == pytest.approx(NDCG_CURRENT)  # still recorded
    (reason,) = res["rejected"]  # the full holdout's 0.877 against the stored 0.99
    assert f"below the current model v{v}'s 0.9900" in reason and "stored in its manifest" in reason
    # nobody after the window at all: the same fallback, nothing evaluated
    store2 = ModelStore(cfg.model_store + "-2")
    _write_current(store2, CURRENT, stored_ndcg=0.5, to_ms=T0 + 10_000)
    (res2,) = app.train_tenant(cfg, data, store2)
    cur2 = store2.load("acme", "als", res2["version"], verify=False).manifest[
        "baseline_metrics"]["current"]
    assert cur2["users"] == 0 and cur2["gate"] == "stored" and "current" not in cur2
    assert res2["rejected"] == []  # 0.877 >= 0.5 * 0.95


def test_min_compare_users_0_gates_on_the_stored_ndcg_and_records_the_holdout_comparison(
        data, offline_cfg, monkeypatch, recorded):
    """min_compare_users = 0 opts out of the same-test comparison: it is reported, not gated on."""
    cfg = offline_cfg.replace(trainer={"min_compare_users": 0})
    store = ModelStore(cfg.model_store)
    v, res, cur = _round_against(cfg, data, store, 0.5, monkeypatch)
    assert cur["gate"] == "stored" and cur["users"] == 1 and cur["version"] == v
    assert cur["current"]["ndcg_at_10"] == pytest.approx(NDCG_CURRENT)  # recorded all the same
    assert cur["candidate"]["ndcg_at_10"] == pytest.approx(NDCG_WORSE)
    assert res["rejected"] == []  # 0.877 >= 0.5 * 0.95, though NDCG_WORSE < NDCG_CURRENT


def _shuffled_items(train):
    """An engine whose item factors are permuted across items: a broken model on purpose."""
    def fit(C, hp, seed, progress=False):
        f = train(C, hp, seed, progress)
        perm = np.random.default_rng(seed).permutation(len(f.item_factors))
        return Factors(f.algorithm, f.item_factors[perm], f.user_factors, f.hyperparameters,
                       f.bias_column, f.extras)
    return fit


def test_by_default_fresh_rounds_keep_swapping_in_and_a_broken_one_is_refused(
        offline_cfg, monkeypatch, recorded):
    """The default gate on a growing stream: each healthy round is published (the stored-NDCG
    gate let nothing after v1 through in a steady-state soak), a shuffled model is not."""
    cfg = offline_cfg.replace(tenants={"acme": dataclasses.replace(
        offline_cfg.tenant("acme"), als=AlsConfig(factors=8, regularization=5.0, iterations=10))})
    assert cfg.trainer.min_compare_users == 200  # the default under test
    tc = cfg.tenant("acme")
    events = generate_events(make_world("acme", 400, genres=8, seed=3), 2000, 40, T0, seed=3)
    end = events[-1].timestamp_ms
    store = ModelStore(cfg.model_store)
    for n, days_before_end in enumerate((12, 8, 4, 1), start=1):
        upto = [e for e in events if e.timestamp_ms <= end - days_before_end * 86_400_000]
        (res,) = app.train_tenant(cfg, from_events("acme", upto, tc.confidence, 500, 0.2), store)
        cur = store.load("acme", "als", res["version"], verify=False).manifest[
            "baseline_metrics"].get("current")
        assert res["rejected"] == [] and store.current_version("acme", "als") == n, res
        if n > 1:  # a same-test comparison with enough users each time
            assert cur["gate"] == "holdout" and cur["users"] >= 200
    monkeypatch.setitem(TRAINERS, "als", _shuffled_items(TRAINERS["als"]))
    (res,) = app.train_tenant(cfg, from_events("acme", events, tc.confidence, 500, 0.2), store)
    assert store.current_version("acme", "als") == 4 and res["version"] == 5
    assert any("below the current model v4" in r and "held-out items of" in r
               for r in res["rejected"]), res["rejected"]
    assert [a[2] for a in recorded] == [1, 2, 3, 4]  # the broken one was never announced


def test_the_current_models_user_vectors_are_the_serving_fold_in(offline_cfg):
    """BPR-like current model: bias column, its own fold-in lambda and confidence settings."""
    events = generate_events(make_world("acme", 60, genres=3), 40, 15, start_ms=T0, seed=5)
    data = from_events("acme", events, offline_cfg.tenant("acme").confidence, 500, 0.2)
    store = ModelStore(offline_cfg.model_store)
    train = build_matrix(data.train, offline_cfg.tenant("acme").confidence)
    rng = np.random.default_rng(0)
    known = train.item_ids[5:] + ["gone"]  # 5 new items unknown to it, one it knew
    Y = rng.standard_normal((len(known), 5)).astype(np.float32)
    settings = ConfidenceSettings(half_life_days=2.0, alpha=7.0)  # not the tenant's
    _write_current(store, dict.fromkeys(known, 0.0), 0.1, algorithm="bpr", item_factors=Y,
                   hyperparameters={"regularization": 0.001, "foldin_regularization": 0.3},
                   confidence=settings, bias_column=True)
    art = store.load("acme", "bpr")
    row = {i: n for n, i in enumerate(known)}
    # a user with items the model knows and items it does not
    user = next(u for u in sorted(data.test_items)
                if 0 < sum(i in row for i in data.train[u].items) < len(data.train[u].items))
    _, X = fold_in(art, {user: data.train[user]})
    ids, c = data.train[user].confidences(settings)
    keep = [n for n, i in enumerate(ids) if i in row]
    x = FoldInSolver(Y, 0.3, bias_column=True).solve_one(
        np.array([row[ids[n]] for n in keep]), c[keep])
    np.testing.assert_allclose(X[0], x, rtol=1e-5, atol=1e-6)
    assert X[0, -1] == 1.0
    # the scorer: x . y on the items it knows, -inf on the new ones
    s = current_scorer(art, data.train, train, [user])(np.array([train.user_ids.index(user)]))[0]
    assert np.isneginf(s[:5]).all()
    np.testing.assert_allclose(s[5:], Y[:-1] @ x, rtol=1e-4, atol=1e-5)


def test_evaluation_shows_a_progress_bar_only_when_asked(data, offline_cfg, capsys):
    train = build_matrix(data.train, offline_cfg.tenant("acme").confidence)
    pop = train.popularity
    evaluate(popularity_scorer(pop), train, data.test_items, pop)
    assert "users-bar" not in capsys.readouterr().err
    evaluate(popularity_scorer(pop), train, data.test_items, pop, progress=True,
             desc="users-bar")
    assert "users-bar" in capsys.readouterr().err
