"""The item index: hnswlib over item factors, built by the trainer and queried by the server.

hnswlib's inner-product space loses recall when item norms are uneven, so maximum inner product
search is reduced to nearest-neighbour search (Bachrach et al., 2014): with ``M = max_i |y_i|``,
each item becomes ``y'_i = [y_i, sqrt(M^2 - |y_i|^2)]`` and a query ``x`` becomes ``x' = [x, 0]``;
then ``|x' - y'_i|^2 = |x|^2 + M^2 - 2 x.y_i``, so the L2 order is the inner-product order.
BPR's bias column is an ordinary column here (the user's entry is 1), so the index ranks by
the same ``x . y`` as exact scoring. Returned scores are recomputed exactly from the factors.

Recall@10 against exact scoring is measured at build time on the tenant's own user vectors;
``ef`` is raised until it reaches the floor, and if it never does the manifest says ``exact``
and the server scores exactly for that model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import hnswlib
import numpy as np

DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 200
EF_STEPS = (32, 64, 128, 256, 512, 1024)


def _augment(Y: np.ndarray) -> tuple[np.ndarray, float]:
    Y = np.asarray(Y, dtype=np.float32)
    norms2 = np.einsum("ij,ij->i", Y, Y)
    max_norm2 = float(norms2.max()) if len(Y) else 0.0
    extra = np.sqrt(np.maximum(max_norm2 - norms2, 0.0))[:, None]
    return np.hstack([Y, extra]).astype(np.float32), float(np.sqrt(max_norm2))


def exact_top_k(Q: np.ndarray, Y: np.ndarray, k: int) -> np.ndarray:
    """Row-wise indices of the k largest ``Q @ Y.T`` (unordered within the k)."""
    scores = np.asarray(Q, dtype=np.float32) @ np.asarray(Y, dtype=np.float32).T
    k = min(k, Y.shape[0])
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


def build_index(item_factors: np.ndarray, path: Path, query_sample: np.ndarray | None = None,
                recall_floor: float = 0.9, m: int = DEFAULT_M,
                ef_construction: int = DEFAULT_EF_CONSTRUCTION, seed: int = 42) -> dict:
    """Build, tune and save the index; returns the manifest's ``index`` entry.

    Parameters
    ----------
    item_factors : (n_items, width) array
    path : where to save the hnswlib index
    query_sample : user vectors to measure recall@10 on (the tenant's own users)
    recall_floor : lowest acceptable recall@10; below it at the largest ``ef`` -> ``exact``
    """
    Yaug, max_norm = _augment(item_factors)
    n, dim = Yaug.shape
    index = hnswlib.Index(space="l2", dim=dim)
    index.init_index(max_elements=max(n, 1), M=m, ef_construction=ef_construction,
                     random_seed=seed)
    index.set_num_threads(1)
    if n:
        index.add_items(Yaug, np.arange(n))
    index.save_index(str(path))
    info = {"space": "l2-mips-augmented", "M": m, "ef_construction": ef_construction,
            "max_norm": max_norm, "n_items": n, "dim": dim, "ef": EF_STEPS[0],
            "recall_at_10": None, "exact": False}
    if query_sample is None or not len(query_sample) or n == 0:
        return info
    k = min(10, n)
    truth = exact_top_k(query_sample, item_factors, k)
    for ef in EF_STEPS:
        index.set_ef(max(ef, k))
        labels, _ = index.knn_query(_query(query_sample), k=k)
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(labels, truth)]))
        info.update(ef=ef, recall_at_10=round(recall, 4))
        if recall >= recall_floor:
            break
    else:
        info["exact"] = True
    return info


def _query(X: np.ndarray) -> np.ndarray:
    X = np.atleast_2d(np.asarray(X, dtype=np.float32))
    return np.hstack([X, np.zeros((X.shape[0], 1), dtype=np.float32)])


@dataclass
class ItemIndex:
    """A loaded index plus the factors it ranks (for exact re-scoring).

    ``query`` returns up to ``n`` (item row, score) candidates per user vector, best first.
    With ``exact`` set (or a small catalog) it scores every item instead of walking the graph.
    """

    item_factors: np.ndarray
    info: dict
    index: hnswlib.Index | None = None

    @classmethod
    def load(cls, path: Path | None, item_factors: np.ndarray, info: dict) -> ItemIndex:
        index = None
        if path is not None and info.get("n_items", 0) and not info.get("exact"):
            index = hnswlib.Index(space="l2", dim=int(info["dim"]))
            index.load_index(str(path), max_elements=int(info["n_items"]))
            if index.get_current_count() != len(item_factors):
                raise ValueError(f"index holds {index.get_current_count()} items, "
                                 f"factors {len(item_factors)}")
            index.set_ef(int(info.get("ef", 64)))
            index.set_num_threads(1)
        return cls(np.asarray(item_factors, dtype=np.float32), info, index)

    def query(self, x: np.ndarray, n: int, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` item rows and scores for one user vector ``x``, best first."""
        n_items = len(self.item_factors)
        n = min(n, n_items)
        if n <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        x = np.asarray(x, dtype=np.float32)
        if exact or self.index is None or n * 4 >= n_items:
            scores = self.item_factors @ x
            rows = np.argpartition(-scores, n - 1)[:n] if n < n_items else np.arange(n_items)
        else:
            if self.index.ef < n:
                self.index.set_ef(n)
            labels, _ = self.index.knn_query(_query(x), k=n)
            rows = labels[0].astype(np.int64)
            s = self.item_factors[rows] @ x
            order = np.argsort(-s, kind="stable")
            return rows[order], s[order]
        s = scores[rows]
        order = np.argsort(-s, kind="stable")
        return rows[order], s[order]
