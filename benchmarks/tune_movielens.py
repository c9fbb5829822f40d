"""Choose the MovieLens tenant's hyperparameters on a validation split, never on the test.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/tune_movielens.py \\
        [--data ../shared/data/movielens-latest-small-ratings.csv] [--factors 64]

The trainer's temporal holdout keeps each user's first 80 % of events (by time) for training
and tests on the rest. This script takes only that training part and splits it again the same
way (first 80 % of each user's training events -> fit, the rest -> validation), then runs a
small grid and prints validation NDCG@10 for every point, best last. ALS: history cap,
recency half-life, confidence alpha, lambda. BPR: history cap, learning rate, lambda, epochs
(BPR sees only the pattern ``p``, so alpha and the half-life do not move it). The chosen point
goes into ``config/movielens.toml`` by hand; ``benchmarks/quality.py`` then reports it on the
test holdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time

import _batch  # noqa: F401  (sets BLAS threads and sys.path first)
from _batch import TENANT, holdout, load, movielens_config, read_events, training_part

from recsys_stream.batch.algorithms import TRAINERS
from recsys_stream.batch.data import build_matrix
from recsys_stream.batch.evaluate import evaluate, factor_scorer
from recsys_stream.config import AlsConfig, BprConfig

CAPS = (500, 3000)
HALF_LIVES = (30.0, 365.0, 0.0)          # days; 0 = no decay
ALPHAS = (1.0, 2.0, 5.0, 10.0)
ALS_LAMBDAS = (0.05, 1.0, 5.0, 20.0, 50.0, 100.0)
BPR_RATES = (0.005, 0.01, 0.05)
BPR_LAMBDAS = (0.001, 0.01, 0.1)
BPR_EPOCHS = (50, 100, 300)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(_batch.MOVIELENS))
    ap.add_argument("--factors", type=int, default=64)
    args = ap.parse_args()
    cfg = movielens_config()
    base = cfg.tenant(TENANT)
    seed, frac = cfg.trainer.seed, cfg.trainer.holdout_fraction
    fit_events = training_part(read_events(args.data), frac)
    print(f"validation grid on the training part ({len(fit_events)} events); {load()}",
          flush=True)
    results = []
    for cap, half_life in itertools.product(CAPS, HALF_LIVES):
        tc = dataclasses.replace(base, history_cap=cap, half_life_days=half_life)
        data = holdout(fit_events, tc, frac)
        for alpha in ALPHAS:
            tca = dataclasses.replace(tc, alpha=alpha)
            fit = build_matrix(data.train, tca.confidence)
            for lam in ALS_LAMBDAS:
                hp = AlsConfig(args.factors, lam, base.als.iterations)
                results.append(_score("als", fit, data, hp, seed,
                                      dict(cap=cap, half_life=half_life, alpha=alpha, lam=lam)))
        if half_life != HALF_LIVES[0]:
            continue  # BPR's binary matrix does not depend on the half-life
        fit = build_matrix(data.train, tc.confidence)
        for lr, lam, epochs in itertools.product(BPR_RATES, BPR_LAMBDAS, BPR_EPOCHS):
            hp = BprConfig(args.factors, lr, lam, epochs, base.bpr.foldin_regularization)
            results.append(_score("bpr", fit, data, hp, seed,
                                  dict(cap=cap, lr=lr, lam=lam, epochs=epochs)))
    for algorithm in ("als", "bpr"):
        best = max((r for r in results if r[0] == algorithm), key=lambda r: r[1])
        print(f"best {algorithm}: validation NDCG@10 {best[1]:.4f} at {best[2]}; {load()}")


def _score(algorithm, fit, data, hp, seed, point) -> tuple[str, float, dict]:
    t = time.perf_counter()
    f = TRAINERS[algorithm](fit.C, hp, seed)
    m = evaluate(factor_scorer(f.user_factors, f.item_factors), fit, data.test_items,
                 fit.popularity)
    print(f"{algorithm} {point}: NDCG@10 {m['ndcg_at_10']:.4f} R@20 {m['recall_at_20']:.4f} "
          f"({time.perf_counter() - t:.1f}s)", flush=True)
    return algorithm, m["ndcg_at_10"], point


if __name__ == "__main__":
    main()
