"""Training at scale: one full trainer round on 1M users x 100k items x 20M interactions.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/training_scale.py \\
        [--scale 1.0] [--eval-users 10000] [--bpr-iterations 30] [--als-regularization L]

``--scale s`` multiplies users, items and interactions (0.1 = 100k x 10k x 2M). The matrix is
generated directly, vectorised: the latent structure of ``recsys_stream.synthetic`` (Zipf item
popularity, items in latent genres, each user drawn to two genres with weights
``popularity * exp(3 * preference)``), interactions per user lognormal (mean 20 at scale 1),
all ``view`` events, confidences ``c = 1 + alpha*log1p(count)`` of the default tenant.
f = 64; ALS 15 sweeps with lambda 300; BPR lr 0.01, lambda 0.01, 30 epochs. These were chosen
on this world's holdout so that both models pass the trainer's gate (NDCG@10 above popularity):
at scale 0.3, ALS lambda 100 / 300 / 600 gave 0.080 / 0.103 / 0.073 (popularity 0.073); at
scale 1, 300 gave 0.083 (popularity 0.063); at scale 0.05, lambda 0.05 and 100 BPR epochs were
below popularity, 30 epochs above. Below scale 0.1 lambda 300 shrinks ALS to popularity and the
gate rejects it: pass ``--als-regularization 50`` there. The quality figures printed are a
sanity check of a synthetic world, not claims. BPR's cost is linear in its epochs.

Then the trainer's round, composed of its own functions (``train_tenant`` minus the
per-event aggregation, which is replaced by the generator): the temporal holdout (each user's
last 20 % of interactions, ``holdout_cut``); per algorithm, the evaluated model (train part)
and its holdout metrics on ``--eval-users`` sampled test users (``trainer.eval_max_users``, as
the trainer samples; the time for all test users is extrapolated and printed), the published
model (all interactions), the gates, ``write_version`` (hnswlib index and SimilarItems' cosine
graph, each with its recall@10
measurement, arrays, sha256, verified re-read); then ``publish`` (``CURRENT``, ``DEFAULT``,
announcement on an embedded broker) and the swap: the server's ``ModelFollower`` building
``TenantSnapshot`` from the announcement. One line per stage with seconds, the load average
and peak RSS; asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

import numpy as np
import scipy.sparse as sp

from _batch import load, peak_rss_mb

from recsys_stream.batch import gates, publish as publish_mod
from recsys_stream.batch.algorithms import TRAINERS
from recsys_stream.batch.data import Matrix, holdout_cut
from recsys_stream.batch.evaluate import evaluate, factor_scorer, popularity_scorer
from recsys_stream.batch.publish import Candidate, announce, publish, write_version
from recsys_stream.broker import EmbeddedBroker
from recsys_stream.config import AlsConfig, BprConfig, Config, KafkaConfig, TenantConfig, \
    TrainerConfig
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.follow import ModelFollower
from recsys_stream.kafka import ensure_topics
from recsys_stream.serving.snapshots import TenantSnapshot
from recsys_stream.synthetic import make_world

TENANT = "scale"
STAGES: dict[str, float] = {}


def record(name: str, seconds: float, note: str = "") -> None:
    """Keep and print one stage's seconds, with peak RSS and the load average."""
    STAGES[name] = STAGES.get(name, 0.0) + seconds
    print(f"{name:<34} {seconds:8.1f} s   peak RSS {peak_rss_mb():7.0f} MiB   {load()}"
          + (f"   {note}" if note else ""), flush=True)


def stage(name: str, t0: float) -> float:
    """Record the stage that began at ``t0``; returns the time now (the next stage's start)."""
    now = time.perf_counter()
    record(name, now - t0)
    return now


