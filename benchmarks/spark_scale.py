"""Training time at scale: the Spark engine's ALS (local[2], and a two-worker standalone cluster)
against the implicit engine on the same matrix in one run, with peak RSS; then a sizing estimate.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/spark_scale.py \\
        [--scale 0.05] [--iterations 15] [--no-cluster] [--regularization L] \\
        [--solver unscaled|mllib]

The world is ``benchmarks/training_scale.py``'s (``generate``: 1M users x 100k items x 20M
interactions at ``--scale 1``; Zipf items in genres, lognormal activity), the matrix its
``confidence_matrix`` (``c = 1 + alpha*log1p(count)``). f = 64, 15 sweeps, lambda 300 (50 below
scale 0.1, as training_scale.py says); with ``--solver mllib`` (``trainer.spark.als_solver``)
MLlib's regParam converted as in ``benchmarks/spark_quality.py`` (``lambda (U + I) / (2 nnz)``).
Both fit the whole matrix:

- implicit engine: ``batch.algorithms.train_als`` (CG sweeps + exact user solve), all cores;
- Spark engine: ``SparkEngine.fit`` on a DataFrame of ``(u, i, r = log1p(count))`` rows
  (handed over through Arrow and cached before the clock starts: the changelog read is not
  in this figure), on ``local[2]`` and on a standalone cluster of two one-core workers
  (``tests/spark_cluster.py``) on this machine.

Peak RSS: the Python driver (``ru_maxrss``) and, sampled every 0.5 s, every JVM (the driver's,
and each executor's on the cluster). Then per-core throughput (interactions x sweeps per core
second) and an estimate of executors and hours for 100M users x 10M items x 10B interactions,
with where the driver's steps stop fitting one machine. Asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from _batch import load, peak_rss_mb
from spark_quality import converted_lambda
from training_scale import confidence_matrix, generate

from recsys_stream.batch.algorithms import train_als
from recsys_stream.batch.engines import make_engine
from recsys_stream.batch.engines.base import TenantRound
from recsys_stream.config import SPARK_ALS_SOLVERS, AlsConfig, Config, SparkConfig, TenantConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.spark_cluster import SparkCluster  # noqa: E402

TENANT = "scale"


class PeakRss:
    """Peak RSS (MiB) of each JVM below this process or among ``extra`` pids, sampled."""

    def __init__(self, extra=lambda: []):
        self.peaks: dict[str, float] = {}
        self._extra, self._stop = extra, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    def _run(self):
        me = psutil.Process()
        while not self._stop.wait(0.5):
            procs = me.children(recursive=True)
            for pid in self._extra():
                try:
                    procs.append(psutil.Process(pid))
                except psutil.NoSuchProcess:
                    pass
            for p in procs:
                try:
                    if "java" not in p.name():
                        continue
                    cmd = " ".join(p.cmdline())
                    role = ("executor" if "CoarseGrainedExecutorBackend" in cmd else
                            "worker" if "deploy.worker" in cmd else
                            "master" if "deploy.master" in cmd else "driver JVM")
                    key = f"{role} {p.pid}"
                    self.peaks[key] = max(self.peaks.get(key, 0.0), p.memory_info().rss / 2**20)
                except psutil.NoSuchProcess:
                    pass


def spark_fit(cfg: Config, C, hp: AlsConfig, seed: int, extra=lambda: []):
    """Seconds of SparkEngine.fit on C (rows handed over first), JVM peaks, to-Spark seconds."""
    coo = C.tocoo()
    alpha = cfg.tenant(TENANT).alpha
    import pandas as pd
    pdf = pd.DataFrame({"u": coo.row.astype(np.int32), "i": coo.col.astype(np.int32),
                        "r": ((coo.data - 1.0) / alpha).astype(np.float32)})
    del coo
    items = np.unique(pdf["i"].to_numpy())
    with PeakRss(extra) as rss, make_engine("spark", cfg) as engine:
        spark = engine.session()
        t = time.perf_counter()
        df = engine._persist(spark.createDataFrame(pdf).repartition(
            int(spark.sparkContext.defaultParallelism) * 2))
        df.count()
        to_spark = time.perf_counter() - t
        del pdf
        rnd = TenantRound(TENANT, [], [], [], [], np.zeros(0), np.zeros(0), eval=None,
                          eval_rows=np.zeros(0, np.int64), test={}, data=None, n_events=0,
                          event_count=0, window=(0, 0),
                          handle={"full": (df, np.arange(C.shape[0]), items)})
        t = time.perf_counter()
        f = engine.fit(rnd, "full", "als", hp, seed)
        seconds = time.perf_counter() - t
    return seconds, rss.peaks, to_spark, f


def sizing(rate_per_core: float, k: int, iterations: int) -> None:
    """Executors and hours for 100M x 10M x 10B from a measured per-core rate (estimate)."""
    U, I, N = 100e6, 10e6, 10e9
    print("\nSIZING (an estimate on paper, from the per-core rate measured above; ALS cost per "
          "sweep taken as linear in interactions, the k^2 Gram term dominating at f = 64):")
    core_seconds = N * iterations / rate_per_core
    print(f"  100M users x 10M items x 10B interactions, f={k}, {iterations} sweeps: "
          f"{core_seconds / 3600:,.0f} core-hours")
    print(f"  {'executors x cores':>18} {'hours':>8}")
    for ex in (10, 25, 50, 100, 200):
        print(f"  {f'{ex} x 4':>18} {core_seconds / (ex * 4) / 3600:8.1f}   (no shuffle or "
              "straggler overhead counted)")
    uf, itf = U * k * 4 / 2**30, I * k * 4 / 2**30
    print(f"  driver: the published user factors are {uf:.1f} GiB (float32) and the item "
          f"factors {itf:.1f} GiB; the model store, the HNSW index of 10M items "
          f"(~{I * (k * 4 + 16 * 2 * 4) / 2**30:.1f} GiB, built on the driver alone) and the "
          f"user-id list ({U * 40 / 2**30:.0f} GiB as Python strings) sit on the driver: at ~300 B a "
          "user (factors + id) the collect-to-driver steps (user ids and factors, writing the "
          "model) pass half of a 24 GB machine near 40M users; beyond that the executors "
          "would have to write the model store.")
    block = 1024 * I * 4 / 2**30  # evaluate.py scores 1024 users at a time, densely
    print(f"  evaluation: the scores of 10k sampled users x 10M items are 1.3e13 flops (~0.2 "
          f"core-hours of sgemm) but evaluate's dense block of 1024 users x 10M items is "
          f"{block:.0f} GiB: on a 24 GB driver it stops fitting past ~4M items (a smaller "
          "block or scoring in Spark would be needed).")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.05)
    ap.add_argument("--iterations", type=int, default=15)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--regularization", type=float, default=None)
    ap.add_argument("--no-cluster", action="store_true")
    ap.add_argument("--solver", default=SparkConfig().als_solver, choices=SPARK_ALS_SOLVERS,
                    help="trainer.spark.als_solver")
    ap.add_argument("--seed", type=int, default=0)
    # MLlib's ALS holds the ratings (in and out blocks) and both factor sets in the JVMs: 3g
    # fitted scale 0.05; scale 1 has 20x the interactions and 20x the users
    ap.add_argument("--driver-memory", default=None,
                    help="spark.driver.memory (default 3g below scale 0.3, else 10g)")
    ap.add_argument("--executor-memory", default=None,
                    help="each cluster worker's and executor's memory (default 2g below scale "
                         "0.3, else 6g)")
    args = ap.parse_args()
    big = args.scale >= 0.3
    drv = args.driver_memory or ("10g" if big else "3g")
    exe = args.executor_memory or ("6g" if big else "2g")
    n_users, n_items = int(1_000_000 * args.scale), int(100_000 * args.scale)
    n_inter = int(20_000_000 * args.scale)
    lam = args.regularization or (300.0 if args.scale >= 0.1 else 50.0)
    hp = AlsConfig(args.factors, lam, args.iterations)
    tc = TenantConfig(als=hp)
    t = time.perf_counter()
    user, item, _ = generate(n_users, n_items, n_inter, seed=args.seed)
    C = confidence_matrix(user, item, (n_users, n_items), tc)
    del user, item
    lam_s = converted_lambda(lam, n_users, n_items, C.nnz) if args.solver == "mllib" else lam
    print(f"{n_users} users x {n_items} items, {C.nnz} distinct interactions (scale "
          f"{args.scale}); f={args.factors}, {args.iterations} sweeps, lambda {lam:g} -> "
          f"{args.solver} solver's {lam_s:.4f}; generated in {time.perf_counter() - t:.1f}s; {load()}",
          flush=True)
    cores = os.cpu_count() or 2

    t = time.perf_counter()
    train_als(C, hp, args.seed)
    imp = time.perf_counter() - t
    print(f"implicit engine ALS        {imp:8.1f} s   Python peak RSS {peak_rss_mb():7.0f} MiB"
          f"   {load()}", flush=True)

    hp_s = dataclasses.replace(hp, regularization=lam_s)
    base = {"spark.sql.shuffle.partitions": "8", "spark.driver.maxResultSize": "2g"}
    runs = {}
    cfg = Config(tenants={TENANT: tc}).replace(trainer={"engine": "spark", "spark": SparkConfig(
        master="local[2]", settings={**base, "spark.driver.memory": drv}, als_blocks=4,
        als_solver=args.solver)})
    s, peaks, to_spark, _ = spark_fit(cfg, C, hp_s, args.seed)
    runs["local[2]"] = (s, 2)
    print(f"Spark engine ALS local[2]  {s:8.1f} s   ({s / imp:.1f}x implicit; rows to Spark "
          f"{to_spark:.1f}s before)   Python peak RSS {peak_rss_mb():7.0f} MiB   JVM peaks "
          + ", ".join(f"{k} {v:.0f} MiB" for k, v in peaks.items()) + f"   {load()}",
          flush=True)
    if not args.no_cluster:
        work = Path(os.environ.get("TMPDIR", "/tmp")) / f"spark-bench-{os.getpid()}"
        with SparkCluster(work, workers=2, cores=1,
                          memory=f"{int(exe[:-1]) + 1}{exe[-1]}") as cluster:
            cfg_c = cfg.replace(trainer={"spark": SparkConfig(
                master=cluster.master, als_blocks=4, als_solver=args.solver,
                settings={**base, "spark.driver.memory": "3g", "spark.executor.memory": exe,
                          "spark.executor.cores": "1"})})
            s, peaks, to_spark, _ = spark_fit(cfg_c, C, hp_s, args.seed,
                                              extra=lambda: list(cluster.seen))
        runs["cluster 2x1"] = (s, 2)
        print(f"Spark engine ALS cluster   {s:8.1f} s   ({s / imp:.1f}x implicit; 2 workers x "
              f"1 core; rows to Spark {to_spark:.1f}s before)   JVM peaks "
              + ", ".join(f"{k} {v:.0f} MiB" for k, v in peaks.items()) + f"   {load()}",
              flush=True)
    print("\nper-core throughput (distinct interactions x sweeps per core-second):")
    print(f"  implicit engine ({cores} cores): {C.nnz * args.iterations / imp / cores:,.0f}")
    for name, (s, c) in runs.items():
        print(f"  Spark {name} ({c} cores): {C.nnz * args.iterations / s / c:,.0f}")
    s, c = runs["local[2]"]
    sizing(C.nnz * args.iterations / s / c, args.factors, args.iterations)


if __name__ == "__main__":
    main()
