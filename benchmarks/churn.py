"""Churning catalogue: how much of a daily retrain's gain the user and item fold-ins recover.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/churn.py [--users 3000] \\
        [--initial-items 1500] [--launches 75] [--days 20] [--test-from 8] [--genres 8] \\
        [--taste 5] [--seeds 0-4] [--young-item-users 80] [--warm-sweeps 2]

The world (``recsys_stream.synthetic.make_churning_world``): items launch continuously
(``--launches`` a day, 5 % of the initial catalogue by default) with a launch-popularity curve
(most popular at launch, half-life 3 days, settling to an evergreen level); users keep their
tastes (8 genres; a user's draw weighs ``exp(5 * preference)``: with the generic worlds'
``exp(3 * ...)`` over 12 genres popularity swamps taste, and no model, not even a retrain,
ranks a new item into anyone's top 20). ALS (the trainer's ``train_als``: ``implicit`` + the
exact final user solve) is
retrained every 24 h of event time on every event before the day boundary.

Test day ``d`` is served by the model trained at the start of day ``d-1`` (the day just past
is what the nearline path had to carry) and is tested on the items each user first met on day
``d``, for users with a history before ``d`` (their history excluded from every ranking):

- stale: the model's batch user vectors (popularity of the model for users it does not know);
- user fold-in: every user's history before ``d`` folded in against the model's items
  (``FoldInSolver``, the worker's solve; items the model does not know are left out);
- user + new items (young off: what the system did before issue 30): the same, and every item
  the model does not know with at least ``min_item_users`` (3) distinct users before ``d``
  solved by the item stage's solve (``ItemFoldInSolver``: Gram of the model's batch user
  factors, ``X_i`` the users' current fold-in vectors), then the users folded in again against
  the items *and* the new items (``FoldInSolver.extended``, the worker's extended model), then
  the new items solved again from those vectors (the stage keeps each user's latest vector).
  Two alternations: the state the stream reaches once every user's latest event has gone
  through worker and stage;
- user + item (the system now): user + new items, and the model's *young* items (fewer than
  ``--young-item-users`` distinct users in its training data) re-solved as the stage does: seeded
  with their training users (the model's confidences, the users' batch vectors: the trainer's
  young slice), a user with an event on the item since the model's cut-off replacing or adding
  their entry with their current fold-in vector; their rows replace the stale ones in scoring
  and in the users' fold-in (``FoldInSolver.replaced``); the same two alternations;
- warm (the second lever): ALS initialised from the serving model's factors (a new user or
  item gets implicit's small random row), ``--warm-sweeps`` sweeps over every event before
  ``d``, then the exact user solve; the chain of warm models starts from one full retrain the
  day before the first test day. Its recovered share says how much of a retrain a cheap one
  keeps; the cost ratio says how much more often it could run;
- retrain: the model trained at the start of day ``d`` (every event before ``d``).

Also printed per seed: seconds per full retrain and per warm retrain, and the worker's re-solve
load per new version (the users active since the previous version: the worker re-solves them
against the new one) at a daily cadence and at the cadence the warm retrain's cost allows.

Recall@20 and NDCG@10 (``batch.evaluate``'s definitions; a test item without a vector in a
variant cannot be ranked but counts) are pooled over the test days' user-days; printed per day
and pooled, with the share of test positives on items newer than the serving model, and the
share of the stale->retrain gain each fold-in recovers.

Hyperparameters (factors, lambda) are chosen on validation days ``2 .. test-from - 2``, before
every test day, by the retrain variant's pooled NDCG@10 (the trainer's own quality), and used
by every variant; ``min_item_users`` is the configured default (3), not tuned. With
``--young-grid`` the young threshold is measured (user + item recall@20 recovered per threshold,
pooled over the seeds' test days): run it on validation worlds (seeds 10-12, never reported),
and report the chosen default on seeds 0-4. (The validation days of one world are no guide
here: their models saw 1-5 days, so every item there had few users.) ``--seeds 0-4`` runs each seed's
world and ends with the pooled recovered shares over all seeds' user-days.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from benchmarks._batch import load  # noqa: E402
from recsys_stream.batch.algorithms import Factors, train_als  # noqa: E402
from recsys_stream.config import AlsConfig, TenantConfig  # noqa: E402
from recsys_stream.contracts.foldin import FoldInSolver  # noqa: E402
from recsys_stream.contracts.item_foldin import ItemFoldInSolver  # noqa: E402
from recsys_stream.synthetic import DAY_MS, churning_events, make_churning_world  # noqa: E402

VARIANTS = ("stale", "user", "user+new", "user+item", "warm", "retrain")
ALPHA = 2.0
MIN_ITEM_USERS = 3
GRID = [(f, lam) for f in (8, 16, 32) for lam in (0.5, 5.0, 20.0)]
_DISCOUNT = 1.0 / np.log2(np.arange(2, 12))


class Day:
    """Everything known before one day boundary: the confidence matrix and its model."""

    def __init__(self, events: np.ndarray, boundary: int, n_users: int, n_items: int,
                 hp: AlsConfig | None, window_days: float = 0, warm_from: Day | None = None,
                 sweeps: int = 2) -> None:
        lo = (boundary - window_days) * DAY_MS if window_days else -np.inf
        ev = events[(events[:, 2] < boundary * DAY_MS) & (events[:, 2] >= lo)]
        counts = sp.csr_matrix((np.ones(len(ev)), (ev[:, 0], ev[:, 1])),
                               shape=(n_users, n_items))
        counts.sum_duplicates()
        self.C = counts.copy()
        self.C.data = 1.0 + ALPHA * np.log1p(counts.data)  # c = 1 + alpha*log1p(strength)
        self.items = np.flatnonzero(np.diff(self.C.tocsc().indptr) > 0)  # known to the model
        self.users = np.flatnonzero(np.diff(self.C.indptr) > 0)
        self.popularity = np.asarray((counts > 0).sum(0)).ravel().astype(np.float64)
        self.model = None
        if hp is not None:
            sub = self.C[self.users][:, self.items].tocsr()
            t0 = time.perf_counter()
            f = train_als(sub, hp, seed=0) if warm_from is None else \
                train_warm(sub, hp, warm_from, self.users, self.items, sweeps)
            self.seconds = time.perf_counter() - t0
            self.Y = np.zeros((n_items, hp.factors), np.float32)
            self.Y[self.items] = f.item_factors
            self.X = np.zeros((n_users, hp.factors), np.float32)
            self.X[self.users] = f.user_factors
            self.batch_X = f.user_factors  # the version's batch user factors (Gram of the stage)
            self.hp = hp


def train_warm(C: sp.csr_matrix, hp: AlsConfig, prev: Day, users: np.ndarray,
               items: np.ndarray, sweeps: int) -> Factors:
    """ALS from ``prev``'s factors (implicit keeps factors set before ``fit``), ``sweeps``
    sweeps, then the exact user solve as ``train_als``; new users and items start as implicit
    starts everyone (uniform [0, 0.01))."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    U, V = prev.X[users].copy(), prev.Y[items].copy()
    fresh_u, fresh_i = ~np.isin(users, prev.users), ~np.isin(items, prev.items)
    U[fresh_u] = rng.random((int(fresh_u.sum()), U.shape[1])) * 0.01
    V[fresh_i] = rng.random((int(fresh_i.sum()), V.shape[1])) * 0.01
    C = sp.csr_matrix(C, dtype=np.float32)
    with threadpool_limits(1, "blas"):
        m = AlternatingLeastSquares(factors=hp.factors, regularization=hp.regularization,
                                    alpha=1.0, iterations=sweeps, random_state=0, use_cg=True)
        m.user_factors, m.item_factors = U.astype(np.float32), V.astype(np.float32)
        m.fit(C, show_progress=False)
        Y = np.asarray(m.item_factors, dtype=np.float32)
        X = FoldInSolver(Y, hp.regularization).solve(C.indptr, C.indices, C.data)
    return Factors("als", Y, np.asarray(X, np.float32), {}, bias_column=False)


