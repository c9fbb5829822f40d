"""The contracts every process shares: stubs, keys, confidence, per-user aggregation, fold-in,
model store and item index."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_stream.contracts import codegen
from recsys_stream.contracts.ann_index import ItemIndex, build_index, exact_top_k
from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.foldin import FoldInSolver
from recsys_stream.contracts.keys import make_key, split_key
from recsys_stream.contracts.model_store import ModelStore, ModelVerificationError, load_uri
from recsys_stream.contracts.user_state import UserHistory, cap_slack

DAY = 86_400_000


def test_protobuf_stubs_are_fresh():
    # Fails when proto/ was edited without `make protos`.
    assert codegen.main(["--check"]) == 0


def test_keys_round_trip_and_reject_unseparated():
    assert split_key(make_key("acme", "user 7")) == ("acme", "user 7")
    with pytest.raises(ValueError):
        split_key(b"no-separator")


def test_confidence_formula_and_decay():
    s = ConfidenceSettings(half_life_days=10, alpha=3.0)
    assert s.confidence(np.array([0.0]))[0] == pytest.approx(1.0)
    assert s.confidence(np.array([4.0]))[0] == pytest.approx(1 + 3 * np.log1p(4.0), rel=1e-6)
    assert s.decay(10 * DAY) == pytest.approx(0.5)
    assert s.event_strength("rating", 4.5) == pytest.approx(4.5)
    with pytest.raises(ValueError):
        ConfidenceSettings(weights={"teleport": 1.0})


def _events(rng, n):
    types = ["view", "click", "purchase", "like", "hide"]
    return [(f"e{i}", f"i{rng.integers(0, 12)}", types[rng.integers(0, 5)],
             int(rng.integers(0, 60)) * DAY) for i in range(n)]


def test_user_history_is_order_independent_without_cap():
    rng = np.random.default_rng(1)
    s = ConfidenceSettings(half_life_days=7)
    evs = [e for e in _events(rng, 80) if e[2] != "hide"]
    a, b = UserHistory("t", "u"), UserHistory("t", "u")
    for e in evs:
        a.apply(*e[:1], e[1], e[2], None, e[3], s, history_cap=100)
    for e in reversed(evs):
        b.apply(*e[:1], e[1], e[2], None, e[3], s, history_cap=100)
    ia, sa = a.strengths_now(s)
    ib, sb = b.strengths_now(s)
    assert dict(zip(ia, sa)) == pytest.approx(dict(zip(ib, sb)))


def test_user_history_dedup_suppression_cap_and_encoding():
    s = ConfidenceSettings()
    h = UserHistory("t", "u")
    assert h.apply("e1", "a", "view", None, DAY, s, 3)
    assert not h.apply("e1", "a", "view", None, DAY, s, 3)  # re-sent event counts once
    h.apply("e2", "b", "purchase", None, 2 * DAY, s, 3)
    h.apply("e3", "a", "hide", None, 3 * DAY, s, 3)
    assert "a" not in h.items and "a" in h.suppressed
    h.apply("e4", "a", "view", None, 4 * DAY, s, 3)  # hidden stays hidden
    assert "a" not in h.items
    for i in range(4):  # b + 4 new items = 5 > 3 + slack 1: trimmed to the 3 strongest
        h.apply(f"f{i}", f"x{i}", "click", None, (5 + i) * DAY, s, 3)
    assert list(h.items) == ["b", "x3", "x2"]  # purchase > recent click > older click
    h.apply("f4", "x4", "click", None, 9 * DAY, s, 3)
    assert len(h.items) == 4 == 3 + cap_slack(3)  # within the slack: not sorted again
    back = UserHistory.decode(h.encode())
    assert back == h


def _als_fixture(bias=False):
    from implicit.cpu.als import AlternatingLeastSquares
    C = sp.random(120, 80, density=0.06, random_state=3, format="csr", dtype=np.float32)
    C.data = 1 + 2 * np.log1p(C.data * 5)
    m = AlternatingLeastSquares(factors=12, regularization=0.1, iterations=4, random_state=0)
    m.fit(C, show_progress=False)
    return m, C


def test_fold_in_equals_implicit_recalculate_user():
    m, C = _als_fixture()
    ref = m.recalculate_user(np.arange(C.shape[0]), C)
    got = FoldInSolver(m.item_factors, 0.1).solve(C.indptr, C.indices, C.data)
    rel = np.linalg.norm(got - ref, axis=1) / np.maximum(np.linalg.norm(ref, axis=1), 1e-9)
    assert rel.max() < 1e-4


@pytest.mark.parametrize("k", [4, 12])  # 3 items: the direct solve for k=4, Woodbury for k=12
@pytest.mark.parametrize("bias", [False, True])
def test_fold_in_equals_direct_dense_solve(k, bias):
    rng = np.random.default_rng(2)
    width = k + int(bias)
    Y = rng.normal(size=(50, width)).astype(np.float32)
    items, conf = np.array([3, 7, 11]), np.array([2.0, 5.0, 1.5])
    x = FoldInSolver(Y, 0.3, bias_column=bias).solve_one(items, conf)
    c, p = np.ones(50), np.zeros(50)
    c[items], p[items] = conf, 1.0
    Yk = Y[:, :k].astype(np.float64)
    b = Y[:, k] if bias else np.zeros(50)
    # full weighted least squares over every item (with the bias held at 1 for BPR)
    direct = np.linalg.solve(Yk.T @ (c[:, None] * Yk) + 0.3 * np.eye(k), Yk.T @ (c * (p - b)))
    np.testing.assert_allclose(x[:k], direct, rtol=1e-4, atol=1e-6)
    assert len(x) == width and (not bias or x[k] == 1.0)


def test_fold_in_handles_empty_and_mixed_length_users():
    rng = np.random.default_rng(4)
    Y = rng.normal(size=(30, 4))
    solver = FoldInSolver(Y, 0.5)
    indptr = np.array([0, 0, 5, 6])
    indices = np.array([1, 2, 3, 4, 5, 9])
    conf = np.full(6, 3.0)
    X = solver.solve(indptr, indices, conf)
    assert np.allclose(X[0], 0)
    np.testing.assert_allclose(X[2], solver.solve_one(np.array([9]), np.array([3.0])), rtol=1e-6)


def _write_model(store, version=None, n_items=40, n_users=10, k=4):
    rng = np.random.default_rng(version or 0)
    v = version or store.next_version("acme")
    Y = rng.normal(size=(n_items, k))
    X = rng.normal(size=(n_users, k))
    store.write("acme", "als", v, item_ids=[f"i{i}" for i in range(n_items)], item_factors=Y,
                user_ids=[f"u{i}" for i in range(n_users)], user_factors=X,
                popularity=np.arange(n_items, dtype=float),
                manifest={"hyperparameters": {"regularization": 0.1},
                          "confidence": ConfidenceSettings().to_dict()},
                index_writer=lambda p: build_index(Y, p, X))
    return v


def test_model_store_round_trip_pointers_and_monotonic_versions(tmp_path):
    store = ModelStore(tmp_path)
    v1 = _write_model(store)
    v2 = _write_model(store)
    assert (v1, v2) == (1, 2) and store.next_version("acme") == 3
    store.set_current("acme", "als", v1)
    art = store.load("acme", "als")
    assert art.version == 1 and art.item_factors.shape == (40, 4)
    assert load_uri(art.uri).version == 1
    assert art.confidence == ConfidenceSettings()
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "acme" / "als").iterdir())
    store.set_current("acme", "als", v2)
    assert store.current_version("acme", "als") == 2
    assert store.prune("acme", "als", keep=1) == [1]


def test_prune_counts_good_and_rejected_versions_apart_and_keeps_current(tmp_path):
    store = ModelStore(tmp_path)
    for _ in range(7):
        _write_model(store)
    for v in (2, 4, 5, 7):
        store.reject("acme", "als", v, ["test"])
    store.set_current("acme", "als", 1)  # an operator rolled back to the oldest
    assert store.prune("acme", "als", keep=2) == [2, 4]
    assert store.versions("acme", "als") == [1, 3, 5, 6, 7]  # current + good 3, 6 + rejected 5, 7
    assert store.prune("acme", "als", keep=2) == []
    assert store.prune("acme", "als", keep=0) == []  # 0: keep everything


def _hold_tenant_lock(root, seconds, ready):
    with ModelStore(root).tenant_lock("acme"):
        ready.set()
        time.sleep(seconds)


def test_tenant_lock_excludes_other_processes(tmp_path):
    """A trainer's publish and an operator's rollback run in different processes."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_hold_tenant_lock, args=(str(tmp_path), 1.0, ready))
    p.start()
    try:
        assert ready.wait(30)
        t0 = time.monotonic()
        with ModelStore(tmp_path).tenant_lock("acme"):
            waited = time.monotonic() - t0
        with ModelStore(tmp_path).tenant_lock("globex"):  # another tenant: not blocked
            pass
    finally:
        p.join(30)
    assert waited >= 0.5, waited


