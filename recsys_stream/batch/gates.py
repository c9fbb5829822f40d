"""Quality gates: a model is published only if every check passes (invariant 6).

Checks, each adding a human-readable reason when it fails:

- shapes: item factors ``(n_items, w)`` and user factors ``(n_users, w)`` of one width ``w``;
- values: no NaN or Inf in either;
- norms: no user or item vector longer than ``trainer.max_vector_norm``, and a mean item norm of
  at least ``trainer.min_mean_item_norm`` (a collapsed model scores everything alike);
- quality (only when the holdout evaluated anyone): NDCG@10 strictly above the popularity
  baseline's, and not below the currently published model's by more than
  ``trainer.ndcg_tolerance`` (relative: ``ndcg < current * (1 - tolerance)`` rejects). The two
  NDCG@10s come from a :class:`Comparison`: both models scored on the same test of this round
  when at least ``trainer.min_compare_users`` users allow (``"holdout"``, the default, see
  ``compare.compare_with_current``), else the candidate's holdout figure against the one stored
  in the current manifest (``"stored"``, an older holdout); the reason says which.

The server re-checks shapes, values and checksums when it loads a version; these gates add what
only the trainer can judge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys_stream.batch.algorithms import Factors
from recsys_stream.config import TrainerConfig


@dataclass(frozen=True)
class Comparison:
    """The candidate's NDCG@10 and the current model's, as the tolerance gate compares them.

    Attributes
    ----------
    basis : str
        ``"holdout"``: both scored on this round's held-out items first met after the current
        model's data window (``users`` test users); ``"stored"``: the candidate's holdout
        NDCG@10 against the one stored in the current manifest (an older holdout).
    candidate_ndcg, current_ndcg : float
    version : int, optional
        The current version.
    users : int
        Test users of a ``"holdout"`` comparison.
    """

    basis: str
    candidate_ndcg: float
    current_ndcg: float
    version: int | None = None
    users: int = 0


def check(f: Factors, n_users: int, n_items: int, metrics: dict, baseline: dict,
          current: Comparison | float | None, cfg: TrainerConfig) -> list[str]:
    """Every reason the model must not be published (empty: it may).

    Parameters
    ----------
    f : the factors to publish
    n_users, n_items : lengths of the user and item ids written with them
    metrics, baseline : holdout metrics of the model and of popularity (``evaluate``)
    current : the comparison with the current version; a float is the NDCG@10 stored in its
        manifest (compared with ``metrics``); None if there is no current version
    cfg : the trainer's configuration (bounds and tolerance)
    """
    reasons = []
    Y, X = np.asarray(f.item_factors), np.asarray(f.user_factors)
    if Y.ndim != 2 or Y.shape[0] != n_items:
        reasons.append(f"item factors {Y.shape} do not match {n_items} items")
    if X.ndim != 2 or X.shape[0] != n_users:
        reasons.append(f"user factors {X.shape} do not match {n_users} users")
    if Y.ndim == 2 and X.ndim == 2 and Y.shape[1] != X.shape[1]:
        reasons.append(f"item width {Y.shape[1]} differs from user width {X.shape[1]}")
    for name, a in (("item", Y), ("user", X)):
        if a.ndim != 2:
            continue
        if not np.isfinite(a).all():
            reasons.append(f"{name} factors contain NaN or Inf")
            continue
        norms = np.linalg.norm(a, axis=1)
        if norms.size and norms.max() > cfg.max_vector_norm:
            reasons.append(f"{name} vector norm {norms.max():.3g} exceeds {cfg.max_vector_norm}")
        if name == "item" and norms.size and norms.mean() < cfg.min_mean_item_norm:
            reasons.append(f"mean item vector norm {norms.mean():.3g} is below "
                           f"{cfg.min_mean_item_norm} (collapsed factors)")
    if not metrics.get("users_evaluated", 0):
        return reasons  # no holdout (tiny data or holdout_fraction = 0): nothing to compare
    ndcg, pop = metrics.get("ndcg_at_10", 0.0), baseline.get("ndcg_at_10", 0.0)
    if not ndcg > pop:  # `not >`: NaN fails too
        reasons.append(f"NDCG@10 {ndcg:.4f} is not above popularity's {pop:.4f}")
    if current is None:
        return reasons
    if not isinstance(current, Comparison):
        current = Comparison("stored", ndcg, float(current))
    new, cur = current.candidate_ndcg, current.current_ndcg
    if not new >= cur * (1 - cfg.ndcg_tolerance):  # `not >=`: NaN fails too
        model = "the current model" + ("" if current.version is None else f" v{current.version}")
        on = (f"both on the held-out items of {current.users} users first met after its data "
              "window" if current.basis == "holdout" else
              "its NDCG@10 stored in its manifest, from an older holdout")
        reasons.append(f"NDCG@10 {new:.4f} is below {model}'s {cur:.4f} by more than "
                       f"{cfg.ndcg_tolerance:.0%} ({on})")
    return reasons
