"""What the export tests share: a served model of random factors, a training events file and
the suppression a server reads (profiles, an erased user, catalog bans)."""

from __future__ import annotations

import json

import numpy as np

from recsys_stream.contracts.ann_index import build_index
from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.keys import make_key
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.pb import events_pb2, profiles_pb2
from recsys_stream.kafka import producer

ERASED = "u7"
BANNED = ("it0", "it1", "it2")


def write_model(root, n_items: int, n_users: int, width: int, seed: int, prefix: str = "i",
                index_users: int | None = 100, recall_floor: float | None = None) -> ModelStore:
    """Version 1 of acme's ALS, current: items ``{prefix}j``, users ``uj``, an hnswlib index
    tuned on the first ``index_users`` users (None: all)."""
    rng = np.random.default_rng(seed)
    Y, X = rng.normal(size=(n_items, width)), rng.normal(size=(n_users, width))
    tune = X if index_users is None else X[:index_users]
    floor = {} if recall_floor is None else {"recall_floor": recall_floor}
    store = ModelStore(root)
    store.write("acme", "als", 1, item_ids=[f"{prefix}{i}" for i in range(n_items)],
                item_factors=Y, user_ids=[f"u{i}" for i in range(n_users)], user_factors=X,
                popularity=np.arange(n_items, 0, -1, dtype=float),
                manifest={"hyperparameters": {"regularization": 0.5},
                          "confidence": ConfidenceSettings().to_dict()},
                index_writer=lambda p: build_index(Y, p, tune, **floor))
    store.set_current("acme", "als", 1)
    return store


def write_events(path, seen: dict[str, list[int]]) -> None:
    """Training views of items ``it{j}``, one JSON line each (``--events-file``)."""
    with open(path, "w") as f:
        for u, items in seen.items():
            for n, i in enumerate(items):
                f.write(json.dumps({"tenant": "acme", "user_id": u, "item_id": f"it{i}",
                                    "type": "view", "timestamp_ms": 1_700_000_000_000 + n})
                        + "\n")


def publish_suppression(cfg, profiles: dict[str, list[int]], hidden: dict[str, str],
                        nearline: str, width: int) -> None:
    """Profiles holding ``profiles``' items (``hidden``'s item suppressed in them only; a
    nearline vector of version 1 for ``nearline``), ``ERASED``'s tombstone and ``BANNED``."""
    prod = producer(cfg)
    for u, items in profiles.items():
        p = profiles_pb2.UserProfile(tenant="acme", user_id=u, item_ids=[f"it{i}" for i in items],
                                     confidences=[1.0] * len(items))
        if u in hidden:
            p.suppressed_item_ids.append(hidden[u])
        if u == nearline:  # a nearline vector of this version answers before the batch row
            p.vectors.add(algorithm="als", model_version=1, values=[1.0] * width)
        prod.produce(cfg.topics.profiles, key=make_key("acme", u), value=p.SerializeToString())
    prod.produce(cfg.topics.profiles, key=make_key("acme", ERASED), value=None)
    for i in BANNED:
        prod.produce(cfg.topics.catalog, key=make_key("acme", i), value=events_pb2.CatalogItem(
            tenant="acme", item_id=i, state=events_pb2.BANNED).SerializeToString())
    assert prod.flush(10) == 0
