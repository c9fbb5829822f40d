"""The tolerance gate's margin, measured: how far a fresh, healthy candidate falls short of the
current model on the gate's default test, and how far a broken one does.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/gate_margin.py [--seeds 4] [--users 2000]

The gate's default basis ("holdout") scores both models on the held-out items first met after
the current model's data window, the current model as serving would (its item factors, each
user folded in from the train split). The current model learnt from every event up to its
window, the candidate's evaluated model from each user's train split only, so a healthy
candidate scores below it: that lean is what ``trainer.ndcg_tolerance`` must absorb, while a
broken candidate must still fall outside it.

For each seed and each age of the current model (the share of the data that arrived after it),
the synthetic generator's stream (latent genre tastes, Zipf popularity) trains a current model
on the events up to ``T - age``, then a round on every event up to ``T``: once healthy, once
with the candidate's item factors shuffled across items (a deliberately broken model). Prints
candidate / current NDCG@10 for both, and the gate's verdict with the configured tolerance.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks._common import load_note, log  # noqa: E402
from recsys_stream.batch import app  # noqa: E402
from recsys_stream.batch.algorithms import TRAINERS, Factors  # noqa: E402
from recsys_stream.batch.data import from_events  # noqa: E402
from recsys_stream.config import AlsConfig, Config, TenantConfig, TrainerConfig  # noqa: E402
from recsys_stream.contracts.model_store import ModelStore  # noqa: E402
from recsys_stream.synthetic import generate_events, make_world  # noqa: E402

DAY = 86_400_000
T0 = 1_700_000_000_000
SPAN_DAYS = 30


def shuffled(train):
    """``train`` with the item factors' rows permuted: every item scored by another's vector."""
    def fit(C, hp, seed, progress=False):
        f = train(C, hp, seed, progress)
        rng = np.random.default_rng(seed + 1)
        return Factors(f.algorithm, f.item_factors[rng.permutation(len(f.item_factors))],
                       f.user_factors, f.hyperparameters, f.bias_column, f.extras)
    return fit


def one(cfg: Config, events, age_ms: int, broken: bool
        ) -> tuple[float, float, int, list[str]]:
    """(candidate NDCG@10, current NDCG@10, test users, gate reasons) of a round against a
    current model trained on the events up to ``T - age_ms``."""
    tc = cfg.tenant("acme")
    end = max(e.timestamp_ms for e in events)
    with tempfile.TemporaryDirectory() as d:
        store = ModelStore(d)
        old = [e for e in events if e.timestamp_ms <= end - age_ms]
        app.train_tenant(cfg, from_events("acme", old, tc.confidence, tc.history_cap,
                                          cfg.trainer.holdout_fraction), store, announcing="off")
        train = TRAINERS["als"]
        if broken:
            TRAINERS["als"] = shuffled(train)
        try:
            (res,) = app.train_tenant(cfg, from_events("acme", events, tc.confidence,
                                                       tc.history_cap,
                                                       cfg.trainer.holdout_fraction),
                                      store, announcing="off")
        finally:
            TRAINERS["als"] = train
        cur = store.load("acme", "als", res["version"], verify=False).manifest[
            "baseline_metrics"]["current"]
        if "current" not in cur:
            return float("nan"), float("nan"), 0, res["rejected"]
        return (cur["candidate"]["ndcg_at_10"], cur["current"]["ndcg_at_10"], cur["users"],
                res["rejected"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--events-per-user", type=int, default=40)
    ap.add_argument("--ages-days", default="0.1,0.5,3,10", help="ages of the current model")
    ap.add_argument("--factors", type=int, default=8)
    ap.add_argument("--regularization", type=float, default=5.0)
    args = ap.parse_args()
    # the demo's and the soak's ALS settings (recsys_stream.stack.write_config)
    als = AlsConfig(factors=args.factors, regularization=args.regularization, iterations=10)
    cfg = Config(model_store="unused", trainer=TrainerConfig(algorithms=("als",)),
                 tenants={"acme": TenantConfig(als=als)})
    log(f"gate basis default: min_compare_users {cfg.trainer.min_compare_users}, "
        f"ndcg_tolerance {cfg.trainer.ndcg_tolerance}; {load_note()}")
    healthy, broken = [], []
    for seed in range(args.seeds):
        world = make_world("acme", args.items, genres=8, seed=seed)
        events = generate_events(world, args.users, args.events_per_user, T0, seed=seed,
                                 span_ms=SPAN_DAYS * DAY)
        for age in (float(a) for a in args.ages_days.split(",")):
            for is_broken, out in ((False, healthy), (True, broken)):
                cand, cur, users, reasons = one(cfg, events, int(age * DAY), is_broken)
                out.append(cand / cur)
                log(f"seed {seed} current model {age:>4} days old ({age / SPAN_DAYS:.0%} of the "
                    f"data after it), {'broken ' if is_broken else 'healthy'} candidate: "
                    f"NDCG@10 {cand:.4f} / current {cur:.4f} = {cand / cur:.3f} on {users} "
                    f"users; "
                    f"{'REJECTED: ' + '; '.join(reasons) if reasons else 'published'}")
    h, b = np.array(healthy), np.array(broken)
    print(f"candidate/current NDCG@10 on the gate's test: healthy min {h.min():.3f} mean "
          f"{h.mean():.3f} max {h.max():.3f}; broken max {b.max():.3f} mean {b.mean():.3f} "
          f"({len(h)} rounds each; {load_note()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
