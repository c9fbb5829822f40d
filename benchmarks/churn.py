"""Churning catalogue: how much of a daily retrain's gain the user and item fold-ins recover.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/churn.py [--users 3000] \\
        [--initial-items 1500] [--launches 75] [--days 20] [--test-from 8] [--genres 8] \\
        [--taste 5] [--seed 0]

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
- user + item fold-in: the same, and every item the model does not know with at least
  ``min_item_users`` (3) distinct users before ``d`` solved by the item stage's solve
  (``ItemFoldInSolver``: Gram of the model's batch user factors, ``X_i`` the users' current
  fold-in vectors), then the users folded in again against the items *and* the new items
  (``FoldInSolver.extended``, the worker's extended model), then the new items solved again
  from those vectors (the stage keeps each user's latest vector). Two alternations: the state
  the stream reaches once every user's latest event has gone through worker and stage;
- +young (a diagnostic, not what the system does: DESIGN.md keeps the items a model knows fixed
  until the next retrain): user + item fold-in, and also the items the model knows from less
  than half of their users now re-solved by the same item step, then the users folded in again;
- retrain: the model trained at the start of day ``d`` (every event before ``d``).

Recall@20 and NDCG@10 (``batch.evaluate``'s definitions; a test item without a vector in a
variant cannot be ranked but counts) are pooled over the test days' user-days; printed per day
and pooled, with the share of test positives on items newer than the serving model, and the
share of the stale->retrain gain each fold-in recovers.

Hyperparameters (factors, lambda) are chosen on validation days ``2 .. test-from - 2``, before
every test day, by the retrain variant's pooled NDCG@10 (the trainer's own quality), and used
by every variant; ``min_item_users`` is the configured default (3), not tuned.
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
from recsys_stream.batch.algorithms import train_als  # noqa: E402
from recsys_stream.config import AlsConfig  # noqa: E402
from recsys_stream.contracts.foldin import FoldInSolver  # noqa: E402
from recsys_stream.contracts.item_foldin import ItemFoldInSolver  # noqa: E402
from recsys_stream.synthetic import DAY_MS, churning_events, make_churning_world  # noqa: E402

VARIANTS = ("stale", "user", "user+item", "+young", "retrain")
YOUNG = 0.5  # "+young": known items with less than this share of their users in the model
ALPHA = 2.0
MIN_ITEM_USERS = 3
GRID = [(f, lam) for f in (8, 16, 32) for lam in (0.5, 5.0, 20.0)]
_DISCOUNT = 1.0 / np.log2(np.arange(2, 12))


class Day:
    """Everything known before one day boundary: the confidence matrix and its model."""

    def __init__(self, events: np.ndarray, boundary: int, n_users: int, n_items: int,
                 hp: AlsConfig | None, window_days: float = 0) -> None:
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
            f = train_als(sub, hp, seed=0)
            self.Y = np.zeros((n_items, hp.factors), np.float32)
            self.Y[self.items] = f.item_factors
            self.X = np.zeros((n_users, hp.factors), np.float32)
            self.X[self.users] = f.user_factors
            self.batch_X = f.user_factors  # the version's batch user factors (Gram of the stage)
            self.hp = hp


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


def variants(model: Day, now: Day, lam: float, test_users: np.ndarray) -> dict:
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
    Yn = fold_items(model, now.C, new, X_all, has_all, lam)
    out["user+item"] = ([X2[idx[u]] if has2[idx[u]] else None for u in test_users], rows,
                        np.vstack([model.Y[known], Yn]))
    # diagnostic, not what the system does: also re-solve the items the model knows from less
    # than half of their users (young items whose popularity moved since the retrain)
    young_pos = np.flatnonzero(model.popularity[known] < YOUNG * now.popularity[known])
    Yk = model.Y[known].copy()
    Yk[young_pos] = fold_items(model, now.C, known[young_pos], X_all, has_all, lam)
    Yall = np.vstack([Yk, Yn])
    X3, has3 = fold_users(rows, Yall, lam, now.C, everyone)
    out["+young"] = ([X3[idx[u]] if has3[idx[u]] else None for u in test_users], rows, Yall)
    out["retrain"] = ([now.X[u] for u in test_users], now.items, now.Y[now.items])
    out["new_items"] = len(new)
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


def evaluate_day(events, days: dict, d: int, lam: float, n_items: int) -> dict:
    model, now = days[d - 1], days[d]
    ev = events[(events[:, 2] >= d * DAY_MS) & (events[:, 2] < (d + 1) * DAY_MS)]
    test: dict[int, set[int]] = {}
    hist = now.C
    for u, i, _ in ev:
        if hist.indptr[u + 1] > hist.indptr[u] and hist[u, i] == 0:
            test.setdefault(int(u), set()).add(int(i))
    users = np.array(sorted(test))
    tests = [test[u] for u in users]
    vs = variants(model, now, lam, users)
    seen = hist[users].tocsr()
    known = set(model.items.tolist())
    unknown = set(range(n_items)) - known
    res = {v: metrics(vs[v][0], vs[v][1], vs[v][2], model.popularity if v != "retrain"
                      else now.popularity, seen, tests, n_items, unknown) for v in VARIANTS}
    positives = [i for t in tests for i in t]
    res["new_share"] = np.mean([i not in known for i in positives]) if positives else 0.0
    res["users"], res["new_items"] = len(users), vs["new_items"]
    return res


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
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    world = make_churning_world(args.initial_items, args.launches, args.days, genres=args.genres,
                                seed=args.seed)
    events = np.array(churning_events(world, args.users, args.days, taste=args.taste,
                                      seed=args.seed))
    n_items = world.n_items
    print(f"{len(events)} events, {args.users} users, {args.initial_items} initial items + "
          f"{args.launches}/day over {args.days} days ({time.perf_counter() - t0:.0f} s); "
          f"{load()}", flush=True)

    # hyperparameters on validation days before every test day (retrain variant's NDCG@10)
    val_days = range(2, args.test_from - 1)
    best = None
    for factors, lam in GRID:
        hp = AlsConfig(factors=factors, regularization=lam, iterations=15)
        days = {b: Day(events, b, args.users, n_items, hp) for b in
                range(val_days[0] - 1, val_days[-1] + 1)}
        ndcg = []
        for d in val_days:
            r = evaluate_day(events, days, d, lam, n_items)
            ndcg += r["retrain"][:, 1].tolist()
        score = float(np.mean(ndcg))
        print(f"  validation days {val_days[0]}..{val_days[-1]}: factors {factors} lambda "
              f"{lam:g}: retrain NDCG@10 {score:.4f}", flush=True)
        if best is None or score > best[0]:
            best = (score, hp)
    hp = best[1]
    print(f"chosen: factors {hp.factors}, lambda {hp.regularization:g}", flush=True)

    days = {b: Day(events, b, args.users, n_items, hp)
            for b in range(args.test_from - 1, args.days)}
    pooled = {v: [] for v in VARIANTS}
    shares = []
    print(f"{'day':>3} {'users':>5} {'new':>4} {'newpos':>6} | recall@20 "
          + "/".join(VARIANTS) + " | NDCG@10", flush=True)
    for d in range(args.test_from, args.days):
        r = evaluate_day(events, days, d, hp.regularization, n_items)
        for v in VARIANTS:
            pooled[v].append(r[v])
        shares.append((r["new_share"], r["users"]))
        print(f"{d:>3} {r['users']:>5} {r['new_items']:>4} {r['new_share']:>6.1%} | "
              + " ".join(f"{r[v][:, 0].mean():.4f}" for v in VARIANTS) + " | "
              + " ".join(f"{r[v][:, 1].mean():.4f}" for v in VARIANTS), flush=True)
    n_days = args.days - args.test_from
    print(f"\npooled over {n_days} test days ({sum(n for _, n in shares)} user-days; "
          f"{np.average([s for s, _ in shares], weights=[n for _, n in shares]):.1%} of test "
          f"positives on items newer than the serving model); {load()}")
    for k, name in ((0, "recall@20"), (1, "NDCG@10")):
        m = {v: float(np.concatenate(pooled[v])[:, k].mean()) for v in VARIANTS}
        gain = m["retrain"] - m["stale"]
        rec = {v: (m[v] - m["stale"]) / gain if gain > 0 else float("nan")
               for v in ("user", "user+item", "+young")}
        print(f"  {name}: " + ", ".join(f"{v} {m[v]:.4f}" for v in VARIANTS)
              + f"; of the stale->retrain gain: user fold-in recovers {rec['user']:.0%}, "
              f"user + item fold-in {rec['user+item']:.0%} (diagnostic +young: "
              f"{rec['+young']:.0%})")
    m = {v: np.concatenate(pooled[v]) for v in VARIANTS}
    print("  recall@20 split by the test item: " + ", ".join(
        f"{v} {m[v][:, 2].mean():.4f} newer than the model + "
        f"{(m[v][:, 0] - m[v][:, 2]).mean():.4f} known to it" for v in VARIANTS))
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
