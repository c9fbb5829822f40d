"""What suppression costs a Recommend: the answer path alone, by history length and ban list.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/suppression.py [--items 100000]
        [--users 300]

The serving benchmark's model (``--items`` x 64, low-rank ALS-like factors, its hnswlib index
tuned to the trainer's recall floor) and ``--users`` nearline profiles per case. A case is a
history of 20, 100 or 500 seen items, either random or drawn from each user's own best 1,500
(as an ALS user's history mostly is), and a tenant ban list of 0 or 2,000 random items. For each
case: ``recommend()`` CPU time per call (no gRPC, no profile read), recall@10 of the answers
against the exact best 10 unsuppressed items, and the suppressed candidates counted above the
last answer (the suppression-rate metric). Every answer is checked to hold k items and none
suppressed. Prints; asserts nothing else.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import load_note  # noqa: E402
from benchmarks.serving import _basis, build_model  # noqa: E402
from recsys_stream.contracts.model_store import ModelStore  # noqa: E402
from recsys_stream.contracts.pb import profiles_pb2  # noqa: E402
from recsys_stream.serving.recommend import recommend  # noqa: E402
from recsys_stream.serving.snapshots import TenantSnapshot  # noqa: E402


def profiles(Y: np.ndarray, X: np.ndarray, n_seen: int, own_best: bool, rng) -> list:
    out = []
    for x in X:
        if own_best:
            best = np.argpartition(-(Y @ x), 1500)[:1500]
            seen = rng.choice(best, n_seen, replace=False)
        else:
            seen = rng.choice(len(Y), n_seen, replace=False)
        p = profiles_pb2.UserProfile(tenant="bench", user_id="u",
                                     item_ids=[f"i{s}" for s in seen],
                                     confidences=[2.0] * n_seen)
        p.vectors.add(algorithm="als", model_version=1, values=x.tolist(),
                      suppressed_rows=seen.tolist())
        out.append(p)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = ModelStore(tmp)
        build_model(store, args.items)
        snap = TenantSnapshot.from_artifacts(store.load("bench", "als", 1, verify=False))
    Y = snap.index.item_factors
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(args.users, 16)) @ _basis(Y.shape[1])).astype(np.float32)
    print(f"{args.users} users per case, k=10, index ef={snap.index.ef}; {load_note()}")
    for own_best in (False, True):
        for n_seen in (20, 100, 500):
            ps = profiles(Y, X, n_seen, own_best, rng)
            for n_banned in (0, 2000):
                banned = frozenset(f"i{b}" for b in rng.choice(len(Y), n_banned, replace=False))
                recommend(snap, ps[0], "u", 10, set(), banned)  # memoise the ban list's rows
                t = time.process_time()
                answers = [recommend(snap, p, "u", 10, set(), banned) for p in ps]
                us = (time.process_time() - t) / len(ps) * 1e6
                banned_rows = [snap.item_row[b] for b in banned]
                hits = 0
                for p, x, a in zip(ps, X, answers):
                    got = {i for i, _ in a.items}
                    assert len(got) == 10 and not got & (set(p.item_ids) | banned)
                    s = Y @ x
                    s[list(p.vectors[0].suppressed_rows)] = -np.inf
                    s[banned_rows] = -np.inf
                    hits += len(got & {f"i{r}" for r in np.argsort(-s)[:10]})
                print(f"history {n_seen:3d} ({'own best' if own_best else 'random  '}), "
                      f"{n_banned:4d} banned: {us:6.0f} us a call, recall@10 "
                      f"{hits / (10 * len(ps)):.3f}, suppressed above the last answer "
                      f"{sum(a.suppressed for a in answers) / len(ps):.1f} a call", flush=True)


if __name__ == "__main__":
    main()
