"""The item index: hnswlib over item factors, built by the trainer and queried by the server.

Two ways to search maximum inner product with hnswlib, and the build measures which one works
for the factors at hand instead of assuming:

- ``ip``: hnswlib's native inner-product space. Cheap per query, but its graph is built for a
  similarity that is not a metric, and recall drops when item norms are very uneven.
- ``l2-mips-augmented``: the reduction of MIPS to nearest-neighbour search (Bachrach et al.,
  2014): with ``M = max_i |y_i|`` each item becomes ``y'_i = [y_i, sqrt(M^2 - |y_i|^2)]`` and a
  query ``x`` becomes ``x' = [x, 0]``; then ``|x' - y'_i|^2 = |x|^2 + M^2 - 2 x.y_i``, so the L2
  order is the inner-product order. Exact in theory, but the augmented points crowd near a
  sphere, which on low-rank ALS factors needs a large ``ef`` (measured on 100k x 64 synthetic
  ALS-like factors: recall@10 0.94 needed ef=1024 here, against 0.99 at ef=64 in ``ip``).

Recall@10 against exact scoring is measured at build time on the tenant's own user vectors,
raising ``ef`` until it reaches the floor. ``ip`` is built first; the augmented index is built
too only when ``ip`` needs more than ``CHEAP_EF`` (or misses the floor), and the space that
reaches the floor with the smaller ``ef`` is kept. If neither does, the manifest says ``exact``
and the server scores exactly for that model. BPR's bias column is an ordinary column here (the
user's entry is 1), so the index ranks by the same ``x . y`` as exact scoring. Returned scores
are recomputed exactly from the factors.

A second graph serves ``SimilarItems``, in hnswlib's ``cosine`` space (``SIMILAR_FILE``, next to
the first): item-to-item similarity is cosine, and the inner-product graph cannot stand in for
it, since long (popular) vectors dominate inner products. Measured on 20k x 64 ALS-like
factors: the inner-product index's top 50k candidates held 33 % of the exact cosine top 10.
Its recall@10 (the item itself excluded) is measured on a seeded sample of the items and tuned
the same way; below the floor the manifest says ``exact`` for it.

With ``progress`` the items are added in chunks of ``ADD_CHUNK`` under a tqdm bar (large
catalogues take minutes); the graph is the same as one ``add_items`` call, since the index adds
on one thread in row order either way and draws every item's level from the same seeded
generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import hnswlib
import numpy as np
from tqdm import tqdm

DEFAULT_M = 16
DEFAULT_EF_CONSTRUCTION = 200
EF_STEPS = (32, 64, 128, 256, 512, 1024)
# An ``ip`` index reaching the floor at this ef or below is kept without trying the other space.
CHEAP_EF = 128
IP, L2_AUGMENTED = "ip", "l2-mips-augmented"
# space name -> (hnswlib space, extra dimension for the augmentation)
_SPACES = {IP: ("ip", 0), L2_AUGMENTED: ("l2", 1)}
# Items per add_items call when a progress bar is shown: the bar can only move between calls.
ADD_CHUNK = 10_000
SIMILAR_FILE = "similar_index.bin"  # the cosine graph, beside the index file
SIMILAR_SAMPLE = 300  # items whose cosine neighbours measure the similar graph's recall


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


def _query(X: np.ndarray, space: str) -> np.ndarray:
    """Query vectors in the index's space (the augmentation appends a 0)."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float32))
    if _SPACES[space][1]:
        return np.hstack([X, np.zeros((X.shape[0], 1), dtype=np.float32)])
    return X


def _add_items(index: hnswlib.Index, data: np.ndarray, progress: bool, desc: str) -> None:
    """Add every row of ``data`` with its row number as label, under a bar if ``progress``."""
    n = len(data)
    if not progress or n <= ADD_CHUNK:
        index.add_items(data, np.arange(n))
        return
    # Rows are added in order on the index's one thread, so the chunks build the same graph.
    with tqdm(total=n, desc=desc, unit="item") as bar:
        for lo in range(0, n, ADD_CHUNK):
            hi = min(lo + ADD_CHUNK, n)
            index.add_items(data[lo:hi], np.arange(lo, hi))
            bar.update(hi - lo)


def _build_one(space: str, Y: np.ndarray, m: int, ef_construction: int,
               seed: int, progress: bool = False) -> tuple[hnswlib.Index, dict]:
    data, max_norm = _augment(Y) if _SPACES[space][1] else (np.asarray(Y, np.float32), None)
    n, dim = data.shape
    index = hnswlib.Index(space=_SPACES[space][0], dim=dim)
    index.init_index(max_elements=max(n, 1), M=m, ef_construction=ef_construction,
                     random_seed=seed)
    index.set_num_threads(1)
    if n:
        _add_items(index, data, progress, f"index ({space})")
    info = {"space": space, "M": m, "ef_construction": ef_construction, "max_norm": max_norm,
            "n_items": n, "dim": dim, "ef": EF_STEPS[0], "recall_at_10": None, "exact": False}
    return index, info


