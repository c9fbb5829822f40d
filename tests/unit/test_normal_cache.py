"""Heavy users' cached normal equations give the solver's own answers (nearline.normal_cache)."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_stream.contracts.foldin import FoldInSolver
from recsys_stream.nearline.normal_cache import TOLERANCE, NormalEquationCache


def _histories(rng, n_users, n_items, length):
    return {f"u{u}".encode(): (rng.choice(n_items, length, replace=False),
                               (1 + 2 * np.log1p(rng.exponential(2, length))).astype(np.float32))
            for u in range(n_users)}


def _ids(rows):
    # items the model does not know (ids past n_items) are part of a history and never counted
    return [f"i{r}" for r in rows]


def _cache(Y, bias, max_users, min_items):
    solver = FoldInSolver(Y, 0.1, bias_column=bias)
    return solver, NormalEquationCache(solver, {f"i{r}": r for r in range(len(Y))}, max_users,
                                       min_items)


def _step(rng, rows, conf, n_items):
    """What a micro-batch does to a history: new items, stronger ones, decay, a removal."""
    kind = rng.integers(0, 4)
    if kind == 0 or len(rows) < 2:  # new items appended
        new = np.setdiff1d(rng.choice(n_items, 5, replace=False), rows)
        return np.concatenate([rows, new]), np.concatenate(
            [conf, np.full(len(new), 2.5, np.float32)])
    conf = conf.copy()
    if kind == 1:  # a few items touched again
        hit = rng.choice(len(rows), min(3, len(rows)), replace=False)
        conf[hit] += 0.7
    elif kind == 2:  # recency decay: every confidence drifts a little, some below tolerance
        conf = (conf - rng.uniform(0, 3 * TOLERANCE, len(conf))).astype(np.float32)
    else:  # an item hidden: the history is no longer the cached one plus new items
        drop = rng.integers(0, len(rows))
        return np.delete(rows, drop), np.delete(conf, drop)
    return rows, conf


@pytest.mark.parametrize("bias", [False, True])
def test_cached_solves_match_direct_solves_through_many_batches(bias):
    rng = np.random.default_rng(7)
    n_items, k = 400, 16
    Y = rng.normal(0, 0.3, (n_items, k + (1 if bias else 0)))
    solver, cache = _cache(Y, bias, max_users=6, min_items=2 * k)  # fewer slots than users
    users = _histories(rng, 10, n_items + 50, 60)  # ~11 % of items unknown to the model
    users[b"light"] = (np.array([3, 5]), np.array([2.0, 3.0], np.float32))
    users[b"unknown"] = (np.array([n_items + 1]), np.array([2.0], np.float32))
    for _ in range(40):
        keys = [bytes(k) for k in rng.choice(list(users), 7, replace=False)]
        for key in keys:
            users[key] = _step(rng, *users[key], n_items + 50)
        solved, got, got_rows = cache.solve(keys, [(_ids(users[k][0]), users[k][1])
                                                   for k in keys])
        # no vector from nothing the model knows
        assert sorted(solved) == sorted(k for k in keys if (users[k][0] < n_items).any())
        for key, x, known_rows in zip(solved, got, got_rows):
            rows, c = users[key]
            known = rows < n_items
            np.testing.assert_allclose(x, solver.solve_one(rows[known], c[known]),
                                       rtol=1e-4, atol=1e-6)
            # the rows the profile suppresses by: exactly the known history, cached or not
            np.testing.assert_array_equal(known_rows, rows[known])
    assert 0 < len(cache) <= 6


def test_a_tolerance_sized_drift_is_not_applied_but_a_real_change_is():
    rng = np.random.default_rng(1)
    Y = rng.normal(0, 0.3, (200, 8))
    solver, cache = _cache(Y, False, max_users=4, min_items=16)
    rows = rng.choice(200, 40, replace=False)
    conf = np.full(40, 3.0)

    def solve(c):
        return cache.solve([b"u"], [(_ids(rows), c.astype(np.float32))])[1][0]

    x0 = solve(conf)
    assert np.array_equal(solve(conf - TOLERANCE / 2), x0)  # the cached system, as it was
    conf[0] = 9.0
    moved = solve(conf)
    np.testing.assert_allclose(moved, solver.solve_one(rows, conf), rtol=1e-5)
    assert not np.allclose(moved, x0)
