"""PredictRatings and Recommend(algorithm="mf") on a real server; unparseable bodies and
duplicate API keys on every method."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from recsys_stream.batch.data import from_events
from recsys_stream.batch.mf import solver_from, train_mf
from recsys_stream.batch.publish import write_version
from recsys_stream.batch.ratings import build_ratings
from recsys_stream.config import MfConfig
from recsys_stream.contracts.keys import make_key
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.pb import profiles_pb2
from recsys_stream.contracts.pb import recommender_pb2 as pb
from recsys_stream.kafka import producer
from recsys_stream.serving.handlers import SERVICE
from recsys_stream.stack import wait_until
from recsys_stream.synthetic import generate_ratings
from tests.conftest import KEYS
from tests.integration.test_server import _running

pytestmark = pytest.mark.integration
HP = MfConfig(solver="als", factors=4, regularization=2.0, bias_regularization=2.0,
              iterations=8)


@pytest.fixture
def mf_server(cfg):
    data = from_events("acme", generate_ratings("acme"), cfg.tenant("acme").confidence, 500, 0.0)
    ratings = build_ratings(data.histories)
    model = train_mf(ratings, HP, seed=0)
    store = ModelStore(cfg.model_store)
    f = model.factors()
    v = write_version(store, cfg, "acme", f, ratings.user_ids, ratings.item_ids,
                      np.ones(len(ratings.item_ids)), {"confidence": {}, "metrics": {}})
    store.set_current("acme", "mf", v)
    store.set_default_algorithm("acme", "mf")
    art = store.load("acme", "mf", v)
    # a user the model does not know, with ratings in the profile and no vector: fold-in
    fresh = profiles_pb2.UserProfile(tenant="acme", user_id="fresh",
                                     rated_item_ids=["i1", "i2", "i7", "nope"],
                                     ratings=[5.0, 1.0, 4.5, 3.0], item_ids=["i1", "i2", "i7"],
                                     confidences=[2, 2, 2])
    # a user with a nearline vector of this version
    near = profiles_pb2.UserProfile(tenant="acme", user_id="near", item_ids=["i3"],
                                    confidences=[2])
    near.vectors.add(algorithm="mf", model_version=v, values=[0.5, -0.5, 0.2, 0.1, 1.0],
                     user_bias=0.25)
    prod = producer(cfg)
    for p in (fresh, near):
        prod.produce(cfg.topics.profiles, key=make_key("acme", p.user_id),
                     value=p.SerializeToString())
    assert prod.flush(10) == 0
    with _running(cfg) as (c, address, client):
        wait_until(lambda: client.predict_ratings("near", ["i3"]).source == pb.NEARLINE, 30,
                   what="the profiles")
        yield c, address, client, art, model, ratings


def _expected(art, x1, b_u, items):
    row = {i: n for n, i in enumerate(art.item_ids.tolist())}
    Y = np.asarray(art.item_factors, np.float64)
    return [float(np.clip(art.global_mean + b_u + (Y[row[i]] @ x1 if i in row else 0), 0.5, 5))
            for i in items]


def test_predict_ratings_by_every_source(mf_server):
    cfg, address, client, art, model, ratings = mf_server
    items = ["i0", "i5", "unknown-item", "i9"]
    # batch: the model's own prediction, clipped; an unknown item gets mu + b_u
    u = ratings.user_row["u3"]
    r = client.predict_ratings("u3", items)
    assert r.source == pb.BATCH and r.algorithm == "mf" and r.model_version == art.version
    assert [p.item_id for p in r.ratings] == items
    assert [p.known for p in r.ratings] == [True, True, False, True]
    assert list(r.unknown_item_ids) == ["unknown-item"]
    cols = np.array([ratings.item_row.get(i, -1) for i in items])
    want = model.predict(np.full(4, u), cols, 0.5, 5.0)
    np.testing.assert_allclose([p.rating for p in r.ratings], want, atol=1e-4)
    # nearline: the profile's vector and bias
    r = client.predict_ratings("near", items)
    assert r.source == pb.NEARLINE
    np.testing.assert_allclose([p.rating for p in r.ratings],
                               _expected(art, np.array([0.5, -0.5, 0.2, 0.1, 1.0]), 0.25, items),
                               atol=1e-4)
    # fold-in: the trainer's ridge user step on the profile's known ratings
    r = client.predict_ratings("fresh", items)
    assert r.source == pb.PROFILE_FOLD_IN
    rows = [ratings.item_row[i] for i in ("i1", "i2", "i7")]
    t = np.array([5.0, 1.0, 4.5]) - model.mu - model.b_i[rows]
    x, b = solver_from(model.hyperparameters["foldin"], model.Y).solve_one(np.array(rows), t)
    np.testing.assert_allclose([p.rating for p in r.ratings],
                               _expected(art, np.append(x, 1.0), b, items), atol=1e-3)
    # unknown user: mu + b_i
    r = client.predict_ratings("stranger", items)
    assert r.source == pb.BASELINE
    np.testing.assert_allclose([p.rating for p in r.ratings],
                               _expected(art, np.append(np.zeros(4), 1.0), 0.0, items), atol=1e-4)


def test_predict_ratings_validates_its_fields(mf_server):
    cfg, address, client, *_ = mf_server
    for ids, word in (([], "item_ids"), ([f"i{n}" for n in range(1001)], "item_ids"),
                      (["i1", ""], "item_ids"), (["x" * 300], "item_ids")):
        with pytest.raises(grpc.RpcError) as e:
            client.predict_ratings("u3", ids)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and word in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        client.predict_ratings("", ["i1"])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "user_id" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        client.predict_ratings("u3", ["i1"], tenant="globex")
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_recommend_mf_ranks_by_predicted_rating_with_suppression(mf_server):
    cfg, address, client, art, model, ratings = mf_server
    a = client.recommend("u3", k=5, algorithm="mf", exclude=["i0"])
    assert a.source == pb.BATCH and a.algorithm == "mf" and len(a.items) == 5
    u = ratings.user_row["u3"]
    score = model.b_i + model.Y @ model.X[u]  # μ + b_u is the same for every item
    got = [i.item_id for i in a.items]
    assert "i0" not in got
    np.testing.assert_allclose([i.score for i in a.items],
                               [score[ratings.item_row[i]] for i in got], atol=1e-4)
    assert [i.score for i in a.items] == sorted((i.score for i in a.items), reverse=True)
    # the fold-in user's seen items are suppressed, and the default algorithm is mf
    b = client.recommend("fresh", k=5)
    assert b.source == pb.PROFILE_FOLD_IN and b.algorithm == "mf"
    assert not {i.item_id for i in b.items} & {"i1", "i2", "i7"}


def test_bodies_that_do_not_parse_are_invalid_argument_on_every_method(mf_server):
    cfg, address, client, *_ = mf_server
    channel = grpc.insecure_channel(address)
    md = (("x-api-key", KEYS["acme"]),)
    valid = pb.PredictRatingsRequest(user_id="u" * 40, item_ids=["i1"]).SerializeToString()
    bodies = {"garbage": b"\xff" * 10, "overlong varint": b"\x08" + b"\x80" * 12,
              "truncated": valid[:-3], "invalid UTF-8 in a string": b"\x12\x02\xff\xfe"}
    rng = np.random.default_rng(0)
    for method in SERVICE.methods:
        call = channel.unary_unary(f"/{SERVICE.full_name}/{method.name}")
        for what, body in bodies.items():
            with pytest.raises(grpc.RpcError) as e:
                call(body, metadata=md, timeout=5)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method.name, what)
            assert "does not parse as recsys.v1." + method.input_type.name in e.value.details()
        # random bytes: either they happen to parse (unknown fields are legal) or they are
        # INVALID_ARGUMENT; never UNKNOWN
        for _ in range(50):
            body = rng.bytes(int(rng.integers(1, 64)))
            try:
                call(body, metadata=md, timeout=5)
            except grpc.RpcError as e:
                assert e.code() != grpc.StatusCode.UNKNOWN, (method.name, body)
        # without a key the body is not looked at
        with pytest.raises(grpc.RpcError) as e:
            call(b"\xff" * 10, timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert client.predict_ratings("u3", ["i1"]).ratings  # still serving


def test_more_than_one_api_key_is_refused(mf_server):
    cfg, address, client, *_ = mf_server
    channel = grpc.insecure_channel(address)
    calls = {"Recommend": pb.RecommendRequest(user_id="u3", k=3),
             "SimilarItems": pb.SimilarItemsRequest(item_id="i1", k=3),
             "GetProfile": pb.GetProfileRequest(user_id="u3"),
             "PredictRatings": pb.PredictRatingsRequest(user_id="u3", item_ids=["i1"])}
    for name, req in calls.items():
        call = channel.unary_unary(f"/{SERVICE.full_name}/{name}",
                                   request_serializer=lambda m: m.SerializeToString())
        for keys in ((KEYS["acme"], KEYS["acme"]), ("wrong", KEYS["acme"]),
                     (KEYS["acme"], KEYS["globex"])):
            with pytest.raises(grpc.RpcError) as e:
                call(req, metadata=tuple(("x-api-key", k) for k in keys), timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, (name, keys)
            assert "x-api-key" in e.value.details()
    assert client.recommend("u3", k=3).items  # one key still works
