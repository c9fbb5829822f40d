"""Explanations that are the model's own arithmetic: the exact decomposition of an ALS fold-in
score over the user's items, or nothing (DESIGN.md "Serving"; seed 003 §28).

For a vector solved by the implicit-ALS fold-in from items ``j`` with confidences ``c_uj``
(``contracts.foldin``: ``x_u = W^-1 Y_u^T C_u p_u`` with ``W = Y^T C_u Y + lambda I``), the score
of any item ``i`` splits over the user's items (Hu, Koren & Volinsky 2008, section 5; the
identity ``implicit``'s ``explain`` computes)::

    x_u . y_i = sum_j c_uj * y_j^T W^-1 y_i

so item ``j`` contributes ``c_uj y_j^T W^-1 y_i`` and the contributions sum to the score. One
Cholesky factor of ``W`` per request serves every answered item (``cho_solve`` with the ``k``
answered items as right-hand sides).

Which vectors have such a decomposition: one solved here (PROFILE_FOLD_IN, SESSION: the rows and
confidences are at hand), and a NEARLINE vector, whose profile carries the items and
confidences the worker solved it from; it is re-solved here and explained only if it is that
solution (else the profile moved on since, and an explanation would not be of this score).
BATCH vectors (the trainer's, not a fold-in of anything the server holds), BPR (a bias column,
a ranking loss), the explicit mf model and every fallback get no ``because``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg

from recsys_stream.serving import session
from recsys_stream.serving.recommend import NEARLINE

TOP = 3


def explanation_basis(snap, profile, answer_vector: np.ndarray | None, source: int,
                      basis) -> tuple[np.ndarray, np.ndarray] | None:
    """The (rows, confidences) ``answer_vector`` is the exact fold-in of, or None."""
    if answer_vector is None or snap.algorithm != "als" or snap.solver.bias_column \
            or snap.ridge is not None:
        return None
    if basis is not None:
        return basis
    if source == NEARLINE and profile is not None:
        b = session.basis(snap, profile)
        if b is not None and np.allclose(snap.solver.solve_one(*b), answer_vector,
                                         rtol=1e-4, atol=1e-5):
            return b
    return None


def because(snap, basis: tuple[np.ndarray, np.ndarray], targets: np.ndarray,
            top: int = TOP) -> list[list[tuple[str, float]]]:
    """Per target item vector (rows of ``targets``), the ``top`` items of the basis by
    contribution ``c_uj y_j^T W^-1 y_i`` (largest first)."""
    rows, conf = basis
    A, _ = snap.solver.normal_equations(np.array([0, len(rows)]), rows, conf)
    factor = scipy.linalg.cho_factor(A[0])
    Yu = np.asarray(snap.index.item_factors[rows], dtype=np.float64)
    Wi = scipy.linalg.cho_solve(factor, np.asarray(targets, dtype=np.float64).T)  # (k, m)
    contrib = conf[:, None] * (Yu @ Wi)                                          # (L, m)
    out = []
    for col in contrib.T:
        best = np.argsort(-col, kind="stable")[:top]
        out.append([(snap.item_id_list[rows[j]], float(col[j])) for j in best])
    return out


def contributions(snap, basis, target: np.ndarray) -> np.ndarray:
    """Every basis item's contribution to one target's score (for tests and tools)."""
    rows, conf = basis
    A, _ = snap.solver.normal_equations(np.array([0, len(rows)]), rows, conf)
    w = scipy.linalg.cho_solve(scipy.linalg.cho_factor(A[0]), np.asarray(target, np.float64))
    return conf * (np.asarray(snap.index.item_factors[rows], np.float64) @ w)


def explain_items(snap, delta, basis, items: Sequence[str]) -> list[list[tuple[str, float]]]:
    """``because`` of each answered item: its top contributions, or [] for an item with no
    factors (an exploration slot's item the model and the delta do not know)."""
    Y = snap.index.item_factors
    width = Y.shape[1]
    known, vecs = [], []
    for n, i in enumerate(items):
        if i in snap.item_row:
            known.append(n)
            vecs.append(Y[snap.item_row[i]])
        elif delta is not None and i in delta.row and delta.Y.shape[1] == width:
            known.append(n)
            vecs.append(delta.Y[delta.row[i]])
    out: list[list[tuple[str, float]]] = [[] for _ in items]
    if known:
        for n, top in zip(known, because(snap, basis, np.stack(vecs))):
            out[n] = top
    return out
