"""Nearline fold-in of explicit ``mf`` users: ``[x_u, b_u]`` per micro-batch, in closed form.

Against the fixed ``y_i``, ``b_i`` and ``μ`` of the served version, every touched user's latest
ratings (``UserHistory.ratings``: a re-rating replaces) give the ridge user step::

    [x_u, b_u] = (F_uᵀF_u + Λ_u)⁻¹ F_uᵀ (r_u − μ − b_u,i),   F_u = [y_i, 1] over the rated items

with the λs of the manifest's ``hyperparameters.foldin``: the very step that produced the
version's stored user vectors (``batch/mf.py``), so a user with the same ratings gets the same
vector (tested). One batched solve per micro-batch (``contracts.ridge``). The profile vector is
``[x_u, 1]`` (the index query: the item-bias column counts) with ``user_bias = b_u``; a user with
no rating of an item the version knows gets no ``mf`` vector (the server falls back).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys_stream.contracts.model_store import ModelArtifacts
from recsys_stream.contracts.pb import profiles_pb2
from recsys_stream.contracts.ridge import BiasedRidgeSolver, fold_in_ratings, recency_weights
from recsys_stream.contracts.user_state import UserHistory


@dataclass(frozen=True)
class MfFoldIn:
    """What the worker needs of one ``mf`` version."""

    algorithm: str
    version: int
    item_row: dict[str, int]
    mu: float
    item_bias: np.ndarray
    solver: BiasedRidgeSolver
    half_life_days: float = 0.0  # recency weights of the ratings (manifest's foldin)

    @classmethod
    def from_artifacts(cls, art: ModelArtifacts) -> MfFoldIn:
        fold = art.manifest["hyperparameters"]["foldin"]
        return cls(art.algorithm, art.version,
                   {item: i for i, item in enumerate(art.item_ids.tolist())},
                   float(art.global_mean), np.asarray(art.item_factors[:, -1], np.float64),
                   BiasedRidgeSolver(art.item_factors[:, :-1], fold["regularization"],
                                     fold["bias_regularization"], fold["scale_by_count"]),
                   float(fold.get("recency_half_life_days", 0.0)))

    def vectors(self, keys: list[bytes], users: dict[bytes, UserHistory]
                ) -> dict[bytes, profiles_pb2.ProfileVector]:
        """The ``mf`` profile vector of every user in ``keys`` with a known rated item."""
        get = self.item_row.get
        solved, indptr, rows, ratings, times = [], [0], [], [], []
        for key in keys:
            ids, r, t = users[key].rating_arrays()
            cols = np.fromiter((get(i, -1) for i in ids), np.int64, len(ids))
            keep = cols >= 0
            if keep.any():
                solved.append(key)
                rows.append(cols[keep])
                ratings.append(r[keep])
                times.append(t[keep])
                indptr.append(indptr[-1] + int(keep.sum()))
        if not solved:
            return {}
        indptr = np.array(indptr)
        w = recency_weights(indptr, np.concatenate(times), self.half_life_days)
        X1, b = fold_in_ratings(self.solver, self.mu, self.item_bias, indptr,
                                np.concatenate(rows), np.concatenate(ratings), w)
        out = {}
        for n, key in enumerate(solved):
            h = users[key]
            # suppressed: the history, the rated items and the hidden ones, in this version
            seen = {r for r in map(get, (*h.items, *h.suppressed)) if r is not None}
            seen.update(rows[n].tolist())
            out[key] = profiles_pb2.ProfileVector(
                algorithm=self.algorithm, model_version=self.version, values=X1[n].tolist(),
                user_bias=float(b[n]), suppressed_rows=sorted(seen))
        return out
