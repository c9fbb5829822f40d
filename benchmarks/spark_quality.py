"""Quality on MovieLens: the Spark engine's MLlib ALS next to the implicit engine's, in one run.

The Spark engine runs ``trainer.spark.als_solver = "mllib"`` here (the regParam grid below is
MLlib's count-scaled lambda); its default unscaled solver is measured by
``benchmarks/tune_defaults.py --spark``.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/spark_quality.py \\
        [--data ../shared/data/movielens-latest-small-ratings.csv] \\
        [--config config/movielens.toml] [--master local[2]] [--regularization-spark L]

Both engines load the file as the trainer does (``--events-file``: the implicit engine in this
process, the Spark engine in Spark tasks) with the same temporal holdout as
``benchmarks/quality.py`` (``data.from_events``: each user's last ``holdout_fraction`` of
events), fit ALS on the train split with the tenant's hyperparameters of
``config/movielens.toml`` (chosen on validation carved from training data by
``benchmarks/tune_movielens.py``), and are scored by ``batch.evaluate`` on every test user.

lambda for MLlib's scaling, two ways, both without looking at the test:

- converted: implicit penalises ``lambda (sum_u |x_u|^2 + sum_i |y_i|^2)``, MLlib
  ``regParam (sum_u n_u |x_u|^2 + sum_i n_i |y_i|^2)``; equal total weight on the vectors gives
  ``regParam = lambda (n_users + n_items) / (2 nnz)`` (20 -> ~1.1 here);
- chosen on validation: the training part of the holdout (``_batch.training_part``) is split
  again by the same holdout, written to a JSONL events file and loaded by the Spark engine;
  the ``--grid`` regParam with the best validation NDCG@10 is then fitted on the real train
  split (as ``tune_movielens.py`` chose the implicit engine's lambda).

Prints the table, the ratio of NDCG@10 and the seconds; asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time

import _batch
from _batch import TENANT, load, metrics_table, movielens_config, read_events, training_part

from recsys_stream.batch.engines import make_engine
from recsys_stream.batch.evaluate import evaluate, factor_scorer, popularity_scorer
from recsys_stream.config import SparkConfig


def converted_lambda(lam: float, n_users: int, n_items: int, nnz: int) -> float:
    """regParam whose total weight over all vectors equals lambda's: lam (U + I) / (2 nnz)."""
    return lam * (n_users + n_items) / (2.0 * nnz)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(_batch.MOVIELENS))
    ap.add_argument("--config", default=str(_batch.MOVIELENS_CONFIG))
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--regularization-spark", type=float, default=None)
    ap.add_argument("--grid", default="0.003,0.01,0.02,0.03,0.05,0.07,0.1,0.3,1.0",
                    help="regParam values tried on validation carved from training data")
    args = ap.parse_args()
    cfg = movielens_config(args.config)
    cfg = cfg.replace(trainer={"eval_max_users": 0, "spark": SparkConfig(
        master=args.master, als_solver="mllib", settings={"spark.driver.memory": "1g",
                                      "spark.sql.shuffle.partitions": "4"})})
    tc, seed = cfg.tenant(TENANT), cfg.trainer.seed
    print(f"{args.data}; ALS {tc.als}, alpha {tc.alpha}; Spark on {args.master}; {load()}",
          flush=True)

    implicit = make_engine("implicit", cfg)
    t = time.perf_counter()
    (ri,) = implicit.load(cfg, [TENANT], args.data, TENANT)
    load_i = time.perf_counter() - t
    t = time.perf_counter()
    fi = implicit.fit(ri, "train", "als", tc.als, seed)
    fit_i = time.perf_counter() - t
    lam_s = args.regularization_spark or converted_lambda(
        tc.als.regularization, len(ri.train_users), len(ri.train_items), ri.train_nnz)
    frac = cfg.trainer.holdout_fraction
    valid_file = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
    with valid_file as f:  # the training part only: validation never sees the test
        for e in training_part(read_events(args.data), frac):
            f.write(json.dumps({"event_id": e.event_id, "tenant": e.tenant, "user_id": e.user_id,
                                "item_id": e.item_id, "type": e.type, "value": e.value,
                                "timestamp_ms": e.timestamp_ms}) + "\n")
    with make_engine("spark", cfg) as spark:
        t = time.perf_counter()
        spark.session()
        start_s = time.perf_counter() - t
        (rv,) = spark.load(cfg, [TENANT], valid_file.name)
        validation = {}
        for lam in [float(x) for x in args.grid.split(",")]:
            fv = spark.fit(rv, "train", "als", dataclasses.replace(tc.als, regularization=lam),
                           seed)
            validation[lam] = evaluate(factor_scorer(fv.user_factors[rv.eval_rows],
                                                     fv.item_factors), rv.eval, rv.test,
                                       rv.pop_train)["ndcg_at_10"]
            print(f"validation regParam {lam:g}: NDCG@10 {validation[lam]:.4f}", flush=True)
        spark.release(rv)
        lam_v = max(validation, key=validation.get)
        t = time.perf_counter()
        (rs,) = spark.load(cfg, [TENANT], args.data, TENANT)
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        fs = spark.fit(rs, "train", "als", dataclasses.replace(tc.als, regularization=lam_s),
                       seed)
        fit_s = time.perf_counter() - t
        fv = spark.fit(rs, "train", "als", dataclasses.replace(tc.als, regularization=lam_v),
                       seed)
    same = (ri.train_users == rs.train_users and ri.train_items == rs.train_items
            and ri.test == rs.test)
    print(f"train {len(ri.train_users)} x {len(ri.train_items)} nnz {ri.train_nnz}, "
          f"{len(ri.test)} test users; the two engines' splits identical: {same}")
    pop = ri.pop_train
    rows = [("popularity", evaluate(popularity_scorer(pop), ri.eval, ri.test, pop)),
            (f"implicit engine ALS, lambda {tc.als.regularization:g} ({fit_i:.1f}s)",
             evaluate(factor_scorer(fi.user_factors[ri.eval_rows], fi.item_factors), ri.eval,
                      ri.test, pop)),
            (f"Spark engine ALS, regParam {lam_s:.3f} x count, converted ({fit_s:.1f}s)",
             evaluate(factor_scorer(fs.user_factors[rs.eval_rows], fs.item_factors), rs.eval,
                      rs.test, rs.pop_train)),
            (f"Spark engine ALS, regParam {lam_v:g} x count, chosen on validation",
             evaluate(factor_scorer(fv.user_factors[rs.eval_rows], fv.item_factors), rs.eval,
                      rs.test, rs.pop_train))]
    print(f"\ntemporal holdout, {rows[0][1]['users_evaluated']} users evaluated; {load()}")
    print(metrics_table(rows))
    for n, what in ((2, "converted"), (3, "chosen on validation")):
        ratio = rows[n][1]["ndcg_at_10"] / rows[1][1]["ndcg_at_10"]
        print(f"NDCG@10 Spark ({what}) / implicit: {ratio:.3f} (target >= 0.97)")
    print(f"seconds: load implicit {load_i:.1f} / Spark {load_s:.1f} (+ session start "
          f"{start_s:.1f}); fit implicit {fit_i:.1f} / Spark {fit_s:.1f} "
          f"(Spark / implicit {fit_s / fit_i:.1f}x)")


if __name__ == "__main__":
    main()
