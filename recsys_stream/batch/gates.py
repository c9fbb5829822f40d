"""Quality gates: a model is published only if every check passes (invariant 6).

Checks: factor shapes agree with the ids; no NaN/Inf; vector norms within bounds; holdout
NDCG@10 above popularity's; and not below the currently published model's NDCG@10 by more than
the configured relative tolerance.
"""

from __future__ import annotations

import numpy as np

from recsys_stream.batch.algorithms import Factors
from recsys_stream.config import TrainerConfig


def check(f: Factors, n_users: int, n_items: int, metrics: dict, baseline: dict,
          current_ndcg: float | None, cfg: TrainerConfig) -> list[str]:
    """Every reason the model must not be published (empty: it may)."""
    reasons = []
    if f.item_factors.ndim != 2 or f.item_factors.shape[0] != n_items:
        reasons.append(f"item factors {f.item_factors.shape} do not match {n_items} items")
    if f.user_factors.ndim != 2 or f.user_factors.shape[0] != n_users:
        reasons.append(f"user factors {f.user_factors.shape} do not match {n_users} users")
    for name, a in (("item", f.item_factors), ("user", f.user_factors)):
        if not np.isfinite(a).all():
            reasons.append(f"{name} factors contain NaN or Inf")
        elif a.size and np.linalg.norm(a, axis=1).max() > cfg.max_vector_norm:
            reasons.append(f"{name} vector norm {np.linalg.norm(a, axis=1).max():.3g} exceeds "
                           f"{cfg.max_vector_norm}")
    ndcg, pop = metrics.get("ndcg_at_10", 0.0), baseline.get("ndcg_at_10", 0.0)
    if metrics.get("users_evaluated", 0) and not ndcg > pop:
        reasons.append(f"NDCG@10 {ndcg:.4f} is not above popularity's {pop:.4f}")
    if current_ndcg is not None and ndcg < current_ndcg * (1 - cfg.ndcg_tolerance):
        reasons.append(f"NDCG@10 {ndcg:.4f} is below the current model's {current_ndcg:.4f} "
                       f"by more than {cfg.ndcg_tolerance:.0%}")
    return reasons
