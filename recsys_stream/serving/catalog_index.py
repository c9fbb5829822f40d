"""The catalog's item attributes as the server filters on them (DESIGN.md "Catalog", "Serving").

Two layers:

- :class:`Catalog` holds the latest ``CatalogItem`` of every item per tenant (a record replaces
  the item's previous one whole), fed by the server's catalog tail (``read_models``). An item
  whose record says ``created_ms = 0`` is dated by the first record that named it.
- :class:`CatalogIndex` turns it, per tenant and *served model version*, into
  :class:`RowAttributes`: category -> sorted model rows, (attribute, value) -> rows and the launch
  time per row, which is what a filter needs to act inside retrieval (``serving.filters``).
  They are rebuilt by a thread of their own when the catalog or the version changes, never on the
  request path: a request takes the built attributes of its snapshot's version once. Only in the
  moment between a model swap and the rebuild does a request build its version's attributes
  itself (one pass over the catalog), so that a filter is never answered against another
  version's rows.

Items of the model the catalog has never named have no categories, no attributes and an unknown
launch time: an include, attribute or launch-time filter leaves them out, an exclude keeps them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from recsys_stream.contracts.pb import events_pb2

log = logging.getLogger(__name__)
_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Entry:
    """What a filter reads of one catalog item."""

    categories: tuple[str, ...]
    attributes: dict[str, str]
    created_ms: int  # 0 = unknown


class Catalog:
    """The latest catalog record of every item, per tenant; written by one tail thread."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Entry]] = {}
        self._first_seen: dict[tuple[str, str], int] = {}
        self._generation: dict[str, int] = {}
        self._lock = threading.Lock()
        self.changed = threading.Event()  # set on every change; the index rebuilder waits on it

    def put(self, tenant: str, item_id: str, item: events_pb2.CatalogItem, seen_ms: int) -> None:
        """Record ``item`` (``seen_ms``: when the record was written, the fallback launch time)."""
        with self._lock:
            first = self._first_seen.setdefault((tenant, item_id), seen_ms)
            self._items.setdefault(tenant, {})[item_id] = Entry(
                tuple(item.categories), dict(item.attributes), item.created_ms or first)
            self._generation[tenant] = self._generation.get(tenant, 0) + 1
        self.changed.set()

    def generation(self, tenant: str) -> int:
        """Counts the tenant's catalog records (changes with every one)."""
        return self._generation.get(tenant, 0)

    def items(self, tenant: str) -> tuple[int, dict[str, Entry]]:
        """``(generation, a copy of the tenant's entries)``, consistent with each other."""
        with self._lock:
            return self._generation.get(tenant, 0), dict(self._items.get(tenant, {}))

    def tenants(self) -> list[str]:
        return list(self._items)


