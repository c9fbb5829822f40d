"""Hyperparameter search per tenant and per engine, on validation carved from the training part.

What is searched (``optuna``'s TPE sampler, seeded with ``trainer.seed``):

- ALS: lambda (``als.regularization``, log scale), the confidence alpha (log scale) and the
  latent dimension (``als.factors``); ``als.iterations`` stays as configured;
- BPR: learning rate and lambda (log scale) and epochs; ``bpr.factors`` stays as configured;
- mf: not here (explicit MF is tuned as before, by ``benchmarks/explicit.py --tune``).

Validation: the training part of the trainer's temporal holdout is split again by the same
holdout, so the test holdout is never looked at. From an events file (``--events-file``) the
training part is each user's first ``holdout_cut`` events and the engine itself loads them (a
temporary JSON-lines file): the implicit engine in this process, the Spark engine in Spark
tasks, so each engine is tuned on its own fit, with its own meaning of lambda (MLlib's
regParam is scaled by each user's count). From the state changelog, the implicit engine splits
the train histories by ``data.split_history`` (the items met last are the validation); the
Spark engine from the changelog is not tuned (a warning says so).

Budget: ``trainer.tune_trials`` trials and ``trainer.tune_budget_s`` seconds per search (no
trial starts after it). Trial 0 is the tenant's configured values (clipped into the bounds), so
a search never returns anything worse on validation than the configuration it started from.
Bounds are ``trainer.tune_*``, widened to take in a configured value outside them. A tenant's
``pin`` keys (``PIN_KEYS``) are never searched and win over any tuned value.

The record: ``<model_store>/<tenant>/tuning.json``, per engine and algorithm the chosen values,
the validation NDCG@10 of the start and of the best trial, every trial, the budget and the
seconds spent. :func:`tuned_config` applies it (then the pins) to a round's configuration, and
:func:`manifest_entry` is what each model version's manifest carries of it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from recsys_stream.batch.engines import record_key
from recsys_stream.batch.engines.base import Engine, TenantRound
from recsys_stream.batch.evaluate import evaluate, factor_scorer
from recsys_stream.config import Config, TenantConfig
from recsys_stream.contracts.model_store import ModelStore

log = logging.getLogger(__name__)

RECORD = "tuning.json"
TUNED = ("als", "bpr")
# parameter -> (algorithm, trainer bounds key, integer?, log scale?)
PARAMS = {
    "als_regularization": ("als", "tune_als_regularization", False, True),
    "alpha": ("als", "tune_alpha", False, True),
    "als_factors": ("als", "tune_als_factors", True, True),
    "bpr_learning_rate": ("bpr", "tune_bpr_learning_rate", False, True),
    "bpr_regularization": ("bpr", "tune_bpr_regularization", False, True),
    "bpr_iterations": ("bpr", "tune_bpr_iterations", True, True),
}


# -- the record ----------------------------------------------------------------------------------
def record_path(store: ModelStore, tenant: str) -> Path:
    return store.root / tenant / RECORD


def read_record(store: ModelStore, tenant: str) -> dict:
    """The tenant's record (``{"engines": {engine: {algorithm: search}}}``), empty if none."""
    p = record_path(store, tenant)
    return json.loads(p.read_text()) if p.exists() else {"engines": {}}


def _write_record(store: ModelStore, tenant: str, record: dict) -> None:
    p = record_path(store, tenant)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{RECORD}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(tmp, p)


def configured(tc: TenantConfig) -> dict:
    """The tenant's configured values of every searched parameter."""
    return {"als_regularization": tc.als.regularization, "alpha": tc.alpha,
            "als_factors": tc.als.factors, "bpr_learning_rate": tc.bpr.learning_rate,
            "bpr_regularization": tc.bpr.regularization, "bpr_iterations": tc.bpr.iterations}


def with_values(tc: TenantConfig, values: dict) -> TenantConfig:
    """``tc`` with the given searched parameters replaced (others as they are)."""
    v = configured(tc) | values
    return dataclasses.replace(
        tc, alpha=float(v["alpha"]),
        als=dataclasses.replace(tc.als, regularization=float(v["als_regularization"]),
                                factors=int(v["als_factors"])),
        bpr=dataclasses.replace(tc.bpr, learning_rate=float(v["bpr_learning_rate"]),
                                regularization=float(v["bpr_regularization"]),
                                iterations=int(v["bpr_iterations"])))


