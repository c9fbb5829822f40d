"""The ``recsys.v1.Recommender`` gRPC service (grpc.aio): authentication, validation, metrics.

Every request: identify the API key's tenant (UNAUTHENTICATED / PERMISSION_DENIED), validate
(INVALID_ARGUMENT naming the field), take the tenant's models once, answer with
``recommend()``. Nothing a client sends can raise out of a handler: an unexpected error is
logged, counted and answered INTERNAL.
"""

from __future__ import annotations

import logging
import time

import grpc

from recsys_stream.config import Config
from recsys_stream.contracts.pb import recommender_pb2, recommender_pb2_grpc
from recsys_stream.follow import ModelFollower
from recsys_stream.serving.auth import METADATA_KEY, KeyRing
from recsys_stream.serving.metrics import FALLBACKS, LATENCY, REQUESTS, SUPPRESSED
from recsys_stream.serving.read_models import ReadModels
from recsys_stream.serving.recommend import NEARLINE, recommend
from recsys_stream.serving.snapshots import TenantSnapshot

log = logging.getLogger(__name__)
ALGORITHMS = ("", "als", "bpr")


class RequestError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class RecommenderService(recommender_pb2_grpc.RecommenderServicer):
    def __init__(self, cfg: Config, models: ModelFollower[TenantSnapshot],
                 read: ReadModels) -> None:
        self.cfg, self.models, self.read = cfg, models, read
        self.keys = KeyRing(cfg)

    async def Recommend(self, request, context):
        t0 = time.perf_counter()
        source = "none"
        try:
            tenant = self._tenant(request.tenant, context)
            self._validate(request)
            models = self.models.models(tenant)  # read once: one consistent set of versions
            algorithm = request.algorithm or self.models.default_algorithm(tenant) or "als"
            snap = models.get(algorithm)
            if request.algorithm and snap is None and models:
                raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                   f"algorithm {algorithm!r} has no model for this tenant")
            answer = recommend(snap, self.read.profile(tenant, request.user_id),
                               request.user_id, request.k, set(request.exclude_item_ids),
                               self.read.banned(tenant))
            source = recommender_pb2.Source.Name(answer.source)
            SUPPRESSED.labels(tenant).inc(answer.suppressed)
            if answer.source != NEARLINE:
                FALLBACKS.labels(tenant, source).inc()
            REQUESTS.labels("Recommend", "OK", source).inc()
            return recommender_pb2.RecommendResponse(
                items=[recommender_pb2.ScoredItem(item_id=i, score=s) for i, s in answer.items],
                tenant=tenant, algorithm=answer.algorithm or algorithm,
                model_version=answer.version, source=answer.source, reason=answer.reason)
        except RequestError as e:
            REQUESTS.labels("Recommend", e.code.name, source).inc()
            await context.abort(e.code, e.message)
        except Exception:
            log.exception("Recommend failed for a valid request")
            REQUESTS.labels("Recommend", "INTERNAL", source).inc()
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        finally:
            LATENCY.labels("Recommend", source).observe(time.perf_counter() - t0)

    def _tenant(self, requested: str, context) -> str:
        key = dict(context.invocation_metadata() or ()).get(METADATA_KEY)
        caller = self.keys.identify(key)
        if caller is None:
            raise RequestError(grpc.StatusCode.UNAUTHENTICATED,
                               f"missing or unknown API key (gRPC metadata {METADATA_KEY!r})")
        if requested and requested != caller.tenant:
            raise RequestError(grpc.StatusCode.PERMISSION_DENIED,
                               "the API key is not valid for the requested tenant")
        return caller.tenant

    def _validate(self, r) -> None:
        sc, bad = self.cfg.server, grpc.StatusCode.INVALID_ARGUMENT
        if not 1 <= r.k <= sc.max_k:
            raise RequestError(bad, f"k must be between 1 and {sc.max_k}, got {r.k}")
        if not r.user_id:
            raise RequestError(bad, "user_id is required")
        if len(r.user_id.encode()) > sc.max_id_bytes:
            raise RequestError(bad, f"user_id is longer than {sc.max_id_bytes} bytes")
        if len(r.exclude_item_ids) > sc.max_excludes:
            raise RequestError(bad, f"exclude_item_ids has {len(r.exclude_item_ids)} ids; "
                                    f"at most {sc.max_excludes}")
        if any(not i or len(i.encode()) > sc.max_id_bytes for i in r.exclude_item_ids):
            raise RequestError(bad, f"exclude_item_ids must be non-empty ids of at most "
                                    f"{sc.max_id_bytes} bytes")
        if r.algorithm not in ALGORITHMS:
            raise RequestError(bad, f"algorithm must be one of als, bpr (or empty), "
                                    f"got {r.algorithm!r}")