@dataclass(frozen=True)
class RowAttributes:
    """The catalog of one tenant laid over the rows of one model version."""

    version: int
    generation: int
    n_rows: int
    category_rows: dict[str, np.ndarray]           # category -> sorted rows
    attribute_rows: dict[tuple[str, str], np.ndarray]  # (key, value) -> sorted rows
    created_ms: np.ndarray                          # per row, 0 = unknown
    row_categories: list[tuple[str, ...]]           # per row (diversity caps)
    entries: dict[str, Entry] = field(repr=False)   # by id, for items outside the model's rows
    # every catalog item with a launch time, newest first (exploration's young items)
    newest: list[tuple[int, str]] = field(default_factory=list, repr=False)

    def categories_of(self, item_id: str, row_of: dict) -> tuple[str, ...]:
        row = row_of.get(item_id)
        if row is not None and row < self.n_rows:
            return self.row_categories[row]
        e = self.entries.get(item_id)
        return e.categories if e is not None else ()

    def rows_of(self, category: str) -> np.ndarray:
        return self.category_rows.get(category, _EMPTY)

    def rows_with(self, key: str, value: str) -> np.ndarray:
        return self.attribute_rows.get((key, value), _EMPTY)

    @classmethod
    def build(cls, item_ids: Iterable[str], version: int, generation: int,
              entries: dict[str, Entry]) -> RowAttributes:
        ids = list(item_ids)
        cats: dict[str, list[int]] = {}
        attrs: dict[tuple[str, str], list[int]] = {}
        created = np.zeros(len(ids), dtype=np.int64)
        row_cats: list[tuple[str, ...]] = [()] * len(ids)
        for row, item in enumerate(ids):
            e = entries.get(item)
            if e is None:
                continue
            created[row] = e.created_ms
            row_cats[row] = e.categories
            for c in e.categories:
                cats.setdefault(c, []).append(row)
            for kv in e.attributes.items():
                attrs.setdefault(kv, []).append(row)
        as_rows = lambda rows: np.asarray(rows, dtype=np.int64)  # noqa: E731 (ascending already)
        newest = sorted(((e.created_ms, i) for i, e in entries.items() if e.created_ms),
                        reverse=True)
        return cls(version, generation, len(ids), {c: as_rows(r) for c, r in cats.items()},
                   {kv: as_rows(r) for kv, r in attrs.items()}, created, row_cats, entries,
                   newest)


class CatalogIndex:
    """:class:`RowAttributes` per tenant, algorithm and served version, kept current off the
    request path.

    Parameters
    ----------
    catalog : Catalog
    snapshots : callable returning the live snapshots (``tenant``, ``algorithm``, ``version``,
        ``item_id_list``): the versions to keep attributes for.
    """

    def __init__(self, catalog: Catalog, snapshots: Callable[[], Iterable]) -> None:
        self.catalog, self.snapshots = catalog, snapshots
        self._built: dict[tuple[str, str], RowAttributes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="catalog-index", daemon=True)

    def start(self) -> CatalogIndex:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.catalog.changed.set()
        self._thread.join(5)

    def wake(self, *_args) -> None:
        """A model went live (the follower's ``on_swap``): rebuild for its version now."""
        self.catalog.changed.set()

    def get(self, snap) -> RowAttributes:
        """The attributes of ``snap``'s version (built here only in the moment after a swap)."""
        built = self._built.get((snap.tenant, snap.algorithm))
        if built is not None and built.version == snap.version:
            return built
        return self._build(snap)

    def without_model(self, tenant: str) -> RowAttributes:
        """The tenant's catalog over no model rows (a tenant with no model yet: by id only)."""
        generation, entries = self.catalog.items(tenant)
        return RowAttributes.build((), 0, generation, entries)

    def _build(self, snap) -> RowAttributes:
        generation, entries = self.catalog.items(snap.tenant)
        built = RowAttributes.build(snap.item_id_list, snap.version, generation, entries)
        current = self._built.get((snap.tenant, snap.algorithm))
        if current is None or (current.version, current.generation) <= (snap.version,
                                                                        generation):
            built_all = dict(self._built)
            built_all[(snap.tenant, snap.algorithm)] = built
            self._built = built_all  # one assignment: readers never see a half-built map
        return built

    def refresh(self) -> int:
        """Rebuild every live version whose catalog or version moved; how many were rebuilt."""
        n = 0
        for snap in list(self.snapshots()):
            built = self._built.get((snap.tenant, snap.algorithm))
            if built is None or built.version != snap.version \
                    or built.generation != self.catalog.generation(snap.tenant):
                self._build(snap)
                n += 1
        return n

    def _run(self) -> None:
        while not self._stop.is_set():
            # a burst of catalog records (a catalogue load) is one rebuild, not one per record
            self.catalog.changed.wait(1.0)
            if self._stop.is_set():
                return
            self.catalog.changed.clear()
            try:
                self.refresh()
            except Exception:  # never kills the thread: requests build their own meanwhile
                log.exception("catalog index rebuild failed")
            self._stop.wait(0.2)
