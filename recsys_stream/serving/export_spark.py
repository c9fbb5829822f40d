"""The export in Spark executors, for tenants whose users do not fit one machine's time.

``recsys-stream export --engine spark`` (the default for a tenant trained on Spark) runs the
same block-wise top-N as :mod:`recsys_stream.serving.export`, but in the executors of
``trainer.spark.master``; the output is the same directory (shards ``part-NNNNN`` of
``shard_users`` users each, then ``manifest.json``), so ``--verify`` and the local export's
equality with ``Recommend`` apply unchanged.

Who holds what:

- the driver loads and verifies the model version, reads the suppression (as the local export:
  training items and hides, profiles, catalog bans) and cuts the users into shards;
- what every task needs is **broadcast** once per executor: the item side of the model (item
  ids, factors, popularity, the manifest; the hnswlib index file for ``--mode index``) and the
  banned item rows;
- what only one shard needs travels **with its shard**: its users, their model rows of the
  user factors, their rows of the seen matrix (CSR slice) and their profiles (serialised);
- each task (one shard, i.e. one partition) rebuilds a snapshot of just its users on the
  broadcast item side, scores them block by block with :func:`~.export.score_block` (one
  matrix product per block, or one batched index walk) and writes its shard with the local
  export's writer, under a temporary name renamed when complete. The driver collects the
  shards' descriptions (count, bytes, sha256) and writes the manifest last.

``out`` must be a path every executor can write and the driver can read: one machine's disk on
``local[N]`` or a loopback cluster, a shared mount (NFS, a FUSE object store) on a real one.
The executors run this interpreter (``spark_session`` sets ``PYSPARK_PYTHON``): the project
must be installed at the same path on every worker, as for the Spark engine's training.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys_stream.config import SparkConfig
from recsys_stream.contracts.model_store import INDEX_FILE, ModelArtifacts
from recsys_stream.contracts.pb import profiles_pb2
from recsys_stream.serving import export as ex
from recsys_stream.serving.snapshots import TenantSnapshot

log = logging.getLogger(__name__)

# per Python worker: the snapshot of the item side, built once per broadcast (workers are reused)
_ITEM_SIDE: dict[str, TenantSnapshot] = {}


def item_package(art: ModelArtifacts, mode: str, banned_rows: np.ndarray) -> dict:
    """What every task needs (broadcast): the model's item side, its index for ``index``
    mode, and the banned item rows."""
    manifest = dict(art.manifest)
    info = dict(manifest.get("index") or {})
    info.pop("similar", None)  # SimilarItems' graph: not needed to rank items for users
    manifest["index"] = info or None
    index = None
    if mode == "index" and art.index_path is not None:
        index = art.index_path.read_bytes()
    return {"token": uuid.uuid4().hex, "manifest": manifest, "item_ids": art.item_ids,
            "item_factors": art.item_factors, "popularity": art.popularity,
            "global_mean": art.global_mean, "user_bias": art.user_bias is not None,
            "index": index, "banned_rows": banned_rows}


def _item_side(pkg: dict) -> TenantSnapshot:
    """The package's snapshot with no users (memoised per worker process)."""
    snap = _ITEM_SIDE.get(pkg["token"])
    if snap is None:
        # hnswlib loads an index from a file only: the bytes go to this worker's temp dir
        path = Path(tempfile.mkdtemp(prefix="recsys-export-"))
        if pkg["index"] is not None:
            (path / INDEX_FILE).write_bytes(pkg["index"])
        width = pkg["item_factors"].shape[1]
        art = ModelArtifacts(path=path, manifest=pkg["manifest"], item_ids=pkg["item_ids"],
                             item_factors=pkg["item_factors"],
                             user_ids=np.zeros(0, dtype=pkg["item_ids"].dtype),
                             user_factors=np.zeros((0, width), np.float32),
                             popularity=pkg["popularity"],
                             user_bias=np.zeros(0, np.float32) if pkg["user_bias"] else None,
                             global_mean=pkg["global_mean"])
        snap = TenantSnapshot.from_artifacts(art)
        _ITEM_SIDE.clear()  # one export at a time per worker: drop an earlier one's
        _ITEM_SIDE[pkg["token"]] = snap
    return snap


