"""Biased matrix factorisation of explicit ratings, by ALS or by SGD (algorithm ``mf``).

The model (Koren, Bell & Volinsky 2009)::

    r̂_ui = μ + b_u + b_i + x_u·y_i

minimises ``Σ_(u,i) (r_ui − r̂_ui)² + λ(|x_u|² + |y_i|²) + λ_b(b_u² + b_i²)`` over the latest ratings.

- ``solver = "als"``: alternate closed-form ridge steps (``contracts.ridge.BiasedRidgeSolver``):
  every item's ``[y_i, b_i]`` against the fixed ``[x_u, 1]``, then every user's ``[x_u, b_u]``
  against ``[y_i, 1]``; λ per row (times the row's rating count with ``scale_regularization``).
  Starts from random users and the damped baseline's user biases; ends on a user step, so a
  stored user vector is exactly the nearline fold-in of the same ratings.
- ``solver = "sgd"``: Funk / Koren updates per rating in random order (``batch/mf_sgd.py``,
  compiled with numba), ``e = r − r̂``::

      b_u += η(e − λ b_u)   b_i += η(e − λ b_i)   x_u += η(e y_i − λ x_u)   y_i += η(e x_u − λ y_i)

  The epoch count is chosen by early stopping on a validation split carved from the training
  ratings (each user's latest ``early_stopping`` share), then the model is refitted on all of
  them for that many epochs. Here λ is per rating, so the objective for fixed items is the ridge
  with ``λ·n_u``; the user side is finished by that exact step (``final user solve``), which
  makes the stored users equal the nearline fold-in too.

Stored like BPR's factors (DESIGN.md): item factors ``[y_i, b_i]`` (``k+1`` wide, bias column),
user factors ``[x_u, 1]``, so the index over items answers the query ``[x_u, 1]`` with
``b_i + x_u·y_i``: the ranking by predicted rating, since ``μ + b_u`` is the same for every item.
``b_u`` and ``μ`` travel as extra arrays of the version (``user_bias``, ``global_mean``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recsys_stream.batch.algorithms import Factors
from recsys_stream.batch.ratings import Ratings, baseline_biases
from recsys_stream.config import MfConfig
from recsys_stream.contracts.ridge import BiasedRidgeSolver, recency_weights

log = logging.getLogger(__name__)
SOLVERS = ("als", "sgd")
# users with fewer train ratings keep them all when the SGD validation split is carved
MIN_RATINGS_FOR_VALIDATION = 5


@dataclass
class MfModel:
    """A trained biased MF model over ``ratings``' user and item rows."""

    mu: float
    X: np.ndarray        # (n_users, k) user factors
    b_u: np.ndarray      # (n_users,)
    Y: np.ndarray        # (n_items, k) item factors
    b_i: np.ndarray      # (n_items,)
    hyperparameters: dict = field(default_factory=dict)
    history: list[float] = field(default_factory=list)  # SGD: validation RMSE per epoch

    def predict(self, users: np.ndarray, items: np.ndarray, lo: float, hi: float) -> np.ndarray:
        """``r̂`` for rows (``-1``: unknown; then only the known parts of the baseline count),
        clipped to ``[lo, hi]``."""
        u, i = np.asarray(users), np.asarray(items)
        ku, ki = u >= 0, i >= 0
        pred = np.full(len(u), self.mu)
        pred[ku] += self.b_u[u[ku]]
        pred[ki] += self.b_i[i[ki]]
        both = ku & ki
        pred[both] += np.einsum("nk,nk->n", self.X[u[both]], self.Y[i[both]])
        return np.clip(pred, lo, hi)

    def factors(self) -> Factors:
        """The stored form: items ``[y_i, b_i]``, users ``[x_u, 1]``, ``b_u`` and ``μ`` extra."""
        n_users = len(self.X)
        return Factors("mf", np.hstack([self.Y, self.b_i[:, None]]).astype(np.float32),
                       np.hstack([self.X, np.ones((n_users, 1))]).astype(np.float32),
                       self.hyperparameters, bias_column=True,
                       extras={"user_bias": self.b_u.astype(np.float32),
                               "global_mean": np.array(self.mu, dtype=np.float64)})


def foldin_settings(hp: MfConfig) -> dict:
    """The ridge the user step (trainer, worker, server) solves for this configuration."""
    if hp.solver == "sgd":  # per-rating λ: the exact user step regularises by λ·n_u
        return {"regularization": hp.regularization,
                "bias_regularization": hp.regularization, "scale_by_count": True,
                "recency_half_life_days": 0.0}
    return {"regularization": hp.regularization, "bias_regularization": hp.bias_regularization,
            "scale_by_count": hp.scale_regularization,
            "recency_half_life_days": hp.recency_half_life_days}


def solver_from(foldin: dict, item_factors: np.ndarray) -> BiasedRidgeSolver:
    """The user-step solver of a stored model (``item_factors`` without the bias column)."""
    return BiasedRidgeSolver(item_factors, float(foldin["regularization"]),
                             float(foldin["bias_regularization"]),
                             bool(foldin["scale_by_count"]))


def user_step(ratings: Ratings, mu: float, Y: np.ndarray, b_i: np.ndarray,
              foldin: dict) -> tuple[np.ndarray, np.ndarray]:
    """Every user's exact ``[x_u, b_u]`` against fixed ``Y``, ``b_i``, ``μ``."""
    R = ratings.R
    w = recency_weights(R.indptr, ratings.times, foldin.get("recency_half_life_days", 0.0))
    return solver_from(foldin, Y).solve(R.indptr, R.indices, R.data - mu - b_i[R.indices], w)


