"""Writing, pointing to and announcing model versions.

Build and verify off to the side, then move one pointer (gorse): the version directory is written
complete under a temporary name, re-read and verified through the same loader the server uses,
and only then does ``CURRENT`` move and the ``models`` topic hear of it.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from recsys_stream.config import Config
from recsys_stream.contracts.ann_index import build_index
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.pb import models_pb2
from recsys_stream.kafka import producer

log = logging.getLogger(__name__)
_INDEX_SAMPLE = 500


def write_version(store: ModelStore, cfg: Config, tenant: str, factors, user_ids, item_ids,
                  popularity: np.ndarray, manifest: dict, verify: bool = True) -> int:
    """Write a new version directory (with its index); returns the version number.

    ``verify=False`` for a model already known to fail a gate: it is kept for inspection only.
    """
    version = store.next_version(tenant)
    rng = np.random.default_rng(cfg.trainer.seed)
    sample = factors.user_factors[rng.choice(len(user_ids), min(_INDEX_SAMPLE, len(user_ids)),
                                             replace=False)] if len(user_ids) else None
    store.write(tenant, factors.algorithm, version, item_ids=item_ids,
                item_factors=factors.item_factors, user_ids=user_ids,
                user_factors=factors.user_factors, popularity=popularity,
                manifest={**manifest, "hyperparameters": factors.hyperparameters,
                          "bias_column": factors.bias_column},
                index_writer=lambda p: build_index(factors.item_factors, p, sample,
                                                   recall_floor=cfg.trainer.index_recall_floor))
    if verify:
        store.load(tenant, factors.algorithm, version)  # verify what was written, as readers do
    return version


def announce(cfg: Config, store: ModelStore, tenant: str, algorithm: str, version: int) -> None:
    """Tell workers and servers about the tenant's current version of ``algorithm``."""
    art = store.load(tenant, algorithm, version, verify=False)
    msg = models_pb2.ModelPublished(
        tenant=tenant, algorithm=algorithm, version=version, artifact_uri=art.uri,
        checksums=art.manifest.get("files", {}),
        metrics={k: float(v) for k, v in art.manifest.get("metrics", {}).items()},
        published_ms=int(time.time() * 1000),
        is_default=store.default_algorithm(tenant) == algorithm)
    prod = producer(cfg)
    prod.produce(cfg.topics.models, key=tenant.encode(), value=msg.SerializeToString())
    if prod.flush(10):
        raise RuntimeError(f"announcement of {tenant}/{algorithm} v{version} was not delivered")


def choose_default(store: ModelStore, tenant: str) -> str | None:
    """The current algorithm with the best holdout NDCG@10."""
    best, best_ndcg = None, -1.0
    for algorithm in ("als", "bpr"):
        v = store.current_version(tenant, algorithm)
        if v is None:
            continue
        ndcg = store.load(tenant, algorithm, v, verify=False).manifest.get(
            "metrics", {}).get("ndcg_at_10", 0.0)
        if ndcg > best_ndcg:
            best, best_ndcg = algorithm, ndcg
    return best