def test_model_store_detects_corruption(tmp_path):
    store = ModelStore(tmp_path)
    v = _write_model(store)
    f = store.version_dir("acme", "als", v) / "item_factors.npy"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ModelVerificationError, match="item_factors.npy does not match"):
        store.load("acme", "als", v)


def test_model_store_rejects_nan_and_shape_mismatch(tmp_path):
    store = ModelStore(tmp_path)
    Y = np.ones((5, 3))
    Y[2, 1] = np.nan
    store.write("acme", "als", 1, item_ids=list("abcde"), item_factors=Y, user_ids=["u"],
                user_factors=np.ones((1, 3)), popularity=np.ones(4), manifest={})
    with pytest.raises(ModelVerificationError) as e:
        store.load("acme", "als", 1)
    assert any("NaN" in r for r in e.value.reasons)
    assert any("popularity shape" in r for r in e.value.reasons)
    manifest = json.loads((store.version_dir("acme", "als", 1) / "manifest.json").read_text())
    assert set(manifest["files"]) >= {"item_factors.npy", "item_ids.npy"}


def test_index_ranks_like_exact_inner_product_on_low_rank_factors(tmp_path):
    # ALS-like factors: low intrinsic dimension, uneven norms (popular items are longer)
    rng = np.random.default_rng(5)
    basis = rng.normal(size=(4, 16))
    Y = (rng.normal(size=(3000, 4)) @ basis) * rng.gamma(2.0, 0.5, size=(3000, 1))
    X = rng.normal(size=(200, 4)) @ basis
    info = build_index(Y, tmp_path / "i.bin", X, recall_floor=0.9)
    assert info["recall_at_10"] >= 0.9 and not info["exact"]
    idx = ItemIndex.load(tmp_path / "i.bin", Y, info)
    rows, scores = idx.query(X[0], 10)
    assert len(set(rows.tolist()) & set(exact_top_k(X[:1], Y, 10)[0].tolist())) >= 8
    np.testing.assert_allclose(scores, Y[rows] @ X[0], rtol=1e-4)  # exact re-scored
    assert np.all(np.diff(scores) <= 1e-6)  # best first


