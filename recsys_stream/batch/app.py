"""Composition root of the trainer: a round per tenant = data -> train -> evaluate -> gate ->
publish, once or periodically; plus the operator commands ``models list`` / ``models rollback``.

Per tenant and algorithm in ``trainer.algorithms``:

1. data: the worker's state changelog (default) or an events file, aggregated by
   ``UserHistory`` with the tenant's confidence settings, split by the temporal holdout
   (:mod:`recsys_stream.batch.data`), read by the tenant's engine
   (:mod:`recsys_stream.batch.engines`: ``implicit`` in this process, ``spark`` in Spark tasks),
   which also fits the factors;
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

import ctypes
import logging
import signal
import sys
import threading
import time

from recsys_stream.batch import gates, tuning
from recsys_stream.batch.compare import compare_with_current
from recsys_stream.batch.data import ChangelogReader, TenantData
from recsys_stream.batch.engines import Engine, TenantRound, make_engine
from recsys_stream.batch.evaluate import evaluate, factor_scorer, popularity_scorer
from recsys_stream.batch.explicit import train_mf_round
from recsys_stream.batch.metrics import BASELINE_NDCG, LAST_ROUND, NDCG, RUNS, TRAIN_SECONDS
from recsys_stream.batch.publish import AnnouncementUndelivered, Candidate, announce, publish, \
    write_version
from recsys_stream.batch.young import training_slice
from recsys_stream.config import Config
from recsys_stream.contracts.model_store import ALGORITHMS, ModelStore, ModelVerificationError
from recsys_stream.kafka import BrokerWatch
from recsys_stream.observability import serve_metrics

log = logging.getLogger(__name__)


# -- one tenant ----------------------------------------------------------------------------------
def train_tenant(cfg: Config, data: TenantData | TenantRound, store: ModelStore,
                 progress: bool = False, engine: Engine | None = None,
                 announcing: str = "required") -> list[dict]:
    """Train, evaluate, gate and publish every configured algorithm for one tenant.

    ``data`` is a round of ``engine`` (:mod:`recsys_stream.batch.engines`), or a tenant's
    ``TenantData`` for the implicit engine. The engine fits; everything else happens here,
    alike for every engine. ``announcing``: see :func:`_announcer`. Returns one dict per
    algorithm: tenant, algorithm, version, metrics, baseline, rejected (the gate's reasons;
    empty when published), seconds.
    """
    if isinstance(data, TenantData):
        engine = engine or make_engine("implicit", cfg)
        data = engine.round(cfg, data)
    elif engine is None:
        raise ValueError("a TenantRound needs the engine that loaded it")
    rnd, tenant = data, data.tenant
    tc = cfg.tenant(tenant)
    settings = tc.confidence
    pop_train = rnd.pop_train
    baseline = evaluate(popularity_scorer(pop_train), rnd.eval, rnd.test, pop_train, progress,
                        f"{tenant} popularity")
    BASELINE_NDCG.labels(tenant).set(baseline["ndcg_at_10"])
    log.info("%s: %d users, %d items, %d events (train nnz %d, %d test users); "
             "popularity NDCG@10 %.4f; engine %s", tenant, len(rnd.full_users),
             len(rnd.full_items), rnd.n_events, rnd.train_nnz, baseline["users_evaluated"],
             baseline["ndcg_at_10"], engine.name)
    window = {"from_ms": int(rnd.window[0]), "to_ms": int(rnd.window[1]),
              "n_events": int(rnd.n_events), "n_users": len(rnd.full_users),
              "n_items": len(rnd.full_items)}
    candidates = []
    for algorithm in cfg.trainer.algorithms:
        if algorithm not in engine.algorithms:
            log.warning("%s/%s: the %s engine has no %s (Spark MLlib has no BPR, and mf is fitted "
                        "by this process's engine only): not trained this round; the tenant "
                        "trains %s", tenant, algorithm, engine.name, algorithm,
                        ", ".join(a for a in cfg.trainer.algorithms
                                  if a in engine.algorithms) or "nothing")
            continue
        if algorithm == "mf":  # explicit ratings: its own round (batch/explicit.py)
            shared = {"confidence": settings.to_dict(), "history_cap": tc.history_cap,
                      "data_window": window, "engine": engine.name,
                      "training": {"evaluated": "train split (ratings before each user's cut)",
                                   "published": "retrained on all latest ratings",
                                   "holdout_fraction": cfg.trainer.holdout_fraction}}
            c = train_mf_round(cfg, rnd.data, store, rnd.eval, rnd.test, baseline, shared,
                               progress)
            if c is not None:
                candidates.append(c)
            continue
        hp = getattr(tc, algorithm)
        t0 = time.perf_counter()
        evaluated = engine.fit(rnd, "train", algorithm, hp, cfg.trainer.seed, progress)
        # the evaluated users' rows of the train-split factors, in the order of rnd.eval
        scorer = factor_scorer(evaluated.user_factors[rnd.eval_rows], evaluated.item_factors)
        metrics = evaluate(scorer, rnd.eval, rnd.test, pop_train, progress,
                           f"{tenant}/{algorithm}")
        log.info("%s/%s evaluated: NDCG@10 %.4f, recall@20 %.4f, MAP@10 %.4f, coverage %.3f",
                 tenant, algorithm, metrics["ndcg_at_10"], metrics["recall_at_20"],
                 metrics["map_at_10"], metrics["coverage"])
        against, comparison = compare_with_current(cfg, rnd.data, store, algorithm, rnd.eval,
                                                   scorer, metrics, progress,
                                                   popularity=pop_train)
        factors = engine.fit(rnd, "full", algorithm, hp, cfg.trainer.seed, progress)
        seconds = time.perf_counter() - t0
        TRAIN_SECONDS.labels(tenant, algorithm).observe(seconds)
        NDCG.labels(tenant, algorithm).set(metrics["ndcg_at_10"])
        reasons = gates.check(factors, len(rnd.full_users), len(rnd.full_items), metrics,
                              baseline, comparison, cfg.trainer)
        compared = {"popularity": baseline} | ({"current": against} if against else {})
        manifest = {"confidence": settings.to_dict(), "history_cap": tc.history_cap,
                    "engine": engine.name,
                    "regularization_scaling": engine.regularization_scaling,
                    "metrics": metrics, "baseline_metrics": compared,
                    "train_seconds": seconds, "data_window": window,
                    "tuning": tuning.manifest_entry(store, tenant, engine.record_key, algorithm, tc),
                    "training": {"evaluated": "train split (events before each user's cut)",
                                 "published": "retrained on all events",
                                 "holdout_fraction": cfg.trainer.holdout_fraction}}
        young = training_slice(engine, rnd, factors, tc.young_item_users)
        if young is not None:
            manifest["young_item_users"] = tc.young_item_users
            manifest["young_items"] = len(young)
        version = write_version(store, cfg, tenant, factors, rnd.full_users, rnd.full_items,
                                rnd.pop_full, manifest, verify=not reasons,
                                progress=progress, young=young)
        log.info("%s/%s v%d written in %.1fs%s", tenant, algorithm, version, seconds,
                 "" if not reasons else " (fails a gate)")
        candidates.append(Candidate(tenant, algorithm, version, metrics, baseline,
                                    reasons, seconds))
    publish(cfg, store, candidates, announcer=_announcer(announcing))
    return [c.as_dict() for c in candidates]


def _announcer(announcing: str):
    """How a published version is announced on ``models``.

    ``"required"`` (periodic rounds): an undelivered announcement fails the round.
    ``"best_effort"`` (``trainer --once``, typically from ``--events-file`` with no broker):
    the version is CURRENT in the store, which is what was asked for; one warning line says no
    server was told (a server loads CURRENT when it starts). ``"off"`` (``--no-announce``): the
    store only. ``announce`` is looked up at call time (tests record the calls instead).
    """
    if announcing == "required":
        return lambda *a: announce(*a)

    def quietly(cfg: Config, store: ModelStore, tenant: str, algorithm: str, version: int):
        if announcing == "off":
            log.info("%s/%s v%d is CURRENT in %s; not announced (--no-announce)", tenant,
                     algorithm, version, store.root)
            return
        try:
            announce(cfg, store, tenant, algorithm, version)
        except AnnouncementUndelivered as e:
            log.warning("%s/%s v%d is CURRENT in %s, but no server was told (%s); a server "
                        "loads it when it starts", tenant, algorithm, version, store.root, e)
    return quietly


# -- data ----------------------------------------------------------------------------------------
def _tenants(cfg: Config, tenant: str | None) -> list[str]:
    tenants = [tenant] if tenant else list(cfg.tenants)
    for t in tenants:
        cfg.tenant(t)  # unknown tenant: KeyError before any work
    return tenants


def load_data(cfg: Config, events_file: str | None, tenant: str | None,
              progress: bool = False) -> list[TenantData]:
    """Every requested tenant's data in memory (configured tenants, or just ``tenant``), as the
    implicit engine reads it; ``progress``: a bar over the records read."""
    from recsys_stream.batch.engines.local import ImplicitEngine
    return ImplicitEngine.load_data(cfg, _tenants(cfg, tenant), events_file, tenant, progress)


def load_rounds(cfg: Config, events_file: str | None, tenant: str | None,
                progress: bool = False, changelog: ChangelogReader | None = None
                ) -> list[tuple[Engine, list[TenantRound]]]:
    """The requested tenants grouped by their engine (``trainer.engine``, a tenant's own
    ``engine``), each group loaded by its engine; ``changelog``: the implicit engine's reader,
    kept between a periodic trainer's rounds."""
    by_engine: dict[str, list[str]] = {}
    for t in _tenants(cfg, tenant):
        by_engine.setdefault(cfg.engine_of(t), []).append(t)
    out = []
    for name, tenants in by_engine.items():
        engine = make_engine(name, cfg, changelog)
        try:
            out.append((engine, engine.load(cfg, tenants, events_file, tenant, progress)))
        except BaseException:
            for e, _ in out + [(engine, None)]:
                e.close()
            raise
    return out


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
                tenant: str | None = None, stop: threading.Event | None = None,
                announce_models: bool = True) -> list[dict]:
    """One round (``once``) or a round every ``trainer.interval_s`` until ``stop`` is set.

    Parameters
    ----------
    cfg : Config
    once : one round and return; otherwise periodic (SIGTERM/SIGINT set ``stop`` when called
        from the main thread; ``/metrics`` on ``trainer.metrics_port``)
    events_file : train from this CSV/JSONL file instead of the state changelog
    tenant : only this tenant (required for a MovieLens file)
    stop : ends the periodic loop
    announce_models : announce published versions on ``models``. In ``once`` mode an
        announcement the broker does not take is a warning, not a failure (the version is
        CURRENT in the store); a periodic round fails on it.

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
    configured, n_round = cfg, 0
    while True:
        failed = []
        tuning.scheduled(configured, store, events_file, tenant, n_round)  # tune_every_rounds
        n_round += 1
        cfg = tuning.tuned_config(configured, store)  # the tenants' tuned values, then pins
        try:
            groups = load_rounds(cfg, events_file, tenant, progress, changelog)
        except Exception as e:
            if once:
                raise
            log.exception("loading training data failed; next round in %ss: %s",
                          cfg.trainer.interval_s, e)
            groups = []
        for engine, rounds in groups:
            with engine:  # the Spark engine's session ends with its tenants' rounds
                for rnd in rounds:
                    if stop.is_set():
                        break
                    announcing = "off" if not announce_models else (
                        "best_effort" if once else "required")
                    outcome = _round(cfg, engine, rnd, store, seen, once, progress, results,
                                     announcing)
                    if outcome == "failed":
                        failed.append(rnd.tenant)
                    elif not rnd.empty:  # erased users leave every kept version
                        _scrub(store, rnd, bool(events_file))
                    engine.release(rnd)
                    release_freed_memory()
        if once:
            if failed:
                raise RuntimeError(f"training failed for tenants {failed} (see the log)")
            return results
        if stop.wait(cfg.trainer.interval_s):
            watch.stop()
            log.info("trainer stopped")
            return results


def _round(cfg: Config, engine: Engine, rnd: TenantRound, store: ModelStore,
           seen: dict[str, int], once: bool, progress: bool, results: list[dict],
           announcing: str = "required") -> str:
    """One tenant's round in the trainer loop: "skipped", "trained" or "failed"."""
    if rnd.empty:
        log.info("%s: no data, skipped", rnd.tenant)
        RUNS.labels(rnd.tenant, "skipped").inc()
        return "skipped"
    if not once:
        if rnd.tenant not in seen:
            seen[rnd.tenant] = _published_events(store, rnd.tenant)
        new = rnd.event_count - seen[rnd.tenant]
        if new < cfg.trainer.min_new_events:
            log.info("%s: %d new events (< %d), skipped", rnd.tenant, new,
                     cfg.trainer.min_new_events)
            RUNS.labels(rnd.tenant, "skipped").inc()
            LAST_ROUND.labels(rnd.tenant).set(time.time())
            return "skipped"
    try:
        results += train_tenant(cfg, rnd, store, progress=progress, engine=engine,
                                announcing=announcing)
    except Exception:
        log.exception("%s: training round failed", rnd.tenant)
        RUNS.labels(rnd.tenant, "failed").inc()
        return "failed"
    seen[rnd.tenant] = rnd.event_count
    RUNS.labels(rnd.tenant, "trained").inc()
    LAST_ROUND.labels(rnd.tenant).set(time.time())
    return "trained"


def _scrub(store: ModelStore, rnd: TenantRound, from_file: bool) -> None:
    """Drop erased users' rows from the tenant's kept versions (``batch.scrub``): from the
    changelog every user without state in this round; from a file its erase records."""
    from recsys_stream.batch.scrub import scrub_tenant
    try:
        if from_file:
            erased = getattr(rnd.data, "erased", set())
            if erased:
                scrub_tenant(store, rnd.tenant, erased=erased)
        else:
            scrub_tenant(store, rnd.tenant, live=set(rnd.full_users))
    except Exception:  # the next round tries again; the round itself stands
        log.exception("%s: dropping erased users from the kept versions failed", rnd.tenant)


def release_freed_memory() -> None:
    """Give the heap's free pages back to the system after a round (glibc's ``malloc_trim``).

    A round frees its matrices, factors and index, but glibc keeps freed small and medium
    blocks in its arenas, so a periodic trainer's RSS climbed round after round in the soak.
    ``benchmarks/trainer_memory.py`` (8 rounds in one process on a growing synthetic stream,
    5,000 users, cap 50): RSS after the rounds 188 -> 261 MB without the trim, 184 -> 206 MB
    with it. No-op off glibc.
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


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
