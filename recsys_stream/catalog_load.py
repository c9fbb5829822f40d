"""``recsys-stream catalog load``: a CSV or JSONL catalogue onto the compacted ``catalog`` topic.

Each row becomes one ``recsys.v1.CatalogItem`` keyed ``tenant \\x1f item_id`` (a record replaces
the item's previous one). Columns:

- the id: ``--id-column``, by default ``item_id``, else MovieLens's ``movieId``;
- categories: ``--categories-column``, by default ``categories``, else MovieLens's ``genres``,
  split on ``--separator`` (``|``); MovieLens's ``(no genres listed)`` is no category;
- ``state`` (AVAILABLE, BANNED, REMOVED; default AVAILABLE) and ``created_ms`` when present;
- every other column is an attribute (MovieLens's ``title``).

JSONL rows carry the same keys; ``categories`` may be a list and ``attributes`` an object.
A row without an id, or with a bad state or launch time, stops the load naming file and line.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from recsys_stream.config import Config
from recsys_stream.contracts.keys import make_key
from recsys_stream.contracts.pb import events_pb2
from recsys_stream.kafka import produce_all, producer

_NO_CATEGORY = {"(no genres listed)", ""}
_RESERVED = {"state", "created_ms", "tenant", "attributes"}


def _categories(value, separator: str) -> list[str]:
    values = value if isinstance(value, list) else str(value or "").split(separator)
    return [c.strip() for c in values if str(c).strip() not in _NO_CATEGORY]


def iter_catalog_file(path: str | Path, tenant: str, id_column: str | None = None,
                      categories_column: str | None = None,
                      separator: str = "|") -> Iterator[events_pb2.CatalogItem]:
    """The catalogue file's items, in file order (see the module docstring)."""
    path = Path(path)
    now = int(time.time() * 1000)
    with path.open(newline="", encoding="utf-8") as f:
        jsonl = path.suffix.lower() in (".jsonl", ".json", ".ndjson")
        rows = (json.loads(line) for line in f if line.strip()) if jsonl else csv.DictReader(f)
        for line, row in enumerate(rows, start=1 if jsonl else 2):  # a CSV's line 1: header
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{line}: a catalog row must be an object")
            idc = id_column or ("item_id" if "item_id" in row else "movieId")
            catc = categories_column or ("categories" if "categories" in row else "genres")
            item_id = str(row.get(idc) or "").strip()
            if not item_id:
                raise ValueError(f"{path}:{line}: no item id in column {idc!r}")
            state = str(row.get("state") or "AVAILABLE").upper()
            if state not in ("AVAILABLE", "BANNED", "REMOVED"):
                raise ValueError(f"{path}:{line}: state must be AVAILABLE, BANNED or REMOVED")
            try:
                created = int(row.get("created_ms") or 0)
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{line}: created_ms must be an integer (ms)") from None
            if created < 0:
                raise ValueError(f"{path}:{line}: created_ms must be >= 0")
            attrs = {str(k): str(v) for k, v in row.items()
                     if k not in (idc, catc) and k not in _RESERVED and v not in (None, "")
                     and not isinstance(v, (list, dict))}
            if isinstance(row.get("attributes"), dict):
                attrs.update({str(k): str(v) for k, v in row["attributes"].items()})
            yield events_pb2.CatalogItem(
                tenant=tenant, item_id=item_id, state=events_pb2.ItemState.Value(state),
                updated_ms=now, categories=_categories(row.get(catc), separator),
                attributes=attrs, created_ms=created)


def load_catalog(cfg: Config, path: str | Path, tenant: str, **kw) -> int:
    """Produce the file's items to the catalog topic and wait for delivery; the count."""
    if tenant not in cfg.tenants:
        raise ValueError(f"unknown tenant {tenant!r} (configured: {', '.join(cfg.tenants)})")
    # a bad row stops the load before any record is sent
    return produce_catalog(cfg, list(iter_catalog_file(path, tenant, **kw)))


def produce_catalog(cfg: Config, items: Iterable[events_pb2.CatalogItem]) -> int:
    """Produce catalog records (keyed by their tenant and id) and wait for delivery."""
    prod = producer(cfg)
    n = produce_all(prod, cfg.topics.catalog,
                    ((make_key(i.tenant, i.item_id), i.SerializeToString()) for i in items))
    remaining = prod.flush(30)
    if remaining:
        raise RuntimeError(f"{remaining} catalog records were not delivered")
    return n
