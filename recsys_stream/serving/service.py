"""The ``recsys.v1.Recommender`` gRPC service (grpc.aio): authentication, validation, metrics.

Every request: identify the API key's tenant (UNAUTHENTICATED / NOT_FOUND / PERMISSION_DENIED),
validate (INVALID_ARGUMENT naming the field), take the tenant's models once, answer. Nothing a
client sends can raise out of a handler: an unexpected error is logged, counted and answered
INTERNAL. A request whose deadline has already passed is answered DEADLINE_EXCEEDED unworked.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from functools import partial

import grpc

from recsys_stream.config import Config
from recsys_stream.contracts.pb import recommender_pb2, recommender_pb2_grpc
from recsys_stream.follow import ModelFollower
from recsys_stream.serving import arms
from recsys_stream.serving.auth import METADATA_KEY, Caller, KeyRing
from recsys_stream.serving.catalog_index import CatalogIndex
from recsys_stream.serving.caps import capped_items
from recsys_stream.serving.pinned import PinnedModels
from recsys_stream.serving.filters import Eligibility, FilterError, FilterSpec, eligibility, \
    parse_filter
from recsys_stream.serving.handlers import Unparsed
from recsys_stream.serving.metrics import ANSWERED, FALLBACKS, LATENCY, REQUESTS, SUPPRESSED, \
    child
from recsys_stream.serving.item_delta import ItemDeltas
from recsys_stream.serving.predict import predict_ratings
from recsys_stream.serving.rank import MAX_RANK_ITEMS, rank_items
from recsys_stream.serving.read_models import ReadModels
from recsys_stream.serving.diversity import DiversityError, parse_diversity
from recsys_stream.serving.explain import decomposition, explain_items
from recsys_stream.serving.recommend import NEARLINE, SIMILAR, UnknownItem, similar_items
from recsys_stream.serving.served_log import ServedLog, new_recommendation_id, slate_of
from recsys_stream.serving.session import MAX_CONTEXT_ITEMS
from recsys_stream.serving.slate import Request, compose
from recsys_stream.serving.snapshots import TenantSnapshot
from recsys_stream.serving.trending import Trending

log = logging.getLogger(__name__)
ALGORITHMS = ("", "als", "bpr", "mf")
MAX_PREDICT_ITEMS = 1000
_BAD = grpc.StatusCode.INVALID_ARGUMENT
_SOURCE_NAME = {v.number: v.name for v in recommender_pb2.Source.DESCRIPTOR.values}
_ANSWERS = ("Recommend", "SimilarItems", "RankItems")  # answers with an id, logged


def _scored(response, items, reasons=None, because=None):
    """``response`` with ``items`` appended in place (half the cost of building ScoredItem
    messages and copying them in); ``reasons`` and ``because`` aligned with ``items``."""
    add = response.items.add
    if reasons is None:
        for item_id, score in items:
            add(item_id=item_id, score=score)
        return response
    for n, ((item_id, score), reason) in enumerate(zip(items, reasons)):
        scored = add(item_id=item_id, score=score, reason=reason)
        if because is not None:
            for j, c in because[n]:
                scored.because.add(item_id=j, contribution=c)
    return response


class RequestError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class RecommenderService(recommender_pb2_grpc.RecommenderServicer):
    def __init__(self, cfg: Config, models: ModelFollower[TenantSnapshot], read: ReadModels,
                 trending: Trending | None = None, deltas: ItemDeltas | None = None,
                 catalog: CatalogIndex | None = None,
                 served_log: ServedLog | None = None, pinned: PinnedModels | None = None
                 ) -> None:
        self.cfg, self.models, self.read, self.trending = cfg, models, read, trending
        self.pinned = pinned  # experiment arms' pinned model versions (serving.pinned)
        self.served_log = served_log  # answers onto `recommendations` (None: not logged)
        self.deltas = deltas  # new items of each snapshot's version (serving.item_delta)
        self.catalog = catalog  # categories and attributes per served version (filters)
        self.keys = KeyRing(cfg)
        self._producer = None  # EraseUser's, made on first use
        self._producer_lock = threading.Lock()

    # -- methods ---------------------------------------------------------------------------
    async def Recommend(self, request, context):
        return await self._handle("Recommend", request, context, self._recommend)

    async def SimilarItems(self, request, context):
        return await self._handle("SimilarItems", request, context, self._similar)

    async def RankItems(self, request, context):
        return await self._handle("RankItems", request, context, self._rank)

    async def GetProfile(self, request, context):
        return await self._handle("GetProfile", request, context, self._profile)

    async def PredictRatings(self, request, context):
        return await self._handle("PredictRatings", request, context, self._predict)

    async def EraseUser(self, request, context):
        return await self._handle("EraseUser", request, context, self._erase)

    async def _erase(self, r, caller: Caller, meta: dict):
        if not caller.admin:
            raise RequestError(grpc.StatusCode.PERMISSION_DENIED,
                               "EraseUser needs an operator (admin) API key")
        from recsys_stream.produce import check_erase_ids, erase_user
        why = check_erase_ids(caller.tenant, r.user_id)
        if why is not None:
            raise RequestError(_BAD, why)
        with self._producer_lock:
            if self._producer is None:
                from recsys_stream.kafka import producer
                self._producer = producer(self.cfg)
        try:  # off the event loop: the broker's acknowledgement is awaited
            ev, partition, offset = await asyncio.to_thread(
                erase_user, self.cfg, caller.tenant, r.user_id, self._producer, 30.0)
        except RuntimeError as e:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, str(e)) from None
        log.info("erase record for a user of tenant %s at partition %d offset %d",
                 caller.tenant, partition, offset)
        return recommender_pb2.EraseUserResponse(tenant=caller.tenant, user_id=r.user_id,
                                                 event_id=ev.event_id, partition=partition,
                                                 offset=offset)

    def _predict(self, r, caller: Caller, meta: dict):
        self._check_id("user_id", r.user_id)
        ids = list(r.item_ids)
        if not ids:
            raise RequestError(_BAD, "item_ids is required (1 to "
                                     f"{MAX_PREDICT_ITEMS} ids)")
        if len(ids) > MAX_PREDICT_ITEMS:
            raise RequestError(_BAD, f"item_ids has {len(ids)} ids; at most {MAX_PREDICT_ITEMS}")
        if any(not i or len(i.encode()) > self.cfg.server.max_id_bytes for i in ids):
            raise RequestError(_BAD, "item_ids must be non-empty ids of at most "
                                     f"{self.cfg.server.max_id_bytes} bytes")
        snap = self.models.models(caller.tenant).get("mf")  # read once
        if snap is None:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               "no explicit-rating (mf) model has been published for this "
                               "tenant yet")
        tc = self.cfg.tenant(caller.tenant)
        batch_id = None if self.read.erased(caller.tenant, r.user_id) else r.user_id
        p = predict_ratings(snap, self.read.profile(caller.tenant, r.user_id), batch_id, ids,
                            (tc.rating_min, tc.rating_max))
        meta["source"] = _SOURCE_NAME[p.source]
        resp = recommender_pb2.PredictRatingsResponse(
            tenant=caller.tenant, algorithm=snap.algorithm, model_version=snap.version,
            source=p.source, unknown_item_ids=p.unknown)
        add = resp.ratings.add
        for item_id, rating, known in p.ratings:
            add(item_id=item_id, rating=rating, known=known)
        return resp

    def _recommend(self, r, caller: Caller, meta: dict):
        self._check_k(r.k)
        context = self._check_context(r.context_item_ids, r.user_id)
        self._check_excludes(r.exclude_item_ids)
        spec = self._filter(r)
        div = None
        if r.HasField("diversity"):
            try:
                div = parse_diversity(r.diversity, "diversity")
            except DiversityError as e:
                raise RequestError(_BAD, str(e)) from None
        tc = self.cfg.tenant(caller.tenant)
        if r.session_id:
            self._check_id("session_id", r.session_id)
        unit = r.user_id or r.session_id
        arm = self._arm(tc, unit, meta)
        meta["anonymous"] = not r.user_id
        div = arms.diversity(arm, div)
        tc = arms.tenant_settings(arm, tc)
        snap = self._pin(self._snapshot(caller.tenant, arms.algorithm(arm, r.algorithm)),
                         caller.tenant, arm)
        profile = self.read.profile(caller.tenant, r.user_id) if r.user_id else None
        banned = self.read.banned(caller.tenant)
        # the catalog's attributes of this version: for a filter, diversity caps, exploration
        attrs = self.catalog.get(snap) if self.catalog is not None and snap is not None and (
            spec is not None or div is not None or tc.exploration_share > 0) else None
        # an erased user's batch vector is never served (None finds no model row): the user
        # is served as new until a model without them is current
        batch_id = None if r.user_id and self.read.erased(caller.tenant, r.user_id) \
            else r.user_id
        excludes = set(r.exclude_item_ids) | capped_items(profile)  # frequency caps
        # trending is ranked only when no user vector answers (a lazy callable)
        trending = partial(self.trending.ranked, caller.tenant) if self.trending else ()
        if arms.popularity(arm):  # the baseline arm: popularity, with the user's suppression
            if profile is not None:
                excludes |= set(profile.item_ids) | set(profile.suppressed_item_ids)
            profile, batch_id, context, trending = None, None, [], ()
        req = Request(batch_id, r.k, excludes, context,
                      self._eligibility(spec, caller.tenant, snap, attrs), div)
        answer, reasons = compose(snap, profile, req, banned, trending, self.deltas, attrs, tc)
        meta["source"] = _SOURCE_NAME[answer.source]
        child(SUPPRESSED, caller.tenant).inc(answer.suppressed)
        child(ANSWERED, caller.tenant).inc(len(answer.items))
        if answer.source != NEARLINE:
            child(FALLBACKS, caller.tenant, meta["source"]).inc()
        because = None
        if r.explain and answer.items and snap is not None:
            b = decomposition(snap, profile, answer.vector, answer.source, answer.basis)
            if b is not None:
                delta = self.deltas.get(snap.tenant, snap.algorithm, snap.version) \
                    if self.deltas is not None else None
                because = explain_items(snap, delta, b, [i for i, _ in answer.items])
        return _scored(recommender_pb2.RecommendResponse(
            tenant=caller.tenant, algorithm=answer.algorithm, model_version=answer.version,
            source=answer.source, reason=answer.reason, experiment=arm.experiment,
            arm=arm.arm), answer.items, reasons, because)

    def _similar(self, r, caller: Caller, meta: dict):
        self._check_k(r.k)
        self._check_id("item_id", r.item_id)
        self._check_excludes(r.exclude_item_ids)
        spec = self._filter(r)
        snap = self._snapshot(caller.tenant, r.algorithm)
        if snap is None:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               "no model has been published for this tenant yet")
        eligible = self._eligibility(spec, caller.tenant, snap)
        try:
            similar = self.deltas.similar if self.deltas is not None else similar_items
            items = similar(snap, r.item_id, r.k, set(r.exclude_item_ids),
                            self.read.banned(caller.tenant), eligible)
        except UnknownItem:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"item_id {r.item_id!r} is not in the tenant's model") from None
        return _scored(recommender_pb2.SimilarItemsResponse(
            tenant=caller.tenant, algorithm=snap.algorithm, model_version=snap.version), items,
            [SIMILAR] * len(items))

    def _rank(self, r, caller: Caller, meta: dict):
        context = self._check_context(r.context_item_ids, r.user_id)
        ids = list(r.item_ids)
        if not 1 <= len(ids) <= MAX_RANK_ITEMS:
            raise RequestError(_BAD, f"item_ids must hold 1 to {MAX_RANK_ITEMS} ids, got "
                                     f"{len(ids)}")
        if any(not i or len(i.encode()) > self.cfg.server.max_id_bytes for i in ids):
            raise RequestError(_BAD, "item_ids must be non-empty ids of at most "
                                     f"{self.cfg.server.max_id_bytes} bytes")
        if len(set(ids)) != len(ids):
            raise RequestError(_BAD, "item_ids must be distinct")
        if r.algorithm == "mf":
            raise RequestError(_BAD, "algorithm must be als or bpr (or empty) for RankItems; "
                                     "PredictRatings serves the explicit mf model")
        spec = self._filter(r)
        if r.session_id:
            self._check_id("session_id", r.session_id)
        arm = self._arm(self.cfg.tenant(caller.tenant), r.user_id or r.session_id, meta)
        meta["anonymous"] = not r.user_id
        snap = self._pin(self._snapshot(caller.tenant, arms.algorithm(arm, r.algorithm)),
                         caller.tenant, arm)
        if snap is None:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               "no model has been published for this tenant yet")
        profile = self.read.profile(caller.tenant, r.user_id) if r.user_id else None
        capped = capped_items(profile)  # frequency caps: left out like banned items
        if capped:
            ids = [i for i in ids if i not in capped]
        delta = self.deltas.get(snap.tenant, snap.algorithm, snap.version) \
            if self.deltas is not None else None
        batch_id = None if r.user_id and self.read.erased(caller.tenant, r.user_id) \
            else r.user_id
        ranking = rank_items(snap, profile, batch_id, context, ids,
                             self.read.banned(caller.tenant),
                             self._eligibility(spec, caller.tenant, snap), delta,
                             partial(self.trending.ranked, caller.tenant) if self.trending
                             else tuple)
        meta["source"] = _SOURCE_NAME[ranking.source]
        return _scored(recommender_pb2.RankItemsResponse(
            tenant=caller.tenant, algorithm=snap.algorithm, model_version=snap.version,
            source=ranking.source, unknown_item_ids=ranking.unknown,
            experiment=arm.experiment, arm=arm.arm), ranking.items, ranking.reasons())

    def _profile(self, r, caller: Caller, meta: dict):
        if not caller.admin:
            raise RequestError(grpc.StatusCode.PERMISSION_DENIED,
                               "GetProfile needs an operator (admin) API key")
        self._check_id("user_id", r.user_id)
        profile = self.read.profile(caller.tenant, r.user_id)
        if profile is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"no profile for user_id {r.user_id!r}")
        return profile

    # -- the shared request path -----------------------------------------------------------
    async def _handle(self, method: str, request, context, fn):
        t0 = time.perf_counter()
        meta = {"source": "none"}
        status = "OK"
        try:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline already passed")
            caller = self._caller(request.tenant, context)
            if isinstance(request, Unparsed):  # after auth: strangers learn nothing more
                raise RequestError(_BAD, f"the request body does not parse as {request.message}"
                                         f": {request.error}")
            out = fn(request, caller, meta)
            out = (await out) if inspect.isawaitable(out) else out
            if method in _ANSWERS:
                self._served(method, caller.tenant, out, meta)
            return out
        except RequestError as e:
            status = e.code.name
            await context.abort(e.code, e.message)
        except Exception:
            status = "INTERNAL"
            log.exception("%s failed", method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        finally:
            child(REQUESTS, method, status, meta["source"]).inc()
            child(LATENCY, method, status, meta["source"]).observe(time.perf_counter() - t0)

    def _arm(self, tc, unit: str, meta: dict) -> arms.Assignment:
        """The request's experiment arm, remembered for the served log."""
        a = arms.assign(tc, unit)
        meta["unit"], meta["experiment"], meta["arm"] = unit, a.experiment, a.arm
        return a

    def _served(self, method: str, tenant: str, response, meta: dict) -> None:
        """Give the answer its id and queue it for `recommendations` (never blocks)."""
        response.recommendation_id = new_recommendation_id()
        if self.served_log is not None:
            slate = slate_of(method, tenant, meta.get("unit", ""), response,
                             meta.get("experiment", ""), meta.get("arm", ""))
            slate.anonymous = bool(meta.get("anonymous")) and bool(slate.user_id)
            self.served_log.offer(slate)

    def _caller(self, requested: str, context) -> Caller:
        keys = [value for name, value in context.invocation_metadata() or ()
                if name == METADATA_KEY]
        if len(keys) > 1:  # never decided by whichever value comes last
            raise RequestError(grpc.StatusCode.UNAUTHENTICATED,
                               f"{len(keys)} values of gRPC metadata {METADATA_KEY!r}; send one")
        caller = self.keys.identify(keys[0] if keys else None)
        if caller is None:
            raise RequestError(grpc.StatusCode.UNAUTHENTICATED,
                               f"missing or unknown API key (gRPC metadata {METADATA_KEY!r})")
        if requested and requested != caller.tenant:
            if requested not in self.cfg.tenants:
                raise RequestError(grpc.StatusCode.NOT_FOUND, f"unknown tenant {requested!r}")
            raise RequestError(grpc.StatusCode.PERMISSION_DENIED,
                               "the API key is not valid for the requested tenant")
        return caller

    def _snapshot(self, tenant: str, algorithm: str) -> TenantSnapshot | None:
        if algorithm not in ALGORITHMS:
            raise RequestError(_BAD, f"algorithm must be one of als, bpr, mf (or empty), "
                                     f"got {algorithm!r}")
        models = self.models.models(tenant)  # read once: one consistent set of versions
        name = algorithm or self.models.default_algorithm(tenant) or "als"
        snap = models.get(name)
        if algorithm and snap is None and models:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"algorithm {algorithm!r} has no model for this tenant")
        return snap

    def _pin(self, snap: TenantSnapshot | None, tenant: str, arm: arms.Assignment):
        """The arm's pinned model version where it pins one and it is kept, else ``snap``."""
        return self.pinned.resolve(snap, tenant, arm) if self.pinned is not None else snap

    def _filter(self, r) -> FilterSpec | None:
        """The request's ``filter``, checked (None: it restricts nothing)."""
        if not r.HasField("filter"):
            return None
        try:
            return parse_filter(r.filter, "filter", self.cfg.server.max_id_bytes)
        except FilterError as e:
            raise RequestError(_BAD, str(e)) from None

    def _eligibility(self, spec: FilterSpec | None, tenant: str, snap: TenantSnapshot | None,
                     attrs=None) -> Eligibility | None:
        """``spec`` over ``snap``'s rows, from the served version's catalog attributes."""
        if spec is None or self.catalog is None:
            return None
        if snap is None:  # no model yet: the trending answer is filtered by id
            return eligibility(spec, self.catalog.without_model(tenant), {})
        return eligibility(spec, attrs or self.catalog.get(snap), snap.item_row)

    def _check_context(self, ids, user_id: str) -> list[str]:
        """The session's items, checked; ``user_id`` is required without them."""
        if not ids:
            self._check_id("user_id", user_id)
            return []
        if user_id:
            self._check_id("user_id", user_id)
        if len(ids) > MAX_CONTEXT_ITEMS:
            raise RequestError(_BAD, f"context_item_ids has {len(ids)} ids; at most "
                                     f"{MAX_CONTEXT_ITEMS}")
        if any(not i or len(i.encode()) > self.cfg.server.max_id_bytes for i in ids):
            raise RequestError(_BAD, "context_item_ids must be non-empty ids of at most "
                                     f"{self.cfg.server.max_id_bytes} bytes")
        return list(ids)

    def _check_k(self, k: int) -> None:
        if not 1 <= k <= self.cfg.server.max_k:
            raise RequestError(_BAD, f"k must be between 1 and {self.cfg.server.max_k}, got {k}")

    def _check_id(self, field: str, value: str) -> None:
        if not value:
            raise RequestError(_BAD, f"{field} is required")
        if len(value.encode()) > self.cfg.server.max_id_bytes:
            raise RequestError(_BAD, f"{field} is longer than {self.cfg.server.max_id_bytes} "
                                     "bytes")

    def _check_excludes(self, ids) -> None:
        if not ids:  # the common request: nothing to check
            return
        limit = self.cfg.server.max_excludes
        if len(ids) > limit:
            raise RequestError(_BAD, f"exclude_item_ids has {len(ids)} ids; at most {limit}")
        if any(not i or len(i.encode()) > self.cfg.server.max_id_bytes for i in ids):
            raise RequestError(_BAD, "exclude_item_ids must be non-empty ids of at most "
                                     f"{self.cfg.server.max_id_bytes} bytes")
