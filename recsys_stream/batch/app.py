"""Composition root of the trainer: a round per tenant = data -> train -> evaluate -> gate ->
publish. Once, or periodically; plus the operator commands ``models list`` / ``models rollback``.

The model evaluated on the holdout is trained on the events before the cut; the model published
is retrained with the same hyperparameters and seed on all events, so the served vectors know
every user's latest interactions. Gates judge the published model's factors and the evaluated
model's metrics.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

import numpy as np

from recsys_stream.batch import gates
from recsys_stream.batch.algorithms import TRAINERS
from recsys_stream.batch.data import TenantData, build_matrix, from_events, from_histories, \
    iter_events_file, read_changelog
from recsys_stream.batch.evaluate import evaluate, factor_scorer, popularity_scorer
from recsys_stream.batch.metrics import NDCG, PUBLISHED_VERSION, REJECTED, RUNS, TRAIN_SECONDS
from recsys_stream.batch.publish import announce, choose_default, write_version
from recsys_stream.config import Config
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.observability import serve_metrics

log = logging.getLogger(__name__)


def _popularity(C) -> np.ndarray:
    return np.diff(C.tocsc().indptr).astype(np.float32)  # users per item


def train_tenant(cfg: Config, data: TenantData, store: ModelStore,
                 progress: bool = False) -> list[dict]:
    """Train, evaluate, gate and publish every configured algorithm for one tenant."""
    tc = cfg.tenant(data.tenant)
    settings = tc.confidence
    train = build_matrix(data.train, settings)
    full = build_matrix(data.histories, settings)
    pop_train, pop_full = _popularity(train.C), _popularity(full.C)
    baseline = evaluate(popularity_scorer(pop_train), train, data.test_items, pop_train)
    log.info("%s: %d users, %d items, %d events; popularity NDCG@10 %.4f on %d test users",
             data.tenant, len(full.user_ids), len(full.item_ids), data.n_events,
             baseline["ndcg_at_10"], baseline["users_evaluated"])
    results, passed = [], []
    for algorithm in cfg.trainer.algorithms:
        hp = getattr(tc, algorithm)
        t0 = time.perf_counter()
        evaluated = TRAINERS[algorithm](train.C, hp, cfg.trainer.seed, progress)
        metrics = evaluate(factor_scorer(evaluated.user_factors, evaluated.item_factors), train,
                           data.test_items, pop_train)
        factors = TRAINERS[algorithm](full.C, hp, cfg.trainer.seed, progress)
        seconds = time.perf_counter() - t0
        TRAIN_SECONDS.labels(data.tenant, algorithm).observe(seconds)
        NDCG.labels(data.tenant, algorithm).set(metrics["ndcg_at_10"])
        cur = store.current_version(data.tenant, algorithm)
        current_ndcg = store.load(data.tenant, algorithm, cur, verify=False).manifest.get(
            "metrics", {}).get("ndcg_at_10") if cur is not None else None
        reasons = gates.check(factors, len(full.user_ids), len(full.item_ids), metrics,
                              baseline, current_ndcg, cfg.trainer)
        manifest = {"confidence": settings.to_dict(), "metrics": metrics,
                    "baseline_metrics": {"popularity": baseline}, "train_seconds": seconds,
                    "data_window": {"from_ms": data.window[0], "to_ms": data.window[1],
                                    "n_events": data.n_events, "n_users": len(full.user_ids),
                                    "n_items": len(full.item_ids)}}
        version = write_version(store, cfg, data.tenant, factors, full.user_ids, full.item_ids,
                                pop_full, manifest, verify=not reasons)
        result = {"tenant": data.tenant, "algorithm": algorithm, "version": version,
                  "metrics": metrics, "baseline": baseline, "rejected": reasons,
                  "seconds": seconds}
        if reasons:
            store.reject(data.tenant, algorithm, version, reasons)
            REJECTED.labels(data.tenant, algorithm).inc()
            log.warning("%s/%s v%d rejected: %s", data.tenant, algorithm, version,
                        "; ".join(reasons))
        else:
            store.set_current(data.tenant, algorithm, version)
            passed.append((algorithm, version))
            log.info("%s/%s v%d trained in %.1fs: NDCG@10 %.4f (popularity %.4f), "
                     "recall@20 %.4f", data.tenant, algorithm, version, seconds,
                     metrics["ndcg_at_10"], baseline["ndcg_at_10"], metrics["recall_at_20"])
        results.append(result)
    default = choose_default(store, data.tenant)
    if default is not None:
        store.set_default_algorithm(data.tenant, default)
    for algorithm, version in passed:
        announce(cfg, store, data.tenant, algorithm, version)
        store.prune(data.tenant, algorithm, cfg.trainer.keep_versions)
        PUBLISHED_VERSION.labels(data.tenant, algorithm).set(version)
        log.info("%s/%s v%d published%s", data.tenant, algorithm, version,
                 " (default)" if algorithm == default else "")
    return results


def load_data(cfg: Config, events_file: str | None, tenant: str | None) -> list[TenantData]:
    tenants = [tenant] if tenant else list(cfg.tenants)
    frac = cfg.trainer.holdout_fraction
    if events_file:
        events = list(iter_events_file(events_file, tenant=tenant))
        return [from_events(t, events, cfg.tenant(t).confidence, cfg.tenant(t).history_cap, frac)
                for t in tenants]
    by_tenant = read_changelog(cfg)
    return [from_histories(t, by_tenant.get(t, {}), frac) for t in tenants]


def run_trainer(cfg: Config, once: bool = True, events_file: str | None = None,
                tenant: str | None = None, stop: threading.Event | None = None) -> list[dict]:
    """One round (``once``) or a round every ``trainer.interval_s`` until stopped."""
    stop = stop or threading.Event()
    if not once and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    store = ModelStore(cfg.model_store)
    last_count: dict[str, int] = {}
    results: list[dict] = []
    last_round = {"finished": None}
    http = None
    if not once:
        http = serve_metrics(cfg.trainer.metrics_port, lambda: {
            "status": "ok", "last_round_finished": last_round["finished"],
            "published": {t: {a: store.current_version(t, a) for a in cfg.trainer.algorithms}
                          for t in cfg.tenants}})
    while True:
        for data in load_data(cfg, events_file, tenant):
            new = data.event_count - last_count.get(data.tenant, 0)
            if not data.histories or new < cfg.trainer.min_new_events:
                log.info("%s: skipped (%d new events)", data.tenant, new)
                RUNS.labels(data.tenant, "skipped").inc()
                continue
            results += train_tenant(cfg, data, store, progress=once and sys.stderr.isatty())
            last_count[data.tenant] = data.event_count
            RUNS.labels(data.tenant, "trained").inc()
        last_round["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if once or stop.wait(cfg.trainer.interval_s):
            if http is not None:
                http.shutdown()
            return results


def list_models(cfg: Config) -> list[dict]:
    """Every stored version with its state, for ``recsys-stream models list``."""
    store = ModelStore(cfg.model_store)
    rows = []
    for tenant in store.tenants():
        default = store.default_algorithm(tenant)
        for algorithm in ("als", "bpr"):
            current = store.current_version(tenant, algorithm)
            for v in store.versions(tenant, algorithm):
                m = store.load(tenant, algorithm, v, verify=False).manifest
                rejected = store.rejected_reasons(tenant, algorithm, v)
                rows.append({"tenant": tenant, "algorithm": algorithm, "version": v,
                             "state": "rejected" if rejected else
                             ("current" if v == current else "kept"),
                             "default": algorithm == default and v == current,
                             "ndcg_at_10": round(m.get("metrics", {}).get("ndcg_at_10", 0), 4),
                             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                      time.gmtime(m.get("created_ms", 0) / 1000))})
    return rows


def rollback(cfg: Config, tenant: str, version: int | None = None,
             algorithm: str | None = None) -> int:
    """Serve an earlier good version again (default: the one before CURRENT) and announce it."""
    store = ModelStore(cfg.model_store)
    algorithm = algorithm or store.default_algorithm(tenant) or "als"
    good = [v for v in store.versions(tenant, algorithm)
            if store.rejected_reasons(tenant, algorithm, v) is None]
    current = store.current_version(tenant, algorithm)
    if version is None:
        older = [v for v in good if current is None or v < current]
        if not older:
            raise SystemExit(f"{tenant}/{algorithm}: no version before {current} to roll back to")
        version = older[-1]
    elif version not in good:
        raise SystemExit(f"{tenant}/{algorithm}: version {version} is missing or rejected")
    store.load(tenant, algorithm, version)  # verified before it is pointed to
    store.set_current(tenant, algorithm, version)
    announce(cfg, store, tenant, algorithm, version)
    log.info("%s/%s rolled back to v%d", tenant, algorithm, version)
    return version
