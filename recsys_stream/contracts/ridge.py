"""Closed-form ridge step of biased matrix factorisation: one side's ``[w, b]`` against the other's.

The explicit model (DESIGN.md, "Fold-in"; Koren, Bell & Volinsky 2009) predicts

    r̂_ui = μ + b_u + b_i + x_u·y_i

With the item side fixed, each user's ``[x_u, b_u]`` is the ridge regression of the residuals
``t_ui = r_ui − μ − b_i`` on ``f_i = [y_i, 1]`` over the items the user rated::

    [x_u, b_u] = (F_uᵀF_u + Λ_u)⁻¹ F_uᵀ t_u,    Λ_u = diag(λ_u, …, λ_u, λ_b,u)

and the item step is the same with the roles swapped (``t_ui = r_ui − μ − b_u``, ``f_u = [x_u, 1]``).
``λ_u = λ`` or, with ``scale_by_count``, ``λ·n_u`` (weighted-λ regularisation, Zhou et al. 2008;
the bias term scales alike). This one class is the trainer's ALS user and item step, the worker's
nearline fold-in and the server's fold-in fallback, so all three give the same vector for the same
ratings (tests prove it).

Rows are solved together: sorted by their number of ratings and cut into chunks of similar
length, each chunk one padded batched solve (no Python loop per row). Written by hand: ``implicit``
and the other libraries here solve only the implicit-feedback system, none this biased one.
"""

from __future__ import annotations

import numpy as np

# Upper bound on the padded (rows x ratings x width) block of one chunk, in float64 values.
_CHUNK_VALUES = 2_000_000


