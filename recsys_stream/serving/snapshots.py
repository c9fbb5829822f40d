"""An immutable, verified view of one model version: everything a request needs to score.

Built off the request path by the model follower; a request takes the tenant's snapshot
reference once and uses nothing else, so a swap can never mix two versions in one answer
(invariant 2: a user vector is scored only against item factors of its own model version).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recsys_stream.contracts.ann_index import ItemIndex
from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.foldin import FoldInSolver, solver_for_model
from recsys_stream.contracts.model_store import ModelArtifacts
from recsys_stream.contracts.ridge import BiasedRidgeSolver


@dataclass(frozen=True)
class TenantSnapshot:
    tenant: str
    algorithm: str
    version: int
    created_ms: int
    item_ids: np.ndarray
    item_row: dict[str, int]
    item_id_list: list[str]    # item_ids as Python strings (the item_row keys), for answers
    user_row: dict[str, int]
    user_factors: np.ndarray
    popularity: np.ndarray     # interactions per item row in the training window
    popular_order: np.ndarray  # item rows, most popular first
    index: ItemIndex
    solver: FoldInSolver
    # explicit mf only: b_u per user row, μ, and the user step of its fold-in (ratings)
    user_bias: np.ndarray | None = None
    global_mean: float = 0.0
    ridge: BiasedRidgeSolver | None = None
    recency_half_life_days: float = 0.0
    # the tenant's confidence model as trained (session context items count as clicks)
    confidence: ConfidenceSettings | None = None
    # derived lookups memoised per snapshot by the request path (e.g. rows of the banned items)
    cache: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_artifacts(cls, art: ModelArtifacts) -> TenantSnapshot:
        """Build and check a snapshot (raises on anything a request could trip over)."""
        info = art.manifest.get("index") or {"n_items": len(art.item_ids), "exact": True}
        if info.get("n_items") != len(art.item_ids):
            raise ValueError(f"index holds {info.get('n_items')} items, model "
                             f"{len(art.item_ids)}")
        index = ItemIndex.load(art.index_path, art.item_factors, info)
        ids = art.item_ids.tolist()
        mf = {}
        if art.algorithm == "mf":
            fold = art.manifest.get("hyperparameters", {})["foldin"]
            mf = {"user_bias": art.user_bias, "global_mean": float(art.global_mean),
                  "ridge": BiasedRidgeSolver(art.item_factors[:, :-1], fold["regularization"],
                                             fold["bias_regularization"],
                                             fold["scale_by_count"]),
                  "recency_half_life_days": float(fold.get("recency_half_life_days", 0.0))}
        return cls(
            tenant=art.tenant, algorithm=art.algorithm, version=art.version,
            created_ms=int(art.manifest.get("created_ms", 0)),
            item_ids=art.item_ids,
            item_row={item: i for i, item in enumerate(ids)}, item_id_list=ids,
            user_row={u: i for i, u in enumerate(art.user_ids.tolist())},
            user_factors=art.user_factors,
            popularity=art.popularity,
            popular_order=np.argsort(-art.popularity, kind="stable"),
            index=index,
            # lambda and its scaling by the user's item count (Spark models) from the manifest
            solver=solver_for_model(art.item_factors, art.manifest, art.bias_column),
            confidence=art.confidence if "confidence" in art.manifest else None, **mf)

    @property
    def width(self) -> int:
        return self.index.item_factors.shape[1]