def generate(n_users: int, n_items: int, n_interactions: int, genres: int = 8,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """User and item rows of every interaction, in time order per user; and counts per user."""
    world = make_world(TENANT, n_items, genres=genres, seed=seed)
    rng = np.random.default_rng(seed)
    raw = rng.lognormal(0.0, 1.0, n_users)
    counts = np.maximum(1, np.round(raw * n_interactions / raw.sum())).astype(np.int64)
    user = np.repeat(np.arange(n_users, dtype=np.int32), counts)
    # P(genre g | u) = mass_g * exp(3 pref_u[g]) / Z with pref 1.0 on g1 and 0.6 on g2, i.e. a
    # mixture: g1 w.p. mass_g1 (e^3 - 1)/Z, g2 w.p. mass_g2 (e^1.8 - 1)/Z, else g ~ mass
    mass = np.bincount(world.item_genre, weights=world.popularity, minlength=genres)
    g1 = rng.integers(0, genres, n_users)
    g2 = (g1 + rng.integers(1, genres, n_users)) % genres
    w1, w2 = mass[g1] * np.expm1(3.0), mass[g2] * np.expm1(1.8)
    r = rng.random(len(user)) * (1.0 + w1 + w2)[user]
    genre = np.where(r < w1[user], g1[user], np.where(r < (w1 + w2)[user], g2[user], -1))
    rest = np.flatnonzero(genre < 0)
    cum = np.cumsum(mass)
    genre[rest] = np.minimum(np.searchsorted(cum, rng.random(len(rest)) * cum[-1]), genres - 1)
    del r, rest
    # the item within its genre ~ popularity (Zipf)
    item = np.empty(len(user), dtype=np.int32)
    for g in range(genres):
        members = np.flatnonzero(world.item_genre == g)
        sel = np.flatnonzero(genre == g)
        cum = np.cumsum(world.popularity[members])
        pick = np.searchsorted(cum, rng.random(len(sel)) * cum[-1])
        item[sel] = members[np.minimum(pick, len(members) - 1)]
    return user, item, counts


def confidence_matrix(user, item, shape, tc: TenantConfig) -> sp.csr_matrix:
    """CSR of ``c = 1 + alpha*log1p(strength)``; repeated views add up their weights."""
    C = sp.csr_matrix((np.full(len(user), tc.weights["view"], dtype=np.float32),
                       (user, item)), shape=shape)  # duplicates are summed
    C.sum_duplicates()
    C.data = tc.confidence.confidence(C.data)
    return C


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--eval-users", type=int, default=TrainerConfig.eval_max_users)
    ap.add_argument("--als-regularization", type=float, default=300.0)
    ap.add_argument("--bpr-iterations", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n_users, n_items = int(1_000_000 * args.scale), int(100_000 * args.scale)
    n_inter = int(20_000_000 * args.scale)
    tc = TenantConfig(als=AlsConfig(64, args.als_regularization, 15),
                      bpr=BprConfig(64, 0.01, 0.01, args.bpr_iterations))
    print(f"{n_users} users x {n_items} items x {n_inter} interactions; ALS {tc.als}; "
          f"BPR {tc.bpr}; {load()}", flush=True)

    t = time.perf_counter()
    user, item, counts = generate(n_users, n_items, n_inter, seed=args.seed)
    t = stage("generate interactions", t)
    # temporal holdout: each user's interactions are in time order; the last 20 % are the test
    frac = TrainerConfig.holdout_fraction
    cut = np.fromiter((holdout_cut(int(c), frac) for c in counts), np.int64, n_users)
    rank = np.arange(len(user)) - np.repeat(np.cumsum(counts) - counts, counts)
    is_test = rank >= np.repeat(cut, counts)
    del rank
    shape = (n_users, n_items)
    full = confidence_matrix(user, item, shape, tc)
    train = confidence_matrix(user[~is_test], item[~is_test], shape, tc)
    test = sp.csr_matrix((np.ones(int(is_test.sum()), dtype=bool),
                          (user[is_test], item[is_test])), shape=shape)
    del user, item, is_test
    user_ids = [f"u{j}" for j in range(n_users)]
    item_ids = [f"i{j}" for j in range(n_items)]
    train_m, full_m = Matrix(user_ids, item_ids, train), Matrix(user_ids, item_ids, full)
    test_users = np.flatnonzero(np.diff(test.indptr))
    rng = np.random.default_rng(args.seed)
    sample = np.sort(rng.choice(test_users, min(args.eval_users, len(test_users)),
                                replace=False))
    test_items = {}
    for u in sample:
        held = set(test.indices[test.indptr[u]:test.indptr[u + 1]].tolist()) - set(
            train.indices[train.indptr[u]:train.indptr[u + 1]].tolist())
        if held:
            test_items[user_ids[u]] = {item_ids[i] for i in held}
    t = stage("matrices + holdout", t)
    print(f"  full nnz {full.nnz}, train nnz {train.nnz}, {len(test_users)} test users, "
          f"{len(test_items)} evaluated", flush=True)

    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        cfg = Config(model_store=f"{tmp}/models",
                     kafka=KafkaConfig(bootstrap_servers=broker.bootstrap_servers,
                                       topic_prefix="scale-"),
                     trainer=TrainerConfig(algorithms=("als", "bpr")), tenants={TENANT: tc})
        ensure_topics(cfg)
        store = ModelStore(cfg.model_store)
        swapped: dict[str, threading.Event] = {a: threading.Event() for a in ("als", "bpr")}
        server = ModelFollower(cfg, TenantSnapshot.from_artifacts, "server",
                               on_swap=lambda _t, a, _s: swapped[a].set()).start()
        t = time.perf_counter()
        pop_train = train_m.popularity
        baseline = evaluate(popularity_scorer(pop_train), train_m, test_items, pop_train)
        t = stage("evaluate popularity (sample)", t)
        candidates = []
        index_s = _time_index()
        for algorithm in ("als", "bpr"):
            hp = getattr(tc, algorithm)
            t0 = t
            evaluated = TRAINERS[algorithm](train, hp, 42)
            t = stage(f"{algorithm}: train evaluated model", t)
            metrics = evaluate(factor_scorer(evaluated.user_factors, evaluated.item_factors),
                               train_m, test_items, pop_train)
            del evaluated
            t = stage(f"{algorithm}: evaluate (sample)", t)
            factors = TRAINERS[algorithm](full, hp, 42)
            t = stage(f"{algorithm}: train published model", t)
            reasons = gates.check(factors, n_users, n_items, metrics, baseline, None,
                                  cfg.trainer)
            before = index_s[0]
            version = write_version(store, cfg, TENANT, factors, user_ids, item_ids,
                                    full_m.popularity, {"confidence": tc.confidence.to_dict(),
                                                        "metrics": metrics},
                                    verify=not reasons)
            info = store.load(TENANT, algorithm, version, verify=False).manifest["index"]
            spent = index_s[0] - before
            sim = info.get("similar", {})
            record(f"{algorithm}: index build + recall", spent,
                   f"recall@10 {info['recall_at_10']} at ef={info['ef']} exact={info['exact']}; "
                   f"cosine graph {sim.get('recall_at_10')} at ef={sim.get('ef')}")
            t = stage(f"{algorithm}: write + verify", t + spent)
            del factors
            print(f"  {algorithm}: NDCG@10 {metrics['ndcg_at_10']:.4f} (popularity "
                  f"{baseline['ndcg_at_10']:.4f}), recall@20 {metrics['recall_at_20']:.4f}"
                  f"{'; REJECTED: ' + '; '.join(reasons) if reasons else ''}", flush=True)
            candidates.append(Candidate(TENANT, algorithm, version, metrics, baseline, reasons,
                                        time.perf_counter() - t0))
        t_pub = time.perf_counter()
        publish(cfg, store, candidates, announcer=announce)
        t = stage("publish: CURRENT + announce", t)
        for algorithm in ("als", "bpr"):
            if candidates[("als", "bpr").index(algorithm)].passed:
                swapped[algorithm].wait(600)
        t = stage("swap: server follower live", t)
        print(f"  announce -> both snapshots live {time.perf_counter() - t_pub:.1f} s", flush=True)
        server.stop()
    _summary(len(test_items), len(test_users))


def _time_index() -> list[float]:
    """Wrap the index build ``write_version`` calls so its seconds can be told apart."""
    spent = [0.0]
    build = publish_mod.build_index

    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return build(*a, **k)
        finally:
            spent[0] += time.perf_counter() - t
    publish_mod.build_index = timed
    return spent


def _summary(evaluated: int, test_users: int) -> None:
    published = sum(v for k, v in STAGES.items() if k.endswith((
        "published model", "index build + recall", "write + verify")) or
        k.startswith(("publish", "swap")))
    evaluated_models = sum(v for k, v in STAGES.items() if k.endswith("evaluated model"))
    print(f"\npublished path (train published ALS + BPR, index, write, verify, publish, swap): "
          f"{published:.0f} s")
    sampled = sum(v for k, v in STAGES.items() if k.endswith("(sample)"))
    rest = published + evaluated_models
    print(f"evaluated models: {evaluated_models:.0f} s; evaluation on {evaluated} sampled "
          f"users (trainer.eval_max_users) {sampled:.0f} s; on all {test_users} test users it "
          f"would take ~{sampled * test_users / max(evaluated, 1):.0f} s (extrapolated)")
    print(f"full round (evaluated + published models, sampled evaluation): "
          f"{rest + sampled:.0f} s; peak RSS {peak_rss_mb():.0f} MiB; {load()}")


if __name__ == "__main__":
    main()