def _tune(index: hnswlib.Index, info: dict, sample: np.ndarray, truth: np.ndarray, k: int,
          recall_floor: float) -> bool:
    """Raise ``ef`` until recall@10 reaches the floor; True if it did (``info`` updated)."""
    for ef in EF_STEPS:
        index.set_ef(max(ef, k))
        labels, _ = index.knn_query(_query(sample, info["space"]), k=k)
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(labels, truth)]))
        info.update(ef=ef, recall_at_10=round(recall, 4))
        if recall >= recall_floor:
            return True
    return False


def build_index(item_factors: np.ndarray, path: Path, query_sample: np.ndarray | None = None,
                recall_floor: float = 0.9, m: int = DEFAULT_M,
                ef_construction: int = DEFAULT_EF_CONSTRUCTION, seed: int = 42,
                progress: bool = False) -> dict:
    """Build, tune and save the index; returns the manifest's ``index`` entry.

    Parameters
    ----------
    item_factors : (n_items, width) array
    path : where to save the hnswlib index
    query_sample : user vectors to measure recall@10 on (the tenant's own users); without them
        nothing can be measured and the augmented space, exact in theory, is used
    recall_floor : lowest acceptable recall@10; below it at the largest ``ef`` -> ``exact``
    progress : show a tqdm bar (stderr) over the items added to each space's graph when the
        catalogue has more than ``ADD_CHUNK`` items; the index built is the same either way
    """
    Y = np.asarray(item_factors, dtype=np.float32)
    if query_sample is None or not len(query_sample) or not len(Y):
        index, info = _build_one(L2_AUGMENTED, Y, m, ef_construction, seed, progress)
    else:
        index, info = _build_mips(Y, query_sample, recall_floor, m, ef_construction, seed,
                                  progress)
    index.save_index(str(path))
    if len(Y):
        info["similar"] = build_similar_index(Y, Path(path).with_name(SIMILAR_FILE),
                                              recall_floor, m, ef_construction, seed, progress)
    return info


def _build_mips(Y: np.ndarray, query_sample: np.ndarray, recall_floor: float, m: int,
                ef_construction: int, seed: int, progress: bool) -> tuple[hnswlib.Index, dict]:
    """The inner-product index in the space that reaches the floor with the smaller ``ef``."""
    k = min(10, len(Y))
    truth = exact_top_k(query_sample, Y, k)
    tried = []
    for space in (IP, L2_AUGMENTED):
        index, info = _build_one(space, Y, m, ef_construction, seed, progress)
        reached = _tune(index, info, query_sample, truth, k, recall_floor)
        tried.append((not reached, info["ef"] if reached else -info["recall_at_10"], space,
                      index, info))
        if reached and info["ef"] <= CHEAP_EF:
            break
    # reached the floor first, then the smaller ef (or, if none reached it, the higher recall)
    _, _, _, index, info = min(tried, key=lambda t: t[:3])
    info["exact"] = not any(not t[0] for t in tried)
    info["spaces_tried"] = {t[2]: {"ef": t[4]["ef"], "recall_at_10": t[4]["recall_at_10"]}
                            for t in tried}
    return index, info


def build_similar_index(item_factors: np.ndarray, path: Path, recall_floor: float = 0.9,
                        m: int = DEFAULT_M, ef_construction: int = DEFAULT_EF_CONSTRUCTION,
                        seed: int = 42, progress: bool = False) -> dict:
    """Build, tune and save the cosine graph of ``SimilarItems``; returns its manifest entry.

    Recall@10 is that of each sampled item's exact cosine neighbours (itself excluded)::

        cos(i, j) = y_i . y_j / (|y_i| |y_j|)
    """
    Y = np.asarray(item_factors, dtype=np.float32)
    n, dim = Y.shape
    index = hnswlib.Index(space="cosine", dim=dim)
    index.init_index(max_elements=max(n, 1), M=m, ef_construction=ef_construction,
                     random_seed=seed)
    index.set_num_threads(1)
    _add_items(index, Y, progress, "similar-items index (cosine)")
    info = {"space": "cosine", "M": m, "ef_construction": ef_construction, "n_items": n,
            "dim": dim, "ef": EF_STEPS[0], "recall_at_10": None, "exact": False}
    k = min(10, n - 1)
    if k > 0:
        rows = np.random.default_rng(seed).choice(n, min(SIMILAR_SAMPLE, n), replace=False)
        Yn = Y / np.maximum(np.linalg.norm(Y, axis=1, keepdims=True), 1e-12)
        cos = Yn[rows] @ Yn.T
        cos[np.arange(len(rows)), rows] = -np.inf
        truth = np.argpartition(-cos, k - 1, axis=1)[:, :k]
        for ef in EF_STEPS:
            index.set_ef(max(ef, k + 1))
            labels, _ = index.knn_query(Y[rows], k=k + 1)
            found = [[j for j in row_labels if j != r][:k] for r, row_labels in zip(rows, labels)]
            recall = float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)]))
            info.update(ef=ef, recall_at_10=round(recall, 4))
            if recall >= recall_floor:
                break
        info["exact"] = info["recall_at_10"] < recall_floor
    index.save_index(str(path))
    return info