class BiasedRidgeSolver:
    """Solves ``[w, b]`` per row against fixed factors ``F`` of the other side.

    Parameters
    ----------
    factors : ndarray of shape (n, k)
        The fixed side's factors (``y_i`` for the user step, ``x_u`` for the item step).
    regularization : float
        λ on ``w``.
    bias_regularization : float
        λ_b on ``b``.
    scale_by_count : bool
        Multiply both by the row's number of ratings.
    """

    def __init__(self, factors: np.ndarray, regularization: float, bias_regularization: float,
                 scale_by_count: bool = False) -> None:
        F = np.asarray(factors, dtype=np.float64)
        # [f, 1]: the bias is the coefficient of a constant column
        self._F = np.hstack([F, np.ones((len(F), 1))])
        self.factors = F.shape[1]
        self.regularization = float(regularization)
        self.bias_regularization = float(bias_regularization)
        self.scale_by_count = bool(scale_by_count)
        self._lam = np.array([self.regularization] * self.factors + [self.bias_regularization])

    def solve(self, indptr: np.ndarray, indices: np.ndarray, targets: np.ndarray,
              weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Solve every row of a CSR batch (columns = rows of ``factors``).

        Parameters
        ----------
        indptr, indices : CSR structure of the rows' ratings
        targets : the residuals ``t`` (the rating minus μ and the fixed side's bias)
        weights : optional weight of each rating's squared error (``FᵀWF + Λ``, ``FᵀWt``); with
            ``scale_by_count`` the count is then the sum of the row's weights

        Returns
        -------
        w : ndarray of shape (n_rows, k), float64
        b : ndarray of shape (n_rows,), float64 (0 for a row without ratings)
        """
        indptr = np.asarray(indptr, dtype=np.int64)
        indices = np.asarray(indices, dtype=np.int64)
        t = np.asarray(targets, dtype=np.float64)
        wt = None if weights is None else np.asarray(weights, dtype=np.float64)
        n_rows, d = len(indptr) - 1, self.factors + 1
        out = np.zeros((n_rows, d))
        lengths = np.diff(indptr)
        counts = lengths.astype(np.float64) if wt is None else \
            np.bincount(np.repeat(np.arange(n_rows), lengths), wt, minlength=n_rows)
        for rows, L in _chunks(lengths, d):
            if L == 0:
                continue  # no ratings: w = 0, b = 0 (the prior)
            pos = indptr[rows][:, None] + np.arange(L)[None, :]
            mask = pos < indptr[rows + 1][:, None]
            pos = np.where(mask, pos, 0)
            Fa = self._F[np.where(mask, indices[pos], 0)] * mask[:, :, None]  # (B, L, d)
            tt = np.where(mask, t[pos], 0.0)
            # a row without ratings padded into this chunk solves 0 (Λ > 0, rhs 0)
            n = np.where(lengths[rows] > 0, counts[rows], 1.0)[:, None]
            lam = self._lam[None, :] * (n if self.scale_by_count else 1.0)
            # A = FᵀWF + Λ (syrk-shaped product: W^½F), rhs = FᵀWt
            if wt is not None:
                sw = np.sqrt(np.where(mask, wt[pos], 0.0))
                Fa, tt = Fa * sw[:, :, None], tt * sw
            A = np.matmul(Fa.transpose(0, 2, 1), Fa)
            A[:, np.arange(d), np.arange(d)] += lam
            rhs = np.einsum("bl,bld->bd", tt, Fa)
            out[rows] = np.linalg.solve(A, rhs[..., None])[..., 0]
        return out[:, :-1], out[:, -1]

    def solve_one(self, cols: np.ndarray, targets: np.ndarray,
                  weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """:meth:`solve` for one row; returns ``(w, b)``."""
        w, b = self.solve(np.array([0, len(cols)]), np.asarray(cols), np.asarray(targets),
                          weights)
        return w[0], float(b[0])


def _chunks(lengths: np.ndarray, d: int):
    """Rows sorted by length, in chunks of similar length within the value budget: (rows, L)."""
    order = np.argsort(lengths, kind="stable")
    n, start = len(order), 0
    while start < n:
        L0 = int(lengths[order[start]])
        stop, L = start + 1, L0
        while stop < n:
            nxt = int(lengths[order[stop]])
            # little padding (longest at most max(2, L0/8) over the shortest), bounded block
            if nxt > L0 + max(2, L0 // 8) or (stop - start + 1) * max(nxt, 1) * d > _CHUNK_VALUES:
                break
            L, stop = nxt, stop + 1
        yield order[start:stop], L
        start = stop


def fold_in_ratings(solver: BiasedRidgeSolver, mu: float, item_bias: np.ndarray,
                    indptr: np.ndarray, rows: np.ndarray, ratings: np.ndarray,
                    weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Users' ``[x_u, 1]`` and ``b_u`` from their latest ratings against a fixed mf version.

    ``rows`` are the rated items' rows in the version (CSR per user, unknown items left out),
    ``item_bias`` its ``b_i``: the user step ``[x_u, b_u] = ridge(r − μ − b_i on [y_i, 1])``.
    Returns ``(X1, b_u)`` with ``X1 = [x_u, 1]`` (float32, the stored width) and ``b_u``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    x, b = solver.solve(indptr, rows, np.asarray(ratings, np.float64) - mu - item_bias[rows],
                        weights)
    return np.hstack([x, np.ones((len(x), 1))]).astype(np.float32), b


_MS_PER_DAY = 86_400_000.0


def recency_weights(indptr: np.ndarray, times_ms: np.ndarray, half_life_days: float
                    ) -> np.ndarray | None:
    """Per-rating weights ``2^(−(T_u − t)/half_life)``, ``T_u`` = the row's latest rating time.

    The user's own clock, as the implicit decay (``contracts.confidence``): the same ratings
    give the same weights in the trainer and in the worker. ``half_life_days <= 0``: None (all 1).
    """
    if not half_life_days or half_life_days <= 0:
        return None
    indptr = np.asarray(indptr, dtype=np.int64)
    t = np.asarray(times_ms, dtype=np.float64)
    lengths = np.diff(indptr)
    if not len(t):
        return np.zeros(0)
    latest = np.maximum.reduceat(t, np.minimum(indptr[:-1], len(t) - 1))
    age = np.repeat(latest, lengths) - t
    return np.exp2(-np.maximum(age, 0.0) / (half_life_days * _MS_PER_DAY))
