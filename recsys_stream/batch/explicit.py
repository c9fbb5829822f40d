"""One tenant's ``mf`` round: explicit ratings -> biased MF -> RMSE / MAE and ranking -> gates.

Called by ``batch.app.train_tenant`` for ``"mf"`` in ``trainer.algorithms``, with the same
temporal holdout as the implicit models (``TenantData.test_ratings``: each user's held-out
latest ratings of items not rated in train):

1. the evaluated model is trained on the train split's latest ratings and scored on the held-out
   ratings next to the global mean and the damped baseline predictor (``batch/ratings.py``), and
   on the ranking metrics of ``batch/evaluate.py`` (score ``b_i + x_u·y_i``), so that ``mf`` can
   compete for the tenant's default algorithm;
2. the published model is retrained on every latest rating with the same hyperparameters and
   seed (SGD: the epoch count early stopping chose for the evaluated model);
3. gates: the factor checks of ``batch/gates.py`` (shapes, values, norms), and RMSE strictly
   below the baseline predictor's and not above the current ``mf`` version's stored RMSE by more
   than ``trainer.rmse_tolerance`` (relative). The NDCG gate against popularity does not apply:
   a rating model is judged by how well it predicts ratings.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from recsys_stream.batch import gates
from recsys_stream.batch.data import Matrix, TenantData
from recsys_stream.batch.evaluate import evaluate
from recsys_stream.batch.mf import MfModel, train_mf
from recsys_stream.batch.publish import Candidate, write_version
from recsys_stream.batch.ratings import Ratings, baseline_biases, build_ratings, \
    rating_metrics, test_triples
from recsys_stream.config import Config, TrainerConfig
from recsys_stream.contracts.model_store import ModelStore

log = logging.getLogger(__name__)


def holdout_rating_metrics(model: MfModel, train: Ratings, test: dict[str, dict[str, float]],
                           scale: tuple[float, float]) -> dict[str, dict[str, float]]:
    """RMSE / MAE of the model, the damped baseline and the global mean on ``test``."""
    u, i, r = test_triples(test, train.user_row, train.item_row)
    known = (u >= 0) & (i >= 0)
    mu, b_u, b_i = baseline_biases(train.R, float(model.hyperparameters.get("damping", 5.0)))
    base = MfModel(mu, np.zeros((len(b_u), 0)), b_u, np.zeros((len(b_i), 0)), b_i)
    return {"model": rating_metrics(model.predict(u, i, *scale), r, known),
            "baseline_predictor": rating_metrics(base.predict(u, i, *scale), r, known),
            "global_mean": rating_metrics(np.clip(np.full(len(r), mu), *scale), r, known)}


def ranking_scorer(model: MfModel, ratings: Ratings, matrix: Matrix):
    """Scores ``b_i + x_u·y_i`` for rows of the implicit ``matrix`` over its items.

    Items the model has no rating of score ``-inf`` (never ranked, still in ``|T_u|``); a user
    without ratings is ranked by ``b_i`` alone, the baseline's order.
    """
    user_row, item_row = ratings.user_row, ratings.item_row
    cols = np.fromiter((item_row.get(i, -1) for i in matrix.item_ids), np.int64,
                       len(matrix.item_ids))
    known = cols >= 0
    xs = np.fromiter((user_row.get(u, -1) for u in matrix.user_ids), np.int64,
                     len(matrix.user_ids))
    Y, b = model.Y[cols[known]], model.b_i[cols[known]]

    def score(rows: np.ndarray) -> np.ndarray:
        r = xs[rows]
        out = np.full((len(rows), len(cols)), -np.inf, dtype=np.float32)
        X = np.where((r >= 0)[:, None], model.X[np.maximum(r, 0)], 0.0)
        out[:, known] = X @ Y.T + b
        return out
    return score


def rating_gates(metrics: dict, baseline: dict, current_rmse: float | None,
                 cfg: TrainerConfig) -> list[str]:
    """The quality gates of a rating model (module docstring); empty: it may be published."""
    if not metrics.get("ratings_evaluated"):
        return []  # no held-out rating: nothing to compare
    reasons = []
    rmse, base = metrics["rmse"], baseline["rmse"]
    if not rmse < base:  # `not <`: NaN fails too
        reasons.append(f"RMSE {rmse:.4f} is not below the baseline predictor's {base:.4f}")
    if current_rmse is not None and not rmse <= current_rmse * (1 + cfg.rmse_tolerance):
        reasons.append(f"RMSE {rmse:.4f} is above the current model's {current_rmse:.4f} by "
                       f"more than {cfg.rmse_tolerance:.0%} (its RMSE stored in its manifest)")
    return reasons


def _current_rmse(store: ModelStore, tenant: str) -> float | None:
    v = store.current_version(tenant, "mf")
    if v is None:
        return None
    rmse = store.load(tenant, "mf", v, verify=False).manifest.get("metrics", {}).get("rmse")
    return float(rmse) if rmse else None


def train_mf_round(cfg: Config, data: TenantData, store: ModelStore, train: Matrix,
                   test_items: dict[str, set[str]], popularity: dict, manifest_base: dict,
                   progress: bool = False) -> Candidate | None:
    """Train, evaluate, gate and write the tenant's ``mf`` version; None without ratings.

    ``train`` is the implicit train matrix (the ranking metrics exclude its items), ``test_items``
    the sampled ranking test, ``popularity`` the popularity baseline's ranking metrics and
    ``manifest_base`` the round's shared manifest entries (confidence, data window, ...).
    """
    tc = cfg.tenant(data.tenant)
    hp = tc.mf
    scale = (tc.rating_min, tc.rating_max)
    t0 = time.perf_counter()
    ratings = build_ratings(data.train)
    full = build_ratings(data.histories)
    if not ratings.nnz or not full.nnz:
        log.info("%s/mf: no ratings, skipped", data.tenant)
        return None
    evaluated = train_mf(ratings, hp, cfg.trainer.seed)
    rated = holdout_rating_metrics(evaluated, ratings, data.test_ratings, scale)
    ranking = evaluate(ranking_scorer(evaluated, ratings, train), train, test_items,
                       train.popularity, progress, f"{data.tenant}/mf")
    metrics = ranking | rated["model"]
    log.info("%s/mf evaluated: RMSE %.4f (baseline %.4f, global mean %.4f), MAE %.4f, "
             "NDCG@10 %.4f", data.tenant, metrics["rmse"], rated["baseline_predictor"]["rmse"],
             rated["global_mean"]["rmse"], metrics["mae"], metrics["ndcg_at_10"])
    if hp.solver == "sgd":  # the published model runs the epochs chosen for the evaluated one
        hp = dataclasses.replace(hp, early_stopping=0.0,
                                 iterations=int(evaluated.hyperparameters["epochs"]))
    model = train_mf(full, hp, cfg.trainer.seed)
    model.hyperparameters |= {"epochs_chosen_on": "validation split of the train ratings"} \
        if tc.mf.solver == "sgd" else {}
    factors = model.factors()
    seconds = time.perf_counter() - t0
    reasons = gates.check(factors, len(full.user_ids), len(full.item_ids), {}, {}, None,
                          cfg.trainer)  # factor checks only (no NDCG gate for ratings)
    reasons += rating_gates(metrics, rated["baseline_predictor"],
                            _current_rmse(store, data.tenant), cfg.trainer)
    counts = np.bincount(full.R.indices, minlength=len(full.item_ids)).astype(np.float32)
    manifest = manifest_base | {
        "metrics": metrics, "train_seconds": seconds,
        "baseline_metrics": {"popularity": popularity, **{k: v for k, v in rated.items()
                                                          if k != "model"}},
        "global_mean": model.mu, "rating_scale": list(scale),
        "ratings": {"train": ratings.nnz, "published": full.nnz}}
    version = write_version(store, cfg, data.tenant, factors, full.user_ids, full.item_ids,
                            counts, manifest, verify=not reasons, progress=progress)
    log.info("%s/mf v%d written in %.1fs%s", data.tenant, version, seconds,
             "" if not reasons else " (fails a gate)")
    return Candidate(data.tenant, "mf", version, metrics, popularity, reasons, seconds)
