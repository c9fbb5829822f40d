"""Quality of the app-facing options on MovieLens, genres as categories (issue 28).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/app_quality.py \\
        [--data ../shared/data/movielens-latest-small-ratings.csv] [--factors 64]

The trainer's temporal holdout and our ALS with the tenant settings of ``config/movielens.toml``
(as ``benchmarks/quality.py``); the genres of ``movies.csv`` through ``catalog load``'s reader.

1. Diversity: each test user's top 10 by the serving code's ``diversify`` over the top 50 of
   their batch vector (seen items excluded; deepened 4x while the caps leave it short, as
   ``serving.slate`` does), for ``mmr_lambda`` in {0, 0.1, 0.3, 0.5} and
   ``max_per_category`` in {off, 3, 2}: NDCG@10 on the held-out items, intra-list diversity
   (mean pairwise 1 - cosine of the item factors) and distinct genres in the top 10.
2. Anonymous sessions: the same users served as if logged out, folded in (``serving.session``,
   each item a click) from the first ``n`` items of their training history (n = 1, 3, 5, 10),
   scored on the same held-out items against their batch vectors (their whole training
   history) and popularity; every ranking excludes the user's training items.

Prints tables with the load average; asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

import _batch
from _batch import TENANT, holdout, load, movielens_config, read_events

from recsys_stream.batch.algorithms import TRAINERS
from recsys_stream.batch.data import build_matrix
from recsys_stream.catalog_load import iter_catalog_file
from recsys_stream.contracts.foldin import FoldInSolver
from recsys_stream.serving.diversity import DiversitySpec, diversify

MOVIES = _batch.ROOT.parent / "shared" / "data" / "movielens-latest-small-movies.csv"
POOL, K = 50, 10


def ndcg(ranked: list[int], relevant: set[int], k: int = K) -> float:
    dcg = sum(1 / np.log2(p + 2) for p, r in enumerate(ranked[:k]) if r in relevant)
    ideal = sum(1 / np.log2(p + 2) for p in range(min(k, len(relevant))))
    return dcg / ideal if ideal else 0.0


def top(scores: np.ndarray, exclude: np.ndarray, n: int) -> list[int]:
    s = scores.astype(np.float64).copy()
    s[exclude] = -np.inf
    rows = np.argpartition(-s, n)[:n]
    return rows[np.argsort(-s[rows], kind="stable")].tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(_batch.MOVIELENS))
    ap.add_argument("--factors", type=int, default=64)
    args = ap.parse_args()
    cfg = movielens_config()
    tc, seed = cfg.tenant(TENANT), cfg.trainer.seed
    data = holdout(read_events(args.data), tc, cfg.trainer.holdout_fraction)
    train = build_matrix(data.train, tc.confidence)
    t = time.perf_counter()
    f = TRAINERS["als"](train.C, dataclasses.replace(tc.als, factors=args.factors), seed)
    X, Y = np.asarray(f.user_factors), np.asarray(f.item_factors)
    print(f"{args.data}: train {train.C.shape[0]} x {train.C.shape[1]}, ALS f={args.factors} "
          f"in {time.perf_counter() - t:.1f}s; {load()}", flush=True)
    col = train.item_row
    genres = {i.item_id: tuple(i.categories) for i in iter_catalog_file(MOVIES, TENANT)}
    cats = [genres.get(i, ()) for i in train.item_ids]
    Yn = Y / np.maximum(np.linalg.norm(Y, axis=1, keepdims=True), 1e-12)
    users = [(r, u) for r, u in enumerate(train.user_ids) if data.test_items.get(u)]
    test = {r: {col[i] for i in data.test_items[u] if i in col} for r, u in users}
    users = [(r, u) for r, u in users if test[r]]
    seen = {r: train.C.indices[train.C.indptr[r]:train.C.indptr[r + 1]] for r, _ in users}

    print(f"\n1. diversity: top {K} of a pool of {POOL}, {len(users)} test users; {load()}")
    print(f"{'mmr_lambda':>10} {'max/cat':>7} {'NDCG@10':>8} {'ILD':>6} {'genres':>6}")
    pools = {r: top(Y @ X[r], seen[r], POOL) for r, _ in users}
    for lam in (0.0, 0.1, 0.3, 0.5):
        for cap in (0, 3, 2):
            spec = DiversitySpec(cap, lam)
            nd, ild, ng = [], [], []
            for r, _ in users:
                picked = pools[r][:K]
                depth = POOL
                while cap or lam:  # as serving.slate: a deeper pool while the caps leave it short
                    rows = pools[r] if depth == POOL else top(Y @ X[r], seen[r], depth)
                    pool = [(str(j), float(Y[j] @ X[r])) for j in rows]
                    picked = [int(i) for i, _ in diversify(
                        pool, K, spec, lambda ids: [cats[int(i)] for i in ids],
                        lambda ids: Y[[int(i) for i in ids]])]
                    if len(picked) == K or depth >= len(Y) - len(seen[r]) - 1:
                        break
                    depth = min(depth * 4, len(Y) - len(seen[r]) - 1)
                nd.append(ndcg(picked, test[r]))
                V = Yn[picked]
                c = V @ V.T
                ild.append(float((1 - c)[~np.eye(len(V), dtype=bool)].mean()))
                ng.append(len({g for j in picked for g in cats[j]}))
            print(f"{lam:10.1f} {cap or 'off':>7} {np.mean(nd):8.4f} {np.mean(ild):6.3f} "
                  f"{np.mean(ng):6.2f}", flush=True)

    print(f"\n2. anonymous sessions from the first n training items (clicks), same users, "
          f"same held-out items; {load()}")
    solver = FoldInSolver(Y, tc.als.regularization)
    click = float(tc.confidence.confidence(tc.confidence.event_strength("click")))
    pop = np.asarray(train.C.getnnz(axis=0), dtype=np.float64)
    batch = np.mean([ndcg(top(Y @ X[r], seen[r], K), test[r]) for r, _ in users])
    popular = np.mean([ndcg(top(pop, seen[r], K), test[r]) for r, _ in users])
    print(f"{'n':>3} {'users':>6} {'session':>8} {'batch':>7} {'popularity':>10} "
          f"{'session/pop':>11}")
    for n in (1, 3, 5, 10):
        rows = [(r, u) for r, u in users if len(data.train[u].items) >= n]
        s_nd, b_nd, p_nd = [], [], []
        for r, u in rows:
            h = data.train[u].items
            first = sorted((v[2], i) for i, v in h.items() if i in col)[:n]
            ctx = np.array([col[i] for _, i in first])
            x = solver.solve_one(ctx, np.full(len(ctx), click))
            s_nd.append(ndcg(top(Y @ x, seen[r], K), test[r]))
            b_nd.append(ndcg(top(Y @ X[r], seen[r], K), test[r]))
            p_nd.append(ndcg(top(pop, seen[r], K), test[r]))
        print(f"{n:3d} {len(rows):6d} {np.mean(s_nd):8.4f} {np.mean(b_nd):7.4f} "
              f"{np.mean(p_nd):10.4f} {np.mean(s_nd) / max(np.mean(p_nd), 1e-12):10.2f}x",
              flush=True)
    print(f"(all test users: batch {batch:.4f}, popularity {popular:.4f}); {load()}")


if __name__ == "__main__":
    main()