def shard_payloads(snap: TenantSnapshot, users: list[str], sup: ex.Suppression,
                   shard_users: int, user_bias: np.ndarray | None = None):
    """One payload per shard: its number, users, and their user factor rows, seen rows and
    serialised profiles (only those users' data: nothing user-sized is broadcast)."""
    for no, lo in enumerate(range(0, len(users), shard_users)):
        part = users[lo:lo + shard_users]
        rows = np.fromiter((snap.user_row.get(u, -1) for u in part), np.int64, len(part))
        have = rows[rows >= 0]
        seen = None
        if sup.seen is not None:
            sub = sup.seen[have]
            seen = (sub.indptr.astype(np.int64), sub.indices.astype(np.int32))
        yield {"no": no, "users": part, "known": rows >= 0,
               "X": np.ascontiguousarray(snap.user_factors[have]), "seen": seen,
               "user_bias": None if user_bias is None else user_bias[have],
               "profiles": {u: sup.profiles[u].SerializeToString() for u in part
                            if u in sup.profiles},
               "banned": sorted(sup.banned)}


def score_shard(pkg: dict, payload: dict, k: int, fmt: str, mode: str, out: str,
                generated_at: str, block: int) -> dict:
    """A task: score one shard's users block by block and write its file; returns the shard's
    description for the manifest and its users' sources."""
    base = _item_side(pkg)
    users = payload["users"]
    known = [u for u, has in zip(users, payload["known"]) if has]
    X = payload["X"]
    extra = {} if payload["user_bias"] is None else {"user_bias": payload["user_bias"]}
    # the snapshot of this shard: its users numbered in payload order, the item side shared
    snap = dataclasses.replace(base, user_row={u: j for j, u in enumerate(known)},
                               user_factors=X, cache={}, **extra)
    seen = None
    if payload["seen"] is not None:
        indptr, indices = payload["seen"]
        seen = sp.csr_matrix((np.ones(len(indices), np.bool_), indices, indptr),
                             shape=(len(known), len(base.item_ids)))
    sup = ex.Suppression(seen=seen, banned=frozenset(payload["banned"]),
                         profiles={u: profiles_pb2.UserProfile.FromString(b)
                                   for u, b in payload["profiles"].items()})
    writer = ex._ShardWriter(Path(out), fmt, snap, generated_at, len(users),
                             first=payload["no"])
    sources: dict[str, int] = {}
    for lo in range(0, len(users), block):
        b = ex.score_block(snap, users[lo:lo + block], k, sup, pkg["banned_rows"], mode)
        for src, c in zip(*np.unique(b.sources, return_counts=True)):
            name = ex._SOURCE_NAME[int(src)]
            sources[name] = sources.get(name, 0) + int(c)
        writer.write(b)
    writer.close()
    (shard,) = writer.shards
    return {"no": payload["no"], "shard": shard, "sources": sources}


def export_spark(spark_cfg: SparkConfig, art: ModelArtifacts, snap: TenantSnapshot, out, k: int,
                 users=None, sup: ex.Suppression | None = None, fmt: str = "jsonl",
                 mode: str = "exact", shard_users: int = 100_000,
                 block_users: int | None = None, spark=None) -> dict:
    """As :func:`recsys_stream.serving.export.export`, scored and written by Spark executors.

    ``art``/``snap``: the verified version and its snapshot (the driver's); ``spark``: a
    running session to use (default: one on ``spark_cfg``, stopped after). Returns the
    manifest, which also names the engine and master.
    """
    from recsys_stream.batch.engines.spark import spark_errors
    from recsys_stream.batch.engines.spark_session import spark_session
    out = ex.start(out, k, fmt, mode)
    sup = sup or ex.Suppression()
    users, n_asked = ex.users_to_export(snap, users, sup)
    banned_rows = ex.banned_item_rows(snap, sup)
    block = block_users or ex.default_block(snap)
    generated_at = ex.now_iso()
    pkg = item_package(art, mode, banned_rows)
    payloads = list(shard_payloads(snap, users, sup, shard_users, art.user_bias))
    out_s = str(out.resolve())
    t0 = time.perf_counter()
    with (spark_session(spark_cfg, "recsys-stream-export") if spark is None
          else contextlib.nullcontext(spark)) as session:
        t_session = time.perf_counter() - t0
        sc = session.sparkContext
        bc = sc.broadcast(pkg)
        try:
            with spark_errors(f"export of {snap.tenant}/{snap.algorithm} in Spark"):
                results = sc.parallelize(payloads, max(1, len(payloads))).map(
                    lambda p: score_shard(bc.value, p, k, fmt, mode, out_s, generated_at,
                                          block)).collect()
        finally:
            bc.destroy()
        master = sc.master
    results.sort(key=lambda r: r["no"])
    sources: dict[str, int] = {}
    for r in results:
        for name, c in r["sources"].items():
            sources[name] = sources.get(name, 0) + c
    seconds = time.perf_counter() - t0
    return ex.write_manifest(out, snap, k, fmt, mode, generated_at, users, n_asked, sup,
                             sources, seconds, [r["shard"] for r in results], engine="spark",
                             master=master, session_seconds=round(t_session, 3))

