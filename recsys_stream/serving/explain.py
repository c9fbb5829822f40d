"""Explanations that are the model's own arithmetic: the exact decomposition of an ALS fold-in
score over the user's items, or nothing (DESIGN.md "Serving"; seed 003 §28).

For a vector solved by the implicit-ALS fold-in from items ``j`` with confidences ``c_uj``
(``contracts.foldin``: ``x_u = W^-1 Y_u^T C_u p_u`` with ``W = Y^T C_u Y + lambda I``), the score
of any item ``i`` splits over the user's items (Hu, Koren & Volinsky 2008, section 5; the
identity ``implicit``'s ``explain`` computes)::

    x_u . y_i = sum_j c_uj * y_j^T W^-1 y_i

so item ``j`` contributes ``c_uj y_j^T W^-1 y_i`` and the contributions sum to the score. One
Cholesky factor of ``W`` per request serves every answered item (one ``potrs`` with the ``k``
answered items as right-hand sides). LAPACK's ``potrf``/``potrs`` are called directly: at
f = 64 the arithmetic is a few microseconds and ``scipy.linalg.cho_factor``'s checks and batch
wrappers cost several times that (``benchmarks/serving.py --scenarios explain --profile``).

Which vectors have such a decomposition: one solved here (PROFILE_FOLD_IN, SESSION: the rows and
confidences are at hand), and a NEARLINE vector, whose profile carries the items and
confidences the worker solved it from; it is re-solved here and explained only if it is that
solution (else the profile moved on since, and an explanation would not be of this score).
BATCH vectors (the trainer's, not a fold-in of anything the server holds), BPR (a bias column,
a ranking loss), the explicit mf model and every fallback get no ``because``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.linalg.lapack import dpotrf, dpotrs

from recsys_stream.serving import session
from recsys_stream.serving.recommend import NEARLINE

TOP = 3


@dataclass(frozen=True)
class Decomposition:
    """The fold-in a vector is: its items, their confidences and the Cholesky factor of W."""

    rows: np.ndarray
    conf: np.ndarray
    factor: np.ndarray  # the upper Cholesky factor of W (``potrf``)


def decomposable(snap) -> bool:
    """Only the implicit-ALS fold-in decomposes (no bias column, no ridge model)."""
    return snap.algorithm == "als" and not snap.solver.bias_column and snap.ridge is None


def decomposition(snap, profile, vector: np.ndarray | None, source: int,
                  basis) -> Decomposition | None:
    """The decomposition of ``vector`` (solved here from ``basis``, or a NEARLINE vector that
    is the fold-in of its profile's items), else None. ``W`` is built and factored once; for a
    nearline vector the same factor re-solves ``x = W^-1 b`` to check that it is this one."""
    if vector is None or not decomposable(snap):
        return None
    b0 = basis
    if b0 is None:
        if source != NEARLINE or profile is None:
            return None
        b0 = session.basis(snap, profile)
        if b0 is None:
            return None
    rows, conf = b0
    conf = np.asarray(conf, dtype=np.float64)
    A, b = _normal_equations(snap, rows, conf)
    factor, info = dpotrf(A, lower=0, clean=0, overwrite_a=1)
    if info != 0:
        return None  # not positive definite: no decomposition to give
    if basis is None:
        x, _ = dpotrs(factor, b)
        # np.allclose(x, vector, rtol=1e-4, atol=1e-5), without its generality's cost
        if not (np.abs(x - vector) <= 1e-5 + 1e-4 * np.abs(vector)).all():
            return None  # the profile moved on since the worker solved this vector
    return Decomposition(rows, conf, factor)


def _normal_equations(snap, rows: np.ndarray, conf: np.ndarray):
    """``W = YᵀY + Y_uᵀ(C_u - I)Y_u + λ'I`` and ``b = Y_uᵀ c_u`` for one user, directly (the
    solver's batched path pads and chunks for thousands of users; one user is two small
    products). ``YᵀY`` is computed once per snapshot; ``λ' = λ n_u`` for a Spark model."""
    YtY = snap.cache.get("explain_YtY")
    if YtY is None:
        Y = np.asarray(snap.index.item_factors, dtype=np.float64)
        YtY = snap.cache["explain_YtY"] = Y.T @ Y
    Yu = np.asarray(snap.index.item_factors[rows], dtype=np.float64)
    lam = snap.solver.regularization * (max(len(rows), 1) if snap.solver.scaling == "count"
                                        else 1.0)
    A = YtY + (Yu.T * (conf - 1.0)) @ Yu
    A.flat[::A.shape[0] + 1] += lam  # the diagonal
    return A, Yu.T @ conf


def because(snap, d: Decomposition, targets: np.ndarray,
            top: int = TOP) -> list[list[tuple[str, float]]]:
    """Per target item vector (rows of ``targets``), the ``top`` items of the decomposition by
    contribution ``c_uj y_j^T W^-1 y_i`` (largest first)."""
    Yu = np.asarray(snap.index.item_factors[d.rows], dtype=np.float64)
    Wi, _ = dpotrs(d.factor, np.asarray(targets, dtype=np.float64).T)              # (f, m)
    contrib = d.conf[:, None] * (Yu @ Wi)                                            # (L, m)
    n = min(top, len(d.rows))
    best = np.argsort(-contrib, axis=0, kind="stable")[:n]                       # (n, m)
    ids = snap.item_id_list
    names = [ids[r] for r in d.rows[best].T.ravel().tolist()]
    values = np.take_along_axis(contrib, best, axis=0).T.ravel().tolist()
    pairs = list(zip(names, values))
    return [pairs[m * n:(m + 1) * n] for m in range(contrib.shape[1])]


def contributions(snap, d: Decomposition, target: np.ndarray) -> np.ndarray:
    """Every item's contribution to one target's score (for tests and tools)."""
    w, _ = dpotrs(d.factor, np.asarray(target, np.float64))
    return d.conf * (np.asarray(snap.index.item_factors[d.rows], np.float64) @ w)


def explain_items(snap, delta, d: Decomposition,
                  items: Sequence[str]) -> list[list[tuple[str, float]]]:
    """``because`` of each answered item: its top contributions, or [] for an item with no
    factors (an exploration slot's item the model and the delta do not know)."""
    Y = snap.index.item_factors
    width = Y.shape[1]
    known, vecs = [], []
    fresh = delta.young if delta is not None else frozenset()
    for n, i in enumerate(items):
        if i in snap.item_row and i not in fresh:
            known.append(n)
            vecs.append(Y[snap.item_row[i]])
        elif delta is not None and i in delta.row and delta.Y.shape[1] == width:
            known.append(n)
            vecs.append(delta.Y[delta.row[i]])
    out: list[list[tuple[str, float]]] = [[] for _ in items]
    if known:
        for n, top in zip(known, because(snap, d, np.stack(vecs))):
            out[n] = top
    return out
