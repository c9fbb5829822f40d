"""The item factors the worker folds into: one immutable ``FoldInModel`` per tenant and algorithm,
kept live by the shared ``recsys_stream.follow.ModelFollower``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from recsys_stream.config import Config
from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.foldin import FoldInSolver, solver_for_model
from recsys_stream.contracts.model_store import ModelArtifacts
from recsys_stream.follow import ModelFollower
from recsys_stream.nearline.explicit import MfFoldIn
from recsys_stream.nearline.metrics import MODEL_VERSION
from recsys_stream.nearline.normal_cache import NormalEquationCache


@dataclass(frozen=True)
class FoldInModel:
    """What the fold-in needs of one model version; built once per version."""

    tenant: str
    algorithm: str
    version: int
    item_row: dict[str, int]
    solver: FoldInSolver
    confidence: ConfidenceSettings
    foldin: NormalEquationCache  # solves users; keeps heavy ones' systems (loop thread only)
    explicit: MfFoldIn | None = None  # mf: the ridge step on the latest ratings instead
    # items the version knows from few training users (contracts.young_slice): the item stage
    # re-solves them, so the worker emits for them as for unknown items
    young: frozenset[str] = frozenset()
    trained_to_ms: int = 0  # the end of the version's data window (its young items' users)

    @classmethod
    def from_artifacts(cls, art: ModelArtifacts, heavy_users: int = 0) -> FoldInModel:
        """``heavy_users``: how many heavy users' normal equations to keep (0 = none)."""
        # lambda and its scaling by the user's item count (Spark models) from the manifest
        solver = solver_for_model(art.item_factors, art.manifest, art.bias_column)
        item_row = {item: i for i, item in enumerate(art.item_ids.tolist())}
        # below 2k items forming a user's system costs about what updating it does; a
        # count-scaled lambda (Spark models) cannot be updated from deltas: no systems kept
        explicit = MfFoldIn.from_artifacts(art) if art.algorithm == "mf" else None
        if explicit is not None or not solver.supports_updates:
            heavy_users = 0  # mf users are solved by ``explicit``: no implicit systems kept
        foldin = NormalEquationCache(solver, item_row, heavy_users, min_items=2 * solver.factors)
        young = frozenset(art.item_ids[art.young.items].tolist()) \
            if art.young is not None else frozenset()
        trained_to = int(art.manifest.get("data_window", {}).get("to_ms", 0))
        return cls(art.tenant, art.algorithm, art.version, item_row, solver, art.confidence,
                   foldin, explicit, young, trained_to)


def model_follower(cfg: Config, on_new_model: Callable[[str, str, int], None] | None = None
                   ) -> ModelFollower[FoldInModel]:
    """The worker's follower: a ``FoldInModel`` per tenant and algorithm."""
    def swapped(tenant: str, algorithm: str, model: FoldInModel) -> None:
        MODEL_VERSION.labels(tenant, algorithm).set(model.version)
        if on_new_model is not None:
            on_new_model(tenant, algorithm, model.version)
    return ModelFollower(cfg, partial(FoldInModel.from_artifacts,
                                      heavy_users=cfg.worker.normal_cache_users),
                         "worker", on_swap=swapped)
