"""The gRPC server on a real port and broker: methods, tenancy, status codes, corrupt models."""

from __future__ import annotations

import contextlib
import random
import threading
import time

import grpc
import numpy as np
import pytest

from recsys_stream.broker import free_port, free_port_run
from recsys_stream.contracts.ann_index import build_index
from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.keys import make_key
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.pb import events_pb2, models_pb2, profiles_pb2
from recsys_stream.contracts.pb import recommender_pb2 as pb
from recsys_stream.contracts.pb import recommender_pb2_grpc
from recsys_stream.kafka import producer
from recsys_stream.serving.app import run_server
from recsys_stream.serving.client import RecommenderClient
from recsys_stream.stack import wait_until
from tests.conftest import ADMIN_KEYS, KEYS

pytestmark = pytest.mark.integration
DOCUMENTED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
              grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
              grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}


def write_model(cfg, tenant="acme", n_items=80, k=6, seed=0, corrupt=False):
    rng = np.random.default_rng(seed)
    store = ModelStore(cfg.model_store)
    v = store.next_version(tenant)
    Y = rng.normal(size=(n_items, k))
    X = rng.normal(size=(10, k))
    path = store.write(tenant, "als", v, item_ids=[f"{tenant}-{seed}-{i}" for i in range(n_items)],
                       item_factors=Y, user_ids=[f"batch-{i}" for i in range(10)],
                       user_factors=X, popularity=np.arange(n_items, 0, -1, dtype=float),
                       manifest={"hyperparameters": {"regularization": 0.5},
                                 "confidence": ConfidenceSettings().to_dict()},
                       index_writer=lambda p: build_index(Y, p, X, recall_floor=0.0))
    if corrupt:
        f = path / "item_factors.npy"
        data = bytearray(f.read_bytes())
        data[-5] ^= 0xFF
        f.write_bytes(bytes(data))
    store.set_current(tenant, "als", v)
    return v, path


def announce(cfg, tenant, version, path):
    p = producer(cfg)
    p.produce(cfg.topics.models, key=tenant.encode(), value=models_pb2.ModelPublished(
        tenant=tenant, algorithm="als", version=version,
        artifact_uri=path.as_uri()).SerializeToString())
    assert p.flush(10) == 0


@pytest.fixture
def server(cfg):
    v1, _ = write_model(cfg)
    prod = producer(cfg)
    profile = profiles_pb2.UserProfile(tenant="acme", user_id="p1",
                                       item_ids=["acme-0-1", "acme-0-2"], confidences=[3, 2],
                                       suppressed_item_ids=["acme-0-3"])
    profile.vectors.add(algorithm="als", model_version=v1, values=[1, 0, 0, 0, 0, 0])
    prod.produce(cfg.topics.profiles, key=make_key("acme", "p1"),
                 value=profile.SerializeToString())
    prod.produce(cfg.topics.catalog, key=make_key("acme", "acme-0-4"), value=events_pb2.CatalogItem(
        tenant="acme", item_id="acme-0-4", state=events_pb2.BANNED).SerializeToString())
    assert prod.flush(10) == 0
    with _running(cfg) as (c, address, client):
        yield c, address, client, v1


@contextlib.contextmanager
def _running(cfg):
    """A server on a free port in a thread, answering acme's ``p1`` once it yields."""
    address = f"127.0.0.1:{free_port()}"
    c = cfg.replace(server={"address": address})
    stop = threading.Event()
    t = threading.Thread(target=run_server, args=(c, stop), daemon=True)
    t.start()
    client = RecommenderClient(address, KEYS["acme"])
    try:
        wait_until(lambda: _ok(client), 30, what="the server")
        yield c, address, client
    finally:
        client.close()
        stop.set()
        t.join(15)


def _ok(client):
    try:
        return client.recommend("p1", k=3).model_version > 0
    except grpc.RpcError:
        return False


