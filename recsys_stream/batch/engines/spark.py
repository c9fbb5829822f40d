"""The Spark engine: Spark tasks read the data and fit ALS; the driver gets factors.

Data (:mod:`.spark_data`): one task per changelog partition (or Spark's split of an events
file) aggregates users with the project's own code into ``(user, item, r_full, r_train)`` rows;
``StringIndexer`` (ids in sorted order, as ``data.build_matrix`` sorts them) gives ALS its
integer ids. The driver collects only what the trainer needs: the ids and popularity of each
split, and for the evaluated sample of test users (``evaluate.sample_users``, the same seeded
sample as the implicit engine draws) their train histories and test items.

Fit (``trainer.spark.als_solver``): ``"unscaled"`` (the default) alternates the project's exact
least-squares steps in Spark tasks (:mod:`.spark_als`), lambda as ``implicit`` weighs it, so the
manifest says ``regularization_scaling = "none"`` and a tenant's lambda means on Spark what it
means on the implicit engine. ``"mllib"``: ``pyspark.ml.recommendation.ALS`` with
``implicitPrefs``, ``rating = log1p(strength)``
and ``alpha = α`` of the tenant, i.e. Hu-Koren-Volinsky's ``c = 1 + α·log1p(strength)``, ``p = 1``
as in the rest of the project. MLlib weights lambda by each user's (item's) number of ratings
(``ALS.scala`` ``computeFactors``: ``solve(ls, numExplicits * regParam)``, ALS-WR)::

    x_u = (YtY + Y_u^T (C_u - I) Y_u + regParam * n_u * I)^-1  Y_u^T C_u p_u

so the manifest says ``regularization_scaling = "count"`` and every fold-in applies it
(``contracts.foldin``). Spark's last half-sweep is this exact user solve, so the published user
vectors are what the worker's fold-in gives for the same history. MLlib has no BPR: the
engine's ``algorithms`` is ``("als",)`` and the trainer logs what it skips.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import tempfile
import time

import numpy as np

from recsys_stream.batch.algorithms import Factors
from recsys_stream.batch.data import Matrix, TenantData, build_matrix
from recsys_stream.batch.engines import spark_data, spark_record_key
from recsys_stream.batch.engines.base import Engine, TenantRound
from recsys_stream.batch.engines.spark_session import SparkEngineError, spark_session
from recsys_stream.batch.evaluate import sample_users
from recsys_stream.config import Config
from recsys_stream.contracts.user_state import UserHistory

log = logging.getLogger(__name__)

# the Python exception at the bottom of a task failure Spark relays as a Java error
_PY_ERROR = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$")


@contextlib.contextmanager
def spark_errors(what: str):
    """Re-raise a failed Spark job as a one-line ``SparkEngineError``: the task's Python
    exception when there is one (e.g. ``ValueError: events.csv:3: ...``), else the first line."""
    try:
        yield
    except SparkEngineError:
        raise
    except Exception as e:
        if type(e).__module__.startswith(("py4j", "pyspark")):
            text = str(e)
            found = [m.group(0) for line in text.splitlines()
                     if (m := _PY_ERROR.match(line.strip()))
                     and not m.group(1).startswith(("Py4J", "Spark", "Java"))]
            line = found[-1] if found else (text.strip().splitlines() or [type(e).__name__])[0]
            raise SparkEngineError(f"{what}: {line[:300]}") from e
        raise


class SparkEngine(Engine):
    """Data and ALS on Spark (``trainer.spark``); one session for a trainer round."""

    name = "spark"
    algorithms = ("als",)

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.solver = cfg.trainer.spark.als_solver
        # MLlib's ALS-WR scales lambda by the user's count; the project's steps do not
        self.regularization_scaling = "count" if self.solver == "mllib" else "none"
        self._stack = contextlib.ExitStack()
        self._spark = None
        self._persisted: list = []

    # -- session ---------------------------------------------------------------------------
    def session(self):
        """The round's ``SparkSession`` (started on first use, ended by :meth:`close`)."""
        if self._spark is None:
            spark = self._stack.enter_context(spark_session(self.cfg.trainer.spark))
            checkpoints = tempfile.mkdtemp(prefix="recsys-spark-checkpoints-")
            self._stack.callback(shutil.rmtree, checkpoints, True)
            # ALS cuts its lineage every checkpointInterval (10) sweeps only with a directory
            spark.sparkContext.setCheckpointDir(checkpoints)
            self._spark = spark
        return self._spark

    def close(self) -> None:
        self._persisted.clear()
        self._spark = None
        self._stack.close()

    def _persist(self, x):
        from pyspark import StorageLevel
        x = x.persist(StorageLevel.MEMORY_AND_DISK)
        self._persisted.append(x)
        return x

    # -- data ------------------------------------------------------------------------------
    def load(self, cfg: Config, tenants: list[str], events_file: str | None,
             file_tenant: str | None = None, progress: bool = False) -> list[TenantRound]:
        """Three Spark jobs for all tenants (per-user summaries, per-item counts, the evaluated
        sample) plus the ALS input; each Spark job costs seconds of scheduling and Python
        worker start-up, so the driver asks for everything it needs in as few as it can."""
        spark = self.session()
        t0 = time.perf_counter()
        source = events_file or cfg.topics.state_changelog
        with spark_errors(f"reading {source} in Spark"):
            if events_file:
                records = spark_data.file_records(spark, cfg, tenants, events_file, file_tenant)
            else:
                records = spark_data.changelog_records(spark, cfg, tenants)
            records = self._persist(records)
            summaries = records.map(spark_data.summary).collect()
            bad = [r for r in summaries if r[0] == "bad"]
            users = [r for r in summaries if r[0] == "user"]
            del summaries
            if bad:
                if not users:
                    _, p, offset, error = bad[0]
                    raise SparkEngineError(
                        f"state changelog {source}: {len(bad)} records do not decode and no "
                        f"user state of {', '.join(tenants)} does (first: partition {p} offset "
                        f"{offset}: {error}); nothing trained")
                log.warning("%s: %d undecodable records skipped", source, len(bad))
            rows = self._persist(spark_data.rating_rows(records, cfg, tenants))
            item_counts = rows.map(spark_data.item_split_counts).reduceByKey(
                spark_data.add_pairs).collect()
            sample = {}
            for t in tenants:
                test_users = [r[2] for r in users if r[1] == t and r[4]]
                sample[t] = set(sample_users(dict.fromkeys(test_users),
                                             cfg.trainer.eval_max_users, cfg.trainer.seed))
            picked = records.filter(lambda r: r[0] == "user" and r[2] in sample[r[1]]).map(
                lambda r: (r[1], r[2], r[4] if r[4] is not None else r[3], r[5])).collect()
            rounds = [self._round(cfg, t, [u for u in users if u[1] == t],
                                  [c for c in item_counts if c[0][0] == t],
                                  [p for p in picked if p[0] == t], rows) for t in tenants]
        log.info("Spark read %s for %d tenants in %.1fs", source, len(tenants),
                 time.perf_counter() - t0)
        return rounds

    def _round(self, cfg: Config, tenant: str, users: list, item_counts: list, picked: list,
               rows) -> TenantRound:
        """A tenant's round from its summaries; the ALS inputs as DataFrames of int ids."""
        if not item_counts:
            return _empty_round(tenant)
        # ids sorted as data.build_matrix sorts them; only users / items with a row in a split
        full_users = sorted(u[2] for u in users if u[3])
        train_users = sorted(u[2] for u in users if u[9])
        items = sorted(item_counts)  # ((tenant, item), (train users, full users))
        full_items = [i for (_, i), (_, n) in items if n]
        train_items = [i for (_, i), (n, _) in items if n]
        pop_full = np.array([n for _, (_, n) in items if n], dtype=np.float32)
        pop_train = np.array([n for _, (n, _) in items if n], dtype=np.float32)
        u_index = {u: n for n, u in enumerate(full_users)}
        i_index = {i: n for n, i in enumerate(full_items)}
        for u in train_users:  # a train-only user / item (a cap trimmed it later) gets an id
            u_index.setdefault(u, len(u_index))
        for i in train_items:
            i_index.setdefault(i, len(i_index))
        u_b, i_b = self._spark.sparkContext.broadcast(u_index), \
            self._spark.sparkContext.broadcast(i_index)
        splits = {}
        for col, split, uids, iids in ((4, "train", train_users, train_items),
                                       (3, "full", full_users, full_items)):
            ints = rows.filter(lambda r, c=col: r[0] == tenant and r[c] is not None).map(
                lambda r, c=col: (u_b.value[r[1]], i_b.value[r[2]], float(r[c])))
            df = self._persist(self._spark.createDataFrame(ints, "u int, i int, r float"))
            splits[split] = (df, np.array([u_index[u] for u in uids], dtype=np.int64),
                             np.array([i_index[i] for i in iids], dtype=np.int64))

        agg = (None, None, 0, 0)
        for u in users:
            agg = spark_data.merge_summaries(agg, u[5:9])
        train_h = {u: UserHistory.decode(b) for _, u, b, _ in picked}
        test_times = {u: dict(t) for _, u, _, t in picked}
        row_of = {u: n for n, u in enumerate(train_users)}
        ev = build_matrix({u: h for u, h in train_h.items() if u in row_of},
                          cfg.tenant(tenant).confidence, item_ids=train_items)
        window = (int(agg[0] or 0), int(agg[1] or 0))
        data = TenantData(tenant, {}, train_h, {u: set(t) for u, t in test_times.items()},
                          int(agg[2]), window, test_times)
        return TenantRound(
            tenant, train_users, train_items, full_users, full_items, pop_train, pop_full,
            eval=ev, eval_rows=np.array([row_of[u] for u in ev.user_ids], dtype=np.int64),
            test={u: data.test_items[u] for u in ev.user_ids if u in data.test_items},
            data=data, n_events=int(agg[2]), event_count=int(agg[3]), window=window,
            train_nnz=int(pop_train.sum()), handle=splits)

    def release(self, rnd: TenantRound) -> None:
        for split in (rnd.handle or {}).values():
            split[0].unpersist()

    # -- fit -------------------------------------------------------------------------------
    def fit(self, rnd: TenantRound, split: str, algorithm: str, hp, seed: int,
            progress: bool = False) -> Factors:
        if algorithm != "als":
            raise SparkEngineError(f"the Spark engine trains als only, not {algorithm}")
        df, u_idx, i_idx = rnd.handle[split]
        sc = self.cfg.trainer.spark
        # a search's trial carries its own alpha (batch/tuning.py); a round uses the tenant's
        alpha = getattr(hp, "alpha", None)
        alpha = self.cfg.tenant(rnd.tenant).alpha if alpha is None else alpha
        t0 = time.perf_counter()
        with spark_errors(f"Spark ALS on {rnd.tenant}/{split}"):
            if self.solver == "unscaled":
                from recsys_stream.batch.engines.spark_als import fit_unscaled
                blocks = sc.als_blocks or self._spark.sparkContext.defaultParallelism
                Y, X = fit_unscaled(self._spark, df, u_idx, i_idx, hp.factors,
                                    hp.regularization, alpha, hp.iterations, seed, blocks,
                                    progress)
                extra = {"exact_final_user_solve": True}
            else:
                Y, X = self._fit_mllib(df, u_idx, i_idx, hp, alpha, seed)
                blocks, extra = sc.als_blocks or 10, {}
        log.info("%s/als %s split: %s ALS in Spark on %s, %d x %d, in %.1fs", rnd.tenant, split,
                 self.solver, sc.master, len(u_idx), len(i_idx), time.perf_counter() - t0)
        hyper = {"factors": hp.factors, "regularization": hp.regularization,
                 "iterations": hp.iterations, "alpha": alpha, "implicit_prefs": True,
                 "rating": "log1p(strength)", "solver": self.solver,
                 "regularization_scaling": self.regularization_scaling, "blocks": blocks,
                 "seed": seed} | extra
        return Factors("als", Y, X, hyper, bias_column=False)

    def _fit_mllib(self, df, u_idx, i_idx, hp, alpha: float, seed: int):
        """(Y, X) of ``pyspark.ml.recommendation.ALS`` (count-scaled lambda)."""
        from pyspark.ml.recommendation import ALS
        sc = self.cfg.trainer.spark
        params = dict(rank=hp.factors, maxIter=hp.iterations, regParam=hp.regularization,
                      implicitPrefs=True, alpha=alpha, nonnegative=False, seed=seed,
                      userCol="u", itemCol="i", ratingCol="r")
        if sc.als_blocks:
            params.update(numUserBlocks=sc.als_blocks, numItemBlocks=sc.als_blocks)
        model = ALS(**params).fit(df)
        return (_factors(model.itemFactors.toArrow(), i_idx, hp.factors, "item"),
                _factors(model.userFactors.toArrow(), u_idx, hp.factors, "user"))

    @property
    def record_key(self) -> str:
        """Where the tenant's tuning record files this engine's searches (``record_key``)."""
        return spark_record_key(self.solver)

    def item_columns(self, rnd: TenantRound, rows: np.ndarray, factors: Factors):
        """Collected from the full split's DataFrame (a young slice is small: fewer than
        ``young_item_users`` rows per item); MLlib's ``r = log1p(s)`` becomes the fold-ins'
        ``c = 1 + alpha*r`` with the fit's alpha."""
        import scipy.sparse as sp
        from pyspark.sql import functions as F
        df, u_idx, i_idx = rnd.handle["full"]
        rows = np.asarray(rows, np.int64)
        wanted = i_idx[rows]
        with spark_errors(f"collecting {len(rows)} young items of {rnd.tenant}"):
            t = df.filter(F.col("i").isin(wanted.tolist())).toArrow() if len(rows) else None
        if t is None or not t.num_rows:
            return sp.csc_matrix((len(u_idx), len(rows)), dtype=np.float32)
        u, i, r = (np.asarray(t.column(c)) for c in ("u", "i", "r"))
        order_u, order_i = np.argsort(u_idx), np.argsort(wanted)  # Spark id -> row / column
        ur = order_u[np.searchsorted(u_idx, u, sorter=order_u)]
        ic = order_i[np.searchsorted(wanted, i, sorter=order_i)]
        c = 1.0 + float(factors.hyperparameters["alpha"]) * r.astype(np.float64)
        return sp.csc_matrix((c.astype(np.float32), (ur, ic)), shape=(len(u_idx), len(rows)))


def _factors(table, index: np.ndarray, k: int, what: str) -> np.ndarray:
    """(len(index), k) float32 rows of an ALS factor table (id, features) in ``index`` order."""
    ids = np.asarray(table.column("id"))
    feats = np.asarray(table.column("features").combine_chunks().flatten(),
                       dtype=np.float32).reshape(len(ids), k)
    pos = np.searchsorted(index, ids)
    if len(ids) != len(index) or not np.array_equal(index[np.clip(pos, 0, len(index) - 1)], ids):
        raise SparkEngineError(f"Spark ALS returned {len(ids)} {what} factors for "
                               f"{len(index)} {what}s")
    out = np.empty((len(index), k), dtype=np.float32)
    out[pos] = feats
    return out


def _empty_round(tenant: str) -> TenantRound:
    import scipy.sparse as sp
    empty = Matrix([], [], sp.csr_matrix((0, 0), dtype=np.float32))
    return TenantRound(tenant, [], [], [], [], np.zeros(0, np.float32), np.zeros(0, np.float32),
                       eval=empty, eval_rows=np.zeros(0, np.int64), test={},
                       data=TenantData(tenant, {}, {}), n_events=0, event_count=0,
                       window=(0, 0))
