"""Offline evaluation on the temporal holdout.

For every user with test items: rank all items by score, excluding the user's train items, and
compare the top of the list with the held-out items.

- precision@10 = |top10 ∩ test| / 10
- recall@20    = |top20 ∩ test| / |test|
- NDCG@10      = sum_{r<=10, hit} 1/log2(r+1)  /  sum_{r<=min(10,|test|)} 1/log2(r+1)
- MAP@10       = sum_{r<=10, hit} precision@r  /  min(10, |test|)
- coverage     = distinct items recommended in any top-10 / catalogue size
- popularity concentration = share of all top-10 slots taken by the 10 % most popular items
"""

from __future__ import annotations

import numpy as np

from recsys_stream.batch.data import Matrix

_DISCOUNT = 1.0 / np.log2(np.arange(2, 22))
_CHUNK = 1024


def evaluate(score_rows, train: Matrix, test_items: dict[str, set[str]],
             popularity: np.ndarray) -> dict[str, float]:
    """Metrics of a scorer over the test users.

    Parameters
    ----------
    score_rows : callable ``(user_rows: ndarray) -> (len(user_rows), n_items) scores``
    train : the train matrix (its rows are excluded from each user's ranking)
    test_items : held-out items per user id
    popularity : interactions per item, aligned with ``train.item_ids``
    """
    user_row = {u: n for n, u in enumerate(train.user_ids)}
    users = [u for u in test_items if u in user_row]
    n_items = len(train.item_ids)
    if not users or n_items == 0:
        return {"precision_at_10": 0.0, "recall_at_20": 0.0, "ndcg_at_10": 0.0,
                "map_at_10": 0.0, "coverage": 0.0, "popularity_concentration": 0.0,
                "users_evaluated": 0}
    popular = set(np.argsort(-popularity)[:max(1, n_items // 10)].tolist())
    sums = np.zeros(4)
    recommended: set[int] = set()
    popular_slots = total_slots = 0
    for start in range(0, len(users), _CHUNK):
        chunk = users[start:start + _CHUNK]
        rows = np.array([user_row[u] for u in chunk])
        scores = np.array(score_rows(rows), dtype=np.float32, copy=True)
        sub = train.C[rows]
        scores[np.repeat(np.arange(len(rows)), np.diff(sub.indptr)), sub.indices] = -np.inf
        k = min(20, n_items)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1), 1)
        finite = np.isfinite(np.take_along_axis(scores, top, 1))
        for u, ranked, ok in zip(chunk, top, finite):
            ranked = ranked[ok]  # a small catalogue can pull excluded train items into the top
            truth = test_items[u]
            rel = np.array([train.item_ids[i] in truth for i in ranked])
            n_rel = len(truth)
            hits10 = rel[:10]
            sums[0] += hits10.sum() / 10
            sums[1] += rel[:20].sum() / n_rel
            ideal = _DISCOUNT[:min(10, n_rel)].sum()
            sums[2] += (_DISCOUNT[:len(hits10)] * hits10).sum() / ideal
            prec_at = np.cumsum(hits10) / np.arange(1, len(hits10) + 1)
            sums[3] += (prec_at * hits10).sum() / min(10, n_rel)
            recommended.update(ranked[:10].tolist())
            popular_slots += sum(1 for i in ranked[:10] if i in popular)
            total_slots += min(10, len(ranked))
    n = len(users)
    return {"precision_at_10": sums[0] / n, "recall_at_20": sums[1] / n,
            "ndcg_at_10": sums[2] / n, "map_at_10": sums[3] / n,
            "coverage": len(recommended) / n_items,
            "popularity_concentration": popular_slots / max(total_slots, 1),
            "users_evaluated": n}


def factor_scorer(user_factors: np.ndarray, item_factors: np.ndarray):
    return lambda rows: user_factors[rows] @ item_factors.T


def popularity_scorer(popularity: np.ndarray):
    p = np.asarray(popularity, dtype=np.float32)
    return lambda rows: np.broadcast_to(p, (len(rows), len(p)))
