"""Implicit ALS on Spark with lambda not scaled: the project's closed-form steps in Spark tasks.

MLlib's ``ALS`` multiplies lambda by each user's (item's) number of ratings (ALS-WR), and no
setting of its ``regParam`` reached ``implicit``'s unscaled optimum on MovieLens (README, issue
32: 0.943-0.965x after five searches). This fits the same objective as ``implicit``::

    min  sum_{u,i} c_ui (p_ui - x_u.y_i)^2 + lambda (|X|^2 + |Y|^2),   c = 1 + alpha*r, p = 1

by alternating exact least-squares steps, each one the worker's fold-in
(``contracts.foldin.FoldInSolver``) run in Spark tasks::

    x_u = (YtY + Y_u^T (C_u - I) Y_u + lambda I)^-1  Y_u^T C_u p_u      (users, Y fixed)
    y_i = (XtX + X_i^T (C_i - I) X_i + lambda I)^-1  X_i^T C_i p_i      (items, X fixed)

Layout: the ratings are partitioned twice, by user and by item, into one CSR block per
partition (persisted for the whole fit). A half-step broadcasts the fixed side's factors, each
task solves its block (``FoldInSolver`` forms ``YtY`` once per task and solves the block's rows
batched by history length), and the driver collects the solved side. So the driver holds both
factor matrices, as it does anyway to publish them, and each executor holds the broadcast side;
a catalogue whose factors do not fit an executor would need MLlib's block join instead.

The sweeps start from item factors ``U[0, 0.01)`` (seeded, as ``implicit`` starts) and the fit
ends with a user step, so the published user vectors are exactly what the worker's fold-in
computes for the same history (as the ``implicit`` engine's final exact user step).
"""

from __future__ import annotations

import logging
import time

import numpy as np
from tqdm import tqdm

log = logging.getLogger(__name__)


def _block(rows):
    """One CSR block of a partition's ``(key, (other, r))`` pairs: (keys, indptr, others, r)
    with keys sorted and unique; nothing for an empty partition."""
    pairs = list(rows)
    if not pairs:
        return
    keys = np.fromiter((p[0] for p in pairs), dtype=np.int64, count=len(pairs))
    others = np.fromiter((p[1][0] for p in pairs), dtype=np.int64, count=len(pairs))
    r = np.fromiter((p[1][1] for p in pairs), dtype=np.float64, count=len(pairs))
    order = np.lexsort((others, keys))
    keys, others, r = keys[order], others[order], r[order]
    uniq, starts = np.unique(keys, return_index=True)
    indptr = np.append(starts, len(keys)).astype(np.int64)
    yield uniq, indptr, others, r


def _solve_blocks(factors, regularization: float, alpha: float):
    """The task of a half-step: each block's rows solved against the broadcast ``factors``."""
    def solve(blocks):
        from threadpoolctl import threadpool_limits

        from recsys_stream.contracts.foldin import FoldInSolver
        solver = None
        with threadpool_limits(1, "blas"):  # a task per core already
            for keys, indptr, others, r in blocks:
                solver = solver or FoldInSolver(factors.value, regularization)
                yield keys, solver.solve(indptr, others, 1.0 + alpha * r)
    return solve


def fit_unscaled(spark, df, u_idx: np.ndarray, i_idx: np.ndarray, factors: int,
                 regularization: float, alpha: float, iterations: int, seed: int,
                 partitions: int = 0, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Item and user factors of implicit ALS with unscaled lambda, fitted in Spark tasks.

    Parameters
    ----------
    spark : SparkSession
    df : DataFrame of ``(u int, i int, r float)``, ``r = log1p(strength)``
    u_idx, i_idx : the Spark ids of the split's users and items, in the order of the returned
        rows
    factors, regularization, alpha, iterations, seed : the ALS settings (``c = 1 + alpha*r``)
    partitions : blocks per side; 0 = the session's default parallelism

    Returns
    -------
    (Y, X) : float32 arrays of shape (len(i_idx), factors) and (len(u_idx), factors)
    """
    from pyspark import StorageLevel
    sc = spark.sparkContext
    n = partitions or sc.defaultParallelism
    rows = df.rdd.map(tuple)
    by_user = rows.map(lambda t: (t[0], (t[1], t[2]))).partitionBy(n).mapPartitions(_block)
    by_item = rows.map(lambda t: (t[1], (t[0], t[2]))).partitionBy(n).mapPartitions(_block)
    by_user = by_user.persist(StorageLevel.MEMORY_AND_DISK)
    by_item = by_item.persist(StorageLevel.MEMORY_AND_DISK)
    n_u = int(u_idx.max()) + 1 if len(u_idx) else 0
    n_i = int(i_idx.max()) + 1 if len(i_idx) else 0
    # rows of ids outside the split stay 0: they add nothing to the other side's Gram
    Y = np.zeros((n_i, factors), dtype=np.float32)
    Y[i_idx] = np.random.default_rng(seed).random((len(i_idx), factors)) * 0.01
    X = np.zeros((n_u, factors), dtype=np.float32)

    def half_step(blocks, fixed: np.ndarray, out: np.ndarray) -> np.ndarray:
        b = sc.broadcast(fixed)
        try:
            for keys, solved in blocks.mapPartitions(
                    _solve_blocks(b, regularization, alpha)).collect():
                out[keys] = solved
        finally:
            b.destroy()
        return out

    t0 = time.perf_counter()
    try:
        for _ in tqdm(range(iterations), desc="Spark ALS sweeps", unit="sweep",
                      disable=not progress):
            X = half_step(by_user, Y, X)
            Y = half_step(by_item, X, Y)
        X = half_step(by_user, Y, X)  # the last step is the users': the worker's fold-in
    finally:
        by_user.unpersist()
        by_item.unpersist()
    log.debug("unscaled ALS: %d sweeps over %d blocks a side in %.1fs", iterations, n,
              time.perf_counter() - t0)
    return Y[i_idx], X[u_idx]
