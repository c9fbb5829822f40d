"""Request filters on catalog attributes, applied inside retrieval (DESIGN.md "Serving").

A ``recsys.v1.Filter`` becomes an :class:`Eligibility`: a boolean mask over the snapshot's item
rows, built from the served version's :class:`~recsys_stream.serving.catalog_index.RowAttributes`
(category and attribute rows are unions and intersections of sorted row arrays, the launch time a
comparison over one array), plus a test by id for items outside the model's rows (new items of
the version, trending ids).

Retrieval with a filter keeps the exactly-``k`` promise by choosing how to search from the
number ``m`` of eligible rows:

- small ``m`` (``m * width <= EXACT_VALUES``: a category of a few percent of a large catalogue,
  every category of a small one): the eligible rows are scored exactly, ``Y[rows] @ x``: one
  gather and a small matrix-vector product, cheaper than a walk deep enough to find ``k`` of
  them, and exact by construction;
- large ``m``: the graph is walked for ``k / (m / n)`` candidates, twice that plus the
  suppressed count to start (the expected walk depth for ``k`` eligible hits), doubled while
  short, and once the walk would be as deep as a quarter of the catalogue the eligible rows are
  scored exactly, so ``k`` always come back when ``k`` eligible items exist.

hnswlib 0.8's ``knn_query(filter=...)`` calls a Python function per visited node: measured in
``benchmarks/filter_search.py`` against both paths above, it is slower than exact scoring for a
small share and than the over-fetching walk for a large one (``EXACT_VALUES``), so it is not
used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys_stream.serving.catalog_index import Entry, RowAttributes

# Eligible rows x factors up to which a filtered request scores every eligible row exactly.
# Measured (benchmarks/filter_search.py, 100k x 64, k=10, CPU per query): exact 73 us at 1 %,
# 367 us at 5 %, 1,250 us at 20 %; the over-fetching walk 2,078 / 485 / 159 us (recall@10 0.72 /
# 0.90 / 0.94); hnswlib's filter callback 3,276 / 710 / 249 us (0.75 / 0.92 / 0.96). The
# crossover is near 6,000 rows at f=64.
EXACT_VALUES = 400_000
MAX_CATEGORIES = 100   # per include/exclude list
MAX_ATTRIBUTES = 20


class FilterError(ValueError):
    """A filter field that is not valid; the message names the field."""


@dataclass(frozen=True)
class FilterSpec:
    """A validated, non-empty filter."""

    include: frozenset[str]
    exclude: frozenset[str]
    attributes: tuple[tuple[str, str], ...]
    created_after_ms: int

    def admits(self, e: Entry | None) -> bool:
        """The filter on one catalog entry (None: the catalog never named the item)."""
        if e is None:
            return not self.include and not self.attributes and not self.created_after_ms
        if self.include and self.include.isdisjoint(e.categories):
            return False
        if self.exclude and not self.exclude.isdisjoint(e.categories):
            return False
        if any(e.attributes.get(k) != v for k, v in self.attributes):
            return False
        return not self.created_after_ms or e.created_ms > self.created_after_ms


def parse_filter(f, field: str, max_bytes: int) -> FilterSpec | None:
    """A ``recsys.v1.Filter`` checked (``FilterError`` naming ``field.<part>``); None when it
    restricts nothing."""
    def names(values, part, limit):
        values = list(values)
        if len(values) > limit:
            raise FilterError(f"{field}.{part} has {len(values)} entries; at most {limit}")
        for v in values:
            if not v or len(v.encode()) > max_bytes:
                raise FilterError(f"{field}.{part} must hold non-empty names of at most "
                                  f"{max_bytes} bytes")
        return frozenset(values)

    include = names(f.include_categories, "include_categories", MAX_CATEGORIES)
    exclude = names(f.exclude_categories, "exclude_categories", MAX_CATEGORIES)
    attrs = dict(f.attributes)
    names(attrs, "attributes", MAX_ATTRIBUTES)
    if any(len(v.encode()) > max_bytes for v in attrs.values()):
        raise FilterError(f"{field}.attributes values must be at most {max_bytes} bytes")
    if f.created_after_ms < 0:
        raise FilterError(f"{field}.created_after_ms must be >= 0, got {f.created_after_ms}")
    if not (include or exclude or attrs or f.created_after_ms):
        return None
    return FilterSpec(include, exclude, tuple(sorted(attrs.items())), int(f.created_after_ms))


@dataclass(frozen=True)
class Eligibility:
    """Which items a filter admits, over one snapshot's rows and by id beyond them."""

    spec: FilterSpec
    mask: np.ndarray   # bool per model row
    count: int         # eligible rows
    attrs: RowAttributes
    row_of: dict

    def admits_id(self, item_id: str) -> bool:
        row = self.row_of.get(item_id)
        if row is not None:
            return bool(self.mask[row])
        return self.spec.admits(self.attrs.entries.get(item_id))


