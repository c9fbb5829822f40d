"""Explicit ratings of a tenant as a matrix, the baseline predictor, and RMSE / MAE.

The ratings are each user's latest rating per item (``UserHistory.ratings``: a re-rating
replaces), the same state the nearline worker keeps. The baseline predictor is the damped
bias model (Koren 2010, §2.1)::

    μ = mean rating,   b_i = Σ_u (r_ui − μ) / (n_i + d),   b_u = Σ_i (r_ui − μ − b_i) / (n_u + d)

with ``d`` pseudo-counts pulling rarely-rated items and users towards the mean.

Prediction on the holdout: a known user and item get the model's ``r̂_ui``; a user or item the
model never saw gets what is known of the baseline (``μ + b_u``, ``μ + b_i`` or ``μ``), always
clipped to the tenant's scale. RMSE = sqrt(mean (r − r̂)²), MAE = mean |r − r̂|, over every held-out
rating and over the ones whose user and item are both in train ("known").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys_stream.contracts.user_state import UserHistory

RATING_METRIC_KEYS = ("rmse", "mae", "rmse_known", "mae_known", "ratings_evaluated",
                      "ratings_known")


@dataclass
class Ratings:
    """Users x items latest ratings (CSR float64) with their event times (same structure)."""

    user_ids: list[str]
    item_ids: list[str]
    R: sp.csr_matrix
    times: np.ndarray  # event time of each stored rating, aligned with R.data

    @property
    def user_row(self) -> dict[str, int]:
        return {u: n for n, u in enumerate(self.user_ids)}

    @property
    def item_row(self) -> dict[str, int]:
        return {i: n for n, i in enumerate(self.item_ids)}

    @property
    def nnz(self) -> int:
        return self.R.nnz

    def coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user rows, item rows, ratings) of every stored rating."""
        rows = np.repeat(np.arange(len(self.user_ids)), np.diff(self.R.indptr))
        return rows, self.R.indices.astype(np.int64), self.R.data


def build_ratings(histories: dict[str, UserHistory]) -> Ratings:
    """The latest ratings of every user with at least one, rows and columns sorted by id."""
    users = sorted(u for u, h in histories.items() if h.ratings)
    item_ids = sorted({i for u in users for i in histories[u].ratings})
    col = {i: n for n, i in enumerate(item_ids)}
    indptr = np.zeros(len(users) + 1, dtype=np.int64)
    idx, vals, ts = [], [], []
    for n, u in enumerate(users):
        ids, r, t = histories[u].rating_arrays()
        cols = np.fromiter(map(col.__getitem__, ids), np.int64, len(ids))
        order = np.argsort(cols)
        idx.append(cols[order])
        vals.append(r[order])
        ts.append(t[order])
        indptr[n + 1] = indptr[n] + len(ids)
    cat = (lambda a, dt: np.concatenate(a).astype(dt) if a else np.zeros(0, dt))
    R = sp.csr_matrix((cat(vals, np.float64), cat(idx, np.int32), indptr),
                      shape=(len(users), len(item_ids)))
    return Ratings(users, item_ids, R, cat(ts, np.int64))


def baseline_biases(R: sp.csr_matrix, damping: float) -> tuple[float, np.ndarray, np.ndarray]:
    """``(μ, b_u, b_i)`` of the damped baseline predictor (module docstring)."""
    if R.nnz == 0:
        return 0.0, np.zeros(R.shape[0]), np.zeros(R.shape[1])
    mu = float(R.data.mean())
    C = R.tocsc()
    n_i = np.diff(C.indptr)
    b_i = np.asarray(C.sum(axis=0)).ravel() - mu * n_i
    b_i = b_i / (n_i + damping)
    n_u = np.diff(R.indptr)
    resid = R.data - mu - b_i[R.indices]
    b_u = np.add.reduceat(resid, R.indptr[:-1][n_u > 0]) if R.nnz else np.zeros(0)
    bu = np.zeros(R.shape[0])
    bu[n_u > 0] = b_u
    return mu, bu / (n_u + damping), b_i


def test_triples(test: dict[str, dict[str, float]], user_row: dict[str, int],
                 item_row: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Held-out ratings as (user row or -1, item row or -1, rating), users sorted by id."""
    u, i, r = [], [], []
    for user in sorted(test):
        ur = user_row.get(user, -1)
        for item, rating in sorted(test[user].items()):
            u.append(ur)
            i.append(item_row.get(item, -1))
            r.append(rating)
    return np.array(u, np.int64), np.array(i, np.int64), np.array(r, np.float64)


def rating_metrics(pred: np.ndarray, truth: np.ndarray, known: np.ndarray) -> dict[str, float]:
    """RMSE and MAE over all rows and over the ``known`` ones (user and item in train)."""
    err = np.asarray(pred, np.float64) - np.asarray(truth, np.float64)
    out = {"ratings_evaluated": int(len(err)), "ratings_known": int(known.sum())}
    for suffix, e in (("", err), ("_known", err[known])):
        out["rmse" + suffix] = float(np.sqrt(np.mean(e ** 2))) if len(e) else 0.0
        out["mae" + suffix] = float(np.mean(np.abs(e))) if len(e) else 0.0
    return out