@dataclass
class ItemIndex:
    """A loaded index plus the factors it ranks (for exact re-scoring).

    ``query`` returns up to ``n`` (item row, score) candidates per user vector, best first.
    With ``exact`` set (or a small catalog) it scores every item instead of walking the graph.
    """

    item_factors: np.ndarray
    info: dict
    index: hnswlib.Index | None = None
    similar: hnswlib.Index | None = None  # the cosine graph (None: SimilarItems scores exactly)

    @property
    def space(self) -> str:
        # manifests written before the space was chosen by measurement were augmented L2
        return self.info.get("space", L2_AUGMENTED)

    @classmethod
    def load(cls, path: Path | None, item_factors: np.ndarray, info: dict) -> ItemIndex:
        index = None
        if path is not None and info.get("n_items", 0) and not info.get("exact"):
            space = info.get("space", L2_AUGMENTED)
            if space not in _SPACES:
                raise ValueError(f"unknown index space {space!r}")
            index = hnswlib.Index(space=_SPACES[space][0], dim=int(info["dim"]))
            index.load_index(str(path), max_elements=int(info["n_items"]))
            if index.get_current_count() != len(item_factors):
                raise ValueError(f"index holds {index.get_current_count()} items, "
                                 f"factors {len(item_factors)}")
            index.set_ef(int(info.get("ef", 64)))
            index.set_num_threads(1)
        sim_info = info.get("similar") or {}
        similar = None
        if path is not None and sim_info.get("n_items", 0) and not sim_info.get("exact"):
            similar = hnswlib.Index(space="cosine", dim=int(sim_info["dim"]))
            similar.load_index(str(Path(path).with_name(SIMILAR_FILE)),
                               max_elements=int(sim_info["n_items"]))
            if similar.get_current_count() != len(item_factors):
                raise ValueError(f"similar-items index holds {similar.get_current_count()} "
                                 f"items, factors {len(item_factors)}")
            similar.set_ef(int(sim_info.get("ef", 64)))
            similar.set_num_threads(1)
        return cls(np.asarray(item_factors, dtype=np.float32), info, index, similar)

    def similar_candidates(self, row: int, n: int) -> np.ndarray:
        """About the ``n`` items of highest cosine with item ``row`` (itself among them), from the
        cosine graph; the caller scores them exactly."""
        n = min(n, len(self.item_factors))
        tuned = self.similar_ef
        if n > tuned:  # a deep over-fetch needs ef >= n, for this query only
            self.similar.set_ef(n)
        try:
            labels, _ = self.similar.knn_query(self.item_factors[row], k=n)
        finally:
            if n > tuned:
                self.similar.set_ef(tuned)
        return labels[0].astype(np.int64)

    @property
    def ef(self) -> int:
        """The tuned search depth (a walk for more candidates goes deeper, and costs more)."""
        return int(self.info.get("ef", 64))

    @property
    def similar_ef(self) -> int:
        """The cosine graph's tuned search depth."""
        return int(self.info["similar"].get("ef", 64))

    def walks(self, n: int) -> bool:
        """Whether ``query`` for ``n`` candidates walks the graph (else it scores exactly)."""
        return self.index is not None and n * 4 < len(self.item_factors)

    def query(self, x: np.ndarray, n: int, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` item rows and scores for one user vector ``x``, best first."""
        n_items = len(self.item_factors)
        n = min(n, n_items)
        if n <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        x = np.asarray(x, dtype=np.float32)
        if exact or not self.walks(n):
            scores = self.item_factors @ x
            rows = np.argpartition(-scores, n - 1)[:n] if n < n_items else np.arange(n_items)
            s = scores[rows]
        else:
            tuned = self.ef
            if n > tuned:  # a deep over-fetch needs ef >= n, for this query only
                self.index.set_ef(n)
            try:
                labels, _ = self.index.knn_query(_query(x, self.space), k=n)
            finally:
                if n > tuned:
                    self.index.set_ef(tuned)
            rows = labels[0].astype(np.int64)
            s = self.item_factors[rows] @ x
        order = np.argsort(-s, kind="stable")
        return rows[order], s[order]