def fold_users(Y_rows: np.ndarray, Y: np.ndarray, lam: float, C: sp.csr_matrix,
               users: np.ndarray, solver: FoldInSolver | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Fold ``users`` in against item rows ``Y_rows`` (global ids) of factors ``Y``.

    Returns ``(X, has)``: the vectors (rows = users) and whether the user had a known item.
    """
    solver = solver or FoldInSolver(Y, lam)
    pos = np.full(C.shape[1], -1)
    pos[Y_rows] = np.arange(len(Y_rows))
    sub = C[users].tocsr()
    keep = pos[sub.indices] >= 0
    rows = np.repeat(np.arange(len(users)), np.diff(sub.indptr))[keep]
    M = sp.csr_matrix((sub.data[keep], (rows, pos[sub.indices[keep]])),
                      shape=(len(users), len(Y_rows)))
    X = solver.solve(M.indptr, M.indices, M.data)
    return X, np.diff(M.indptr) > 0


def fold_items(model: Day, C: sp.csr_matrix, items: np.ndarray, X_now: np.ndarray,
               has: np.ndarray, lam: float) -> np.ndarray:
    """The stage's solve of ``items`` from their users' current vectors ``X_now``."""
    solver = ItemFoldInSolver(model.batch_X, lam)
    Ct = C.tocsc()
    vecs, confs = [], []
    for i in items:
        u = Ct.indices[Ct.indptr[i]:Ct.indptr[i + 1]]
        c = Ct.data[Ct.indptr[i]:Ct.indptr[i + 1]]
        ok = has[u]  # the worker emits only for users it could fold in
        vecs.append(X_now[u[ok]])
        confs.append(c[ok])
    return solver.solve(vecs, confs)


def fold_young(model: Day, now: Day, young: np.ndarray, X_now: np.ndarray, has: np.ndarray,
               lam: float) -> np.ndarray:
    """The stage's solve of the model's young items: seeded with their training users (the
    model's confidences and batch vectors), a user with an event on the item since the model's
    cut-off (their confidence grew) replacing or adding their entry with their current vector
    (the worker emits only for users it can fold in)."""
    solver = ItemFoldInSolver(model.batch_X, lam)
    Mt, Nt = model.C.tocsc(), now.C.tocsc()
    vecs, confs = [], []
    for i in young:
        a, b = Mt.indptr[i], Mt.indptr[i + 1]
        entries = {int(u): (float(c), model.X[u]) for u, c in zip(Mt.indices[a:b], Mt.data[a:b])}
        a, b = Nt.indptr[i], Nt.indptr[i + 1]
        for u, c in zip(Nt.indices[a:b], Nt.data[a:b]):
            if has[u] and c > entries.get(int(u), (0.0,))[0] + 1e-9:
                entries[int(u)] = (float(c), X_now[u])
        vecs.append(np.stack([e[1] for e in entries.values()]))
        confs.append(np.array([e[0] for e in entries.values()]))
    return solver.solve(vecs, confs)


def variants(model: Day, now: Day, lam: float, test_users: np.ndarray, young_users: int,
             warm: Day | None) -> dict:
    """Per variant: (user vectors or None per test user, item ids, item factors)."""
    out = {}
    known = model.items
    batch_users = set(model.users.tolist())
    X_stale = [model.X[u] if u in batch_users else None for u in test_users]
    out["stale"] = (X_stale, known, model.Y[known])
    everyone = now.users
    X1, has1 = fold_users(known, model.Y[known], lam, now.C, everyone)
    idx = {u: j for j, u in enumerate(everyone)}
    out["user"] = ([X1[idx[u]] if has1[idx[u]] else None for u in test_users], known,
                   model.Y[known])
    # new items: unknown to the model, with >= MIN_ITEM_USERS distinct users before the day
    X_all = np.zeros((now.C.shape[0], X1.shape[1]), np.float32)
    has_all = np.zeros(now.C.shape[0], bool)
    X_all[everyone], has_all[everyone] = X1, has1
    n_users_of = np.diff(now.C.tocsc().indptr)
    unknown = np.setdiff1d(np.flatnonzero(n_users_of > 0), known)
    users_ok = np.asarray((now.C[has_all][:, unknown] > 0).sum(0)).ravel() \
        if len(unknown) else np.zeros(0)
    new = unknown[users_ok >= MIN_ITEM_USERS]
    Yn = fold_items(model, now.C, new, X_all, has_all, lam)
    base = FoldInSolver(model.Y[known], lam)
    rows = np.concatenate([known, new])
    X2, has2 = fold_users(rows, None, lam, now.C, everyone, solver=base.extended(Yn))
    X_all[everyone], has_all[everyone] = X2, has2
    Yn2 = fold_items(model, now.C, new, X_all, has_all, lam)
    out["user+new"] = ([X2[idx[u]] if has2[idx[u]] else None for u in test_users], rows,
                       np.vstack([model.Y[known], Yn2]))
    # the system now: young items re-solved too, their rows replaced (the same alternations)
    young_pos = np.flatnonzero(model.popularity[known] < young_users)
    young = known[young_pos]
    X_all[everyone], has_all[everyone] = X1, has1
    Yk = model.Y[known].copy()
    Yk[young_pos] = fold_young(model, now, young, X_all, has_all, lam)
    X3, has3 = fold_users(rows, np.vstack([Yk, Yn]), lam, now.C, everyone)
    X_all[everyone], has_all[everyone] = X3, has3
    Yk[young_pos] = fold_young(model, now, young, X_all, has_all, lam)
    Yn3 = fold_items(model, now.C, new, X_all, has_all, lam)
    out["user+item"] = ([X3[idx[u]] if has3[idx[u]] else None for u in test_users], rows,
                        np.vstack([Yk, Yn3]))
    if warm is not None:
        out["warm"] = ([warm.X[u] for u in test_users], warm.items, warm.Y[warm.items])
    else:
        out["warm"] = out["stale"]
    out["retrain"] = ([now.X[u] for u in test_users], now.items, now.Y[now.items])
    out["new_items"], out["young_items"] = len(new), len(young)
    return out


def metrics(X: list, rows: np.ndarray, Y: np.ndarray, popularity: np.ndarray,
            seen: sp.csr_matrix, test: list[set[int]], n_items: int, new: set[int]) -> np.ndarray:
    """(users, 3): recall@20, NDCG@10 and the part of recall@20 from items in ``new``."""
    out = np.zeros((len(X), 3))
    for j, (x, pos) in enumerate(zip(X, test)):
        s = np.full(n_items, -np.inf)
        if x is None:
            s[popularity > 0] = popularity[popularity > 0]
        else:
            s[rows] = Y @ x
        s[seen.indices[seen.indptr[j]:seen.indptr[j + 1]]] = -np.inf
        top = np.argpartition(-s, 20)[:20]
        top = top[np.argsort(-s[top], kind="stable")]
        top = top[np.isfinite(s[top])]
        hits = np.array([t in pos for t in top], dtype=float)
        out[j, 0] = hits[:20].sum() / len(pos)
        out[j, 2] = sum(h for t, h in zip(top, hits) if t in new) / len(pos)
        dcg = (hits[:10] * _DISCOUNT[:len(hits[:10])]).sum()
        out[j, 1] = dcg / _DISCOUNT[:min(10, len(pos))].sum()
    return out


def evaluate_day(events, days: dict, d: int, lam: float, n_items: int, young_users: int,
                 warm: dict | None = None) -> dict:
    model, now = days[d - 1], days[d]
    ev = events[(events[:, 2] >= d * DAY_MS) & (events[:, 2] < (d + 1) * DAY_MS)]
    test: dict[int, set[int]] = {}
    hist = now.C
    for u, i, _ in ev:
        if hist.indptr[u + 1] > hist.indptr[u] and hist[u, i] == 0:
            test.setdefault(int(u), set()).add(int(i))
    users = np.array(sorted(test))
    tests = [test[u] for u in users]
    vs = variants(model, now, lam, users, young_users, (warm or {}).get(d))
    seen = hist[users].tocsr()
    known = set(model.items.tolist())
    unknown = set(range(n_items)) - known
    res = {v: metrics(vs[v][0], vs[v][1], vs[v][2], model.popularity
                      if v not in ("retrain", "warm") else now.popularity, seen, tests, n_items,
                      unknown) for v in VARIANTS}
    positives = [i for t in tests for i in t]
    res["new_share"] = np.mean([i not in known for i in positives]) if positives else 0.0
    res["users"], res["new_items"], res["young_items"] = len(users), vs["new_items"], \
        vs["young_items"]
    return res


def seeds_of(text: str) -> list[int]:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"0,2"`` -> [0, 2]."""
    out = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def recovered(pooled: dict, k: int = 0) -> dict[str, float]:
    """Each variant's share of the stale->retrain gain of metric ``k`` (pooled user-days)."""
    m = {v: float(np.concatenate(pooled[v])[:, k].mean()) for v in VARIANTS}
    gain = m["retrain"] - m["stale"]
    return {v: (m[v] - m["stale"]) / gain if gain > 0 else float("nan") for v in VARIANTS}


def run_seed(args, seed: int, pooled_all: dict, grid: dict) -> None:
    t0 = time.perf_counter()
    world = make_churning_world(args.initial_items, args.launches, args.days, genres=args.genres,
                                seed=seed)
    events = np.array(churning_events(world, args.users, args.days, taste=args.taste,
                                      seed=seed))
    n_items = world.n_items
    print(f"\n== seed {seed}: {len(events)} events, {args.users} users, {args.initial_items} "
          f"initial items + {args.launches}/day over {args.days} days "
          f"({time.perf_counter() - t0:.0f} s); {load()}", flush=True)

    # hyperparameters on validation days before every test day (retrain variant's NDCG@10)
    val_days = range(2, args.test_from - 1)
    best = None
    for factors, lam in GRID:
        hp = AlsConfig(factors=factors, regularization=lam, iterations=15)
        days = {b: Day(events, b, args.users, n_items, hp) for b in
                range(val_days[0] - 1, val_days[-1] + 1)}
        ndcg = []
        for d in val_days:
            r = evaluate_day(events, days, d, lam, n_items, args.young_item_users)
            ndcg += r["retrain"][:, 1].tolist()
        score = float(np.mean(ndcg))
        if best is None or score > best[0]:
            best = (score, hp, days)
    _, hp, _ = best
    print(f"chosen on validation days {val_days[0]}..{val_days[-1]}: factors {hp.factors}, "
          f"lambda {hp.regularization:g} (retrain NDCG@10 {best[0]:.4f})", flush=True)

    days = {b: Day(events, b, args.users, n_items, hp)
            for b in range(args.test_from - 2, args.days)}
    # the warm chain: one full retrain the day before the first test day, then warm ones
    warm = {args.test_from - 2: days[args.test_from - 2]}
    for b in range(args.test_from - 1, args.days):
        warm[b] = Day(events, b, args.users, n_items, hp, warm_from=warm[b - 1],
                      sweeps=args.warm_sweeps)
    full_s = np.mean([days[b].seconds for b in range(args.test_from - 1, args.days)])
    warm_s = np.mean([warm[b].seconds for b in range(args.test_from - 1, args.days)])
    pooled = {v: [] for v in VARIANTS}
    shares = []
    print(f"{'day':>3} {'users':>5} {'new':>4} {'young':>5} {'newpos':>6} | recall@20 "
          + "/".join(VARIANTS) + " | NDCG@10", flush=True)
    for d in range(args.test_from, args.days):
        r = evaluate_day(events, days, d, hp.regularization, n_items, args.young_item_users,
                         warm)
        for v in VARIANTS:
            pooled[v].append(r[v])
            pooled_all[v].append(r[v])
        shares.append((r["new_share"], r["users"]))
        print(f"{d:>3} {r['users']:>5} {r['new_items']:>4} {r['young_items']:>5} "
              f"{r['new_share']:>6.1%} | "
              + " ".join(f"{r[v][:, 0].mean():.4f}" for v in VARIANTS) + " | "
              + " ".join(f"{r[v][:, 1].mean():.4f}" for v in VARIANTS), flush=True)
    for t in grid:  # a young threshold grid: run on validation worlds only (module docstring)
        for d in range(args.test_from, args.days):
            r = evaluate_day(events, days, d, hp.regularization, n_items, t)
            for v in VARIANTS:
                grid[t][v].append(r[v])
    n_days = args.days - args.test_from
    print(f"pooled over {n_days} test days ({sum(n for _, n in shares)} user-days; "
          f"{np.average([s for s, _ in shares], weights=[n for _, n in shares]):.1%} of test "
          f"positives on items newer than the serving model); {load()}")
    for k, name in ((0, "recall@20"), (1, "NDCG@10")):
        m = {v: float(np.concatenate(pooled[v])[:, k].mean()) for v in VARIANTS}
        rec = recovered(pooled, k)
        print(f"  {name}: " + ", ".join(f"{v} {m[v]:.4f}" for v in VARIANTS)
              + "; of the stale->retrain gain: " + ", ".join(
                  f"{v} {rec[v]:.0%}" for v in ("user", "user+new", "user+item", "warm")))
    m = {v: np.concatenate(pooled[v]) for v in VARIANTS}
    print("  recall@20 split by the test item: " + ", ".join(
        f"{v} {m[v][:, 2].mean():.4f} newer than the model + "
        f"{(m[v][:, 0] - m[v][:, 2]).mean():.4f} known to it" for v in VARIANTS))
    # the levers' costs: a retrain's seconds, and the worker's re-solves per new version (the
    # users active since the previous version, re-solved against the new one)
    per_day = np.mean([len(np.unique(events[(events[:, 2] >= (b - 1) * DAY_MS)
                                            & (events[:, 2] < b * DAY_MS), 0]))
                       for b in range(args.test_from, args.days)])
    cadence_h = max(1.0, 24.0 * warm_s / full_s)  # as often as the full retrain's budget allows
    per_version = np.mean([len(np.unique(events[(events[:, 2] >= t - cadence_h * 3_600_000)
                                                & (events[:, 2] < t), 0]))
                           for t in np.arange(args.test_from, args.days) * DAY_MS])
    print(f"  retrain cost: full {full_s:.2f} s, warm ({args.warm_sweeps} sweeps) {warm_s:.2f} s "
          f"({full_s / warm_s:.1f}x cheaper); worker re-solves per new version: daily "
          f"{per_day:.0f} users ({per_day:.0f}/day); warm every {cadence_h:.1f} h (the same "
          f"compute): {per_version:.0f} users ({per_version * 24 / cadence_h:.0f}/day); the "
          f"young fold-in adds no version (0 re-solves); seed {seed} took "
          f"{time.perf_counter() - t0:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--initial-items", type=int, default=1500)
    ap.add_argument("--launches", type=int, default=75)
    ap.add_argument("--days", type=int, default=20)
    ap.add_argument("--test-from", type=int, default=8)
    ap.add_argument("--genres", type=int, default=8)
    ap.add_argument("--taste", type=float, default=5.0,
                    help="p(item) ~ popularity * exp(taste * genre preference)")
    ap.add_argument("--seeds", default="0", help="worlds to run: 0-4, or 0,2")
    ap.add_argument("--young-item-users", type=int, default=TenantConfig().young_item_users,
                    help="a model's item with fewer training users is re-solved (0 = off)")
    ap.add_argument("--young-grid", default="",
                    help="also print the pooled user + item recovery for these thresholds, "
                         "e.g. 10,20,40,80,160: to choose the default on validation worlds "
                         "(seeds 10-12), never on the seeds reported")
    ap.add_argument("--warm-sweeps", type=int, default=2)
    args = ap.parse_args()
    seeds = seeds_of(args.seeds)
    pooled = {v: [] for v in VARIANTS}
    grid = {int(t): {v: [] for v in VARIANTS} for t in args.young_grid.split(",") if t}
    for seed in seeds:
        run_seed(args, seed, pooled, grid)
    if grid:
        print(f"\nyoung_item_users grid over seeds {args.seeds}: user + item recall@20 "
              "recovered " + ", ".join(f"{t}: {recovered(g)['user+item']:.1%}"
                                       for t, g in grid.items()), flush=True)
    rec = recovered(pooled)
    print(f"\nover seeds {args.seeds} ({sum(len(p) for p in pooled['stale'])} user-days): "
          f"recall@20 recovered: user {rec['user']:.0%}, user + new items (young off) "
          f"{rec['user+new']:.0%}, user + item {rec['user+item']:.0%}, warm retrain "
          f"{rec['warm']:.0%}; NDCG@10: " + ", ".join(
              f"{v} {x:.0%}" for v, x in recovered(pooled, 1).items()
              if v in ("user", "user+new", "user+item", "warm")) + f"; {load()}")
    print(f"recovered recall@20 over seeds {args.seeds}: user {rec['user']:.0%}, "
          f"user + item {rec['user+item']:.0%}".replace("%", " %"))


if __name__ == "__main__":
    main()