def tuned_config(cfg: Config, store: ModelStore) -> Config:
    """``cfg`` with each tenant's tuned values for its engine, then its pins, applied."""
    tenants = {}
    for name, tc in cfg.tenants.items():
        searches = read_record(store, name).get("engines", {}).get(record_key(cfg, name), {})
        values = {}
        for algorithm in TUNED:
            values.update(searches.get(algorithm, {}).get("params", {}))
        tenants[name] = with_values(tc, values | dict(tc.pin))
    return dataclasses.replace(cfg, tenants=tenants)


def manifest_entry(store: ModelStore, tenant: str, engine: str, algorithm: str,
                   tc: TenantConfig) -> dict:
    """What a version's manifest says of the search behind its hyperparameters; ``engine``:
    the engine's ``record_key``; ``tc``: the tenant's settings the version was trained with
    (``applied``: they are the record's)."""
    s = read_record(store, tenant).get("engines", {}).get(engine, {}).get(algorithm)
    if s is None:
        return {"tuned": False, "record": RECORD}
    used = configured(tc)
    applied = all(used[k] == v for k, v in s["params"].items() if k not in tc.pin)
    return {"tuned": True, "applied": applied, "record": RECORD} | {k: s[k] for k in (
        "params", "pinned", "start", "best_value", "start_value", "n_trials", "budget",
        "seconds", "seed", "tuned_ms", "validation", "trials")}


# -- validation ----------------------------------------------------------------------------------
def training_part(events: list, fraction: float) -> list:
    """The events the trainer's holdout keeps in train: each user's first ``holdout_cut``
    events in time order (``data.from_events`` sorts the same way, stably)."""
    from recsys_stream.batch.data import holdout_cut
    by_user: dict[str, list] = defaultdict(list)
    for e in events:
        by_user[e.user_id].append(e)
    out = []
    for evs in by_user.values():
        evs.sort(key=lambda e: e.timestamp_ms)
        out += evs[:holdout_cut(len(evs), fraction)]
    return out


def validation_round(cfg: Config, engine: Engine, tenant: str, rnd: TenantRound | None,
                     events_file: str | None, keep: list[str]) -> TenantRound | None:
    """A round whose ``train`` split is the fit and whose test is the validation, both inside
    the training part; None where this engine cannot carve one (Spark from the changelog).

    ``keep`` receives the temporary file the round was read from (Spark may read it again
    until the round is released): the caller removes it then."""
    if events_file:
        from recsys_stream.batch.data import iter_events_file
        tenant_events = [e for e in iter_events_file(events_file, tenant=tenant)
                         if e.tenant == tenant]
        part = training_part(tenant_events, cfg.trainer.holdout_fraction)
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            for e in part:
                f.write(json.dumps({"event_id": e.event_id, "tenant": e.tenant,
                                    "user_id": e.user_id, "item_id": e.item_id, "type": e.type,
                                    "value": e.value, "timestamp_ms": e.timestamp_ms}) + "\n")
        keep.append(f.name)
        (v,) = engine.load(cfg, [tenant], f.name, tenant)
        return v
    if engine.name != "implicit" or rnd is None:
        return None
    from recsys_stream.batch.data import from_histories
    return engine.round(cfg, from_histories(tenant, rnd.data.train,
                                            cfg.trainer.holdout_fraction))


# -- the search ----------------------------------------------------------------------------------
def _bounds(cfg: Config, name: str, start, engine: Engine | None = None) -> tuple:
    key = PARAMS[name][1]
    if name == "als_regularization" and \
            getattr(engine, "regularization_scaling", "none") == "count":
        # lambda x n_u (MLlib's ALS-WR): the same fit wants a lambda about the mean count
        # smaller, so an engine that scales it searches bounds of its own (a wide space centred
        # on implicit's optimum spent most of a Spark search's few trials far from Spark's)
        key = "tune_spark_als_regularization"
    lo, hi = getattr(cfg.trainer, key)
    return min(lo, start), max(hi, start)


