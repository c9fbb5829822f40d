"""Fold-in cost: how long re-solving one micro-batch of touched users takes.

    .venv/bin/python benchmarks/foldin.py [--items 50000] [--factors 64] [--users 1000]

Prints, per history length, the time to solve a batch of users in one vectorised call and per
user, next to implicit's native `recalculate_user` on the same inputs (the reference it must
agree with), and the largest relative difference between the two.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from recsys_stream.contracts.foldin import FoldInSolver  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    Y = (rng.normal(size=(args.items, args.factors)) * 0.1).astype(np.float32)
    t = time.perf_counter()
    solver = FoldInSolver(Y, 0.05)
    print(f"items={args.items} factors={args.factors}: YtY per model version "
          f"{(time.perf_counter() - t) * 1e3:.1f} ms")
    from implicit.cpu.als import AlternatingLeastSquares
    ref = AlternatingLeastSquares(factors=args.factors, regularization=0.05, num_threads=1)
    ref.item_factors = Y
    print(f"{'history':>8} {'users':>6} {'batch ms':>9} {'us/user':>8} {'implicit ms':>11} "
          f"{'max rel diff':>12}")
    for hist in (5, 20, 100, 500):
        lengths = rng.integers(max(1, hist // 2), hist * 3 // 2 + 1, args.users)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        indices = np.concatenate([rng.choice(args.items, n, replace=False) for n in lengths])
        conf = (1 + 2 * np.log1p(rng.exponential(2.0, len(indices)))).astype(np.float32)
        best = min(_timed(lambda: solver.solve(indptr, indices, conf)) for _ in range(args.repeat))
        C = sp.csr_matrix((conf, indices, indptr), shape=(args.users, args.items))
        best_ref = min(_timed(lambda: ref.recalculate_user(np.arange(args.users), C))
                       for _ in range(args.repeat))
        X, R = solver.solve(indptr, indices, conf), ref.recalculate_user(np.arange(args.users), C)
        rel = np.max(np.linalg.norm(X - R, axis=1) / np.linalg.norm(R, axis=1))
        print(f"{hist:>8} {args.users:>6} {best * 1e3:>9.1f} {best / args.users * 1e6:>8.1f} "
              f"{best_ref * 1e3:>11.1f} {rel:>12.2e}")


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