def train_mf(ratings: Ratings, hp: MfConfig, seed: int) -> MfModel:
    """Train with ``hp.solver``; see the module docstring."""
    if hp.solver not in SOLVERS:
        raise ValueError(f"mf solver must be one of {SOLVERS}, got {hp.solver!r}")
    return train_als(ratings, hp, seed) if hp.solver == "als" else train_sgd(ratings, hp, seed)


def _hyperparameters(hp: MfConfig, seed: int, **more) -> dict:
    d = {"solver": hp.solver, "factors": hp.factors, "regularization": hp.regularization,
         "bias_regularization": hp.bias_regularization,
         "scale_regularization": hp.scale_regularization, "iterations": hp.iterations,
         "damping": hp.damping, "init_std": hp.init_std, "seed": seed,
         "recency_half_life_days": hp.recency_half_life_days,
         "foldin": foldin_settings(hp), "exact_final_user_solve": True}
    if hp.solver == "sgd":
        d |= {"learning_rate": hp.learning_rate, "early_stopping": hp.early_stopping,
              "patience": hp.patience}
    return d | more


def train_als(ratings: Ratings, hp: MfConfig, seed: int) -> MfModel:
    """Biased ALS: ``hp.iterations`` sweeps of (item step, user step)."""
    R = ratings.R
    n_users, n_items = R.shape
    rng = np.random.default_rng(seed)
    mu, b_u, _ = baseline_biases(R, hp.damping)
    X = rng.normal(0.0, hp.init_std, (n_users, hp.factors))
    Y, b_i = np.zeros((n_items, hp.factors)), np.zeros(n_items)
    C = R.tocsc()  # item-major: each item's raters
    item_users = C.indices.astype(np.int64)
    # recency weights (user-referred) per rating, and the same ratings' weights in CSC order
    w = recency_weights(R.indptr, ratings.times, hp.recency_half_life_days)
    wc = None
    if w is not None:
        perm = sp.csr_matrix((np.arange(R.nnz, dtype=np.float64) + 1, R.indices, R.indptr),
                             shape=R.shape).tocsc()
        wc = w[perm.data.astype(np.int64) - 1]
    lam, lam_b, scale = hp.regularization, hp.bias_regularization, hp.scale_regularization
    for _ in range(max(1, hp.iterations)):
        # items: [y_i, b_i] = ridge of r − μ − b_u on [x_u, 1]
        Y, b_i = BiasedRidgeSolver(X, lam, lam_b, scale).solve(
            C.indptr, item_users, C.data - mu - b_u[item_users], wc)
        # users: [x_u, b_u] = ridge of r − μ − b_i on [y_i, 1]
        X, b_u = BiasedRidgeSolver(Y, lam, lam_b, scale).solve(
            R.indptr, R.indices, R.data - mu - b_i[R.indices], w)
    return MfModel(mu, X, b_u, Y, b_i, _hyperparameters(hp, seed))


def validation_split(ratings: Ratings, fraction: float) -> tuple[Ratings, np.ndarray]:
    """Each user's latest ``fraction`` of ratings (by time) apart, for early stopping.

    Returns the remaining ratings (same rows and columns) and a boolean mask over ``R.data``
    of the held-out ones. Users with fewer than ``MIN_RATINGS_FOR_VALIDATION`` keep all.
    """
    R = ratings.R
    held = np.zeros(R.nnz, dtype=bool)
    for u in range(R.shape[0]):
        a, b = R.indptr[u], R.indptr[u + 1]
        n = b - a
        n_val = int(round(n * fraction)) if n >= MIN_RATINGS_FOR_VALIDATION else 0
        if n_val:
            order = np.argsort(ratings.times[a:b], kind="stable")
            held[a + order[-n_val:]] = True
    keep = ~held
    # masking keeps each row's column order: the CSR stays sorted and the times aligned
    rows = np.repeat(np.arange(R.shape[0]), np.diff(R.indptr))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=R.shape[0]))])
    fit = sp.csr_matrix((R.data[keep], R.indices[keep], indptr), shape=R.shape)
    return Ratings(ratings.user_ids, ratings.item_ids, fit, ratings.times[keep]), held


def train_sgd(ratings: Ratings, hp: MfConfig, seed: int) -> MfModel:
    """SGD with early stopping on a validation split carved from ``ratings`` (module docstring)."""
    from recsys_stream.batch.mf_sgd import sgd_fit
    epochs, history = hp.iterations, []
    if hp.early_stopping > 0:
        fit, held = validation_split(ratings, hp.early_stopping)
        rows = np.repeat(np.arange(ratings.R.shape[0]), np.diff(ratings.R.indptr))
        val = (rows[held], ratings.R.indices[held].astype(np.int64), ratings.R.data[held])
        if len(val[0]) and fit.nnz:
            *_, history = sgd_fit(fit, hp, seed, validation=val)
            epochs = int(np.argmin(history)) + 1
            log.info("mf sgd: validation RMSE %.4f at epoch %d of %d", min(history), epochs,
                     len(history))
    mu, b_u, Y, b_i, X, _ = sgd_fit(ratings, hp, seed, epochs=epochs)
    # finish the user side exactly: the minimiser of the same objective for fixed items
    X, b_u = user_step(ratings, mu, Y, b_i, foldin_settings(hp))
    return MfModel(mu, X, b_u, Y, b_i, _hyperparameters(hp, seed, epochs=epochs), history)
