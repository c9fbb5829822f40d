"""Writing, gating, pointing to and announcing model versions.

Build and verify off to the side, then move one pointer: a version directory is written
complete under a temporary name (``ModelStore.write``), re-read and verified through the same
loader the server uses, and only then does ``CURRENT`` move and the ``models`` topic hear of it.

What is published: the factors of a retrain on *all* of the tenant's data (every user's latest
events included), with the hyperparameters and seed of the model that was evaluated on the
temporal holdout (trained on the events before each user's cut). The manifest's ``metrics`` and
``baseline_metrics["popularity"]`` are that evaluated model's and popularity's holdout numbers;
``baseline_metrics["current"]`` (when a version is current) holds its and the current model's
numbers on the held-out items first met after the current model's data window, and the basis
of the tolerance gate; ``training`` says so. The gates judge the published factors (shapes,
values, norms) and the evaluated model's metrics.

A version that fails a gate is still written, marked rejected with its reasons
(``ModelStore.reject``) for inspection, never made ``CURRENT`` and never announced; it counts in
``recsys_trainer_models_rejected_total{tenant,algorithm}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from recsys_stream.batch.algorithms import Factors
from recsys_stream.batch.metrics import PUBLISHED_VERSION, REJECTED
from recsys_stream.config import Config
from recsys_stream.contracts.ann_index import build_index
from recsys_stream.contracts.model_store import ALGORITHMS, ModelStore
from recsys_stream.contracts.pb import models_pb2
from recsys_stream.contracts.young_slice import YoungSlice
from recsys_stream.kafka import producer

log = logging.getLogger(__name__)
# Users whose own vectors measure the index's recall@10 against exact scoring.
INDEX_SAMPLE = 500


@dataclass
class Candidate:
    """One trained model of a round, written to the store, with its gate verdict."""

    tenant: str
    algorithm: str
    version: int
    metrics: dict
    baseline: dict
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.reasons

    def as_dict(self) -> dict:
        return {"tenant": self.tenant, "algorithm": self.algorithm, "version": self.version,
                "metrics": self.metrics, "baseline": self.baseline, "rejected": self.reasons,
                "seconds": self.seconds}


def write_version(store: ModelStore, cfg: Config, tenant: str, factors: Factors, user_ids,
                  item_ids, popularity: np.ndarray, manifest: dict, verify: bool = True,
                  progress: bool = False, young: YoungSlice | None = None) -> int:
    """Write a new version directory with its index; returns the version number.

    The index is tuned on a sample of the model's own user vectors (recall@10 against exact
    scoring goes to ``manifest["index"]``). ``verify=False`` for a model already known to fail
    a gate: it is kept for inspection only. ``progress``: bars over the index builds.
    ``young``: the young items' training columns (``batch.young``).
    """
    version = store.next_version(tenant)
    rng = np.random.default_rng(cfg.trainer.seed)
    n_users = len(user_ids)
    sample = factors.user_factors[rng.choice(n_users, min(INDEX_SAMPLE, n_users),
                                             replace=False)] if n_users else None
    store.write(tenant, factors.algorithm, version, item_ids=item_ids,
                item_factors=factors.item_factors, user_ids=user_ids,
                user_factors=factors.user_factors, popularity=popularity,
                manifest={**manifest, "hyperparameters": factors.hyperparameters,
                          "bias_column": factors.bias_column},
                index_writer=lambda p: build_index(factors.item_factors, p, sample,
                                                   recall_floor=cfg.trainer.index_recall_floor,
                                                   seed=cfg.trainer.seed,
                                                   progress=progress),
                extras=factors.extras, young=young)
    if verify:
        store.load(tenant, factors.algorithm, version)  # verify what was written, as readers do
    return version


class AnnouncementUndelivered(RuntimeError):
    """The broker did not acknowledge a model announcement (the version is CURRENT all the same)."""


def announce(cfg: Config, store: ModelStore, tenant: str, algorithm: str, version: int) -> None:
    """Publish ``recsys.v1.ModelPublished`` (key = tenant) for a version on ``models``.

    Raises
    ------
    AnnouncementUndelivered
        When the broker did not acknowledge the announcement within 10 s.
    """
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
        raise AnnouncementUndelivered(f"announcement of {tenant}/{algorithm} v{version} was not "
                                      f"delivered to {cfg.kafka.bootstrap_servers} in 10 s")



def choose_default(store: ModelStore, tenant: str) -> str | None:
    """The algorithm whose current version has the best holdout NDCG@10 (None: no model)."""
    best, best_ndcg = None, -1.0
    for algorithm in ALGORITHMS:
        v = store.current_version(tenant, algorithm)
        if v is None:
            continue
        ndcg = store.load(tenant, algorithm, v, verify=False).manifest.get(
            "metrics", {}).get("ndcg_at_10", 0.0)
        if ndcg > best_ndcg:
            best, best_ndcg = algorithm, ndcg
    return best


def publish(cfg: Config, store: ModelStore, candidates: list[Candidate],
            announcer: Callable[[Config, ModelStore, str, str, int], None] = announce
            ) -> str | None:
    """Settle one tenant's round: reject failures, point to and announce the rest.

    Passing versions become ``CURRENT``; then ``DEFAULT`` is set to the algorithm with the best
    holdout NDCG@10 among the current versions, each passing version is announced (with
    ``is_default``) and old versions, good and rejected, are pruned to ``trainer.keep_versions``
    each (``ModelStore.prune``), all under the tenant's lock. Returns the
    tenant's default algorithm. ``announcer`` is :func:`announce` (injected by the
    composition root; tests without a broker record the calls instead).
    """
    if not candidates:
        return None
    tenant = candidates[0].tenant
    with store.tenant_lock(tenant):  # no operator's rollback lands between CURRENT and announce
        return _settle(cfg, store, tenant, candidates, announcer)


def _settle(cfg: Config, store: ModelStore, tenant: str, candidates: list[Candidate],
            announcer: Callable) -> str | None:
    """:func:`publish`'s steps, run under the tenant's lock."""
    for c in candidates:
        if c.passed:
            store.set_current(tenant, c.algorithm, c.version)
        else:
            store.reject(tenant, c.algorithm, c.version, c.reasons)
            REJECTED.labels(tenant, c.algorithm).inc()
            log.warning("%s/%s v%d rejected: %s", tenant, c.algorithm, c.version,
                        "; ".join(c.reasons))
    default = choose_default(store, tenant)
    if default is not None and default != store.default_algorithm(tenant):
        store.set_default_algorithm(tenant, default)
        log.info("%s: default algorithm is now %s", tenant, default)
    for c in candidates:
        # pruned after a rejection too: a run of failing rounds must not fill the disk
        pruned = store.prune(tenant, c.algorithm, cfg.trainer.keep_versions)
        if c.passed:
            announcer(cfg, store, tenant, c.algorithm, c.version)
            PUBLISHED_VERSION.labels(tenant, c.algorithm).set(c.version)
            log.info("%s/%s v%d published%s (NDCG@10 %.4f, popularity %.4f)%s", tenant,
                     c.algorithm, c.version, " as default" if c.algorithm == default else "",
                     c.metrics.get("ndcg_at_10", 0.0), c.baseline.get("ndcg_at_10", 0.0),
                     f"; pruned {pruned}" if pruned else "")
        elif pruned:
            log.info("%s/%s: pruned %s", tenant, c.algorithm, pruned)
    return default
