"""The SGD inner loop of biased MF (``batch/mf.py``), compiled with numba.

One epoch visits every rating once in a random order and applies the Funk / Koren updates
(``e = r − μ − b_u − b_i − x_u·y_i``; both factor updates use the values before the step)::

    b_u += η(e − λ b_u)   b_i += η(e − λ b_i)   x_u += η(e y_i − λ x_u)   y_i += η(e x_u − λ y_i)

A per-rating Python loop would cost ~1 µs a rating per factor; numba compiles the loop to
machine code (``cache=True``: compiled once per machine, then loaded). The order of each epoch
comes from numpy's seeded generator, so a fit is reproducible for a seed.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from recsys_stream.batch.ratings import Ratings
from recsys_stream.config import MfConfig


@njit(cache=True, nogil=True)
def _epoch(users, items, ratings, order, mu, bu, bi, P, Q, lr, reg):  # pragma: no cover (jit)
    k = P.shape[1]
    for n in order:
        u, i = users[n], items[n]
        dot = 0.0
        for f in range(k):
            dot += P[u, f] * Q[i, f]
        e = ratings[n] - (mu + bu[u] + bi[i] + dot)
        bu[u] += lr * (e - reg * bu[u])
        bi[i] += lr * (e - reg * bi[i])
        for f in range(k):
            pu, qi = P[u, f], Q[i, f]
            P[u, f] += lr * (e * qi - reg * pu)
            Q[i, f] += lr * (e * pu - reg * qi)


@njit(cache=True, nogil=True)
def _rmse(users, items, ratings, mu, bu, bi, P, Q, lo, hi):  # pragma: no cover (jit)
    k, sq = P.shape[1], 0.0
    for n in range(len(users)):
        u, i = users[n], items[n]
        pred = mu
        if u >= 0:
            pred += bu[u]
        if i >= 0:
            pred += bi[i]
        if u >= 0 and i >= 0:
            for f in range(k):
                pred += P[u, f] * Q[i, f]
        pred = min(max(pred, lo), hi)
        sq += (ratings[n] - pred) ** 2
    return np.sqrt(sq / max(len(users), 1))


def sgd_fit(ratings: Ratings, hp: MfConfig, seed: int, epochs: int | None = None,
            validation: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
            scale: tuple[float, float] = (-np.inf, np.inf)):
    """Fit by SGD; returns ``(μ, b_u, Y, b_i, X, history)``.

    Parameters
    ----------
    ratings : the training ratings
    hp : solver settings (factors, learning_rate, regularization, iterations, patience, init_std)
    seed : initial factors and epoch orders
    epochs : run exactly this many (default ``hp.iterations``) when no ``validation`` is given
    validation : (user rows, item rows, ratings): run up to ``hp.iterations`` epochs, stop after
        ``hp.patience`` epochs without a lower validation RMSE, and return the factors of the
        best epoch; ``history`` holds the validation RMSE after every epoch run
    scale : the rating scale predictions are clipped to when the validation RMSE is measured
    """
    R = ratings.R
    n_users, n_items = R.shape
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(R.indptr))
    items = R.indices.astype(np.int64)
    r = R.data.astype(np.float64)
    mu = float(r.mean()) if len(r) else 0.0
    P = rng.normal(0.0, hp.init_std, (n_users, hp.factors))
    Q = rng.normal(0.0, hp.init_std, (n_items, hp.factors))
    bu, bi = np.zeros(n_users), np.zeros(n_items)
    history: list[float] = []
    best = None
    n_epochs = hp.iterations if validation is not None else (epochs or hp.iterations)
    for _ in range(n_epochs):
        _epoch(users, items, r, rng.permutation(len(r)), mu, bu, bi, P, Q,
               float(hp.learning_rate), float(hp.regularization))
        if validation is None:
            continue
        history.append(float(_rmse(*validation, mu, bu, bi, P, Q, *scale)))
        if best is None or history[-1] < best[0]:
            best = (history[-1], bu.copy(), Q.copy(), bi.copy(), P.copy())
        elif len(history) - 1 - int(np.argmin(history)) >= hp.patience:
            break
    if best is not None:
        _, bu, Q, bi, P = best
    return mu, bu, Q, bi, P, history
