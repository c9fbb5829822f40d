"""The item factors the worker folds into: one immutable ``FoldInModel`` per tenant and algorithm.

Sources: the model store's ``CURRENT`` pointers at start-up, then announcements on the ``models``
topic. An announcement is accepted only when its version is the store's ``CURRENT`` for that
tenant and algorithm: replaying old announcements from the topic's beginning never moves a tenant
backwards, while an explicit rollback (which moves ``CURRENT``) is followed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from recsys_stream.config import Config
from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.foldin import FoldInSolver
from recsys_stream.contracts.model_store import ALGORITHMS, ModelArtifacts, ModelStore, \
    ModelVerificationError, load_uri
from recsys_stream.contracts.pb import models_pb2
from recsys_stream.kafka import TopicTail
from recsys_stream.nearline.metrics import MODEL_VERSION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldInModel:
    """What the fold-in needs of one model version; built once per version."""

    tenant: str
    algorithm: str
    version: int
    item_row: dict[str, int]
    solver: FoldInSolver
    confidence: ConfidenceSettings

    @classmethod
    def from_artifacts(cls, art: ModelArtifacts) -> FoldInModel:
        hp = art.manifest.get("hyperparameters", {})
        reg = float(hp.get("foldin_regularization", hp.get("regularization", 0.1)))
        return cls(art.tenant, art.algorithm, art.version,
                   {item: i for i, item in enumerate(art.item_ids.tolist())},
                   FoldInSolver(art.item_factors, reg, art.bias_column), art.confidence)

    def rows(self, item_ids: list[str], conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model rows and confidences of the items this model knows (unknown items skipped)."""
        pairs = [(self.item_row[i], c) for i, c in zip(item_ids, conf) if i in self.item_row]
        if not pairs:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        rows, confs = zip(*pairs)
        return np.array(rows, dtype=np.int64), np.array(confs, dtype=np.float32)


class ModelFollower:
    """Keeps the current ``FoldInModel`` of every tenant and algorithm.

    Parameters
    ----------
    cfg : Config
    on_new_model : called with ``(tenant, algorithm, version)`` after a swap (on the tail thread)
    """

    def __init__(self, cfg: Config, on_new_model: Callable[[str, str, int], None] | None = None):
        self.cfg = cfg
        self.store = ModelStore(cfg.model_store)
        self.on_new_model = on_new_model
        self._models: dict[str, dict[str, FoldInModel]] = {}
        self._lock = threading.Lock()  # serialises swaps; readers take the dict reference once
        self._tail: TopicTail | None = None

    def models(self, tenant: str) -> dict[str, FoldInModel]:
        """The tenant's current models by algorithm (an immutable snapshot for the caller)."""
        return self._models.get(tenant, {})

    def load_current(self) -> None:
        for tenant in self.cfg.tenants:
            for algorithm in ALGORITHMS:
                version = self.store.current_version(tenant, algorithm)
                if version is not None:
                    self._try_load(self.store.version_dir(tenant, algorithm, version).as_uri(),
                                   tenant, algorithm, version)

    def start(self) -> ModelFollower:
        self.load_current()
        self._tail = TopicTail(self.cfg, {self.cfg.topics.models: self._on_message},
                               name="worker-models").start()
        return self

    def stop(self) -> None:
        if self._tail is not None:
            self._tail.stop()

    def _on_message(self, msg) -> None:
        ann = models_pb2.ModelPublished()
        ann.ParseFromString(msg.value())
        if ann.tenant not in self.cfg.tenants:
            return
        if self.store.current_version(ann.tenant, ann.algorithm) != ann.version:
            return  # an old announcement replayed, or superseded already
        self._try_load(ann.artifact_uri, ann.tenant, ann.algorithm, ann.version)

    def _try_load(self, uri: str, tenant: str, algorithm: str, version: int) -> None:
        cur = self.models(tenant).get(algorithm)
        if cur is not None and cur.version == version:
            return
        try:
            model = FoldInModel.from_artifacts(load_uri(uri))
        except (ModelVerificationError, OSError, ValueError, KeyError) as e:
            log.error("model %s/%s v%d not used: %s", tenant, algorithm, version, e)
            return
        with self._lock:
            models = dict(self._models.get(tenant, {}))
            models[algorithm] = model
            self._models[tenant] = models  # one assignment: readers see old or new, never half
        MODEL_VERSION.labels(tenant, algorithm).set(version)
        log.info("folding %s/%s into model v%d (%d items)", tenant, algorithm, version,
                 len(model.item_row))
        if self.on_new_model is not None:
            self.on_new_model(tenant, algorithm, version)
