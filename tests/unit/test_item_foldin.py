"""The new-item fold-in equals a direct solve, implicit's item step, and (BPR) the weighted
least squares over the whole row including the bias."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsys_stream.contracts.item_foldin import ItemFoldInSolver


def _users(rng, n_users=300, k=8, bias=False):
    X = rng.normal(0, 0.5, (n_users, k)).astype(np.float32)
    if bias:
        X = np.hstack([X, np.ones((n_users, 1), np.float32)])
    return X


def _items(rng, n_users, n_items, max_users=40):
    out = []
    for _ in range(n_items):
        users = rng.choice(n_users, size=int(rng.integers(1, max_users)), replace=False)
        out.append((users, (1 + 2 * np.log1p(rng.uniform(0, 10, len(users)))).astype(np.float32)))
    return out


def test_equals_the_direct_solve():
    rng = np.random.default_rng(0)
    X = _users(rng)
    lam = 0.3
    items = _items(rng, len(X), 25)
    got = ItemFoldInSolver(X, lam).solve([X[u] for u, _ in items], [c for _, c in items])
    X64 = X.astype(np.float64)
    for (users, c), y in zip(items, got):
        Xi = X64[users]
        A = X64.T @ X64 + Xi.T @ np.diag(c - 1.0) @ Xi + lam * np.eye(X.shape[1])
        want = np.linalg.solve(A, Xi.T @ c)
        np.testing.assert_allclose(y, want, atol=1e-4, rtol=0)


def test_count_scaling_weights_lambda_by_each_items_users():
    """Spark models: lambda * n_i per item, n_i its users (MLlib's regParam * numExplicits)."""
    rng = np.random.default_rng(3)
    X = _users(rng)
    lam = 0.05
    items = _items(rng, len(X), 20)
    args = ([X[u] for u, _ in items], [c for _, c in items])
    got = ItemFoldInSolver(X, lam, scaling="count").solve(*args)
    X64 = X.astype(np.float64)
    for (users, c), y in zip(items, got):
        Xi = X64[users]
        A = X64.T @ X64 + Xi.T @ np.diag(c - 1.0) @ Xi + lam * len(users) * np.eye(X.shape[1])
        np.testing.assert_allclose(y, np.linalg.solve(A, Xi.T @ c), atol=1e-4, rtol=0)
    # items of more than one user differ from the unscaled solve
    plain = ItemFoldInSolver(X, lam).solve(*args)
    many = [n for n, (u, _) in enumerate(items) if len(u) > 3]
    assert not np.allclose(got[many], plain[many], atol=1e-4)


def test_unknown_scaling_is_refused():
    import pytest
    with pytest.raises(ValueError, match="scaling"):
        ItemFoldInSolver(np.eye(3, dtype=np.float32), 0.1, scaling="sqrt")


def test_equals_implicits_item_step_for_the_same_user_factors():
    from implicit.cpu.als import AlternatingLeastSquares
    rng = np.random.default_rng(1)
    X = _users(rng, n_users=200, k=6)
    lam = 0.1
    items = _items(rng, len(X), 12)
    rows, cols, vals = [], [], []
    for i, (users, c) in enumerate(items):
        rows += [i] * len(users)
        cols += users.tolist()
        vals += c.tolist()
    item_users = sp.csr_matrix((vals, (rows, cols)), shape=(len(items), len(X)), dtype=np.float32)
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(factors=6, regularization=lam, alpha=1.0,
                                        use_cg=False, random_state=0)
        model.user_factors = X.copy()
        model.item_factors = np.zeros((len(items), 6), np.float32)
        want = model.recalculate_item(np.arange(len(items)), item_users)
    got = ItemFoldInSolver(X, lam).solve([X[u] for u, _ in items], [c for _, c in items])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_bpr_row_with_bias_minimises_the_weighted_least_squares():
    rng = np.random.default_rng(2)
    X = _users(rng, n_users=150, k=5, bias=True)  # trailing 1: the item-bias column
    lam = 0.1
    users = rng.choice(len(X), 12, replace=False)
    c = np.full(len(users), 3.0, np.float32)
    y = ItemFoldInSolver(X, lam).solve_one(X[users], c)
    assert y.shape == (6,)  # k factors + the bias
    # min sum_u c_u (p_u - x_u.y - b)^2 + lambda |[y, b]|^2 over every user of the version
    # (p = 1, weight c on the item's users; p = 0, weight 1 elsewhere), as a stacked lstsq
    wts = np.ones(len(X))
    p = np.zeros(len(X))
    wts[users], p[users] = c, 1.0
    A = np.vstack([np.sqrt(wts)[:, None] * X, np.sqrt(lam) * np.eye(6)])
    b = np.concatenate([np.sqrt(wts) * p, np.zeros(6)])
    want = np.linalg.lstsq(A.astype(np.float64), b, rcond=None)[0]
    np.testing.assert_allclose(y, want, atol=1e-4, rtol=0)
    # the bias is a real free parameter: the item's users score above the others on average
    scores = X @ y
    assert scores[users].mean() > np.delete(scores, users).mean()
    assert abs(y[-1]) > 1e-3


def test_more_users_of_one_taste_point_the_vector_their_way():
    rng = np.random.default_rng(3)
    X = _users(rng, n_users=400, k=4)
    taste = np.array([1.0, 0, 0, 0], np.float32)
    fans = np.flatnonzero(X @ taste > 0.6)
    solver = ItemFoldInSolver(X, 0.1)
    few = solver.solve_one(X[fans[:3]], np.full(3, 3.0))
    many = solver.solve_one(X[fans[:30]], np.full(30, 3.0))
    cos = lambda a: float(a @ taste / np.linalg.norm(a))  # noqa: E731
    assert cos(many) > 0.8 and cos(many) >= cos(few) - 1e-6


def test_an_extended_user_solver_equals_one_built_over_all_items():
    from recsys_stream.contracts.foldin import FoldInSolver
    rng = np.random.default_rng(4)
    for bias in (False, True):
        Y = rng.normal(0, 0.3, (80, 7)).astype(np.float32)
        Yn = rng.normal(0, 0.3, (5, 7)).astype(np.float32)
        ext = FoldInSolver(Y, 0.2, bias).extended(Yn)
        full = FoldInSolver(np.vstack([Y, Yn]), 0.2, bias)
        items = np.array([3, 81, 84, 10])  # two of the new rows among them
        c = np.array([2.0, 3.0, 1.5, 4.0])
        np.testing.assert_allclose(ext.solve_one(items, c), full.solve_one(items, c), atol=1e-5)
        assert ext.n_items == 85
