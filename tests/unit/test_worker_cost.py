"""The cheaper per-user path of the worker (issue 27): compact state encoding, the Woodbury rows
kept per model version, the Cholesky solve, and profiles published only when they changed."""

from __future__ import annotations

import numpy as np

from recsys_stream.contracts import foldin
from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.foldin import FoldInSolver, spd_solve
from recsys_stream.contracts.pb import state_pb2
from recsys_stream.contracts.user_state import UserHistory

DAY = 86_400_000


def _history() -> UserHistory:
    s = ConfidenceSettings()
    h = UserHistory("t", "u")
    for j in range(30):
        h.apply(f"e{j}", f"item-{j % 17}", "view" if j % 3 else "purchase", None,
                DAY + j * 1000, s, 12)
    h.apply("r1", "item-3", "rating", 4.0, 2 * DAY, s, 12)
    h.apply("h1", "item-5", "hide", None, 2 * DAY + 1, s, 12)
    return h


def test_compact_state_round_trips_exactly():
    h = _history()
    data = h.encode()
    back = UserHistory.decode(data)
    assert back == h
    assert back.items["item-3"] == h.items["item-3"]  # floats bit for bit, not approximately
    assert h.to_proto().item_ids_nul and not h.to_proto().item_ids  # the compact columns


def test_ids_holding_a_nul_fall_back_to_the_per_element_field():
    s = ConfidenceSettings()
    h = UserHistory("t", "u")
    h.apply("a\x00b", "x\x00y", "view", None, DAY, s, 10)
    h.apply("e2", "plain", "view", None, DAY + 1, s, 10)
    msg = h.to_proto()
    assert list(msg.item_ids) == ["x\x00y", "plain"] and not msg.item_ids_nul
    assert UserHistory.decode(h.encode()) == h


def test_a_state_in_the_earlier_encoding_still_decodes():
    h = _history()
    assert UserHistory.decode(_old_encoding(h)) == h


def _old_encoding(h: UserHistory) -> bytes:
    """``UserState`` as written before the compact columns (per-element repeated fields)."""
    s, t, f = zip(*h.items.values())
    r, rt = zip(*h.ratings.values())
    return state_pb2.UserState(
        tenant=h.tenant, user_id=h.user_id, item_ids=list(h.items), strengths=s,
        item_last_seen_ms=t, item_first_seen_ms=f, suppressed_item_ids=list(h.suppressed),
        last_event_ms=h.last_event_ms, input_partition=h.input_partition,
        applied_offset=h.applied_offset, recent_event_ids=h.recent_event_ids,
        event_count=h.event_count, rated_item_ids=list(h.ratings), ratings=r,
        rating_ms=rt).SerializeToString()


def _batch(rng, n_items, n_users, lengths):
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    idx = np.concatenate([rng.choice(n_items, L, replace=False) for L in lengths])
    return indptr, idx, 1 + 3 * rng.random(len(idx))


def _exact(Y, lam, indptr, idx, c):
    out = []
    for u in range(len(indptr) - 1):
        rows, cu = idx[indptr[u]:indptr[u + 1]], c[indptr[u]:indptr[u + 1]]
        A = Y.T @ Y + lam * np.eye(Y.shape[1]) + Y[rows].T @ ((cu - 1)[:, None] * Y[rows])
        out.append(np.linalg.solve(A, Y[rows].T @ cu))
    return np.array(out)


def test_woodbury_with_kept_rows_and_the_cholesky_path_equal_the_exact_solve(monkeypatch):
    rng = np.random.default_rng(5)
    Y = rng.normal(size=(300, 16)) / 3
    # lengths on both sides of the Woodbury bound (16 * 0.75 = 12), and an empty history
    indptr, idx, c = _batch(rng, 300, 8, [0, 3, 8, 12, 13, 20, 40, 5])
    ref = _exact(Y, 0.1, indptr, idx, c)
    s = FoldInSolver(Y, 0.1)
    for _ in range(2):  # the second time from the kept rows
        got = s.solve(indptr, idx, c)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    short = np.concatenate([idx[:indptr[4]], idx[indptr[7]:]])  # users of <= 12 items
    assert s._have_G[short].all()
    only_long = np.setdiff1d(idx[indptr[4]:indptr[7]], np.concatenate([short, [0]]))
    assert len(only_long) and not s._have_G[only_long].any()  # rows are kept as met
    monkeypatch.setattr(foldin, "WOODBURY_RATIO", 0.0)  # every user by Cholesky
    np.testing.assert_allclose(FoldInSolver(Y, 0.1).solve(indptr, idx, c), ref, rtol=1e-4,
                               atol=1e-5)


