"""The service's request path without a network: deadlines, validation messages, metrics.

The integration tests drive the same handlers over a real port; here a recording context lets a
test see what the server itself decided (a client-side deadline can end a call before the
server is ever asked, which says nothing about the server).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from recsys_stream.contracts.pb import recommender_pb2 as pb
from recsys_stream.serving.metrics import LATENCY, REQUESTS
from recsys_stream.serving.service import RecommenderService
from tests.conftest import KEYS


class Aborted(Exception):
    pass


class Context:
    """What a handler uses of ``grpc.aio.ServicerContext``; ``abort`` raises, as grpc's does."""

    def __init__(self, key: str | None = KEYS["acme"], remaining: float | None = 5.0) -> None:
        self.key, self.remaining = key, remaining
        self.code = self.details = None

    def time_remaining(self):
        return self.remaining

    def invocation_metadata(self):
        return (("x-api-key", self.key),) if self.key else ()

    async def abort(self, code, details):
        self.code, self.details = code, details
        raise Aborted(details)


class NoModels:
    def models(self, tenant):
        return {}

    def default_algorithm(self, tenant):
        return None


class CountingReads:
    def __init__(self):
        self.profile_reads = 0

    def profile(self, tenant, user_id):
        self.profile_reads += 1
        return None

    def banned(self, tenant):
        return frozenset()

    def erased(self, tenant, user_id):
        return False


@pytest.fixture
def service(offline_cfg):
    return RecommenderService(offline_cfg, NoModels(), CountingReads(), trending=None)


def _call(service, method, request, ctx):
    try:
        return asyncio.run(getattr(service, method)(request, ctx))
    except Aborted:
        return None


def _count(metric, *labels):
    return metric.labels(*labels)._value.get() if metric is REQUESTS else \
        metric.labels(*labels)._sum.get()


def test_an_expired_deadline_is_answered_unworked_and_counted(service):
    before = _count(REQUESTS, "Recommend", "DEADLINE_EXCEEDED", "none")
    ctx = Context(remaining=-0.001)
    assert _call(service, "Recommend", pb.RecommendRequest(user_id="u", k=5), ctx) is None
    assert ctx.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert service.read.profile_reads == 0, "no work for a caller who has gone"
    assert _count(REQUESTS, "Recommend", "DEADLINE_EXCEEDED", "none") == before + 1
    # with time left the same request is worked (EMPTY: this tenant has no model yet)
    r = _call(service, "Recommend", pb.RecommendRequest(user_id="u", k=5), Context())
    assert r.source == pb.EMPTY and service.read.profile_reads == 1
    assert LATENCY.labels("Recommend", "OK", "EMPTY")._sum.get() > 0