def test_index_space_is_chosen_by_measured_recall_and_deep_queries_leave_ef_alone(tmp_path):
    rng = np.random.default_rng(11)
    basis = rng.normal(size=(4, 16))
    Y = (rng.normal(size=(3000, 4)) @ basis) * rng.gamma(2.0, 0.5, size=(3000, 1))
    X = rng.normal(size=(200, 4)) @ basis
    info = build_index(Y, tmp_path / "i.bin", X, recall_floor=0.9)
    tried = info["spaces_tried"]
    assert info["space"] in tried and tried[info["space"]]["recall_at_10"] >= 0.9
    # the kept space reached the floor with the smallest ef of those that reached it
    reached = {s: t["ef"] for s, t in tried.items() if t["recall_at_10"] >= 0.9}
    assert info["ef"] == min(reached.values())
    idx = ItemIndex.load(tmp_path / "i.bin", Y, info)
    assert idx.space == info["space"]
    rows, _ = idx.query(X[1], 300)  # deeper than the tuned ef
    assert len(set(rows.tolist())) == 300
    assert idx.index.ef == info["ef"], "a deep over-fetch must not slow every later query"
    # an index written before the space was recorded loads as augmented L2
    old = build_index(Y, tmp_path / "old.bin")
    old.pop("space")
    assert ItemIndex.load(tmp_path / "old.bin", Y, old).space == "l2-mips-augmented"


def test_an_impossible_floor_means_exact_scoring(tmp_path):
    rng = np.random.default_rng(2)
    Y, X = rng.normal(size=(500, 8)), rng.normal(size=(50, 8))
    info = build_index(Y, tmp_path / "i.bin", X, recall_floor=1.01)
    assert info["exact"] and set(info["spaces_tried"]) == {"ip", "l2-mips-augmented"}
    idx = ItemIndex.load(tmp_path / "i.bin", Y, info)
    rows, scores = idx.query(X[0], 10)
    assert set(rows.tolist()) == set(exact_top_k(X[:1], Y, 10)[0].tolist())


def test_graphs_that_do_not_match_the_factors_are_refused(tmp_path):
    """A snapshot is built off the request path; a graph of another size must never load."""
    rng = np.random.default_rng(4)
    Y, X = rng.normal(size=(300, 8)), rng.normal(size=(40, 8))
    info = build_index(Y, tmp_path / "i.bin", X, recall_floor=0.5)
    assert info["similar"]["space"] == "cosine" and info["similar"]["n_items"] == 300
    ok = ItemIndex.load(tmp_path / "i.bin", Y, info)
    assert ok.index is not None and ok.similar is not None
    with pytest.raises(ValueError, match="index holds 300 items, factors 299"):
        ItemIndex.load(tmp_path / "i.bin", Y[:299], info)
    only_similar = dict(info, exact=True)  # inner-product graph unused: the cosine one checked
    with pytest.raises(ValueError, match="similar-items index holds 300 items, factors 299"):
        ItemIndex.load(tmp_path / "i.bin", Y[:299], only_similar)
    # a model written before the cosine graph existed: SimilarItems scores exactly
    older = {k: v for k, v in info.items() if k != "similar"}
    assert ItemIndex.load(tmp_path / "i.bin", Y, older).similar is None
