"""Pinned model versions of experiment arms: an arm may serve a kept version, not the current.

An arm with ``model_version = v`` is served version ``v`` of its algorithm while the model store
still keeps it (the trainer keeps the last N good versions); the snapshot is built once, off the
request path: at start and after every swap of that tenant (a swap may have retired ``v``). A
version that is not kept (never written, retired, or failing its verification) is not served:
the arm falls back to the current version and each such answer is counted in
``recsys_server_pinned_fallback_total`` (the answer's ``model_version`` says what was served, so
the online stage's counts are by the version actually shown).

Profiles carry nearline vectors of the current version only; against a pinned version the
chain goes on to that version's batch vector or a fold-in from the profile (invariant 2).
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import Counter

from recsys_stream.config import Config
from recsys_stream.contracts.model_store import ModelStore

log = logging.getLogger(__name__)

PINNED_FALLBACKS = Counter("recsys_server_pinned_fallback_total",
                           "Answers of an arm pinned to a model version the store no longer "
                           "keeps, served from the current version instead",
                           ["tenant", "experiment", "arm"])


class PinnedModels:
    """Snapshots of the versions the tenants' experiment arms pin (``build``: artifacts ->
    snapshot, as the model follower's)."""

    def __init__(self, cfg: Config, build) -> None:
        self.cfg, self.build = cfg, build
        self.store = ModelStore(cfg.model_store)
        self._snaps: dict[tuple[str, str, int], object] = {}
        self._lock = threading.Lock()

    def wanted(self, tenant: str, default_algorithm: str | None) -> set[tuple[str, int]]:
        """(algorithm, version) pairs the tenant's arms pin."""
        out = set()
        for exp in self.cfg.tenant(tenant).experiments:
            for arm in exp.arms:
                if arm.model_version:
                    out.add((arm.algorithm if arm.algorithm not in ("", "popularity")
                             else default_algorithm or "als", int(arm.model_version)))
        return out

    def refresh(self, tenant: str, default_algorithm: str | None = None) -> None:
        """Build the pinned versions still kept; forget the others (called off the request
        path: at start and after each swap of ``tenant``)."""
        keep = {}
        for algorithm, version in self.wanted(tenant, default_algorithm):
            key = (tenant, algorithm, version)
            snap = self._snaps.get(key)
            if version not in self.store.versions(tenant, algorithm):
                continue
            if snap is None:
                try:
                    snap = self.build(self.store.load(tenant, algorithm, version))
                except Exception as e:  # a bad version is not served; the arm falls back
                    log.error("pinned model %s/%s v%d not usable: %s", tenant, algorithm,
                              version, e)
                    continue
                log.info("pinned model %s/%s v%d loaded for an experiment arm", tenant,
                         algorithm, version)
            keep[key] = snap
        with self._lock:
            snaps = {k: v for k, v in self._snaps.items() if k[0] != tenant}
            snaps.update(keep)
            self._snaps = snaps  # one assignment: readers see the old or the new map

    def resolve(self, current, tenant: str, assignment):
        """The snapshot an arm's request is served from: its pinned version if held, else
        ``current`` (counted when the arm pins one)."""
        spec = assignment.spec
        if spec is None or not spec.model_version or current is None \
                or current.version == spec.model_version:
            return current
        snap = self._snaps.get((tenant, current.algorithm, int(spec.model_version)))
        if snap is None:
            PINNED_FALLBACKS.labels(tenant, assignment.experiment, assignment.arm).inc()
            return current
        return snap
