"""Following published models: the model store's ``CURRENT`` at start-up, then the ``models`` topic.

Used by the worker (to fold in) and by the server (to answer). What each builds from a version
differs, so the follower is generic over ``build(artifacts) -> T``; everything about *which*
version is live is here once:

- an announcement is accepted only when its version is the store's ``CURRENT`` for that tenant
  and algorithm, so replaying the topic from its beginning never moves a tenant backwards, while
  a rollback (which moves ``CURRENT`` and re-announces) is followed;
- a version is loaded and verified (checksums, shapes, NaN/Inf, then ``build``) off the request
  path; a failure is reported and the previous version keeps serving (invariant 6);
- the swap is copy-on-write: readers take ``models(tenant)`` once and keep a consistent view.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from recsys_stream.config import Config
from recsys_stream.contracts.model_store import ALGORITHMS, ModelArtifacts, ModelStore, load_uri
from recsys_stream.contracts.pb import models_pb2
from recsys_stream.kafka import READ_MODEL_FETCH_WAIT_MS, TopicTail

log = logging.getLogger(__name__)
T = TypeVar("T")


class ModelFollower(Generic[T]):
    """The live model of every tenant and algorithm, as built by ``build``.

    Parameters
    ----------
    cfg : Config
    build : turns verified artifacts into what the process keeps (may raise to reject)
    name : used in log lines and the tail's thread name
    on_swap : ``(tenant, algorithm, built)`` after a new version went live
    on_reject : ``(tenant, algorithm, version, error)`` when a version could not be used
    """

    def __init__(self, cfg: Config, build: Callable[[ModelArtifacts], T], name: str,
                 on_swap: Callable[[str, str, T], None] | None = None,
                 on_reject: Callable[[str, str, int, Exception], None] | None = None) -> None:
        self.cfg, self.build, self.name = cfg, build, name
        self.on_swap, self.on_reject = on_swap, on_reject
        self.store = ModelStore(cfg.model_store)
        self._models: dict[str, dict[str, T]] = {}
        self._versions: dict[tuple[str, str], int] = {}
        self._defaults: dict[str, str] = {}
        self._lock = threading.Lock()
        self._tail: TopicTail | None = None

    def models(self, tenant: str) -> dict[str, T]:
        """The tenant's live models by algorithm; take it once per request."""
        return self._models.get(tenant, {})

    def default_algorithm(self, tenant: str) -> str | None:
        return self._defaults.get(tenant)

    def load_current(self) -> None:
        for tenant in self.cfg.tenants:
            for algorithm in ALGORITHMS:
                v = self.store.current_version(tenant, algorithm)
                if v is not None:
                    self.load(self.store.version_dir(tenant, algorithm, v).as_uri(), tenant,
                              algorithm, v)

    def start(self) -> ModelFollower[T]:
        self.load_current()
        self._tail = TopicTail(self.cfg, {self.cfg.topics.models: self._on_message},
                               name=f"{self.name}-models",
                               fetch_wait_ms=READ_MODEL_FETCH_WAIT_MS).start()
        return self

    def stop(self) -> None:
        if self._tail is not None:
            self._tail.stop()

    def _on_message(self, msg) -> None:
        ann = models_pb2.ModelPublished.FromString(msg.value())
        if ann.tenant not in self.cfg.tenants:
            return
        if self.store.current_version(ann.tenant, ann.algorithm) != ann.version:
            return  # an old announcement replayed, or already superseded
        self.load(ann.artifact_uri, ann.tenant, ann.algorithm, ann.version)

    def load(self, uri: str, tenant: str, algorithm: str, version: int) -> bool:
        """Load, verify and swap in one version; False (and ``on_reject``) if it is unusable."""
        if self._versions.get((tenant, algorithm)) == version:
            self._refresh_default(tenant)
            return True
        try:
            art = load_uri(uri)
            if (art.tenant, art.algorithm, art.version) != (tenant, algorithm, version):
                raise ValueError(f"{uri} holds {art.tenant}/{art.algorithm} v{art.version}")
            built = self.build(art)
        except Exception as e:  # any failure keeps the previous version live
            log.error("%s: model %s/%s v%d rejected: %s", self.name, tenant, algorithm,
                      version, e)
            if self.on_reject is not None:
                self.on_reject(tenant, algorithm, version, e)
            return False
        with self._lock:
            models = dict(self._models.get(tenant, {}))
            models[algorithm] = built
            self._models[tenant] = models  # one assignment
            self._versions[(tenant, algorithm)] = version
        self._refresh_default(tenant)
        log.info("%s: %s/%s v%d live", self.name, tenant, algorithm, version)
        if self.on_swap is not None:
            self.on_swap(tenant, algorithm, built)
        return True

    def _refresh_default(self, tenant: str) -> None:
        default = self.store.default_algorithm(tenant)
        if default not in self.models(tenant):
            default = next(iter(self.models(tenant)), None)
        if default is not None:
            self._defaults[tenant] = default
