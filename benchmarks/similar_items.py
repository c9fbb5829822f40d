"""SimilarItems: recall of the served neighbours against exact cosine, and time per call.

    .venv/bin/python benchmarks/similar_items.py [--items 20000] [--queries 200]

The model is written by the model store with the trainer's index builder (ALS-like factors:
rank 16 of 64 with uneven norms, as in ``benchmarks/serving.py``, plus a little noise), loaded
as the server loads it, and asked ``similar_items(item, k=10)`` for random items through two
candidate paths, each re-ranked by exact cosine:

- ``inner-product index``: the top ``50 k`` of the MIPS index (what SimilarItems used before the
  cosine graph; reproduced here for comparison);
- ``cosine graph``: the model's own cosine-space graph (``index.similar`` in the manifest).

Prints recall@10 of each against exact cosine over all items and the mean time per call;
asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import recsys_stream.serving.recommend as rec  # noqa: E402
from recsys_stream.contracts.ann_index import build_index  # noqa: E402
from recsys_stream.contracts.confidence import ConfidenceSettings  # noqa: E402
from recsys_stream.contracts.model_store import ModelStore  # noqa: E402
from recsys_stream.serving.snapshots import TenantSnapshot  # noqa: E402


def _via_inner_product(snap: TenantSnapshot, row: int, k: int) -> set[int]:
    """The pre-cosine-graph path: MIPS candidates (50 k), re-ranked by cosine."""
    Y = snap.index.item_factors
    rows, _ = snap.index.query(Y[row], 50 * k + 1)
    rows = rows[rows != row]
    cos = (Y[rows] @ Y[row]) / np.maximum(np.linalg.norm(Y[rows], axis=1)
                                          * np.linalg.norm(Y[row]), 1e-12)
    return set(rows[np.argsort(-cos, kind="stable")[:k]].tolist())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    n, k = args.items, args.k
    rng = np.random.default_rng(2)
    basis = np.random.default_rng(0).normal(size=(16, 64)) / 4
    Y = (rng.normal(size=(n, 16)) @ basis * rng.gamma(2.0, 0.5, (n, 1))).astype(np.float32)
    Y += 0.02 * rng.normal(size=Y.shape).astype(np.float32)
    X = (rng.normal(size=(2000, 16)) @ basis).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        store = ModelStore(d)
        t = time.perf_counter()
        store.write("bench", "als", 1, item_ids=[f"i{j}" for j in range(n)], item_factors=Y,
                    user_ids=[f"u{j}" for j in range(len(X))], user_factors=X,
                    popularity=np.ones(n),
                    manifest={"hyperparameters": {"regularization": 0.1},
                              "confidence": ConfidenceSettings().to_dict()},
                    index_writer=lambda p: build_index(Y, p, X[:300]))
        snap = TenantSnapshot.from_artifacts(store.load("bench", "als", 1))
        info = snap.index.info
        print(f"{n} items x 64: both graphs built in {time.perf_counter() - t:.1f}s; "
              f"inner-product index {info['space']} ef={info['ef']}, cosine graph "
              f"ef={info['similar']['ef']} (build-time recall@10 "
              f"{info['similar']['recall_at_10']})")
        rec._EXACT_SIMILAR_VALUES = 0  # take the graph path at any catalogue size
        Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
        hits = {"inner-product index": [], "cosine graph": []}
        took = {name: 0.0 for name in hits}
        for row in rng.integers(0, n, args.queries):
            cos = Yn @ Yn[row]
            cos[row] = -np.inf
            truth = set(np.argpartition(-cos, k)[:k].tolist())
            t = time.perf_counter()
            got = _via_inner_product(snap, int(row), k)
            took["inner-product index"] += time.perf_counter() - t
            hits["inner-product index"].append(len(got & truth) / k)
            t = time.perf_counter()
            got = {snap.item_row[i] for i, _ in rec.similar_items(snap, f"i{row}", k, set(),
                                                                   set())}
            took["cosine graph"] += time.perf_counter() - t
            hits["cosine graph"].append(len(got & truth) / k)
        for name in hits:
            print(f"{name:>20}: recall@{k} vs exact cosine {np.mean(hits[name]):.3f}, "
                  f"{took[name] / args.queries * 1e3:.2f} ms per call")


if __name__ == "__main__":
    main()