def eligibility(spec: FilterSpec, attrs: RowAttributes, row_of: dict) -> Eligibility:
    """The rows ``spec`` admits (a few array passes over the sorted row sets)."""
    n = attrs.n_rows
    if spec.include:
        mask = np.zeros(n, dtype=bool)
        for c in spec.include:
            mask[attrs.rows_of(c)] = True
    else:
        mask = np.ones(n, dtype=bool)
    for c in spec.exclude:
        mask[attrs.rows_of(c)] = False
    for k, v in spec.attributes:
        keep = np.zeros(n, dtype=bool)
        keep[attrs.rows_with(k, v)] = True
        mask &= keep
    if spec.created_after_ms:
        mask &= attrs.created_ms > spec.created_after_ms
    return Eligibility(spec, mask, int(np.count_nonzero(mask)), attrs, row_of)


def _unsuppressed(elig: Eligibility, hidden: set[int] | frozenset[int]) -> np.ndarray:
    mask = elig.mask
    if hidden:
        mask = mask.copy()
        mask[np.fromiter(hidden, np.int64, len(hidden))] = False
    return mask


def top_k(snap, x: np.ndarray, k: int, own_rows: set[int], banned_rows: frozenset[int],
          elig: Eligibility) -> tuple[list[tuple[str, float]], int]:
    """The ``k`` best eligible, unsuppressed items for ``x`` and how many suppressed eligible
    items ranked above the last one answered (see the module docstring for the search)."""
    ix = snap.index
    n_items = len(ix.item_factors)
    hidden = own_rows | banned_rows if own_rows else banned_rows
    free = _unsuppressed(elig, hidden)
    width = ix.item_factors.shape[1]
    if elig.count * width > EXACT_VALUES and ix.walks(k):
        # expected depth for k eligible hits at this share, with room for the suppressed
        n = max(ix.ef, 2 * k * n_items // max(elig.count, 1) + len(hidden))
        while n * 4 < n_items:
            rows, scores = ix.query(x, n)
            ok = free[rows]
            if np.count_nonzero(ok) >= k:
                picked = np.flatnonzero(ok)[:k]
                dropped = int(np.count_nonzero(elig.mask[rows[:picked[-1]]] &
                                               ~ok[:picked[-1]]))
                return [(snap.item_id_list[r], float(s))
                        for r, s in zip(rows[picked].tolist(), scores[picked].tolist())], dropped
            n *= 2
    rows = np.flatnonzero(elig.mask)
    if not len(rows):
        return [], 0
    scores = ix.item_factors[rows] @ np.asarray(x, dtype=np.float32)
    ok = free[rows]
    cand = np.flatnonzero(ok)
    if len(cand) > k:
        cand = cand[np.argpartition(-scores[cand], k - 1)[:k]]
    cand = cand[np.argsort(-scores[cand], kind="stable")]
    dropped = int(np.count_nonzero(~ok & (scores > scores[cand[-1]]))) if len(cand) else \
        int(np.count_nonzero(~ok))
    return [(snap.item_id_list[r], float(s))
            for r, s in zip(rows[cand].tolist(), scores[cand].tolist())], dropped


def popular(snap, k: int, own_rows: set[int], banned_rows: frozenset[int],
            elig: Eligibility, taken: set[int] = frozenset()) -> list[tuple[str, float]]:
    """The ``k`` most popular eligible, unsuppressed items not in ``taken``."""
    free = _unsuppressed(elig, own_rows | banned_rows | taken)
    order = snap.popular_order
    keep = order[free[order]][:k]
    return [(snap.item_id_list[r], float(snap.popularity[r])) for r in keep.tolist()]


def similar_rows(snap, query: np.ndarray, k: int, hidden: set[int],
                 elig: Eligibility) -> list[tuple[str, float]]:
    """``k`` eligible, unhidden items by cosine to ``query``, scored exactly over the eligible
    rows (a filter for SimilarItems narrows the rows first, as ``top_k`` does)."""
    free = _unsuppressed(elig, hidden)
    rows = np.flatnonzero(free)
    Y = snap.index.item_factors
    norms = np.linalg.norm(Y[rows], axis=1) * max(float(np.linalg.norm(query)), 1e-12)
    cos = (Y[rows] @ query) / np.maximum(norms, 1e-12)
    order = np.argsort(-cos, kind="stable")[:k]
    return [(snap.item_id_list[rows[i]], float(cos[i])) for i in order]
