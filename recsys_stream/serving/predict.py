"""The answer to one PredictRatings request from an ``mf`` snapshot, with no I/O.

``r̂_ui = μ + b_u + [x_u, 1]·[y_i, b_i]``, clipped to the tenant's scale. The user's ``[x_u, b_u]``
comes from the first step that has it (``source``):

1. NEARLINE - the profile's ``mf`` vector solved against this very version (with its ``user_bias``);
2. BATCH - the user's row of the model;
3. PROFILE_FOLD_IN - the ridge user step now, from the profile's latest ratings of items the
   version knows (the worker's and the trainer's solve: ``contracts.ridge.fold_in_ratings``);
4. BASELINE - no vector: ``x_u = 0``, ``b_u = 0``, so ``r̂ = μ + b_i``.

An item the version does not know gets ``μ + b_u`` and is listed as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recsys_stream.contracts.pb import profiles_pb2, recommender_pb2
from recsys_stream.contracts.ridge import fold_in_ratings, recency_weights
from recsys_stream.serving.snapshots import TenantSnapshot

NEARLINE, BATCH, FOLD_IN, BASELINE = (recommender_pb2.NEARLINE, recommender_pb2.BATCH,
                                      recommender_pb2.PROFILE_FOLD_IN, recommender_pb2.BASELINE)


@dataclass
class Prediction:
    ratings: list[tuple[str, float, bool]] = field(default_factory=list)  # (id, r̂, known)
    source: int = BASELINE
    unknown: list[str] = field(default_factory=list)


def user_vector(snap: TenantSnapshot, profile: profiles_pb2.UserProfile | None,
                user_id: str | None) -> tuple[np.ndarray, float, int]:
    """``([x_u, 1], b_u, source)`` by the chain of the module docstring."""
    if profile is not None:
        for v in profile.vectors:
            # invariant 2: only a vector solved against this very model version
            if v.algorithm == snap.algorithm and v.model_version == snap.version \
                    and len(v.values) == snap.width:
                return np.asarray(v.values, dtype=np.float32), float(v.user_bias), NEARLINE
    row = snap.user_row.get(user_id)
    if row is not None:
        return snap.user_factors[row], float(snap.user_bias[row]), BATCH
    if profile is not None and profile.rated_item_ids:
        times = profile.rating_ms or [0] * len(profile.rated_item_ids)
        known = [(snap.item_row[i], r, t) for i, r, t in
                 zip(profile.rated_item_ids, profile.ratings, times) if i in snap.item_row]
        if known:
            rows, r, t = (np.array(a) for a in zip(*known))
            indptr = np.array([0, len(rows)])
            X1, b = fold_in_ratings(snap.ridge, snap.global_mean, snap.index.item_factors[:, -1],
                                    indptr, rows, r,
                                    recency_weights(indptr, t, snap.recency_half_life_days))
            return X1[0], float(b[0]), FOLD_IN
    x = np.zeros(snap.width, dtype=np.float32)
    x[-1] = 1.0  # the item-bias column still counts: r̂ = μ + b_i
    return x, 0.0, BASELINE


def predict_ratings(snap: TenantSnapshot, profile: profiles_pb2.UserProfile | None,
                    user_id: str | None, item_ids: list[str], scale: tuple[float, float]) -> Prediction:
    """Predicted ratings of ``item_ids`` (in order) for the user; see the module docstring."""
    x, b_u, source = user_vector(snap, profile, user_id)
    rows = np.fromiter((snap.item_row.get(i, -1) for i in item_ids), np.int64, len(item_ids))
    known = rows >= 0
    pred = np.full(len(item_ids), snap.global_mean + b_u, dtype=np.float64)
    pred[known] += snap.index.item_factors[rows[known]] @ x
    pred = np.clip(pred, *scale)
    return Prediction([(i, float(p), bool(k)) for i, p, k in zip(item_ids, pred, known)],
                      source, [i for i, k in zip(item_ids, known) if not k])
