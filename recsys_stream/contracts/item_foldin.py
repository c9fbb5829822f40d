"""Closed-form fold-in of new items against fixed user vectors (DESIGN.md, "Fold-in").

An item ``i`` that model version ``v`` does not know, touched by users ``U_i`` with confidences
``c_i`` (``p = 1`` on them, ``p = 0`` and ``c = 1`` on every other user of ``v``), gets the exact
least-squares item step of implicit ALS (Hu, Koren & Volinsky) against ``v``'s user factors::

    y_i = (XtX + X_i^T (C_i - I) X_i + lambda*I)^-1  X_i^T C_i p_i

``XtX`` is the Gram of the version's batch user factors, formed once per version (``implicit``'s
``XtX`` in ``recalculate_item``); ``X_i`` holds the users' *current* vectors of ``v`` (their
nearline fold-in), which is what the served item must score well against.

BPR models (``implicit``): item factors are ``k+1`` wide with the item bias last, and every user
vector carries a 1 in that column. The item step solves the same weighted least squares over
the whole row ``[y_i, b_i]`` against ``[x_u, 1]``::

    min_{y,b}  sum_u c_ui (p_ui - x_u.y - b)^2 + lambda (|y|^2 + b^2)

i.e. the formula above with ``X`` including the constant column: ``XtX``'s corner is the number
of users and its last row ``sum_u x_u``. The bias is shrunk by the same lambda (a ridge on the
whole row; ``foldin_regularization`` of the manifest), so a new item's bias moves from 0 only as
far as its users justify. The returned row is ``k+1`` wide, its last entry the bias, so every
score stays the plain inner product ``x_u . y_i``.

Models fitted by Spark MLlib (manifest ``regularization_scaling = "count"``) weight lambda by
the item's user count, as MLlib's ``ALS.computeFactors`` does (``regParam * numExplicits``; every
rating the engine hands it is positive)::

    y_i = (XtX + X_i^T (C_i - I) X_i + lambda*n_i*I)^-1  X_i^T C_i p_i,    n_i = |U_i|

the item-side twin of the user fold-in's scaling (``contracts.foldin``).

Items are solved together: padded to the longest user list of a chunk, one batched
``numpy.linalg.solve`` (hand-written rather than one ``implicit`` call per item: ``implicit``'s
``recalculate_item`` would need a model object holding the version's user factors, and its
solve is the same normal equations).
"""

from __future__ import annotations

import numpy as np

# Upper bound on the padded (items x users x width) block of one chunk, in float64 values.
_CHUNK_VALUES = 2_000_000


class ItemFoldInSolver:
    """Solves new items' vectors against one model version's user factors.

    Parameters
    ----------
    user_factors : ndarray of shape (n_users, width)
        The version's batch user factors (BPR: with the trailing column of ones).
    regularization : float
        lambda.
    scaling : "none" or "count"
        "none": lambda as it is (``implicit``); "count": lambda * n_i (Spark MLlib), n_i the
        item's users given to :meth:`solve`.
    """

    def __init__(self, user_factors: np.ndarray, regularization: float,
                 scaling: str = "none") -> None:
        if scaling not in ("none", "count"):
            raise ValueError(f"regularization scaling must be 'none' or 'count', got {scaling!r}")
        X = np.asarray(user_factors, dtype=np.float64)
        self.width = X.shape[1]
        self.regularization = float(regularization)
        self.scaling = scaling
        # XtX (+ lambda*I unless lambda is per item), once per model version
        self._A0 = X.T @ X
        if scaling == "none":
            self._A0 += self.regularization * np.eye(self.width)

    def solve(self, vectors: list[np.ndarray], confidences: list[np.ndarray]) -> np.ndarray:
        """The vector of each item from its users' vectors and confidences.

        Parameters
        ----------
        vectors : per item, ndarray (n_users_i, width): ``X_i``
        confidences : per item, ndarray (n_users_i,): ``c`` (not ``c - 1``)

        Returns
        -------
        ndarray of shape (n_items, width), float32
        """
        n = len(vectors)
        out = np.empty((n, self.width), dtype=np.float64)
        lengths = np.array([len(v) for v in vectors], dtype=np.int64)
        order = np.argsort(lengths, kind="stable")
        start = 0
        while start < n:
            stop = start + 1
            # grow the chunk while its padded block stays within budget
            while stop < n and (stop - start + 1) * max(int(lengths[order[stop]]), 1) \
                    * self.width <= _CHUNK_VALUES:
                stop += 1
            items = order[start:stop]
            L = max(int(lengths[items].max()), 1)
            B = len(items)
            Xi = np.zeros((B, L, self.width))
            c = np.zeros((B, L))
            for j, it in enumerate(items):
                m = lengths[it]
                Xi[j, :m] = vectors[it]
                c[j, :m] = confidences[it]
            w = np.where(c > 0, c - 1.0, 0.0)  # C_i - I on the item's users, 0 on padding
            # A_i = XtX + lambda I + X_i^T (C_i - I) X_i ;  b_i = X_i^T C_i p_i
            A = self._A0 + np.matmul(Xi.transpose(0, 2, 1) * w[:, None, :], Xi)
            if self.scaling == "count":  # + lambda * n_i * I per item
                A += (self.regularization * lengths[items])[:, None, None] * np.eye(self.width)
            b = np.einsum("bl,blk->bk", c, Xi)
            out[items] = np.linalg.solve(A, b[..., None])[..., 0]
            start = stop
        return out.astype(np.float32)

    def solve_one(self, vectors: np.ndarray, confidences: np.ndarray) -> np.ndarray:
        """Convenience wrapper of :meth:`solve` for one item."""
        return self.solve([np.asarray(vectors)], [np.asarray(confidences)])[0]
