"""Export throughput: users per second of ``recsys-stream export``, exact and through the index.

    OPENBLAS_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/export.py \\
        [--users 1000000] [--items 100000] [--k 100] [--factors 64] [--store DIR] \\
        [--modes exact,index,spark-exact,spark-index] [--progress]

A synthetic ALS-like model (low-rank, unevenly scaled factors, as ``_common.publish_model``
makes them) of ``--users`` x ``--items`` is written to a real model store with the trainer's
index (``ann_index.build_index``: the measured space and ef; kept in ``--store`` for the next
run), each user with ~20 seen items to suppress (a CSR, as the export reads the training data)
and 100 banned items. Each mode then runs in a process of its own (``serving.export.export``
into JSON-lines shards and a manifest) and reports users/s and its peak RSS; the index mode
also its recall@k against exact on a sample. ``spark-exact`` / ``spark-index``: the same
export by Spark executors (``serving.export_spark``) on a standalone cluster of two one-core
workers on this machine (``tests/spark_cluster.py``), its driver in the child process (the
driver's RSS is reported; the executors' are not). Prints figures and the load; asserts
nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from benchmarks._common import load_note, log  # noqa: E402
from recsys_stream.contracts.ann_index import build_index  # noqa: E402
from recsys_stream.contracts.confidence import ConfidenceSettings  # noqa: E402
from recsys_stream.contracts.model_store import ModelStore  # noqa: E402

TENANT = "bench"


def make_store(root: Path, n_users: int, n_items: int, width: int) -> None:
    store = ModelStore(root)
    if store.current_version(TENANT, "als") is not None:
        return
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(16, width)) / 4
    Y = (rng.normal(size=(n_items, 16)) @ basis * rng.gamma(2.0, 0.5, (n_items, 1))
         ).astype(np.float32)
    X = np.empty((n_users, width), np.float32)
    for lo in range(0, n_users, 100_000):  # in blocks: no float64 copy of the whole matrix
        hi = min(n_users, lo + 100_000)
        X[lo:hi] = rng.normal(size=(hi - lo, 16)).astype(np.float32) @ basis.astype(np.float32)
    t = time.perf_counter()
    store.write(TENANT, "als", 1, item_ids=[f"i{j}" for j in range(n_items)], item_factors=Y,
                user_ids=[f"u{j}" for j in range(n_users)], user_factors=X,
                popularity=rng.zipf(1.5, n_items).astype(np.float32),
                manifest={"hyperparameters": {"factors": width, "regularization": 0.05},
                          "confidence": ConfidenceSettings().to_dict()},
                index_writer=lambda p: build_index(Y, p, X[:1000], recall_floor=0.9))
    store.set_current(TENANT, "als", 1)
    log(f"store written with its index in {time.perf_counter() - t:.0f}s; {load_note()}")


def child(root: Path, mode: str, k: int, out: Path, sample: int, limit: int,
          progress: bool = False, shard_users: int = 100_000) -> None:
    from recsys_stream.serving import export as ex
    from recsys_stream.serving.snapshots import TenantSnapshot
    t = time.perf_counter()
    art = ModelStore(root).load(TENANT, "als")
    snap = TenantSnapshot.from_artifacts(art)
    n_users, n_items = len(snap.user_row), len(snap.item_ids)
    rng = np.random.default_rng(1)
    nnz = 20 * n_users
    seen = sp.csr_matrix((np.ones(nnz, bool), rng.integers(0, n_items, nnz),
                          np.arange(0, nnz + 1, 20)), shape=(n_users, n_items))
    sup = ex.Suppression(seen=seen, banned=frozenset(f"i{j}" for j in range(100)),
                         applied=["synthetic: 20 seen items per user"])
    setup = time.perf_counter() - t
    cpu = time.process_time()
    users = list(snap.user_row)[:limit] if limit else None
    if mode.startswith("spark-"):
        mode = mode[len("spark-"):]
        m = _spark_export(art, snap, out, k, users, sup, mode, shard_users)
    else:
        m = ex.export(snap, out, k, users, sup=sup, mode=mode, progress=progress,
                      shard_users=shard_users)
    cpu = time.process_time() - cpu
    result = {"mode": m.get("engine", "local") + " " + mode, "users": m["users"],
              "seconds": m["seconds"], "cpu_s": cpu,
              "session_s": m.get("session_seconds", 0.0),
              "users_per_s": m["users"] / m["seconds"], "setup_s": setup,
              "space": snap.index.space, "ef": snap.index.ef,
              "bytes": sum(s["bytes"] for s in m["shards"]),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if mode == "index" and sample:  # recall@k of the index export against exact scoring
        n = min(limit or n_users, n_users)
        users = [f"u{j}" for j in rng.choice(n, min(sample, n), replace=False)]
        got = {r["user_id"]: {i["item_id"] for i in r["items"]} for r in ex.iter_records(out)
               if r["user_id"] in set(users)}
        banned_rows = np.fromiter(sorted(snap.item_row[i] for i in sup.banned), np.int64)
        exact = ex.recommend_block(snap, users, k, sup, banned_rows, "exact")
        result["recall_at_k"] = float(np.mean([len(got[u] & {i for i, _ in items}) / k
                                               for u, _, items in exact]))
    print(json.dumps(result), flush=True)


def _spark_export(art, snap, out, k, users, sup, mode, shard_users) -> dict:
    """The export on a two-worker standalone cluster (one core, 2 GiB each) on this machine."""
    from recsys_stream.config import SparkConfig
    from recsys_stream.serving.export_spark import export_spark
    from tests.spark_cluster import SparkCluster
    work = Path(tempfile.mkdtemp(prefix="export-spark-"))
    settings = {"spark.driver.memory": "1g", "spark.executor.memory": "1500m",
                "spark.executor.cores": "1", "spark.driver.maxResultSize": "1g"}
    with SparkCluster(work, workers=2, cores=1, memory="2g") as cluster:
        return export_spark(SparkConfig(master=cluster.master, settings=settings), art, snap,
                            out, k, users, sup, mode=mode, shard_users=shard_users)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--store", help="model store kept between runs (default: a temporary one)")
    ap.add_argument("--modes", default="exact,index")
    ap.add_argument("--recall-sample", type=int, default=2000)
    ap.add_argument("--export-users", type=int, default=0, help="export only the first N "
                    "users of the store (0: all); with --store, a smaller run on the same model")
    ap.add_argument("--shard-users", type=int, default=100_000, help="users per shard (the "
                    "Spark export's task)")
    ap.add_argument("--progress", action="store_true", help="the local export's progress bar "
                    "on stderr")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.store), args.child, args.k, Path(args.out), args.recall_sample,
              args.export_users, args.progress, args.shard_users)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.store or Path(tmp) / "models")
        log(f"{args.users} users x {args.items} items x {args.factors} factors, k={args.k}; "
            f"{load_note()}")
        make_store(root, args.users, args.items, args.factors)
        for mode in args.modes.split(","):
            out = Path(tmp) / f"out-{mode}"
            r = subprocess.run([sys.executable, __file__, "--child", mode, "--store", str(root),
                                "--out", str(out), "--k", str(args.k), "--recall-sample",
                                str(args.recall_sample), "--export-users",
                                str(args.export_users), "--shard-users", str(args.shard_users),
                                *(["--progress"] if args.progress else [])],
                               stdout=subprocess.PIPE, text=True)  # stderr: the bar, errors
            if r.returncode:
                raise SystemExit(f"{mode} export failed")
            res = json.loads(r.stdout.strip().splitlines()[-1])
            extra = f", recall@{args.k} vs exact {res['recall_at_k']:.4f}" \
                if "recall_at_k" in res else ""
            session = (f" ({res['users'] / (res['seconds'] - res['session_s']):.0f} users/s "
                       f"after the {res['session_s']:.0f}s Spark session start)"
                       if res["session_s"] else "")
            log(f"{res['mode']}: {res['users']} users in {res['seconds']:.1f}s = "
                f"{res['users_per_s']:.0f} users/s{session}, {res['users'] / res['cpu_s']:.0f} "
                f"users per driver CPU-second (model load + suppression set-up "
                f"{res['setup_s']:.1f}s), {res['bytes'] / 2**20:.0f} MiB written, peak RSS "
                f"{res['peak_rss_mb']:.0f} MiB; index space {res['space']} ef {res['ef']}"
                f"{extra}; {load_note()}")
            import shutil
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
