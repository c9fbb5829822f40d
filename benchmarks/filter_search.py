"""How a filtered top-k should search (issue 28): exact scoring of the eligible rows, the
over-fetching walk of ``serving.filters``, or hnswlib's filtered search (``knn_query(filter=)``,
a Python callable per visited node), by the share of the catalogue a filter admits.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/filter_search.py [--items 100000]

ALS-like low-rank factors (f=64) and the trainer's hnswlib index; k=10; per share, CPU time
per query (process time, the figure least moved by other load) and recall@10 against exact
scoring of the eligible rows. ``filters.top_k`` as served picks exact below
``EXACT_VALUES`` eligible values (rows x factors) and the walk above: the last column.
Prints a table with the load average; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks._common import load_note  # noqa: E402
from recsys_stream.contracts.ann_index import build_index  # noqa: E402
from recsys_stream.contracts.confidence import ConfidenceSettings  # noqa: E402
from recsys_stream.contracts.model_store import ModelStore  # noqa: E402
from recsys_stream.serving import filters  # noqa: E402
from recsys_stream.serving.catalog_index import Entry, RowAttributes  # noqa: E402
from recsys_stream.serving.filters import FilterSpec, eligibility  # noqa: E402
from recsys_stream.serving.snapshots import TenantSnapshot  # noqa: E402

K = 10
SHARES = (0.005, 0.01, 0.05, 0.2, 0.5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    n, f = args.items, 64
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(16, f)) / 4
    Y = (rng.normal(size=(n, 16)) @ basis * rng.gamma(2.0, 0.5, (n, 1))).astype(np.float32)
    X = (rng.normal(size=(args.queries + 300, 16)) @ basis).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        store = ModelStore(tmp)
        store.write("t", "als", 1, item_ids=[f"i{j}" for j in range(n)], item_factors=Y,
                    user_ids=[f"u{j}" for j in range(300)], user_factors=X[:300],
                    popularity=np.ones(n), manifest={
                        "hyperparameters": {"regularization": 0.1},
                        "confidence": ConfidenceSettings().to_dict()},
                    index_writer=lambda p: build_index(Y, p, X[:300]))
        snap = TenantSnapshot.from_artifacts(store.load("t", "als", 1))
    queries = X[300:]
    print(f"{n} items x {f}, index ef={snap.index.ef}; {args.queries} queries, k={K}; "
          f"{load_note()}", flush=True)
    print(f"{'share':>6} {'rows':>7} | {'exact us':>8} | {'walk us':>8} {'recall':>6} | "
          f"{'hnsw filter us':>14} {'recall':>6} | served by")
    served_at = filters.EXACT_VALUES
    for share in SHARES:
        m = int(n * share)
        rows = np.sort(rng.choice(n, m, replace=False))
        entries = {f"i{r}": Entry(("c",), {}, 0) for r in rows.tolist()}
        attrs = RowAttributes.build(snap.item_id_list, 1, 1, entries)
        elig = eligibility(FilterSpec(frozenset({"c"}), frozenset(), (), 0), attrs,
                           snap.item_row)
        truth = []
        t = time.process_time()
        for x in queries:
            filters.EXACT_VALUES = 10**12
            truth.append({i for i, _ in filters.top_k(snap, x, K, set(), frozenset(), elig)[0]})
        exact_us = (time.process_time() - t) / len(queries) * 1e6
        filters.EXACT_VALUES = 0
        t = time.process_time()
        walk = [{i for i, _ in filters.top_k(snap, x, K, set(), frozenset(), elig)[0]}
                for x in queries]
        walk_us = (time.process_time() - t) / len(queries) * 1e6
        mask = elig.mask
        index = snap.index.index
        # hnswlib's filtered search: its own ef, raised as the walk needs (ef >= k)
        t = time.process_time()
        hn = []
        for x in queries:
            labels, _ = index.knn_query(x[None, :] if snap.index.space == "ip" else
                                        np.append(x, 0)[None, :], k=K,
                                        filter=lambda label: bool(mask[label]))
            hn.append({snap.item_id_list[j] for j in labels[0]})
        hn_us = (time.process_time() - t) / len(queries) * 1e6
        filters.EXACT_VALUES = served_at
        served = "exact" if m * f <= served_at else "walk"
        rec = lambda got: np.mean([len(g & tr) / K for g, tr in zip(got, truth)])  # noqa: E731
        print(f"{share:6.1%} {m:7d} | {exact_us:8.0f} | {walk_us:8.0f} {rec(walk):6.3f} | "
              f"{hn_us:14.0f} {rec(hn):6.3f} | {served}", flush=True)
    print(load_note())


if __name__ == "__main__":
    main()
