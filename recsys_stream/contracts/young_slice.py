"""A model version's young items and their training users (DESIGN.md "Fold-in", "Young items").

An item of version ``v`` is *young* when fewer than ``young_item_users`` distinct users touched
it in ``v``'s training data (per tenant; the trainer's ``pop_full`` counts them). Its factor row
was fitted from those few users and is mostly noise; the item stage re-solves it nearline as new
users arrive, and to do so exactly it needs what the trainer's own item step saw: the item's
column of the training confidence matrix. The trainer writes those columns with the model, a
small CSC slice in four checksummed arrays::

    young_items.npy        (n,)    int64   the young items' rows in item_ids, ascending
    young_indptr.npy       (n+1,)  int64   column pointers
    young_users.npy        (nnz,)  int64   training users' rows in user_ids
    young_confidences.npy  (nnz,)  float32 c = 1 + alpha*log1p(strength) (never c - 1)

With the version's user factors ``X`` the stage's first solve of a young item ``i`` with no new
user is then the trainer's (implicit's ``recalculate_item``)::

    y_i = (XtX + X_i^T (C_i - I) X_i + lambda I)^-1  X_i^T C_i p_i

(The serving layer's *exploration* also speaks of "young" items: items launched recently,
by catalog time. That is another notion; this module's is by training users.)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

FILES = ("young_items", "young_indptr", "young_users", "young_confidences")


def young_rows(users_per_item: np.ndarray, threshold: int) -> np.ndarray:
    """Rows of the items with at least one and fewer than ``threshold`` training users.

    ``threshold`` 0 turns young items off (no row is young).
    """
    n = np.asarray(users_per_item)
    return np.flatnonzero((n > 0) & (n < threshold)).astype(np.int64)


@dataclass(frozen=True)
class YoungSlice:
    """The training columns of a version's young items (see the module docstring)."""

    items: np.ndarray
    indptr: np.ndarray
    users: np.ndarray
    confidences: np.ndarray

    @classmethod
    def empty(cls) -> YoungSlice:
        return cls(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64),
                   np.zeros(0, np.float32))

    @classmethod
    def from_columns(cls, items: np.ndarray, columns: sp.spmatrix) -> YoungSlice:
        """From the confidence matrix's columns of ``items`` (users x len(items), any format)."""
        csc = sp.csc_matrix(columns)
        csc.sort_indices()
        return cls(np.asarray(items, np.int64), csc.indptr.astype(np.int64),
                   csc.indices.astype(np.int64), csc.data.astype(np.float32))

    def __len__(self) -> int:
        return len(self.items)

    def arrays(self) -> dict[str, np.ndarray]:
        """The four files' arrays, by name (``contracts.model_store`` writes them)."""
        return dict(zip(FILES, (self.items, self.indptr, self.users, self.confidences)))

    @cached_property
    def position(self) -> dict[int, int]:
        """Item row -> position in :attr:`items`."""
        return {int(r): j for j, r in enumerate(self.items)}

    def column(self, item_row: int) -> tuple[np.ndarray, np.ndarray] | None:
        """``(user rows, confidences)`` of a young item's training users; None if not young."""
        j = self.position.get(int(item_row))
        if j is None:
            return None
        a, b = self.indptr[j], self.indptr[j + 1]
        return self.users[a:b], self.confidences[a:b]

    def problems(self, n_items: int, n_users: int) -> list[str]:
        """What makes the slice unusable with a version of this many items and users."""
        r = []
        n = len(self.items)
        if self.indptr.shape != (n + 1,) or self.indptr[0] != 0:
            return [f"young_indptr shape {self.indptr.shape} does not fit {n} young items"]
        if np.any(np.diff(self.indptr) < 0) or self.indptr[-1] != len(self.users) \
                or len(self.users) != len(self.confidences):
            return ["young_indptr, young_users and young_confidences do not agree"]
        if n and (self.items.min() < 0 or self.items.max() >= n_items
                  or np.any(np.diff(self.items) <= 0)):
            r.append("young_items are not ascending rows of the version's items")
        if len(self.users) and (self.users.min() < 0 or self.users.max() >= n_users):
            r.append("young_users are not rows of the version's users")
        if not np.isfinite(self.confidences).all():
            r.append("young_confidences contain NaN or Inf")
        return r