def test_an_extended_solver_does_not_reuse_rows_of_the_old_gram():
    rng = np.random.default_rng(6)
    Y = rng.normal(size=(200, 16)) / 3
    indptr, idx, c = _batch(rng, 200, 4, [3, 5, 7, 2])
    s = FoldInSolver(Y, 0.1)
    s.solve(indptr, idx, c)  # fills rows under A0 of the 200 items
    Yn = rng.normal(size=(20, 16))
    ext = s.extended(Yn)
    ref = _exact(np.vstack([Y, Yn]), 0.1, indptr, idx, c)
    np.testing.assert_allclose(ext.solve(indptr, idx, c), ref, rtol=1e-4, atol=1e-5)


def test_spd_solve_falls_back_to_lu_on_an_indefinite_system():
    A = np.stack([np.array([[4.0, 1.0], [1.0, 3.0]]), np.array([[1.0, 2.0], [2.0, 1.0]])])
    b = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(spd_solve(A, b), np.linalg.solve(A, b[..., None])[..., 0])


def test_kept_rows_of_a_light_user_follow_appends_drops_and_a_rebase():
    from recsys_stream.nearline.normal_cache import NormalEquationCache
    Y = np.random.default_rng(7).normal(size=(10, 4))
    row = {f"i{r}": r for r in range(10)}
    cache = NormalEquationCache(FoldInSolver(Y, 0.1), row, max_users=0, min_items=100,
                                rows_items=6)
    assert cache.user_rows(b"u", ["i1", "i2", "zz"]).tolist() == [1, 2, -1]
    assert cache.user_rows(b"u", ["i1", "i2", "zz", "i5"]).tolist() == [1, 2, -1, 5]  # appended
    assert cache.user_rows(b"u", ["i2", "zz", "i5"]).tolist() == [2, -1, 5]  # i1 dropped
    cache.user_rows(b"v", ["i3", "i4", "i6", "i7"])  # over the budget: u is evicted
    assert b"u" not in cache._rows and cache._rows_items == 4
    # a rebase with "zz" now known (row 10) forgets the users that held it
    cache.user_rows(b"u", ["i2", "zz"])
    row2 = dict(row, zz=10)
    moved = cache.rebased(cache.solver.extended(np.ones((1, 4))), row2, {"zz"})
    assert moved.user_rows(b"u", ["i2", "zz"]).tolist() == [2, 10]


def test_a_profile_is_unchanged_only_with_the_same_ids_versions_vector_and_confidences():
    from recsys_stream.contracts.pb import profiles_pb2
    from recsys_stream.nearline.worker import Worker
    h = _history()
    c = np.array([2.0, 3.0], np.float32)

    def vec(values, version=1):
        return [profiles_pb2.ProfileVector(algorithm="als", model_version=version, values=values)]
    assert not Worker._unchanged(h, vec([1.0, 2.0]), c)  # nothing published from it yet
    assert Worker._unchanged(h, vec([1.0, 2.0 + 1e-7]), c)  # float noise
    assert not Worker._unchanged(h, vec([1.0, 2.001]), c)  # the vector moved
    assert not Worker._unchanged(h, vec([1.0, 2.001], version=2), c)  # another version
    assert not Worker._unchanged(h, vec([1.0, 2.001], version=2), c + 0.01)  # confidences
    assert not Worker._unchanged(h, [], c + 0.01)  # no vector: the server folds in from c
    assert Worker._unchanged(h, [], c + 0.01)
    h.apply("n1", "brand-new", "view", None, 3 * DAY, ConfidenceSettings(), 12)
    assert not Worker._unchanged(h, [], c + 0.01)  # the same numbers, another history