def test_methods_suppression_and_tenancy(server):
    cfg, address, client, v1 = server
    a = client.recommend("p1", k=10, exclude=["acme-0-5"])
    got = {i.item_id for i in a.items}
    assert a.source == pb.NEARLINE and a.model_version == v1 and len(got) == 10
    assert not got & {"acme-0-1", "acme-0-2", "acme-0-3", "acme-0-4", "acme-0-5"}
    assert client.recommend("batch-3", k=3).source == pb.BATCH
    assert client.recommend("stranger", k=3).source == pb.POPULARITY

    stub = recommender_pb2_grpc.RecommenderStub(grpc.insecure_channel(address))
    md = (("x-api-key", KEYS["acme"]),)
    sim = stub.SimilarItems(pb.SimilarItemsRequest(item_id="acme-0-7", k=5), metadata=md)
    assert len(sim.items) == 5 and "acme-0-7" not in {i.item_id for i in sim.items}
    codes = {}
    for name, call, meta in [
        ("no key", lambda m: stub.Recommend(pb.RecommendRequest(user_id="u", k=1), metadata=m), ()),
        ("other tenant", lambda m: stub.Recommend(pb.RecommendRequest(tenant="globex",
                                                                        user_id="u", k=1),
                                                   metadata=m), md),
        ("unknown tenant", lambda m: stub.Recommend(pb.RecommendRequest(tenant="nope",
                                                                          user_id="u", k=1),
                                                     metadata=m), md),
        ("bad k", lambda m: stub.Recommend(pb.RecommendRequest(user_id="u", k=0), metadata=m), md),
        ("bad algorithm", lambda m: stub.Recommend(pb.RecommendRequest(user_id="u", k=1,
                                                                        algorithm="svd"),
                                                    metadata=m), md),
        ("unknown item", lambda m: stub.SimilarItems(pb.SimilarItemsRequest(item_id="zzz", k=1),
                                                     metadata=m), md),
        ("profile, plain key", lambda m: stub.GetProfile(pb.GetProfileRequest(user_id="p1"),
                                                          metadata=m), md),
    ]:
        with pytest.raises(grpc.RpcError) as e:
            call(meta)
        codes[name] = (e.value.code(), e.value.details())
    assert codes["no key"][0] == grpc.StatusCode.UNAUTHENTICATED
    assert codes["other tenant"][0] == grpc.StatusCode.PERMISSION_DENIED
    assert codes["unknown tenant"][0] == grpc.StatusCode.NOT_FOUND
    assert codes["bad k"][0] == grpc.StatusCode.INVALID_ARGUMENT and "k " in codes["bad k"][1]
    assert codes["bad algorithm"][0] == grpc.StatusCode.INVALID_ARGUMENT
    assert "algorithm" in codes["bad algorithm"][1]
    assert codes["unknown item"][0] == grpc.StatusCode.NOT_FOUND
    assert codes["profile, plain key"][0] == grpc.StatusCode.PERMISSION_DENIED
    with RecommenderClient(address, ADMIN_KEYS["acme"]) as admin:
        prof = admin.get_profile("p1")
    assert list(prof.item_ids) == ["acme-0-1", "acme-0-2"]
    # globex's key sees globex only: no model yet, so EMPTY with a reason, never acme's items
    g = RecommenderClient(address, KEYS["globex"]).recommend("p1", k=5)
    assert g.source == pb.EMPTY and g.reason and not g.items
    # Deadlines that expire around the call: gRPC rounds a tiny timeout up, so some calls
    # complete and some do not; either way the only outcomes are an answer or
    # DEADLINE_EXCEEDED, and the server keeps answering afterwards.
    outcomes = set()
    for _ in range(50):
        try:
            r = stub.Recommend(pb.RecommendRequest(user_id="p1", k=5), metadata=md,
                               timeout=0.000001)
            assert len(r.items) <= 5
            outcomes.add(grpc.StatusCode.OK)
        except grpc.RpcError as err:
            outcomes.add(err.code())
    assert outcomes <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}, outcomes
    assert len(client.recommend("p1", k=5).items) == 5


