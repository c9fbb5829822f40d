"""The trainer's comparison of a candidate with the model currently published.

The current version was trained on every event up to its ``data_window.to_ms``; the fair part of
a new holdout is the held-out items first met after that time. There the current model is
scored as serving would score a user with fresh events (its item factors, the user folded in
from the train split) next to the candidate (:mod:`recsys_stream.batch.evaluate`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from recsys_stream.batch import gates
from recsys_stream.batch.data import Matrix, TenantData
from recsys_stream.batch.evaluate import current_scorer, evaluate, held_out_after, sample_users
from recsys_stream.config import Config
from recsys_stream.contracts.model_store import ModelStore

log = logging.getLogger(__name__)


def compare_with_current(cfg: Config, data: TenantData, store: ModelStore, algorithm: str,
                         train: Matrix, scorer: Callable, metrics: dict,
                         progress: bool = False, popularity=None
                         ) -> tuple[dict | None, gates.Comparison | None]:
    """Score the current version and the candidate on the same fair test; what the gate uses.

    The current version was trained on every event up to its ``data_window.to_ms``, so the
    test is each user's held-out items first met after that time (sampled as the holdout is),
    the part of the holdout neither model has seen. The current model's user vectors are folded
    in from the users' train-split histories (``evaluate.current_scorer``), the candidate's are
    its train-split vectors (``scorer``). One asymmetry remains: the current model's item
    factors learnt from every user's events up to ``to_ms``, the candidate's from the train
    split only, so when ``to_ms`` lies inside the holdout period the comparison leans towards
    the current model (the more so the shorter the time since it was trained).

    How much that lean matters was measured (``benchmarks/gate_margin.py``: the generator's
    latent-taste stream, 2,000 users, 4 seeds, current models 0.1-10 days old of 30): a healthy
    candidate scored 0.989-1.135x the current model on this test (mean 1.018), one with its item
    factors shuffled across items at most 0.129x. So the gate compares the two on this test by
    default, whenever at least ``trainer.min_compare_users`` (200) users have items there
    (``"holdout"``), with ``trainer.ndcg_tolerance`` as the margin. With fewer, little has
    happened since the current model's data, and the gate falls back to the NDCG@10 stored in
    its manifest (``"stored"``): its holdout was drawn from nearly the same data. The stored
    figure alone is not a fair default: as histories grow, each round's holdout gets harder,
    and in a steady-state soak no version after v1 passed it. The gate never lapses.

    ``train`` holds at least the test users' train rows; ``popularity`` (default: that of
    ``train``) is the train split's, for the concentration metric.

    Returns
    -------
    entry : dict or None
        ``baseline_metrics["current"]`` of the manifest: version, test, users, the two models'
        metrics on the test (``current``, ``candidate``; absent without test users),
        ``stored_ndcg_at_10`` and ``gate`` (the basis used). None without a current version.
    comparison : gates.Comparison or None
        For ``gates.check``; None without a current version or a stored NDCG@10 to fall back to.
    """
    v = store.current_version(data.tenant, algorithm)
    if v is None:
        return None, None
    art = store.load(data.tenant, algorithm, v, verify=False)
    stored = art.manifest.get("metrics", {}).get("ndcg_at_10")
    to_ms = art.manifest.get("data_window", {}).get("to_ms")
    test = {} if to_ms is None else sample_users(
        held_out_after(data.test_items, data.test_times, int(to_ms)),
        cfg.trainer.eval_max_users, cfg.trainer.seed)
    entry = {"version": v, "test": f"held-out items first met after {to_ms}", "users": 0,
             "stored_ndcg_at_10": stored}
    if test:
        tag = f"{data.tenant}/{algorithm}"
        pop = train.popularity if popularity is None else popularity
        current = evaluate(current_scorer(art, data.train, train, list(test)), train, test,
                           pop, progress, f"{tag} current v{v}")
        candidate = evaluate(scorer, train, test, pop, progress, f"{tag} vs current")
        entry.update(users=current["users_evaluated"], current=current, candidate=candidate)
        log.info("%s on the held-out items of %d users met after current v%d's data "
                 "(to %s): NDCG@10 %.4f, current v%d %.4f", tag, entry["users"], v, to_ms,
                 candidate["ndcg_at_10"], v, current["ndcg_at_10"])
    if cfg.trainer.min_compare_users > 0 and entry["users"] >= cfg.trainer.min_compare_users:
        entry["gate"] = "holdout"
        comparison = gates.Comparison("holdout", candidate["ndcg_at_10"],
                                      current["ndcg_at_10"], v, entry["users"])
    else:
        entry["gate"] = "stored"
        comparison = None if stored is None else gates.Comparison(
            "stored", metrics["ndcg_at_10"], float(stored), v)
        log.info("%s/%s: the gate compares with current v%d's stored NDCG@10 %s "
                 "(%d users on the held-out items after its data; trainer.min_compare_users %d)",
                 data.tenant, algorithm, v, stored, entry["users"],
                 cfg.trainer.min_compare_users)
    return entry, comparison
