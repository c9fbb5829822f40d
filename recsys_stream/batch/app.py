"""Composition root of the trainer: a round per tenant = data -> train -> evaluate -> gate ->
publish, once or periodically; plus the operator commands ``models list`` / ``models rollback``.

Per tenant and algorithm in ``trainer.algorithms``:

1. data: the worker's state changelog (default) or an events file, aggregated by
   ``UserHistory`` with the tenant's confidence settings, split by the temporal holdout
   (:mod:`recsys_stream.batch.data`);
2. the evaluated model is trained on the train split and scored on the holdout against the
   popularity baseline (:mod:`recsys_stream.batch.evaluate`), and against the current version
   on the held-out items first met after that version's data window, the part of the holdout
   it cannot have seen (:mod:`recsys_stream.batch.compare`);
3. the published model is retrained with the same hyperparameters and seed on all events, so
   the served vectors know every user's latest interactions;
4. the gates judge the published factors and the evaluated metrics
   (:mod:`recsys_stream.batch.gates`); the version is written, then made current and announced,
   or rejected (:mod:`recsys_stream.batch.publish`).

Periodic mode runs a round every ``trainer.interval_s`` and skips a tenant with fewer than
``trainer.min_new_events`` new events since its last round (at start-up: since the data of its
current model). SIGTERM / SIGINT end it after the step in progress.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

from tqdm import tqdm

from recsys_stream.batch import gates
from recsys_stream.batch.algorithms import TRAINERS
from recsys_stream.batch.compare import compare_with_current
from recsys_stream.batch.data import ChangelogReader, TenantData, build_matrix, from_events, \
    from_histories, iter_events_file
from recsys_stream.batch.explicit import train_mf_round
from recsys_stream.batch.evaluate import evaluate, factor_scorer, popularity_scorer, sample_users
from recsys_stream.batch.metrics import BASELINE_NDCG, LAST_ROUND, NDCG, RUNS, TRAIN_SECONDS
from recsys_stream.batch.publish import Candidate, announce, publish, write_version
from recsys_stream.config import Config
from recsys_stream.contracts.model_store import ALGORITHMS, ModelStore, ModelVerificationError
from recsys_stream.kafka import BrokerWatch
from recsys_stream.observability import serve_metrics

log = logging.getLogger(__name__)


# -- one tenant ----------------------------------------------------------------------------------
def train_tenant(cfg: Config, data: TenantData, store: ModelStore,
                 progress: bool = False) -> list[dict]:
    """Train, evaluate, gate and publish every configured algorithm for one tenant.

    Returns one dict per algorithm: tenant, algorithm, version, metrics, baseline, rejected
    (the gate's reasons; empty when published), seconds.
    """
    tc = cfg.tenant(data.tenant)
    settings = tc.confidence
    train = build_matrix(data.train, settings)
    full = build_matrix(data.histories, settings)
    pop_train, pop_full = train.popularity, full.popularity
    test = sample_users(data.test_items, cfg.trainer.eval_max_users, cfg.trainer.seed)
    baseline = evaluate(popularity_scorer(pop_train), train, test, pop_train, progress,
                        f"{data.tenant} popularity")
    BASELINE_NDCG.labels(data.tenant).set(baseline["ndcg_at_10"])
    log.info("%s: %d users, %d items, %d events (train nnz %d, %d test users); "
             "popularity NDCG@10 %.4f", data.tenant, len(full.user_ids), len(full.item_ids),
             data.n_events, train.C.nnz, baseline["users_evaluated"], baseline["ndcg_at_10"])
    window = {"from_ms": int(data.window[0]), "to_ms": int(data.window[1]),
              "n_events": int(data.n_events), "n_users": len(full.user_ids),
              "n_items": len(full.item_ids)}
    candidates = []
    for algorithm in cfg.trainer.algorithms:
        if algorithm == "mf":  # explicit ratings: its own round (batch/explicit.py)
            shared = {"confidence": settings.to_dict(), "history_cap": tc.history_cap,
                      "data_window": window,
                      "training": {"evaluated": "train split (ratings before each user's cut)",
                                   "published": "retrained on all latest ratings",
                                   "holdout_fraction": cfg.trainer.holdout_fraction}}
            c = train_mf_round(cfg, data, store, train, test, baseline, shared, progress)
            if c is not None:
                candidates.append(c)
            continue
        hp = getattr(tc, algorithm)
        t0 = time.perf_counter()
        evaluated = TRAINERS[algorithm](train.C, hp, cfg.trainer.seed, progress)
        scorer = factor_scorer(evaluated.user_factors, evaluated.item_factors)
        metrics = evaluate(scorer, train, test, pop_train, progress,
                           f"{data.tenant}/{algorithm}")
        log.info("%s/%s evaluated: NDCG@10 %.4f, recall@20 %.4f, MAP@10 %.4f, coverage %.3f",
                 data.tenant, algorithm, metrics["ndcg_at_10"], metrics["recall_at_20"],
                 metrics["map_at_10"], metrics["coverage"])
        against, comparison = compare_with_current(cfg, data, store, algorithm, train, scorer,
                                                   metrics, progress)
        factors = TRAINERS[algorithm](full.C, hp, cfg.trainer.seed, progress)
        seconds = time.perf_counter() - t0
        TRAIN_SECONDS.labels(data.tenant, algorithm).observe(seconds)
        NDCG.labels(data.tenant, algorithm).set(metrics["ndcg_at_10"])
        reasons = gates.check(factors, len(full.user_ids), len(full.item_ids), metrics,
                              baseline, comparison, cfg.trainer)
        compared = {"popularity": baseline} | ({"current": against} if against else {})
        manifest = {"confidence": settings.to_dict(), "history_cap": tc.history_cap,
                    "metrics": metrics, "baseline_metrics": compared,
                    "train_seconds": seconds, "data_window": window,
                    "training": {"evaluated": "train split (events before each user's cut)",
                                 "published": "retrained on all events",
                                 "holdout_fraction": cfg.trainer.holdout_fraction}}
        version = write_version(store, cfg, data.tenant, factors, full.user_ids, full.item_ids,
                                pop_full, manifest, verify=not reasons,
                                progress=progress)
        log.info("%s/%s v%d written in %.1fs%s", data.tenant, algorithm, version, seconds,
                 "" if not reasons else " (fails a gate)")
        candidates.append(Candidate(data.tenant, algorithm, version, metrics, baseline,
                                    reasons, seconds))
    publish(cfg, store, candidates, announcer=announce)  # resolved here: injectable
    return [c.as_dict() for c in candidates]


# -- data ----------------------------------------------------------------------------------------
def load_data(cfg: Config, events_file: str | None, tenant: str | None,
              progress: bool = False, changelog: ChangelogReader | None = None
              ) -> list[TenantData]:
    """Every requested tenant's data (configured tenants, or just ``tenant``); ``progress``:
    a bar over the records read; ``changelog``: the reader that keeps the state between
    rounds (a fresh one, reading the topic from its start, by default)."""
    tenants = [tenant] if tenant else list(cfg.tenants)
    for t in tenants:
        cfg.tenant(t)  # unknown tenant: KeyError before any work
    frac = cfg.trainer.holdout_fraction
    if events_file:
        t0 = time.perf_counter()
        events = list(tqdm(iter_events_file(events_file, tenant=tenant), desc="events file",
                           unit="event", disable=not progress))
        log.info("read %d events from %s in %.1fs", len(events), events_file,
                 time.perf_counter() - t0)
        out = []
        for t in tenants:
            tc = cfg.tenant(t)
            out.append(from_events(t, events, tc.confidence, tc.history_cap, frac))
        return out
    by_tenant = (changelog or ChangelogReader(cfg)).read(progress=progress)
    unknown = set(by_tenant) - set(cfg.tenants)
    if unknown:
        log.warning("changelog holds unconfigured tenants %s: ignored", sorted(unknown))
    return [from_histories(t, by_tenant.get(t, {}), frac) for t in tenants]


def _published_events(store: ModelStore, tenant: str) -> int:
    """Events in the data window of the tenant's newest current model (0: none)."""
    n = 0
    for algorithm in ALGORITHMS:
        v = store.current_version(tenant, algorithm)
        if v is not None:
            m = store.load(tenant, algorithm, v, verify=False).manifest
            n = max(n, int(m.get("data_window", {}).get("n_events", 0)))
    return n


# -- the process ---------------------------------------------------------------------------------
def run_trainer(cfg: Config, once: bool = True, events_file: str | None = None,
                tenant: str | None = None, stop: threading.Event | None = None) -> list[dict]:
    """One round (``once``) or a round every ``trainer.interval_s`` until ``stop`` is set.

    Parameters
    ----------
    cfg : Config
    once : one round and return; otherwise periodic (SIGTERM/SIGINT set ``stop`` when called
        from the main thread; ``/metrics`` on ``trainer.metrics_port``)
    events_file : train from this CSV/JSONL file instead of the state changelog
    tenant : only this tenant (required for a MovieLens file)
    stop : ends the periodic loop

    Returns
    -------
    list of dict, one per trained model (see :func:`train_tenant`)

    Raises
    ------
    RuntimeError
        In ``once`` mode, when any tenant's round failed (after trying every tenant).
    """
    stop = stop or threading.Event()
    if not once and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    if not once:
        watch = BrokerWatch(cfg).start()
        serve_metrics(cfg.trainer.metrics_port, watch.health(lambda: {"status": "ok"}))
    store = ModelStore(cfg.model_store)
    seen: dict[str, int] = {}  # tenant -> events in the data of its last round
    results: list[dict] = []
    progress = once and sys.stderr.isatty()
    changelog = ChangelogReader(cfg)  # each round reads only what the worker appended since
    while True:
        failed = []
        try:
            datasets = load_data(cfg, events_file, tenant, progress, changelog)
        except Exception as e:
            if once:
                raise
            log.exception("loading training data failed; next round in %ss: %s",
                          cfg.trainer.interval_s, e)
            datasets = []
        for data in datasets:
            if stop.is_set():
                break
            if not data.histories:
                log.info("%s: no data, skipped", data.tenant)
                RUNS.labels(data.tenant, "skipped").inc()
                continue
            if not once:
                if data.tenant not in seen:
                    seen[data.tenant] = _published_events(store, data.tenant)
                new = data.event_count - seen[data.tenant]
                if new < cfg.trainer.min_new_events:
                    log.info("%s: %d new events (< %d), skipped", data.tenant, new,
                             cfg.trainer.min_new_events)
                    RUNS.labels(data.tenant, "skipped").inc()
                    LAST_ROUND.labels(data.tenant).set(time.time())
                    continue
            try:
                results += train_tenant(cfg, data, store, progress=progress)
            except Exception:
                log.exception("%s: training round failed", data.tenant)
                RUNS.labels(data.tenant, "failed").inc()
                failed.append(data.tenant)
                continue
            seen[data.tenant] = data.event_count
            RUNS.labels(data.tenant, "trained").inc()
            LAST_ROUND.labels(data.tenant).set(time.time())
        if once:
            if failed:
                raise RuntimeError(f"training failed for tenants {failed} (see the log)")
            return results
        if stop.wait(cfg.trainer.interval_s):
            watch.stop()
            log.info("trainer stopped")
            return results


# -- operator commands ---------------------------------------------------------------------------
def list_models(cfg: Config) -> list[dict]:
    """Every stored version with its state, for ``recsys-stream models list``.

    Each row: tenant, algorithm, version, state (current | kept | rejected), default,
    ndcg_at_10, created (UTC ISO), and the rejection reasons when rejected.
    """
    store = ModelStore(cfg.model_store)
    rows = []
    for tenant in store.tenants():
        default = store.default_algorithm(tenant)
        for algorithm in ALGORITHMS:
            current = store.current_version(tenant, algorithm)
            for v in store.versions(tenant, algorithm):
                m = store.load(tenant, algorithm, v, verify=False).manifest
                rejected = store.rejected_reasons(tenant, algorithm, v)
                row = {"tenant": tenant, "algorithm": algorithm, "version": v,
                       "state": "rejected" if rejected else
                       ("current" if v == current else "kept"),
                       "default": algorithm == default and v == current,
                       "ndcg_at_10": round(m.get("metrics", {}).get("ndcg_at_10", 0), 4),
                       "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                time.gmtime(m.get("created_ms", 0) / 1000))}
                if rejected:
                    row["reasons"] = rejected
                rows.append(row)
    return rows


def rollback(cfg: Config, tenant: str, version: int | None = None,
             algorithm: str | None = None) -> int:
    """Serve an earlier good version again and re-announce it; returns that version.

    ``version`` defaults to the newest non-rejected version before ``CURRENT`` that passes
    verification (damaged ones are skipped with a warning); ``algorithm`` to the tenant's
    default. The version is verified before ``CURRENT`` moves, under the tenant's lock.

    Raises
    ------
    SystemExit
        No earlier version, or the given one is missing or rejected.
    """
    store = ModelStore(cfg.model_store)
    if tenant not in store.tenants():  # before the lock, which would create its directory
        raise SystemExit(f"{tenant}: no models in {cfg.model_store}")
    algorithm = algorithm or store.default_algorithm(tenant) or "als"
    with store.tenant_lock(tenant):  # not between a trainer's CURRENT and its announcement
        good = [v for v in store.versions(tenant, algorithm)
                if store.rejected_reasons(tenant, algorithm, v) is None]
        current = store.current_version(tenant, algorithm)
        if version is None:
            older = [v for v in good if current is None or v < current]
            for v in reversed(older):  # the newest earlier version that still verifies
                try:
                    store.load(tenant, algorithm, v)
                except ModelVerificationError as e:
                    log.warning("%s/%s v%d skipped: %s", tenant, algorithm, v, e)
                    continue
                version = v
                break
            if version is None:
                raise SystemExit(f"{tenant}/{algorithm}: no version before {current} to roll "
                                 "back to" + (" that verifies" if older else ""))
        elif version not in good:
            raise SystemExit(f"{tenant}/{algorithm}: version {version} is missing or rejected")
        else:
            store.load(tenant, algorithm, version)  # verified before it is pointed to
        store.set_current(tenant, algorithm, version)
        announce(cfg, store, tenant, algorithm, version)
    log.info("%s/%s rolled back from v%s to v%d", tenant, algorithm, current, version)
    return version