def test_fuzzed_requests_get_only_documented_codes(server):
    cfg, address, client, _ = server
    rng = random.Random(7)
    stub = recommender_pb2_grpc.RecommenderStub(grpc.insecure_channel(address))
    keys = [KEYS["acme"], KEYS["globex"], ADMIN_KEYS["acme"], "garbage", ""]

    def text():
        n = rng.choice([0, 1, 5, 255, 256, 257, 400])
        return "".join(chr(rng.choice([rng.randint(32, 126), rng.randint(0x80, 0x2FFF)]))
                       for _ in range(n))
    seen = set()
    for _ in range(1500):
        key = rng.choice(keys)
        md = (("x-api-key", key),) if key else ()
        tenant = rng.choice(["", "acme", "globex", "nope", text()])
        method = rng.choice(["rec", "sim", "prof"])
        try:
            if method == "rec":
                stub.Recommend(pb.RecommendRequest(
                    tenant=tenant, user_id=text(), k=rng.randint(-5, 1200),
                    exclude_item_ids=[text() for _ in range(rng.choice([0, 3, 1001]))],
                    algorithm=rng.choice(["", "als", "bpr", text()])), metadata=md, timeout=5)
            elif method == "sim":
                stub.SimilarItems(pb.SimilarItemsRequest(
                    tenant=tenant, item_id=rng.choice(["acme-0-3", text()]),
                    k=rng.randint(-5, 1200)), metadata=md, timeout=5)
            else:
                stub.GetProfile(pb.GetProfileRequest(tenant=tenant, user_id=text()),
                                metadata=md, timeout=5)
            seen.add(grpc.StatusCode.OK)
        except grpc.RpcError as e:
            seen.add(e.code())
    assert seen <= DOCUMENTED, seen - DOCUMENTED
    assert {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT} <= seen
    # undecodable bytes: INVALID_ARGUMENT saying so, and the server keeps answering
    raw = grpc.insecure_channel(address).unary_unary("/recsys.v1.Recommender/Recommend")
    for blob in (b"\xff" * 10, b"\x08" + b"\x80" * 12, bytes(range(256))):
        with pytest.raises(grpc.RpcError) as e:
            raw(blob, metadata=(("x-api-key", KEYS["acme"]),), timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "does not parse" in e.value.details()
    assert client.recommend("p1", k=3).items


def test_corrupt_model_is_refused_and_the_previous_keeps_serving(server):
    cfg, address, client, v1 = server
    v2, p2 = write_model(cfg, seed=1, corrupt=True)
    announce(cfg, "acme", v2, p2)
    time.sleep(1.5)
    a = client.recommend("stranger", k=5)
    assert a.model_version == v1 and all(i.item_id.startswith("acme-0-") for i in a.items)
    v3, p3 = write_model(cfg, seed=2)
    announce(cfg, "acme", v3, p3)
    wait_until(lambda: client.recommend("stranger", k=5).model_version == v3, 15,
               what="the next good model")
    assert all(i.item_id.startswith("acme-2-") for i in client.recommend("stranger", k=5).items)


def test_a_request_may_name_the_algorithm(cfg):
    """ALS and BPR (with implicit's item-bias column) both live: "" is the tenant's DEFAULT,
    a named algorithm is scored with its own factors, a missing one is refused."""
    rng = np.random.default_rng(5)
    store = ModelStore(cfg.model_store)
    items = [f"acme-0-{i}" for i in range(80)]
    Y_als, X_als = rng.normal(size=(80, 6)), rng.normal(size=(10, 6))
    Y_bpr = np.hstack([rng.normal(size=(80, 6)), rng.normal(size=(80, 1))])  # last: item bias
    X_bpr = np.hstack([rng.normal(size=(10, 6)), np.ones((10, 1))])          # user entry = 1
    for algorithm, Y, X, extra in (("als", Y_als, X_als, {}),
                                   ("bpr", Y_bpr, X_bpr, {"bias_column": True})):
        store.write("acme", algorithm, 4, item_ids=items, item_factors=Y,
                    user_ids=[f"batch-{i}" for i in range(10)], user_factors=X,
                    popularity=np.arange(80, 0, -1, dtype=float),
                    manifest={"hyperparameters": {"regularization": 0.5},
                              "confidence": ConfidenceSettings().to_dict(), **extra},
                    index_writer=lambda p, Y=Y, X=X: build_index(Y, p, X, recall_floor=0.0))
        store.set_current("acme", algorithm, 4)
    store.set_default_algorithm("acme", "bpr")
    v, _ = write_model(cfg, tenant="globex")  # globex: ALS only
    with _running(cfg) as (c, address, client):
        for named, Y, X in (("", Y_bpr, X_bpr), ("bpr", Y_bpr, X_bpr), ("als", Y_als, X_als)):
            r = wait_until(lambda: (lambda r: r if r.algorithm == (named or "bpr") else None)(
                client.recommend("batch-3", k=5, algorithm=named)), 15, what=named or "default")
            assert r.source == pb.BATCH and r.model_version == 4
            best = np.argsort(-(Y @ X[3]), kind="stable")[:5]
            assert [i.item_id for i in r.items] == [items[j] for j in best], named
            assert np.allclose([i.score for i in r.items], (Y @ X[3])[best], rtol=1e-4)
        sim = client.similar_items("acme-0-1", k=3, exclude=["acme-0-2"], algorithm="als")
        assert sim.algorithm == "als" and len(sim.items) == 3
        assert not {i.item_id for i in sim.items} & {"acme-0-1", "acme-0-2"}
        with RecommenderClient(address, KEYS["globex"]) as g:
            assert g.recommend("u", k=3).algorithm == "als" and \
                g.recommend("u", k=3).model_version == v
            with pytest.raises(grpc.RpcError) as e:
                g.recommend("u", k=3, algorithm="bpr")
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "bpr" in e.value.details()


def test_worker_pool_shares_one_port(cfg, tmp_path):
    """`serve --workers 2`: two processes on one port; both answer (kernel-balanced)."""
    import json
    import urllib.request

    from recsys_stream.stack import Stack, write_config
    v, _ = write_model(cfg)
    address = f"127.0.0.1:{free_port()}"
    base = free_port_run(2)  # the pool serves metrics on base and base + 1
    path = write_config(tmp_path / "c.toml", cfg.kafka.bootstrap_servers, tmp_path, address,
                        keys={"acme": KEYS["acme"]}, topic_prefix=cfg.kafka.topic_prefix,
                        metrics_ports=(0, 0, base))
    text = path.read_text().replace(f'model_store = "{tmp_path / "models"}"',
                                    f'model_store = "{cfg.model_store}"')
    path.write_text(text)
    stack = Stack(path, tmp_path)
    try:
        stack.start("pool", "serve", "--workers", "2")

        def served_by_both():
            for _ in range(20):  # fresh connections: the kernel picks a process per connection
                try:
                    with RecommenderClient(address, KEYS["acme"], timeout=2) as c:
                        assert c.recommend("u", k=3).model_version == v
                except grpc.RpcError:
                    return False
            counts = []
            for port in (base, base + 1):
                try:
                    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                                  timeout=2).read().decode()
                except OSError:
                    return False
                counts.append(sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                                  if line.startswith("recsys_server_requests_total{")))
            return all(c > 0 for c in counts) and counts
        counts = wait_until(served_by_both, 60, interval_s=0.5, what="both pool processes",
                            stack=stack)
        assert len(counts) == 2
        health = [json.loads(urllib.request.urlopen(f"http://127.0.0.1:{p}/healthz").read())
                  for p in (base, base + 1)]
        assert all(h["models"]["acme"]["als"] == v and h["profiles_caught_up"] for h in health)
        # a profile published now reaches the processes through the supervisor's shared store
        profile = profiles_pb2.UserProfile(tenant="acme", user_id="fresh")
        profile.vectors.add(algorithm="als", model_version=v, values=[1, 0, 0, 0, 0, 0])
        prod = producer(cfg)
        prod.produce(cfg.topics.profiles, key=make_key("acme", "fresh"),
                     value=profile.SerializeToString())
        assert prod.flush(10) == 0

        def nearline_everywhere():
            for _ in range(20):
                with RecommenderClient(address, KEYS["acme"], timeout=2) as c:
                    if c.recommend("fresh", k=3).source != pb.NEARLINE:
                        return False
            return True
        wait_until(nearline_everywhere, 15, what="the new profile in both processes", stack=stack)
    finally:
        assert stack.stop("pool") is not None


