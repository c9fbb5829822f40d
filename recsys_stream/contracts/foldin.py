"""Closed-form fold-in of user vectors against fixed item factors (DESIGN.md, "Fold-in").

For a user u with confidences ``c_u`` over their items and ``p_u = 1``::

    x_u = (YtY + Y_u^T (C_u - I) Y_u + lambda*I)^-1  Y_u^T C_u p_u

This is the exact least-squares step of implicit ALS (Hu, Koren & Volinsky), the same solve the
trainer uses for its final user vectors and that ``implicit``'s ``recalculate_user`` performs, so
nearline and batch vectors agree.

BPR models from ``implicit`` carry an item-bias column (item factors are ``k+1`` wide and the
user's matching entry is fixed at 1). The bias is held fixed in the same weighted least squares,
``min sum_i c_i (p_i - x.y_i - b_i)^2 + lambda |x|^2`` over all items, which gives::

    x_u = (YtY + Y_u^T (C_u - I) Y_u + lambda*I)^-1 (Y_u^T C_u p_u - Y^T b - Y_u^T (C_u - I) b_u)

over the first ``k`` columns; the returned vector has the trailing 1 appended so that every
score in the system is a plain inner product ``x . y``.

Users are solved together: sorted by history length and cut into chunks of similar length, each
chunk is one padded batched solve (no Python loop per user). Short histories (L <= k *
``WOODBURY_RATIO``, the common case in a stream) use the Woodbury identity with
``A0 = YtY + lambda*I`` inverted once per model version, so each user costs an L x L solve
instead of a k x k one::

    A_u^-1 = A0^-1 - A0^-1 Y_u^T (I + W_u Y_u A0^-1 Y_u^T)^-1 W_u Y_u A0^-1,   W_u = C_u - I

The rows ``g_i = y_i A0^-1`` are the same for every user of the version, so they are computed
once per item when first met and kept (``G = Y A0^-1``, filled lazily: a model of a million items
pays only for the items its users touch). A user then costs a gather of ``G_u``, the ``L x L``
matrix ``G_u Y_u^T`` (``L^2 k``) and its solve (``L^3 / 3``), against ``L k^2 / 2 + k^3 / 3`` for
forming and solving the ``k x k`` system: cheaper up to L ~ 0.75 k (measured, k = 64).

Models fitted by Spark MLlib (manifest ``regularization_scaling = "count"``) weight lambda by
the user's number of items, as ``ALS.scala`` ``computeFactors`` does (ALS-WR, Zhou et al. 2008)::

    x_u = (YtY + Y_u^T (C_u - I) Y_u + lambda * n_u * I)^-1  Y_u^T C_u p_u,   n_u = |items of u|

``A0`` then differs per user, so there is no shared inverse and no Woodbury shortcut: every user
is one batched k x k solve.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack

# How lambda is weighted per user: "none" (implicit) or "count" (Spark MLlib's ALS-WR).
SCALINGS = ("none", "count")

# Upper bound on the padded (users x history x factors) block of one chunk, in float64 values.
_CHUNK_VALUES = 2_000_000
# Histories of at most k * WOODBURY_RATIO items are solved by Woodbury (see the module doc).
WOODBURY_RATIO = 0.75


class FoldInSolver:
    """Solves user vectors against one model version's item factors.

    Parameters
    ----------
    item_factors : ndarray of shape (n_items, k) or (n_items, k+1) with ``bias_column``
    regularization : float
        lambda; with ``scaling="none"`` not scaled by the user's interaction count (as in
        ``implicit``).
    bias_column : bool
        The last item column is a bias with the user's entry fixed at 1 (``implicit`` BPR).
    scaling : "none" or "count"
        ``"count"``: lambda is multiplied by the user's number of items (Spark MLlib).
    """

    def __init__(self, item_factors: np.ndarray, regularization: float,
                 bias_column: bool = False, scaling: str = "none") -> None:
        if scaling not in SCALINGS:
            raise ValueError(f"regularization scaling must be one of {SCALINGS}, got {scaling!r}")
        if scaling == "count" and bias_column:
            raise ValueError("count-scaled regularization is Spark ALS's; it has no bias column")
        Y = np.asarray(item_factors, dtype=np.float64)
        self.scaling = scaling
        self.bias_column = bias_column
        if bias_column:
            self._Y, self._b = np.ascontiguousarray(Y[:, :-1]), np.ascontiguousarray(Y[:, -1])
            self._Ytb = self._Y.T @ self._b  # Y^T b, once per model version
        else:
            self._Y, self._b, self._Ytb = Y, None, None
        k = self._Y.shape[1]
        self._YtY = self._Y.T @ self._Y
        # YtY + lambda*I, once per model version (with "count" scaling only a base: see _gram)
        self._A0 = self._YtY + regularization * np.eye(k)
        self._A0inv = np.linalg.inv(self._A0)  # SPD and well conditioned thanks to lambda
        self.n_items, self.factors = self._Y.shape
        self.regularization = regularization
        self._reset_rows()

    def _reset_rows(self) -> None:
        """Forget the rows ``g_i = y_i A0^-1`` (their A0 changed, or there are none yet)."""
        # np.empty maps pages lazily: rows never touched cost no memory
        self._G = np.empty_like(self._Y)
        self._have_G = np.zeros(len(self._Y), dtype=bool)

    def _g_rows(self, idx: np.ndarray) -> np.ndarray:
        """``Y[idx] A0^-1``, computing (once per version) only the rows not met before."""
        missing = idx[~self._have_G[idx]]
        if len(missing):
            missing = np.unique(missing)
            self._G[missing] = self._Y[missing] @ self._A0inv
            self._have_G[missing] = True  # after the rows: a reader never sees a stale row
        return self._G[idx]

    def extended(self, new_item_factors: np.ndarray) -> FoldInSolver:
        """A solver over these items and ``new_item_factors`` appended as rows ``n_items...``.

        The Gram grows by the new rows only (``A0 += Y_n^T Y_n``), so extending a large model
        by a few new items' vectors (``nearline.item_feed``) costs ``n_new k^2 + k^3``, not
        another pass over every item.
        """
        Yn = np.asarray(new_item_factors, dtype=np.float64)
        out = object.__new__(FoldInSolver)
        out.bias_column, out.regularization = self.bias_column, self.regularization
        out.scaling = self.scaling
        if self.bias_column:
            Yn, bn = Yn[:, :-1], Yn[:, -1]
            out._b = np.concatenate([self._b, bn])
            out._Ytb = self._Ytb + Yn.T @ bn
        else:
            out._b, out._Ytb = None, None
        out._Y = np.ascontiguousarray(np.vstack([self._Y, Yn]))
        out._YtY = self._YtY + Yn.T @ Yn
        out._A0 = self._A0 + Yn.T @ Yn
        out._A0inv = np.linalg.inv(out._A0)
        out.n_items, out.factors = out._Y.shape
        out._reset_rows()  # A0 changed: every row g_i with it
        return out

    def replaced(self, rows: np.ndarray, item_factors: np.ndarray) -> FoldInSolver:
        """A solver whose items at ``rows`` have the factors ``item_factors`` instead.

        Young items re-solved nearline (``nearline.item_feed``) replace their stale rows; the
        Gram moves by the difference only, ``A0 += Y_r'^T Y_r' - Y_r^T Y_r`` (and ``Y^T b``
        likewise), ``n_r k^2 + k^3`` rather than another pass over every item.
        """
        rows = np.asarray(rows, dtype=np.int64)
        Yr = np.asarray(item_factors, dtype=np.float64)
        out = object.__new__(FoldInSolver)
        out.bias_column, out.regularization = self.bias_column, self.regularization
        out.scaling = self.scaling
        old = self._Y[rows]
        if self.bias_column:
            Yr, br = Yr[:, :-1], Yr[:, -1]
            out._b = self._b.copy()
            out._Ytb = self._Ytb + Yr.T @ br - old.T @ self._b[rows]
            out._b[rows] = br
        else:
            out._b, out._Ytb = None, None
        out._Y = self._Y.copy()
        out._Y[rows] = Yr
        dG = Yr.T @ Yr - old.T @ old
        out._YtY = self._YtY + dG
        out._A0 = self._A0 + dG
        out._A0inv = np.linalg.inv(out._A0)
        out.n_items, out.factors = out._Y.shape
        out._reset_rows()  # A0 changed: every row g_i with it
        return out

    @property
    def width(self) -> int:
        """Length of a returned user vector (k, or k+1 with the bias column)."""
        return self.factors + (1 if self.bias_column else 0)

    def solve_one(self, item_idx: np.ndarray, confidences: np.ndarray) -> np.ndarray:
        """Convenience wrapper of :meth:`solve` for one user."""
        indptr = np.array([0, len(item_idx)])
        return self.solve(indptr, np.asarray(item_idx), np.asarray(confidences))[0]

    def solve(self, indptr: np.ndarray, indices: np.ndarray, confidences: np.ndarray) -> np.ndarray:
        """Solve every user of a CSR batch (rows = users, columns = item rows of the model).

        Parameters
        ----------
        indptr, indices, confidences : CSR arrays; ``confidences`` hold ``c`` (not ``c - 1``).

        Returns
        -------
        ndarray of shape (n_users, width), float32
        """
        indptr, indices, conf = _csr(indptr, indices, confidences)
        n_users = len(indptr) - 1
        out = np.empty((n_users, self.factors), dtype=np.float64)
        for users, L in self._chunks(np.diff(indptr), woodbury=self.scaling == "none"):
            out[users] = self._solve_chunk(users, L, indptr, indices, conf)
        return self._width(out)

    def normal_equations(self, indptr: np.ndarray, indices: np.ndarray,
                         confidences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``A_u`` and ``b_u`` of every user of a CSR batch: the system :meth:`solve` solves.

        Returns
        -------
        A : ndarray of shape (n_users, k, k)
            ``YtY + Y_u^T (C_u - I) Y_u + lambda*I``
        b : ndarray of shape (n_users, k)
            ``Y_u^T C_u p_u`` (minus the fixed bias terms with ``bias_column``)
        """
        indptr, indices, conf = _csr(indptr, indices, confidences)
        n_users, k = len(indptr) - 1, self.factors
        A, b = np.empty((n_users, k, k)), np.empty((n_users, k))
        for users, L in self._chunks(np.diff(indptr), woodbury=False):
            Yu, c, w, rhs = self._gather(users, L, indptr, indices, conf)
            A[users], b[users] = self._gram(Yu, w, self._counts(indptr, users)), rhs
        return A, b

    def update_normal_equations(self, A: np.ndarray, b: np.ndarray, indptr: np.ndarray,
                                indices: np.ndarray, dc: np.ndarray, dw: np.ndarray) -> None:
        """Add changes of confidence to users' normal equations, in place.

        ``dc`` and ``dw`` are the changes of ``c`` and of ``w = c - 1`` per (user, item) entry
        of the CSR batch (an item new to the user has ``dc = c``, ``dw = c - 1``; a dropped one
        the negatives)::

            A_u += Y_d^T diag(dw) Y_d,   b_u += Y_d^T (dc - dw * b_d)

        Not with ``"count"`` scaling: the user's item count in ``lambda * n_u`` cannot be told
        from the deltas (a caller keeps no systems then; ``supports_updates``).
        """
        if not self.supports_updates:
            raise ValueError("normal equations of count-scaled lambda cannot be updated")
        indptr, indices, dc = _csr(indptr, indices, dc)
        dw = np.asarray(dw, dtype=np.float64)
        for users, L in self._chunks(np.diff(indptr), woodbury=False):
            if L == 0:
                continue
            pos, mask = _padded(indptr, users, L)
            idx = np.where(mask, indices[pos], 0)
            w = np.where(mask, dw[pos], 0.0)
            d = np.where(mask, dc[pos], 0.0)
            Yd = self._Y[idx]
            if self._b is not None:
                d = d - w * self._b[idx]
            A[users] += np.matmul(Yd.transpose(0, 2, 1) * w[:, None, :], Yd)
            b[users] += np.einsum("bl,blk->bk", d, Yd)

    def solve_normal_equations(self, A: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``x_u = A_u^-1 b_u`` for a stack of users; returns (n_users, width) float32."""
        if not len(A):
            return np.empty((0, self.width), dtype=np.float32)
        return self._width(spd_solve(A, b))

    @property
    def supports_updates(self) -> bool:
        """Whether :meth:`update_normal_equations` may be used (not with "count" scaling)."""
        return self.scaling == "none"

    # -- internals ---------------------------------------------------------------------------
    def _counts(self, indptr: np.ndarray, users: np.ndarray) -> np.ndarray | None:
        """n_u of each user of a chunk with "count" scaling (None: lambda is not scaled)."""
        if self.scaling == "none":
            return None
        return (indptr[users + 1] - indptr[users]).astype(np.float64)

    def _width(self, X: np.ndarray) -> np.ndarray:
        if self.bias_column:
            X = np.hstack([X, np.ones((len(X), 1))])
        return X.astype(np.float32)

    def _chunks(self, lengths: np.ndarray, woodbury: bool):
        """Users sorted by history length, cut into chunks of similar length: (users, L)."""
        n_users, k = len(lengths), self.factors
        order = np.argsort(lengths, kind="stable")
        start = 0
        while start < n_users:
            L = L0 = int(lengths[order[start]])
            # The chunk grows while the padded block of its longest member stays within budget
            # and padding stays small: its longest history is at most max(2, L0/8) longer than
            # its shortest (a stream's lengths spread over 1..cap; padding every chunk to its
            # budget made ~4x the useful work), and it stays on one side of the Woodbury bound.
            stop = start + 1
            while stop < n_users:
                L_next = int(lengths[order[stop]])
                if ((stop - start + 1) * max(L_next, 1) * k > _CHUNK_VALUES
                        or L_next > L0 + max(2, L0 // 8)
                        or (woodbury and self._woodbury(L_next) != self._woodbury(L0))):
                    break
                L, stop = L_next, stop + 1
            yield order[start:stop], L
            start = stop

    def _woodbury(self, L: int) -> bool:
        """Whether a history of ``L`` items is solved by Woodbury (see the module doc)."""
        return L <= self.factors * WOODBURY_RATIO

    def _gather(self, users, L, indptr, indices, conf, rows: bool = False):
        """Padded block of a chunk: Y_u (B, L, k), c and w = c - 1 (0 on padding), b_u; with
        ``rows`` also ``G_u = Y_u A0^-1`` (B, L, k) and ``z = A0^-1 b_u`` (B, k)."""
        B, k = len(users), self.factors
        rhs = np.zeros((B, k))
        if self._Ytb is not None:
            rhs -= self._Ytb
        if L == 0:
            return np.zeros((B, 0, k)), np.zeros((B, 0)), np.zeros((B, 0)), rhs
        # padded gather: column l of user b is its l-th item, or a masked dummy
        pos, mask = _padded(indptr, users, L)
        idx = np.where(mask, indices[pos], 0)
        c = np.where(mask, conf[pos], 0.0)
        w = np.where(mask, c - 1.0, 0.0)
        Yu = self._Y[idx]  # (B, L, k)
        # b_u = Y_u^T C_u p_u   (p = 1 on the user's items)
        d = c if self._b is None else c - w * self._b[idx]
        if not rows:
            # - Y_u^T (C_u - I) b_u  (the fixed bias moved to the right-hand side)
            rhs += np.einsum("bl,blk->bk", d, Yu)
            return Yu, c, w, rhs
        # z = A0^-1 b_u = A0^-1 (rhs0 + Y_u^T d) = A0^-1 rhs0 + G_u^T d (A0 symmetric)
        Gu = self._g_rows(idx)
        z = rhs @ self._A0inv + np.einsum("bl,blk->bk", d, Gu)
        return Yu, Gu, w, z

    def _base(self, counts: np.ndarray | None) -> np.ndarray:
        """YtY + lambda*I, or per user YtY + lambda*n_u*I (n_u >= 1: an empty history has
        b = 0 and so x = 0 either way, and YtY alone may be singular)."""
        if counts is None:
            return self._A0
        lam = self.regularization * np.maximum(counts, 1.0)
        return self._YtY + lam[:, None, None] * np.eye(self.factors)

    def _gram(self, Yu: np.ndarray, w: np.ndarray,
              counts: np.ndarray | None = None) -> np.ndarray:
        # A_u = YtY + lambda*I + Y_u^T (C_u - I) Y_u = A0 + Z^T Z with Z = (C_u - I)^1/2 Y_u:
        # numpy hands Z^T Z to BLAS syrk, half the flops of the general product (2x faster on
        # 550-item histories, the heavy users a Zipf stream touches in every batch)
        if (w >= 0).all():  # c >= 1 whenever event weights are positive
            Z = Yu * np.sqrt(w)[:, :, None]
            return self._base(counts) + np.matmul(Z.transpose(0, 2, 1), Z)
        return self._base(counts) + np.matmul(Yu.transpose(0, 2, 1) * w[:, None, :], Yu)

    def _solve_chunk(self, users, L, indptr, indices, conf) -> np.ndarray:
        counts = self._counts(indptr, users)
        if counts is None and L and self._woodbury(L):
            # Woodbury: x = z - G^T (I + W Y_u G^T)^-1 W Y_u z,  z = A0^-1 b,  G = Y_u A0^-1
            Yu, G, w, z = self._gather(users, L, indptr, indices, conf, rows=True)
            M = np.eye(L) + w[:, :, None] * np.matmul(G, Yu.transpose(0, 2, 1))
            r = w * np.einsum("blk,bk->bl", Yu, z)
            return z - np.einsum("bl,blk->bk", np.linalg.solve(M, r[..., None])[..., 0], G)
        Yu, c, w, rhs = self._gather(users, L, indptr, indices, conf)
        if L == 0:
            if counts is not None:
                return np.zeros_like(rhs)  # b = 0 without a bias column
            return np.linalg.solve(self._A0, rhs.T).T
        return spd_solve(self._gram(Yu, w, counts), rhs)


def spd_solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``A_u^-1 b_u`` for a stack of symmetric positive definite systems (normal equations).

    Cholesky (LAPACK ``posv``, one call per system) takes ~60 % of the time of the batched LU
    of ``np.linalg.solve`` at k = 64 (14.5 against 23.9 us a system, measured); a system that
    is not positive definite (a negative confidence weight) falls back to LU.
    """
    out = np.empty(b.shape)
    for u in range(len(A)):
        _, x, info = lapack.dposv(A[u], b[u], lower=1)  # copies: A and b are left alone
        out[u] = x if info == 0 else np.linalg.solve(A[u], b[u])
    return out


def _csr(indptr, indices, values):
    return (np.asarray(indptr, dtype=np.int64), np.asarray(indices, dtype=np.int64),
            np.asarray(values, dtype=np.float64))


def _padded(indptr: np.ndarray, users: np.ndarray, L: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of each user's first ``L`` entries (0 past their end) and the valid mask."""
    pos = indptr[users][:, None] + np.arange(L)[None, :]
    mask = pos < indptr[users + 1][:, None]
    return np.where(mask, pos, 0), mask


def solver_for_model(item_factors: np.ndarray, manifest: dict,
                     bias_column: bool = False) -> FoldInSolver:
    """The fold-in solver a stored model's manifest asks for.

    lambda is the manifest's ``hyperparameters.foldin_regularization``, else its
    ``regularization``; ``regularization_scaling`` ("none" when absent: models written before
    the Spark engine) says whether it is weighted by the user's item count.
    """
    hp = manifest.get("hyperparameters", {})
    reg = float(hp.get("foldin_regularization", hp.get("regularization", 0.1)))
    return FoldInSolver(item_factors, reg, bias_column,
                        scaling=str(manifest.get("regularization_scaling", "none")))
