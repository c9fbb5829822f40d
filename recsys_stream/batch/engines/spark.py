"""The Spark engine: Spark tasks read the data, Spark MLlib fits ALS; the driver gets factors.

Data (:mod:`.spark_data`): one task per changelog partition (or Spark's split of an events
file) aggregates users with the project's own code into ``(user, item, r_full, r_train)`` rows;
``StringIndexer`` (ids in sorted order, as ``data.build_matrix`` sorts them) gives ALS its
integer ids. The driver collects only what the trainer needs: the ids and popularity of each
split, and for the evaluated sample of test users (``evaluate.sample_users``, the same seeded
sample as the implicit engine draws) their train histories and test items.

Fit: ``pyspark.ml.recommendation.ALS`` with ``implicitPrefs``, ``rating = log1p(strength)``
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
from recsys_stream.batch.engines import spark_data
from recsys_stream.batch.engines.base import Engine, TenantRound
from recsys_stream.batch.engines.spark_session import SparkEngineError, spark_session
from recsys_stream.batch.evaluate import sample_users
from recsys_stream.config import Config
from recsys_stream.contracts.user_state import UserHistory

log = logging.getLogger(__name__)

_ROWS_SCHEMA = "tenant string, user string, item string, r_full double, r_train double"
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
    regularization_scaling = "count"
    algorithms = ("als",)

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
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
        spark = self.session()
        t0 = time.perf_counter()
        source = events_file or cfg.topics.state_changelog
        with spark_errors(f"reading {source} in Spark"):
            if events_file:
                records = spark_data.file_records(spark, cfg, tenants, events_file, file_tenant)
            else:
                records = spark_data.changelog_records(spark, cfg, tenants)
            records = self._persist(records)
            if not events_file:
                n_bad = spark_data.check_decodable(records, source, tenants)
                if n_bad:
                    log.warning("%s: %d undecodable records skipped", source, n_bad)
            rows = spark.createDataFrame(spark_data.rating_rows(records, cfg, tenants),
                                         _ROWS_SCHEMA)
            rows = self._persist(rows)
            rounds = [self._round(cfg, t, records, rows) for t in tenants]
        log.info("Spark read %s for %d tenants in %.1fs", source, len(tenants),
                 time.perf_counter() - t0)
        return rounds

    def _round(self, cfg: Config, tenant: str, records, rows) -> TenantRound:
        from pyspark.ml.feature import StringIndexer
        from pyspark.sql import functions as F
        df = rows.filter(F.col("tenant") == tenant)
        mine = records.filter(lambda r: r[0] == "user" and r[1] == tenant)
        if df.isEmpty():
            return _empty_round(tenant)
        # ids in sorted order (Spark compares UTF-8 bytes: the code-point order Python sorts by)
        users = StringIndexer(inputCol="user", outputCol="u",
                              stringOrderType="alphabetAsc").fit(df)
        items = StringIndexer(inputCol="item", outputCol="i",
                              stringOrderType="alphabetAsc").fit(df)
        user_labels, item_labels = np.array(users.labels, dtype=object), \
            np.array(items.labels, dtype=object)
        indexed = items.transform(users.transform(df)).select(
            F.col("u").cast("int").alias("u"), F.col("i").cast("int").alias("i"),
            "r_full", "r_train")
        splits, ids = {}, {}
        for split in ("train", "full"):
            part = indexed.filter(F.col(f"r_{split}").isNotNull()).select(
                "u", "i", F.col(f"r_{split}").cast("float").alias("r"))
            splits[split] = self._persist(part)
            pop = part.groupBy("i").count().orderBy("i").toArrow()
            u = part.select("u").distinct().orderBy("u").toArrow()
            ids[split] = (np.asarray(u.column("u")), np.asarray(pop.column("i")),
                          np.asarray(pop.column("count"), dtype=np.float32))
        (u_tr, i_tr, pop_tr), (u_fu, i_fu, pop_fu) = ids["train"], ids["full"]
        train_users, train_items = user_labels[u_tr].tolist(), item_labels[i_tr].tolist()

        # the evaluated users: the implicit engine's seeded sample of the test users
        test_users = mine.filter(lambda r: bool(r[5])).map(lambda r: r[2]).collect()
        sample = set(sample_users(dict.fromkeys(test_users), cfg.trainer.eval_max_users,
                                  cfg.trainer.seed))
        picked = mine.filter(lambda r: r[2] in sample).map(
            lambda r: (r[2], r[4] if r[4] is not None else r[3], r[5])).collect()
        train_h = {u: UserHistory.decode(b) for u, b, _ in picked}
        test_times = {u: dict(t) for u, _, t in picked}
        agg = mine.map(lambda r: (r[6], r[7], r[8], r[9])).reduce(spark_data.merge_summaries)
        agg = (agg[0] or 0, agg[1] or 0, agg[2], agg[3])
        row_of = {u: n for n, u in enumerate(train_users)}
        ev = build_matrix({u: h for u, h in train_h.items() if u in row_of},
                          cfg.tenant(tenant).confidence, item_ids=train_items)
        data = TenantData(tenant, {}, train_h, {u: set(t) for u, t in test_times.items()},
                          int(agg[2]), (int(agg[0]), int(agg[1])), test_times)
        return TenantRound(
            tenant, train_users, train_items, user_labels[u_fu].tolist(),
            item_labels[i_fu].tolist(), pop_tr, pop_fu, eval=ev,
            eval_rows=np.array([row_of[u] for u in ev.user_ids], dtype=np.int64),
            test={u: data.test_items[u] for u in ev.user_ids if u in data.test_items},
            data=data, n_events=int(agg[2]), event_count=int(agg[3]),
            window=(int(agg[0]), int(agg[1])), train_nnz=int(pop_tr.sum()),
            handle={"train": (splits["train"], u_tr, i_tr), "full": (splits["full"], u_fu, i_fu)})

    def release(self, rnd: TenantRound) -> None:
        for split in (rnd.handle or {}).values():
            split[0].unpersist()

    # -- fit -------------------------------------------------------------------------------
    def fit(self, rnd: TenantRound, split: str, algorithm: str, hp, seed: int,
            progress: bool = False) -> Factors:
        if algorithm != "als":
            raise SparkEngineError(f"Spark MLlib has no {algorithm}: the Spark engine trains als")
        from pyspark.ml.recommendation import ALS
        df, u_idx, i_idx = rnd.handle[split]
        sc = self.cfg.trainer.spark
        alpha = self.cfg.tenant(rnd.tenant).alpha
        params = dict(rank=hp.factors, maxIter=hp.iterations, regParam=hp.regularization,
                      implicitPrefs=True, alpha=alpha, nonnegative=False, seed=seed,
                      userCol="u", itemCol="i", ratingCol="r")
        if sc.als_blocks:
            params.update(numUserBlocks=sc.als_blocks, numItemBlocks=sc.als_blocks)
        t0 = time.perf_counter()
        with spark_errors(f"Spark ALS on {rnd.tenant}/{split}"):
            model = ALS(**params).fit(df)
            X = _factors(model.userFactors.toArrow(), u_idx, hp.factors, "user")
            Y = _factors(model.itemFactors.toArrow(), i_idx, hp.factors, "item")
        log.info("%s/als %s split: Spark ALS on %s, %d x %d, in %.1fs", rnd.tenant, split,
                 sc.master, len(u_idx), len(i_idx), time.perf_counter() - t0)
        hyper = {"factors": hp.factors, "regularization": hp.regularization,
                 "iterations": hp.iterations, "alpha": alpha, "implicit_prefs": True,
                 "rating": "log1p(strength)", "regularization_scaling": "count",
                 "blocks": sc.als_blocks or 10, "seed": seed}
        return Factors("als", Y, X, hyper, bias_column=False)


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