def test_health_reflection_and_a_single_event_user(server, cfg):
    """grpcurl's view (health + reflection) and the chain's fold-in step for a one-item user."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    c, address, client, v1 = server
    channel = grpc.insecure_channel(address)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "recsys.v1.Recommender"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
        assert status == health_pb2.HealthCheckResponse.SERVING, service
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        list_services="")])))
    names = {s.name for s in answers[0].list_services_response.service}
    assert {"recsys.v1.Recommender", "grpc.health.v1.Health"} <= names

    # One event, no vector yet (as before the worker's fold-in lands): the server solves it
    # from the profile's single item, and the item itself is not recommended back.
    one = profiles_pb2.UserProfile(tenant="acme", user_id="one-event", item_ids=["acme-0-9"],
                                   confidences=[3.0])
    prod = producer(c)
    prod.produce(c.topics.profiles, key=make_key("acme", "one-event"),
                 value=one.SerializeToString())
    assert prod.flush(10) == 0
    got = wait_until(lambda: (lambda r: r if r.source == pb.PROFILE_FOLD_IN else None)(
        client.recommend("one-event", k=10)), 15, what="the one-event profile")
    ids = [i.item_id for i in got.items]
    assert len(ids) == 10 and "acme-0-9" not in ids and got.model_version == v1
    popular = [i.item_id for i in client.recommend("nobody", k=10).items]
    assert ids != popular, "a single event must personalise the answer"
    channel.close()
