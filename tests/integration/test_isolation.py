"""Tenant isolation through the real server: ≥ 10k random requests over gRPC, three tenants.

The tenants share user ids and part of their item ids on purpose (acme items 0-199, globex
100-299, initech 50-249), and each has its own model version, profiles, catalog bans and
trending events on the real broker. Every request goes through the whole path - API key ->
tenant -> that tenant's snapshot, profile, bans and trending - so a leak anywhere on it (a key
bound to the wrong tenant, a profile or ban looked up without the tenant, a trending list or
model shared between tenants) shows up as an item outside the caller's catalogue, another
tenant's model version, or a suppressed item coming back.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_stream.broker import free_port
from recsys_stream.contracts.ann_index import build_index
from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.events import Event, encode_event
from recsys_stream.contracts.keys import make_key
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.pb import events_pb2, profiles_pb2
from recsys_stream.contracts.pb import recommender_pb2 as pb
from recsys_stream.contracts.pb import recommender_pb2_grpc
from recsys_stream.kafka import producer
from recsys_stream.serving.app import run_server
from recsys_stream.stack import wait_until
from tests.conftest import KEYS

pytestmark = pytest.mark.integration

UNIVERSES = {"acme": range(0, 200), "globex": range(100, 300), "initech": range(50, 250)}
VERSIONS = {"acme": 3, "globex": 5, "initech": 8}  # distinct: an answer names its model
N_USERS = 40  # user-0 .. user-39 exist in every tenant (batch users below 20)


def _world(seed: int = 7):
    """Per tenant: factors, profiles (seen, hidden, vector or not) and banned items."""
    rng = np.random.default_rng(seed)
    world = {}
    for n, (tenant, universe) in enumerate(UNIVERSES.items()):
        items = [f"item-{i}" for i in universe]
        basis = rng.normal(size=(3, 8))
        Y = rng.normal(size=(len(items), 3)) @ basis + 0.1 * rng.normal(size=(len(items), 8))
        X = rng.normal(size=(20, 3)) @ basis
        profiles = {}
        for u in range(N_USERS):
            if (u + n) % 4 == 0:  # a quarter of the users have no profile in this tenant
                continue
            seen = rng.choice(items, size=int(rng.integers(1, 25)), replace=False).tolist()
            hidden = rng.choice(items, size=int(rng.integers(0, 4)), replace=False).tolist()
            kind = ("vector", "stale vector", "items only")[u % 3]
            profiles[f"user-{u}"] = (seen, hidden, kind)
        banned = rng.choice(items, size=12, replace=False).tolist()
        world[tenant] = {"items": items, "Y": Y, "X": X, "profiles": profiles,
                         "banned": set(banned)}
    return world


@pytest.fixture(scope="module")
def isolated(tmp_path_factory, kafka_bootstrap):
    from tests.conftest import make_config
    from recsys_stream.kafka import ensure_topics
    cfg = make_config(tmp_path_factory.mktemp("iso"), kafka_bootstrap)
    ensure_topics(cfg)
    world = _world()
    store = ModelStore(cfg.model_store)
    prod = producer(cfg)
    now = int(time.time() * 1000)
    for tenant, w in world.items():
        v, Y, X = VERSIONS[tenant], w["Y"], w["X"]
        store.write(tenant, "als", v, item_ids=w["items"], item_factors=Y,
                    user_ids=[f"user-{u}" for u in range(len(X))], user_factors=X,
                    popularity=np.arange(len(Y), 0, -1, dtype=float),
                    manifest={"hyperparameters": {"regularization": 0.5},
                              "confidence": ConfidenceSettings().to_dict()},
                    index_writer=lambda p, Y=Y, X=X: build_index(Y, p, X, recall_floor=0.0))
        store.set_current(tenant, "als", v)
        for user, (seen, hidden, kind) in w["profiles"].items():
            p = profiles_pb2.UserProfile(tenant=tenant, user_id=user, item_ids=seen,
                                         confidences=[2.0] * len(seen),
                                         suppressed_item_ids=hidden)
            if kind != "items only":  # a stale vector names a version that is not served
                p.vectors.add(algorithm="als", model_version=v if kind == "vector" else v - 1,
                              values=list(np.linspace(-1, 1, Y.shape[1])))
            prod.produce(cfg.topics.profiles, key=make_key(tenant, user),
                         value=p.SerializeToString())
        for item in w["banned"]:
            prod.produce(cfg.topics.catalog, key=make_key(tenant, item),
                         value=events_pb2.CatalogItem(tenant=tenant, item_id=item,
                                                      state=events_pb2.BANNED).SerializeToString())
        # trending: events on each tenant's own items (some of them banned: must stay hidden)
        for j, item in enumerate(w["items"][:30] + sorted(w["banned"])):
            e = Event(uuid.uuid4().hex, tenant, f"walker-{j}", item, "view", None, now - j)
            prod.produce(cfg.topics.interactions, key=e.key, value=encode_event(e))
    assert prod.flush(20) == 0
    address = f"127.0.0.1:{free_port()}"
    c = cfg.replace(server={"address": address})
    stop = threading.Event()
    t = threading.Thread(target=run_server, args=(c, stop), daemon=True)
    t.start()
    channel = grpc.insecure_channel(address)
    stub = recommender_pb2_grpc.RecommenderStub(channel)

    def trending_everywhere():
        try:
            return all(stub.Recommend(pb.RecommendRequest(user_id="stranger", k=5),
                                      metadata=(("x-api-key", KEYS[t]),)).source == pb.TRENDING
                       for t in UNIVERSES)
        except grpc.RpcError:
            return False

    wait_until(trending_everywhere, 60, what="the server with every tenant's trending")
    yield stub, world
    channel.close()
    stop.set()
    t.join(15)


def test_no_answer_holds_another_tenants_item_or_a_suppressed_one(isolated):
    stub, world = isolated
    sources = collections.Counter()

    @settings(max_examples=10_000, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(tenant=st.sampled_from(sorted(UNIVERSES)),
           user=st.one_of(st.integers(0, N_USERS - 1).map(lambda u: f"user-{u}"),
                          st.sampled_from(["stranger", "walker-3"])),
           k=st.integers(1, 60),
           exclude=st.sets(st.integers(0, 299).map(lambda i: f"item-{i}"), max_size=25),
           named=st.sampled_from(["", "", "", "own", "other", "unknown"]),
           similar=st.booleans(), item=st.integers(0, 299))
    def one_request(tenant, user, k, exclude, named, similar, item):
        w = world[tenant]
        md = (("x-api-key", KEYS[tenant]),)
        other = next(t for t in sorted(UNIVERSES) if t != tenant)
        field = {"": "", "own": tenant, "other": other, "unknown": "nope"}[named]
        try:
            if similar:
                r = stub.SimilarItems(pb.SimilarItemsRequest(
                    tenant=field, item_id=f"item-{item}", k=k, exclude_item_ids=sorted(exclude)),
                    metadata=md, timeout=10)
            else:
                r = stub.Recommend(pb.RecommendRequest(
                    tenant=field, user_id=user, k=k, exclude_item_ids=sorted(exclude)),
                    metadata=md, timeout=10)
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code = e.code()
        sources[code.name] += 1
        expected = {"other": grpc.StatusCode.PERMISSION_DENIED,
                    "unknown": grpc.StatusCode.NOT_FOUND}.get(named, grpc.StatusCode.OK)
        if similar and expected == grpc.StatusCode.OK and f"item-{item}" not in w["items"]:
            expected = grpc.StatusCode.NOT_FOUND  # another tenant's item is unknown here
        assert code == expected, (tenant, named, similar, item)
        if code != grpc.StatusCode.OK:
            return
        got = [i.item_id for i in r.items]
        assert r.tenant == tenant and r.model_version == VERSIONS[tenant]
        assert set(got) <= set(w["items"]), f"{tenant} answered another tenant's item"
        suppressed = set(exclude) | w["banned"]
        if similar:
            suppressed.add(f"item-{item}")
        elif user in w["profiles"]:  # only this tenant's profile of the user applies
            seen, hidden, _ = w["profiles"][user]
            suppressed |= set(seen) | set(hidden)
        assert not set(got) & suppressed, "a suppressed item"
        assert len(got) == len(set(got)) == min(k, len(set(w["items"]) - suppressed))
        sources["similar" if similar else pb.Source.Name(r.source)] += 1

    one_request()
    # the requests went through every step of the chain, else they proved less than claimed
    assert {"NEARLINE", "BATCH", "PROFILE_FOLD_IN", "TRENDING", "similar"} <= set(sources), \
        sources
    refused = sum(sources[c.name] for c in grpc.StatusCode if c != grpc.StatusCode.OK)
    assert sources["OK"] + refused >= 10_000 and sources["OK"] >= 5_000, sources
