"""From the defaults, no hand-set value: the MovieLens tenant tuned by the trainer's own search.

    OPENBLAS_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/tune_defaults.py \\
        [--data ../shared/data/movielens-latest-small-ratings.csv] [--trials N] \\
        [--budget-s S] [--spark --spark-trials N --spark-budget-s S --master local[2]] \\
        [--spark-solver unscaled|mllib]

Budgets default to the trainer's (``trainer.tune_trials``, ``trainer.tune_budget_s``).

The tenant ``movielens`` has no setting of its own (``TenantConfig()``: every value the
project's default). ``batch.tuning.tune_tenant`` searches ALS (lambda, alpha, factors) on the
implicit engine (and with ``--spark`` on the Spark engine) on validation carved from the
training part of the holdout; the chosen values are then fitted on the real train split of the
same temporal holdout as ``benchmarks/quality.py`` and ``benchmarks/spark_quality.py``
(``data.from_events``, each user's last ``holdout_fraction`` of events; every test user
evaluated) and scored once on the test. Targets (issue 32): implicit >= the hand-tuned
config's 0.1239, Spark >= 0.97x implicit. Prints each search's budget, trials and seconds, and
the load; asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
import time

import _batch
from _batch import TENANT, load

from recsys_stream.batch import tuning
from recsys_stream.batch.engines import make_engine
from recsys_stream.batch.evaluate import evaluate, factor_scorer, popularity_scorer
from recsys_stream.config import SPARK_ALS_SOLVERS, Config, SparkConfig, TenantConfig, TrainerConfig
from recsys_stream.contracts.model_store import ModelStore

HAND_TUNED_NDCG = 0.1239  # config/movielens.toml on the implicit engine (benchmarks/quality.py)
# config/movielens.toml's ALS values (its history_cap 3000 is a data setting, --history-cap)
HAND_TUNED = {"als_regularization": 20.0, "alpha": 1.0, "als_factors": 64}


def test_ndcg(cfg: Config, engine, data: str) -> tuple[float, float]:
    """NDCG@10 on the test holdout of the ALS fitted with ``cfg``'s values, and popularity's."""
    (rnd,) = engine.load(cfg, [TENANT], data, TENANT)
    f = engine.fit(rnd, "train", "als", cfg.tenant(TENANT).als, cfg.trainer.seed)
    m = evaluate(factor_scorer(f.user_factors[rnd.eval_rows], f.item_factors), rnd.eval,
                 rnd.test, rnd.pop_train)
    p = evaluate(popularity_scorer(rnd.pop_train), rnd.eval, rnd.test, rnd.pop_train)
    engine.release(rnd)
    return m["ndcg_at_10"], p["ndcg_at_10"]


def run(name: str, cfg: Config, store: ModelStore, data: str, trials: int,
        budget_s: float) -> float:
    cfg = cfg.replace(trainer={"engine": name})  # the record is applied per engine
    with make_engine(name, cfg) as engine:
        before, pop = test_ndcg(cfg, engine, data)
        if engine.regularization_scaling == "none":  # the hand-tuned values on this split
            hand = tuning.with_values(cfg.tenant(TENANT), HAND_TUNED)
            peer, _ = test_ndcg(dataclasses.replace(cfg, tenants={TENANT: hand}), engine, data)
            print(f"{engine.record_key} engine, hand-tuned values {HAND_TUNED} at history_cap "
                  f"{cfg.tenant(TENANT).history_cap}: test NDCG@10 {peer:.4f}", flush=True)
        t = time.perf_counter()
        record = tuning.tune_tenant(cfg, engine, TENANT, store, events_file=data, trials=trials,
                                    budget_s=budget_s, algorithms=("als",))
        seconds = time.perf_counter() - t
        s = record["engines"][engine.record_key]["als"]
        tuned = tuning.tuned_config(cfg, store)
        after, _ = test_ndcg(tuned, engine, data)
    print(f"{name} engine: search budget {trials} trials / {budget_s:.0f}s -> {s['n_trials']} "
          f"trials in {seconds:.0f}s; chosen {s['params']}; validation NDCG@10 "
          f"{s['start_value']:.4f} (defaults) -> {s['best_value']:.4f}; {load()}")
    print(f"{name} engine test NDCG@10: defaults {before:.4f}, tuned {after:.4f}, "
          f"popularity {pop:.4f}", flush=True)
    return after


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(_batch.MOVIELENS))
    defaults = TrainerConfig()  # a search's budget: trainer.tune_trials and tune_budget_s
    ap.add_argument("--trials", type=int, default=defaults.tune_trials)
    ap.add_argument("--budget-s", type=float, default=defaults.tune_budget_s)
    ap.add_argument("--spark", action="store_true", help="also search on the Spark engine")
    ap.add_argument("--spark-trials", type=int, default=defaults.tune_trials)
    ap.add_argument("--spark-budget-s", type=float, default=defaults.tune_budget_s)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--spark-solver", default=SparkConfig().als_solver, choices=SPARK_ALS_SOLVERS,
                    help="trainer.spark.als_solver")
    ap.add_argument("--history-cap", type=int, default=None, help="the tenant's history_cap "
                    "(default: the project's default, 500); config/movielens.toml keeps 3000, "
                    "more than the largest user's 2698 ratings. Not a searched value: the worker "
                    "trims its state to it, so the trainer cannot choose it alone")
    ap.add_argument("--implicit-ndcg", type=float, help="skip the implicit search: compare "
                    "Spark with this figure (from an earlier run of this script)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("recsys_stream.batch.tuning").setLevel(logging.INFO)  # every trial
    with tempfile.TemporaryDirectory() as root:
        tc = TenantConfig() if args.history_cap is None else \
            TenantConfig(history_cap=args.history_cap)
        cfg = Config(model_store=root, tenants={TENANT: tc},
                     trainer=TrainerConfig(algorithms=("als",), eval_max_users=0, spark=SparkConfig(
                         master=args.master, als_solver=args.spark_solver, settings={"spark.driver.memory": "1g",
                                                       "spark.sql.shuffle.partitions": "4"})))
        store = ModelStore(root)
        print(f"{args.data}; tenant {TENANT} at the defaults: ALS {cfg.tenant(TENANT).als}, "
              f"alpha {cfg.tenant(TENANT).alpha}, history_cap {tc.history_cap}; bounds "
              f"factors {cfg.trainer.tune_als_factors}, lambda "
              f"{cfg.trainer.tune_als_regularization} (Spark's regParam "
              f"{cfg.trainer.tune_spark_als_regularization}), alpha {cfg.trainer.tune_alpha}; "
              f"{load()}", flush=True)
        implicit = args.implicit_ndcg
        if implicit is None:
            implicit = run("implicit", cfg, store, args.data, args.trials, args.budget_s)
            print(f"implicit tuned / hand-tuned {HAND_TUNED_NDCG}: "
                  f"{implicit / HAND_TUNED_NDCG:.3f} (target >= 1)")
        if args.spark:
            spark = run("spark", cfg, store, args.data, args.spark_trials, args.spark_budget_s)
            print(f"NDCG@10 Spark tuned / implicit tuned: {spark / implicit:.3f} "
                  f"(target >= 0.97); {load()}")


if __name__ == "__main__":
    main()
