"""Offline quality on MovieLens: our ALS and BPR next to implicit's defaults and popularity.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/quality.py \\
        [--data ../shared/data/movielens-latest-small-ratings.csv] \\
        [--config config/movielens.toml] [--factors 64]

The trainer's temporal holdout (each user's last ``trainer.holdout_fraction`` of events by time
is the test; the rest, aggregated by the worker's own code with the tenant's confidence settings
and history cap, is the train matrix). Every model is fitted on that one train matrix and
evaluated by ``recsys_stream.batch.evaluate`` (seen items excluded, all items ranked):

- ``ours ALS`` / ``ours BPR``: the trainer's engines with the tenant's hyperparameters from
  ``config/movielens.toml`` (chosen on validation by ``benchmarks/tune_movielens.py``);
- ``implicit ALS`` / ``implicit BPR``: ``implicit`` with its default settings except
  ``factors`` (and a fixed seed), on the binary matrix ``p`` (1 per rated movie);
- ``popularity``: train interactions per item.

Prints one table (precision@10, recall@20, NDCG@10, MAP@10, coverage, popularity
concentration) and the ratios to popularity; asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import scipy.sparse as sp

import _batch
from _batch import TENANT, holdout, load, metrics_table, movielens_config, read_events

from recsys_stream.batch.algorithms import TRAINERS
from recsys_stream.batch.data import build_matrix
from recsys_stream.batch.evaluate import evaluate, factor_scorer, popularity_scorer


def implicit_defaults(binary: sp.csr_matrix, factors: int, seed: int) -> dict:
    """implicit's ALS and BPR with default settings; name -> (user factors, item factors)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    out = {}
    for name, model in (("implicit ALS", AlternatingLeastSquares(factors=factors,
                                                                 random_state=seed)),
                        ("implicit BPR", BayesianPersonalizedRanking(factors=factors,
                                                                     random_state=seed))):
        t = time.perf_counter()
        model.fit(binary, show_progress=False)
        out[name] = (np.asarray(model.user_factors), np.asarray(model.item_factors),
                     time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(_batch.MOVIELENS))
    ap.add_argument("--config", default=str(_batch.MOVIELENS_CONFIG))
    ap.add_argument("--factors", type=int, default=64)
    args = ap.parse_args()
    cfg = movielens_config(args.config)
    tc, seed = cfg.tenant(TENANT), cfg.trainer.seed
    t = time.perf_counter()
    data = holdout(read_events(args.data), tc, cfg.trainer.holdout_fraction)
    train = build_matrix(data.train, tc.confidence)
    pop = train.popularity
    print(f"{args.data}: {data.n_events} events, {len(data.histories)} users; train "
          f"{train.C.shape[0]} x {train.C.shape[1]} nnz {train.C.nnz}, "
          f"{len(data.test_items)} test users ({time.perf_counter() - t:.1f}s); {load()}",
          flush=True)
    print(f"tenant settings: cap {tc.history_cap}, half-life {tc.half_life_days} d, alpha "
          f"{tc.alpha}; ALS {tc.als}; BPR {tc.bpr}", flush=True)

    factors: dict[str, tuple] = {}
    for algorithm in ("als", "bpr"):
        hp = dataclasses.replace(getattr(tc, algorithm), factors=args.factors)
        t = time.perf_counter()
        f = TRAINERS[algorithm](train.C, hp, seed)
        factors[f"ours {algorithm.upper()}"] = (f.user_factors, f.item_factors,
                                                time.perf_counter() - t)
    binary = train.C.copy()
    binary.data[:] = 1.0
    factors.update(implicit_defaults(binary, args.factors, seed))

    rows = [("popularity", evaluate(popularity_scorer(pop), train, data.test_items, pop))]
    for name, (X, Y, seconds) in factors.items():
        rows.append((f"{name} ({seconds:.1f}s)",
                     evaluate(factor_scorer(X, Y), train, data.test_items, pop)))
    print(f"\ntemporal holdout, f={args.factors}, {rows[0][1]['users_evaluated']} users "
          f"evaluated; {load()}")
    print(metrics_table(rows))
    base = rows[0][1]["ndcg_at_10"]
    print("\nNDCG@10 / popularity: " + ", ".join(
        f"{name.split(' (')[0]} {m['ndcg_at_10'] / base:.2f}x" for name, m in rows[1:]))


if __name__ == "__main__":
    main()