def search(cfg: Config, engine: Engine, valid: TenantRound, algorithm: str,
           trials: int | None = None, budget_s: float | None = None,
           progress: bool = False) -> dict:
    """One search: the best values of ``algorithm``'s parameters on ``valid``; the record entry.

    Reproducible: the sampler is seeded with ``trainer.seed`` and every fit too, so the same
    data, budget of trials and (unhit) time budget give the same trials.
    """
    import optuna
    tenant = valid.tenant
    tc = cfg.tenant(tenant)
    trials = cfg.trainer.tune_trials if trials is None else trials
    budget_s = cfg.trainer.tune_budget_s if budget_s is None else budget_s
    seed = cfg.trainer.seed
    names = [n for n, p in PARAMS.items() if p[0] == algorithm]
    pinned = {n: tc.pin[n] for n in names if n in tc.pin}
    free = [n for n in names if n not in pinned]
    start_all = configured(tc) | pinned
    bounds = {n: _bounds(cfg, n, start_all[n], engine) for n in free}
    start = {n: start_all[n] for n in free}
    log.info("%s/%s on %s: searching %s (pinned %s), %d trials or %.0fs", tenant, algorithm,
             engine.name, ", ".join(f"{n} in {bounds[n]}" for n in free) or "nothing",
             pinned or "none", trials, budget_s)
    rescaler = _AlphaRescaler(valid, tc.alpha) if algorithm == "als" else None

    def objective(trial) -> float:
        values = dict(pinned)
        for n in free:
            lo, hi = bounds[n]
            if n == "als_factors" and not (int(lo) % 16 or int(hi) % 16 or start[n] % 16):
                # multiples of 16: fewer points for the budget (and SIMD-friendly widths)
                values[n] = trial.suggest_int(n, int(lo), int(hi), step=16)
            elif PARAMS[n][2]:
                values[n] = trial.suggest_int(n, int(lo), int(hi), log=PARAMS[n][3])
            else:
                values[n] = trial.suggest_float(n, float(lo), float(hi), log=PARAMS[n][3])
        t = with_values(tc, values)
        hp = t.als if algorithm == "als" else t.bpr
        if rescaler is not None:
            rescaler.set(t.alpha)
            hp = _WithAlpha(**dataclasses.asdict(hp), alpha=t.alpha)
        else:  # BPR: one thread, so that the seed reproduces the trial (Hogwild is not)
            hp = _OneThread(**dataclasses.asdict(hp))
        f = engine.fit(valid, "train", algorithm, hp, seed)
        m = evaluate(factor_scorer(f.user_factors[valid.eval_rows], f.item_factors), valid.eval,
                     valid.test, valid.pop_train)
        log.info("%s/%s trial %d: %s -> validation NDCG@10 %.4f", tenant, algorithm,
                 trial.number, values, m["ndcg_at_10"])
        return m["ndcg_at_10"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                # multivariate: lambda and alpha move together (the scale
                                # of the confidences sets how much lambda weighs)
                                # random start-up trials: a quarter of a small budget (a
                                # Spark trial costs minutes), optuna's 10 from 40 trials on
                                sampler=optuna.samplers.TPESampler(
                                    seed=seed, multivariate=True,
                                    n_startup_trials=max(3, min(10, trials // 4))))
    if free:
        study.enqueue_trial(start)
    t0 = time.perf_counter()
    try:
        study.optimize(objective, n_trials=trials if free else 1, timeout=budget_s,
                       show_progress_bar=progress)
    finally:
        if rescaler is not None:
            rescaler.restore()
    done = [t for t in study.trials if t.value is not None]
    best = study.best_trial
    params = dict(pinned) | best.params
    return {"params": params, "pinned": pinned, "start": start,
            "bounds": {n: list(b) for n, b in bounds.items()},
            "best_value": best.value, "start_value": done[0].value if done else None,
            "n_trials": len(done), "budget": {"trials": trials, "seconds": budget_s},
            "seconds": round(time.perf_counter() - t0, 2), "seed": seed,
            "tuned_ms": int(time.time() * 1000), "engine": engine.record_key,
            "validation": "training part of the holdout, split again by the same holdout",
            "trials": [{"number": t.number, "params": dict(pinned) | t.params,
                        "value": t.value, "state": t.state.name,
                        "seconds": round((t.datetime_complete - t.datetime_start)
                                         .total_seconds(), 2) if t.datetime_complete else None}
                       for t in study.trials]}


@dataclasses.dataclass(frozen=True)
class _WithAlpha:
    """ALS settings of one trial with the trial's alpha (the Spark engine reads ``alpha``)."""

    factors: int
    regularization: float
    iterations: int
    alpha: float


@dataclasses.dataclass(frozen=True)
class _OneThread:
    """BPR settings of one trial, fitted on one thread (``algorithms.train_bpr``)."""

    factors: int
    learning_rate: float
    regularization: float
    iterations: int
    foldin_regularization: float
    num_threads: int = 1


class _AlphaRescaler:
    """The implicit engine's validation matrix at another alpha, without rebuilding it:
    ``c = 1 + a log1p(s)`` so ``c' = 1 + (a'/a)(c - 1)`` entry by entry (exact for ``a > 0``)."""

    def __init__(self, valid: TenantRound, alpha: float) -> None:
        handle = valid.handle
        self.C = handle.get("train") if isinstance(handle, dict) else None
        self.alpha = alpha
        self.data = None if self.C is None or not hasattr(self.C, "data") else self.C.data.copy()
        if self.data is not None and alpha <= 0:
            raise ValueError("alpha is 0: confidences carry no strength to rescale; set a "
                             "positive tenant alpha (or pin alpha)")

    def set(self, alpha: float) -> None:
        if self.data is not None:
            self.C.data = (1.0 + (alpha / self.alpha) * (self.data - 1.0)).astype(self.data.dtype)

    def restore(self) -> None:
        if self.data is not None:
            self.C.data = self.data


def tune_tenant(cfg: Config, engine: Engine, tenant: str, store: ModelStore,
                rnd: TenantRound | None = None, events_file: str | None = None,
                trials: int | None = None, budget_s: float | None = None,
                algorithms: tuple[str, ...] | None = None, progress: bool = False) -> dict:
    """Search every tuned algorithm of ``trainer.algorithms`` the engine fits; store the record.

    Returns the tenant's record (``{}`` when this engine cannot carve validation here).
    """
    algorithms = [a for a in (algorithms or cfg.trainer.algorithms)
                  if a in TUNED and a in engine.algorithms]
    if not algorithms:
        return {}
    files: list[str] = []
    try:
        valid = validation_round(cfg, engine, tenant, rnd, events_file, files)
        if valid is None or valid.empty or not valid.test:
            log.warning("%s: no validation split on the %s engine here (%s); not tuned",
                        tenant, engine.name, "the Spark engine tunes from an events file only"
                        if valid is None else "too little data")
            return {}
        try:
            searches = {a: search(cfg, engine, valid, a, trials, budget_s, progress)
                        for a in algorithms}
        finally:
            engine.release(valid)
    finally:
        for f in files:
            os.unlink(f)
    with store.tenant_lock(tenant):
        record = read_record(store, tenant)
        record.setdefault("engines", {}).setdefault(engine.record_key, {}).update(searches)
        _write_record(store, tenant, record)
    for a, s in searches.items():
        log.info("%s/%s on %s tuned: %s, validation NDCG@10 %.4f (start %.4f), %d trials in "
                 "%.0fs", tenant, a, engine.record_key, s["params"], s["best_value"],
                 s["start_value"] or 0.0, s["n_trials"], s["seconds"])
    return record


def due(cfg: Config, rounds_done: int) -> bool:
    """Whether a tenant's round number ``rounds_done`` (0 = its first) starts with a search."""
    n = cfg.trainer.tune_every_rounds
    return n > 0 and rounds_done % n == 0


def run_tune(cfg: Config, tenant: str, events_file: str | None = None,
             trials: int | None = None, budget_s: float | None = None,
             progress: bool = False) -> dict:
    """``recsys-stream tune --tenant T``: load the tenant's data with its engine, search, store."""
    from recsys_stream.batch.engines import make_engine
    cfg.tenant(tenant)
    store = ModelStore(cfg.model_store)
    if cfg.engine_of(tenant) != "implicit" and not events_file:
        log.warning("%s: the %s engine tunes from an events file only (--events-file); not "
                    "tuned", tenant, cfg.engine_of(tenant))
        return {}
    with make_engine(cfg.engine_of(tenant), cfg) as engine:
        rnd = None
        if not events_file:
            (rnd,) = engine.load(cfg, [tenant], None, None, progress)
        return tune_tenant(cfg, engine, tenant, store, rnd, events_file, trials, budget_s,
                           progress=progress)



def scheduled(cfg: Config, store: ModelStore, events_file: str | None, tenant: str | None,
              rounds_done: int) -> None:
    """The trainer's schedule: a search of every (or ``tenant``'s) tenant before every
    ``trainer.tune_every_rounds``-th round, the first included, so that round already trains
    with the values found. Each tenant's data is loaded for it by its engine (a second read of
    the changelog or file). A failed search is logged; the round keeps the values it had."""
    if not due(cfg, rounds_done):
        return
    for t in [tenant] if tenant else list(cfg.tenants):
        try:
            run_tune(cfg, t, events_file)
        except Exception:
            log.exception("%s: hyperparameter search failed; the round keeps its values", t)
