"""Offline evaluation on the temporal holdout.

For every user with test items: rank all items by score, excluding the user's train items, and
compare the top of the list with the held-out items ``T_u`` (hit ``rel_r = 1`` when the item at
rank ``r`` is in ``T_u``). Averages over the evaluated users:

- precision@10 = sum_{r<=10} rel_r / 10
- recall@20    = sum_{r<=20} rel_r / |T_u|
- NDCG@10      = sum_{r<=10} rel_r / log2(r+1)  /  sum_{r<=min(10,|T_u|)} 1 / log2(r+1)
- MAP@10       = sum_{r<=10} rel_r * precision@r  /  min(10, |T_u|)

and over all top-10 lists together:

- coverage     = distinct items recommended in any top-10 / catalogue size
- popularity concentration = share of all top-10 slots taken by the 10 % most popular items

Test items outside the train catalogue cannot be ranked but count in ``|T_u|`` (a model is not
rewarded for forgetting about new items). Everything is vectorised over chunks of users: one
dense score block, one ``argpartition`` for the top 20, hits looked up in a dense block of the
test matrix.

The model currently published is scored on the same holdout as serving scores a user with
fresh events (:func:`current_scorer`): the user's train-split history, weighted with the
confidence settings of *that* model's manifest, is folded in against its item factors, and its
items are aligned to the train catalogue (items it does not know score ``-inf``: never ranked,
still in ``|T_u|``). It was trained on every event up to its ``data_window.to_ms``, so only the
test items first met after that time are fair to it and to the candidate alike
(:func:`held_out_after`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from recsys_stream.batch.data import Matrix, build_matrix
from recsys_stream.contracts.foldin import solver_for_model
from recsys_stream.contracts.model_store import ModelArtifacts
from recsys_stream.contracts.user_state import UserHistory

_DISCOUNT = 1.0 / np.log2(np.arange(2, 22))   # 1/log2(r+1), r = 1..20
_IDEAL = np.cumsum(_DISCOUNT)                  # IDCG for |T_u| = 1..20
_CHUNK = 1024
METRIC_KEYS = ("precision_at_10", "recall_at_20", "ndcg_at_10", "map_at_10", "coverage",
               "popularity_concentration", "users_evaluated")


def evaluate(score_rows: Callable[[np.ndarray], np.ndarray], train: Matrix,
             test_items: dict[str, set[str]], popularity: np.ndarray, progress: bool = False,
             desc: str | None = None) -> dict[str, float]:
    """Metrics of a scorer over the test users.

    Parameters
    ----------
    score_rows : callable
        ``(user_rows: ndarray) -> (len(user_rows), n_items)`` scores for rows of ``train``.
    train : Matrix
        The train matrix; a user's train items are excluded from their ranking.
    test_items : dict of user id to set of item ids
        Held-out items per user; users missing from ``train`` are not evaluated.
    popularity : ndarray of shape (n_items,)
        Interactions per item aligned with ``train.item_ids`` (for the concentration metric).
    progress : bool
        Show a tqdm bar over the users (``desc`` names it).

    Returns
    -------
    dict with the keys of ``METRIC_KEYS``
    """
    user_row = {u: n for n, u in enumerate(train.user_ids)}
    users = [u for u in test_items if u in user_row and test_items[u]]
    n_items = len(train.item_ids)
    if not users or n_items == 0:
        return dict.fromkeys(METRIC_KEYS, 0.0) | {"users_evaluated": 0}
    col = train.item_row
    # test matrix (evaluated users x items) and |T_u| including items unknown to train
    t_indptr = np.cumsum([0] + [sum(i in col for i in test_items[u]) for u in users])
    t_indices = np.fromiter((col[i] for u in users for i in test_items[u] if i in col),
                            np.int64, t_indptr[-1])
    T = sp.csr_matrix((np.ones(len(t_indices), dtype=bool), t_indices, t_indptr),
                      shape=(len(users), n_items))
    n_rel = np.array([len(test_items[u]) for u in users], dtype=np.float64)
    rows_all = np.array([user_row[u] for u in users])
    popular = np.zeros(n_items, dtype=bool)
    popular[np.argsort(-np.asarray(popularity), kind="stable")[:max(1, n_items // 10)]] = True

    k = min(20, n_items)
    sums = np.zeros(4)
    recommended = np.zeros(n_items, dtype=bool)
    popular_slots = total_slots = 0
    bar = tqdm(total=len(users), desc=desc, unit="user", disable=not progress)
    for start in range(0, len(users), _CHUNK):
        rows = rows_all[start:start + _CHUNK]
        m = len(rows)
        bar.update(m)
        scores = np.array(score_rows(rows), dtype=np.float32, copy=True)
        sub = train.C[rows]
        scores[np.repeat(np.arange(m), np.diff(sub.indptr)), sub.indices] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, top, 1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)
        # a small catalogue can pull excluded train items into the top: they are no slot
        valid = np.isfinite(np.take_along_axis(top_scores, order, 1))
        rel = T[start:start + m].toarray()[np.arange(m)[:, None], top] & valid
        nr = n_rel[start:start + m]
        rel10, valid10, top10 = rel[:, :10], valid[:, :10], top[:, :10]
        w = rel10.shape[1]
        sums[0] += (rel10.sum(1) / 10).sum()
        sums[1] += (rel[:, :20].sum(1) / nr).sum()
        ideal = _IDEAL[np.minimum(10, nr).astype(int) - 1]
        sums[2] += ((rel10 * _DISCOUNT[:w]).sum(1) / ideal).sum()
        prec_at = np.cumsum(rel10, axis=1) / np.arange(1, w + 1)
        sums[3] += ((prec_at * rel10).sum(1) / np.minimum(10, nr)).sum()
        recommended[top10[valid10]] = True
        popular_slots += int(popular[top10][valid10].sum())
        total_slots += int(valid10.sum())
    bar.close()
    n = len(users)
    return {"precision_at_10": float(sums[0] / n), "recall_at_20": float(sums[1] / n),
            "ndcg_at_10": float(sums[2] / n), "map_at_10": float(sums[3] / n),
            "coverage": float(recommended.sum() / n_items),
            "popularity_concentration": float(popular_slots / max(total_slots, 1)),
            "users_evaluated": n}


def sample_users(test_items: dict[str, set[str]], max_users: int,
                 seed: int) -> dict[str, set[str]]:
    """At most ``max_users`` test users, a seeded uniform sample (``0``: all of them).

    Ranking every item for every test user costs ``O(users x items)``: at 1M users and 100k
    items, hours per model. The metrics are means over users, so a sample of ``n`` users
    estimates each with a standard error of ``sd / sqrt(n)`` (NDCG@10 per user has
    ``sd <= 0.5``: <= 0.005 at 10k users). Coverage counts the sampled users' lists only.
    """
    if not max_users or len(test_items) <= max_users:
        return test_items
    users = sorted(test_items)
    pick = np.random.default_rng(seed).choice(len(users), max_users, replace=False)
    return {users[i]: test_items[users[i]] for i in sorted(pick)}


def factor_scorer(user_factors: np.ndarray, item_factors: np.ndarray):
    """Scores ``x_u . y_i`` (with BPR's bias column this includes the item bias)."""
    return lambda rows: user_factors[rows] @ item_factors.T


def popularity_scorer(popularity: np.ndarray):
    """The baseline: every user gets the same ranking by train popularity."""
    p = np.asarray(popularity, dtype=np.float32)
    return lambda rows: np.broadcast_to(p, (len(rows), len(p)))


# -- the model currently published -------------------------------------------------------------
def held_out_after(test_items: dict[str, set[str]], test_times: dict[str, dict[str, int]],
                   after_ms: int) -> dict[str, set[str]]:
    """Each user's test items first met in the holdout after ``after_ms``.

    A model trained on every event up to ``after_ms`` has seen the earlier ones (they leak into
    it). An item without a known time is left out, as it cannot be shown to be unseen; users
    with no item left are dropped.
    """
    out = {}
    for user, items in test_items.items():
        times = test_times.get(user, {})
        late = {i for i in items if times.get(i, after_ms) > after_ms}
        if late:
            out[user] = late
    return out


def fold_in(art: ModelArtifacts,
            histories: dict[str, UserHistory]) -> tuple[Matrix, np.ndarray]:
    """User vectors of ``histories`` against a stored model's item factors, as serving does.

    The confidences follow the model's own manifest settings (the worker, too, folds in with the
    manifest's copy), items the model does not know are dropped, and lambda is the manifest's
    ``foldin_regularization``, else its ``regularization``, weighted by the user's item count
    when the manifest's ``regularization_scaling`` is "count" (``TenantSnapshot.from_artifacts``)::

        x_u = (YtY + Y_u^T (C_u - I) Y_u + lambda*I)^-1  Y_u^T C_u p_u

    Returns
    -------
    m : Matrix
        The histories' confidences over ``art.item_ids`` (rows: users sorted by id).
    X : ndarray of shape (len(m.user_ids), width), float32
    """
    m = build_matrix(histories, art.confidence, item_ids=art.item_ids.tolist())
    X = solver_for_model(art.item_factors, art.manifest, art.bias_column).solve(
        m.C.indptr, m.C.indices, m.C.data)
    return m, X


def current_scorer(art: ModelArtifacts, histories: dict[str, UserHistory], train: Matrix,
                   users: list[str]) -> Callable[[np.ndarray], np.ndarray]:
    """Scores of a stored model for the rows of ``users`` in ``train``, over ``train.item_ids``.

    ``users`` (ids of ``train``) are folded in from ``histories`` (:func:`fold_in`); only their
    rows may be scored. Items the model does not know score ``-inf``. A user none of whose items
    the model knows gets its popularity, as serving falls back to it.
    """
    m, X = fold_in(art, {u: histories[u] for u in users})
    model_row = {i: n for n, i in enumerate(art.item_ids.tolist())}
    cols = np.fromiter((model_row.get(i, -1) for i in train.item_ids), np.int64,
                       len(train.item_ids))
    known = cols >= 0
    Y = np.asarray(art.item_factors, dtype=np.float32)[cols[known]]
    pop = np.full(len(cols), -np.inf, dtype=np.float32)
    pop[known] = art.popularity[cols[known]]
    train_row = {u: n for n, u in enumerate(train.user_ids)}
    x_of = np.full(len(train.user_ids), -1, dtype=np.int64)  # train row -> row of X
    x_of[[train_row[u] for u in m.user_ids]] = np.arange(len(m.user_ids))
    cold = np.diff(m.C.indptr) == 0

    def score(rows: np.ndarray) -> np.ndarray:
        r = x_of[rows]
        out = np.full((len(rows), len(cols)), -np.inf, dtype=np.float32)
        out[:, known] = X[r] @ Y.T
        out[cold[r]] = pop
        return out
    return score
