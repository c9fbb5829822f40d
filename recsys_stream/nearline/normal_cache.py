"""Heavy users' normal equations kept between micro-batches and updated by what changed.

Forming a user's system costs ``L k^2`` for the Gram ``Y_u^T (C_u - I) Y_u``; a capped heavy user
(L ~ 500, k = 64) costs ~200 us, more than everything else the worker does for them. Zipf traffic
re-solves the same heavy users in nearly every micro-batch, each time with a handful of new
events. So, per model version, the worker keeps each heavy user's ``A_u``, ``b_u`` and the
``(rows, c)`` they were formed from, and the next solve adds only the entries whose confidence
moved by more than ``TOLERANCE``::

    A_u += Y_d^T diag(dw) Y_d,   b_u += Y_d^T dc        (FoldInSolver.update_normal_equations)

then solves ``A_u x_u = b_u`` exactly. Entries move for two reasons: the batch's events (large
steps, always applied) and recency decay, which lowers every ``c`` by at most
``alpha ln2 / half_life`` (~5e-7 per second of the user's time with the defaults). An entry is
refreshed once its drift from the cached value passes ``TOLERANCE``, so the cached system never
differs from the exact one by more than ``TOLERANCE`` in any confidence. A history whose items
are no longer the cached ones followed by new ones (a hide, a cap trim) is formed again in full,
as is every user of a new model version (a new cache). The cached item ids also spare the lookup
of a heavy history's model rows: only the new items are looked up.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from itertools import repeat

import numpy as np

from recsys_stream.contracts.foldin import FoldInSolver

# Largest change of one confidence c (>= 1) left out of a cached system.
TOLERANCE = 1e-6
# Items of the light users' kept model rows (``NormalEquationCache.user_rows``): ~16 B each.
ROWS_ITEMS = 500_000


@dataclass
class _Entry:
    slot: int               # row of the cache's A and b slabs
    ids: list[str]          # the history's item ids the system was formed from, in order
    rows: np.ndarray        # their model rows (-1: not in the model, not counted)
    conf: np.ndarray        # the confidence each is counted with (float64; 0 where rows < 0)


class NormalEquationCache:
    """Fold-in of one model version, with an LRU of heavy users' normal equations.

    Parameters
    ----------
    solver : FoldInSolver of the model version
    item_row : mapping of item id to its row in the model's item factors
    max_users : int
        Users kept (each costs ``8 k^2`` bytes of slab plus its rows: ~40 KB at k = 64).
    min_items : int
        Histories with fewer known items are solved directly (forming them is cheap).
    """

    def __init__(self, solver: FoldInSolver, item_row: dict[str, int], max_users: int,
                 min_items: int, rows_items: int = ROWS_ITEMS) -> None:
        self.solver, self.item_row = solver, item_row
        self.max_users, self.min_items = max_users, min_items
        # every other user's history ids and their model rows (LRU, bounded in items)
        self._rows: OrderedDict[bytes, tuple[list[str], np.ndarray]] = OrderedDict()
        self._rows_budget, self._rows_items = rows_items, 0
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._free: list[int] = list(range(max_users))[::-1]
        k = solver.factors
        # one slab each, so a batch's systems are gathered and written back in single steps;
        # np.zeros maps untouched pages lazily, so an idle cache costs no memory
        self._A = np.zeros((max_users, k, k))
        self._b = np.zeros((max_users, k))

    def __len__(self) -> int:
        return len(self._entries)

    def rows(self, item_ids: list[str]) -> np.ndarray:
        """Model row of each item id, -1 for items the model does not know."""
        # one C-level pass (dict.get with a -1 default) instead of a Python loop per item
        return np.fromiter(map(self.item_row.get, item_ids, repeat(-1)), np.int64,
                           len(item_ids))

    def user_rows(self, key: bytes, ids: list[str]) -> np.ndarray:
        """``rows(ids)`` of a user, looking up only the ids added since the user's last call.

        A history's ids are its dict's keys in insertion order: new items are appended, so the
        kept ids are a prefix of the new ones unless an item was dropped (a hide, a trim), and
        the prefix check compares the same string objects (identity first). Each lookup in a
        large model's id dict is a few cache misses (~0.5-1 us on a busy machine), so a
        50-item user was paying ~40 us a batch for ids it had already looked up.
        """
        hit = self._rows.pop(key, None)
        if hit is not None:
            self._rows_items -= len(hit[0])
            n = len(hit[0])
            rows = (np.concatenate([hit[1], self.rows(ids[n:])])
                    if len(ids) >= n and ids[:n] == hit[0] else self.rows(ids))
        else:
            rows = self.rows(ids)
        if self._rows_budget:
            self._rows[key] = (ids, rows)
            self._rows_items += len(ids)
            while self._rows_items > self._rows_budget:
                self._rows_items -= len(self._rows.popitem(last=False)[1][0])
        return rows

    def solve(self, keys: list[bytes], histories: list[tuple[list[str], np.ndarray]]
              ) -> tuple[list[bytes], np.ndarray, list[np.ndarray]]:
        """Solve every user that has an item the model knows.

        Parameters
        ----------
        keys : user keys
        histories : per key, the item ids and their confidences ``c`` (float32)

        Returns
        -------
        solved : the keys solved, in order (a user the model knows nothing of gets no vector)
        X : ndarray of shape (len(solved), solver.width), float32
        rows : per solved key, the model rows of its history items the model knows (the
            profile's ``suppressed_rows``; looked up here anyway)
        """
        direct, fresh, cached = [], [], []  # (key, rows, c) / (key, ids, rows, c) / key
        cached_rows = []
        # deltas of the cached users, as CSR entries (model row, dc, dw)
        d_ptr, d_rows, d_c, d_w = [0], [], [], []
        for key, (ids, c) in zip(keys, histories):
            e = self._entries.get(key) if len(ids) >= self.min_items else None
            n = 0 if e is None else len(e.ids)
            if e is not None and len(ids) >= n and ids[:n] == e.ids:
                # the cached history plus new items: look up only the new ones
                tail = self.rows(ids[n:])
                c = c.astype(np.float64)
                d = np.where(e.rows >= 0, c[:n], 0.0) - e.conf
                moved = np.flatnonzero(np.abs(d) > TOLERANCE)
                new = np.flatnonzero(tail >= 0)
                # moved entries change c and w = c - 1 alike; new ones add c and w from zero
                d_rows += (e.rows[moved], tail[new])
                d_c += (d[moved], c[n + new])
                d_w += (d[moved], c[n + new] - 1.0)
                d_ptr.append(d_ptr[-1] + len(moved) + len(new))
                e.conf[moved] += d[moved]
                if len(ids) > n:
                    e.rows = np.concatenate([e.rows, tail])
                    e.conf = np.concatenate([e.conf, np.where(tail >= 0, c[n:], 0.0)])
                e.ids = ids
                self._entries.move_to_end(key)
                cached.append(key)
                cached_rows.append(e.rows[e.rows >= 0])
                continue
            rows = self.user_rows(key, ids)
            known = rows >= 0
            n_known = int(known.sum())
            if n_known == 0:
                continue  # nothing this model knows: the server falls back, no fake vector
            if n_known < self.min_items or not self.max_users:
                direct.append((key, rows[known], c[known]))
            else:
                fresh.append((key, ids, rows, c))
        X = []
        if cached:  # before forming the fresh ones, which may evict some of these
            slots = np.array([self._entries[key].slot for key in cached])
            A, b = self._A[slots], self._b[slots]
            self.solver.update_normal_equations(A, b, np.array(d_ptr), np.concatenate(d_rows),
                                                np.concatenate(d_c), np.concatenate(d_w))
            self._A[slots], self._b[slots] = A, b
            X.append(self.solver.solve_normal_equations(A, b))
        if fresh:
            X.append(self._form(fresh))
        if direct:
            X.append(self.solver.solve(*_csr([r for _, r, _ in direct], [c for *_, c in direct])))
        solved = cached + [f[0] for f in fresh] + [d[0] for d in direct]
        rows = cached_rows + [r[r >= 0] for _, _, r, _ in fresh] + [r for _, r, _ in direct]
        return solved, (np.concatenate(X) if X else
                        np.empty((0, self.solver.width), dtype=np.float32)), rows

    def rebased(self, solver: FoldInSolver, item_row: dict[str, int], new_ids: set[str]
                ) -> NormalEquationCache:
        """This cache moved onto ``solver``: the same item rows, new rows appended, and rows of
        ``new_ids`` (appended or changed) that may differ from this cache's solver.

        Every cached system differs from the new one by the change of the item Gram only,
        ``A_u += A0' - A0`` (and, with a bias column, ``b_u -= Y'^T b' - Y^T b``), unless the
        user's cached history holds one of ``new_ids`` (an item it counted with its old row, or
        as unknown): those entries are dropped and formed again on their next solve. The slabs
        are moved, not copied; this cache is left empty. Call on the thread that solves (the
        worker's loop).
        """
        out = object.__new__(NormalEquationCache)
        out.solver, out.item_row = solver, item_row
        out.max_users, out.min_items = self.max_users, self.min_items
        out._entries, out._free, out._A, out._b = self._entries, self._free, self._A, self._b
        # kept rows stay valid but for the users of an item whose row is new or changed
        out._rows, out._rows_budget, out._rows_items = OrderedDict(), self._rows_budget, 0
        for key, (ids, rows) in self._rows.items():
            if new_ids.isdisjoint(ids):
                out._rows[key] = (ids, rows)
                out._rows_items += len(ids)
        self._rows, self._rows_items = OrderedDict(), 0
        dA = solver._A0 - self.solver._A0
        db = None if solver._Ytb is None else -(solver._Ytb - self.solver._Ytb)
        # an entry counted one of new_ids with its old row, or as unknown (-1) back then
        old_rows = np.fromiter((self.item_row[i] for i in new_ids if i in self.item_row),
                               np.int64)
        for key in [k for k, e in out._entries.items()
                    if np.isin(e.rows, old_rows).any()
                    or ((e.rows < 0).any() and not new_ids.isdisjoint(e.ids))]:
            out._free.append(out._entries.pop(key).slot)
        slots = np.fromiter((e.slot for e in out._entries.values()), np.int64,
                            len(out._entries))
        if len(slots):
            out._A[slots] += dA
            if db is not None:
                out._b[slots] += db
        k = self.solver.factors
        self._entries, self._free = OrderedDict(), list(range(self.max_users))[::-1]
        self._A, self._b = np.zeros((self.max_users, k, k)), np.zeros((self.max_users, k))
        return out

    def _form(self, users: list[tuple[bytes, list[str], np.ndarray, np.ndarray]]) -> np.ndarray:
        """Form the users' systems in full, keep them, and solve them."""
        known = [rows >= 0 for _, _, rows, _ in users]
        A, b = self.solver.normal_equations(*_csr([u[2][m] for u, m in zip(users, known)],
                                                  [u[3][m] for u, m in zip(users, known)]))
        for j, ((key, ids, rows, c), m) in enumerate(zip(users, known)):
            e = self._entries.pop(key, None)
            slot = e.slot if e is not None else None
            if slot is None:
                if not self._free:  # evict the least recently used
                    self._free.append(self._entries.popitem(last=False)[1].slot)
                slot = self._free.pop()
            self._entries[key] = _Entry(slot, ids, rows, np.where(m, c, 0.0))
            self._A[slot], self._b[slot] = A[j], b[j]
        return self.solver.solve_normal_equations(A, b)


def _csr(rows: list[np.ndarray], conf: list[np.ndarray]):
    """CSR arrays (indptr, indices, confidences) of per-user rows and confidences."""
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    return indptr, np.concatenate(rows), np.concatenate(conf)