@pytest.mark.parametrize("method, request_, field", [
    ("Recommend", pb.RecommendRequest(user_id="u", k=0), "k"),
    ("Recommend", pb.RecommendRequest(user_id="u", k=1001), "k"),
    ("Recommend", pb.RecommendRequest(user_id="", k=3), "user_id"),
    ("Recommend", pb.RecommendRequest(user_id="u" * 257, k=3), "user_id"),
    ("Recommend", pb.RecommendRequest(user_id="é" * 129, k=3), "user_id"),  # 258 bytes
    ("Recommend", pb.RecommendRequest(user_id="u", k=3, exclude_item_ids=["a"] * 1001),
     "exclude_item_ids"),
    ("Recommend", pb.RecommendRequest(user_id="u", k=3, exclude_item_ids=["a", ""]),
     "exclude_item_ids"),
    ("Recommend", pb.RecommendRequest(user_id="u", k=3, exclude_item_ids=["x" * 300]),
     "exclude_item_ids"),
    ("Recommend", pb.RecommendRequest(user_id="u", k=3, algorithm="svd"), "algorithm"),
    ("SimilarItems", pb.SimilarItemsRequest(item_id="", k=3), "item_id"),
    ("SimilarItems", pb.SimilarItemsRequest(item_id="i", k=-1), "k"),
    ("SimilarItems", pb.SimilarItemsRequest(item_id="i", k=3, algorithm="ALS "), "algorithm"),
    ("SimilarItems", pb.SimilarItemsRequest(item_id="i", k=3, exclude_item_ids=[""]),
     "exclude_item_ids"),
    ("Recommend", pb.RecommendRequest(user_id="u", k=3, filter=pb.Filter(
        include_categories=["Horror", ""])), "filter.include_categories"),
    ("Recommend", pb.RecommendRequest(user_id="u", k=3, filter=pb.Filter(
        exclude_categories=["c"] * 101)), "filter.exclude_categories"),
    ("Recommend", pb.RecommendRequest(user_id="u", k=3, filter=pb.Filter(
        attributes={"": "x"})), "filter.attributes"),
    ("Recommend", pb.RecommendRequest(user_id="u", k=3, filter=pb.Filter(
        attributes={"lang": "x" * 300})), "filter.attributes"),
    ("Recommend", pb.RecommendRequest(user_id="u", k=3, filter=pb.Filter(
        created_after_ms=-1)), "filter.created_after_ms"),
    ("SimilarItems", pb.SimilarItemsRequest(item_id="i", k=3, filter=pb.Filter(
        include_categories=["x" * 300])), "filter.include_categories"),
    ("Recommend", pb.RecommendRequest(k=3, context_item_ids=["a", ""]), "context_item_ids"),
    ("Recommend", pb.RecommendRequest(k=3, context_item_ids=["a"] * 201), "context_item_ids"),
    ("Recommend", pb.RecommendRequest(user_id="u" * 300, k=3, context_item_ids=["a"]),
     "user_id"),
    ("RankItems", pb.RankItemsRequest(item_ids=["a"]), "user_id"),
    ("RankItems", pb.RankItemsRequest(user_id="u"), "item_ids"),
    ("RankItems", pb.RankItemsRequest(user_id="u", item_ids=["a"] * 501), "item_ids"),
    ("RankItems", pb.RankItemsRequest(user_id="u", item_ids=["a", "a"]), "item_ids"),
    ("RankItems", pb.RankItemsRequest(user_id="u", item_ids=["a", ""]), "item_ids"),
    ("RankItems", pb.RankItemsRequest(context_item_ids=[""], item_ids=["a"]),
     "context_item_ids"),
    ("RankItems", pb.RankItemsRequest(user_id="u", item_ids=["a"], algorithm="mf"),
     "algorithm"),
    ("RankItems", pb.RankItemsRequest(user_id="u", item_ids=["a"], filter=pb.Filter(
        created_after_ms=-3)), "filter.created_after_ms"),
    ("Recommend", pb.RecommendRequest(user_id="u", k=3, diversity=pb.Diversity(
        max_per_category=-2)), "diversity.max_per_category"),
    ("Recommend", pb.RecommendRequest(user_id="u", k=3, diversity=pb.Diversity(
        mmr_lambda=-0.1)), "diversity.mmr_lambda"),
])
def test_invalid_argument_names_the_field(service, method, request_, field):
    ctx = Context()
    assert _call(service, method, request_, ctx) is None
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT
    assert ctx.details.split()[0] == field, ctx.details


def test_getprofile_validates_after_the_admin_check(service):
    ctx = Context()  # a tenant's plain key: refused before anything else is looked at
    assert _call(service, "GetProfile", pb.GetProfileRequest(user_id=""), ctx) is None
    assert ctx.code == grpc.StatusCode.PERMISSION_DENIED
    from tests.conftest import ADMIN_KEYS
    ctx = Context(key=ADMIN_KEYS["acme"])
    assert _call(service, "GetProfile", pb.GetProfileRequest(user_id=""), ctx) is None
    assert ctx.code == grpc.StatusCode.INVALID_ARGUMENT and ctx.details.startswith("user_id")
