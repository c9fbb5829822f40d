"""The worker's nearline mf fold-in on a real broker and RocksDB: the latest rating per item,
and [x_u, b_u] equal to the trainer's user step."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_stream.batch.data import from_events
from recsys_stream.batch.mf import solver_from, train_mf
from recsys_stream.batch.publish import write_version
from recsys_stream.batch.ratings import build_ratings
from recsys_stream.config import MfConfig
from recsys_stream.contracts.events import Event, encode_event
from recsys_stream.contracts.keys import make_key
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.pb import profiles_pb2
from recsys_stream.nearline.state import StateStore
from recsys_stream.stack import wait_until
from recsys_stream.synthetic import generate_ratings
from tests.integration.test_worker import Collect, produce, start_worker, stop_worker

pytestmark = pytest.mark.integration
HP = MfConfig(solver="als", factors=4, regularization=2.0, bias_regularization=2.0,
              iterations=8)


def test_mf_profile_vector_is_the_trainers_user_step_of_the_latest_ratings(cfg):
    events = generate_ratings("acme")
    data = from_events("acme", events, cfg.tenant("acme").confidence, 500, 0.0)
    ratings = build_ratings(data.histories)
    model = train_mf(ratings, HP, seed=0)
    store = ModelStore(cfg.model_store)
    v = write_version(store, cfg, "acme", model.factors(), ratings.user_ids, ratings.item_ids,
                      np.ones(len(ratings.item_ids)),
                      {"confidence": cfg.tenant("acme").confidence.to_dict(), "metrics": {}})
    store.set_current("acme", "mf", v)
    t = max(e.timestamp_ms for e in events)
    # u3's own ratings (the trainer's input for its stored row), and a fresh user who re-rates
    own = sorted((e for e in events if e.user_id == "u3"), key=lambda e: e.timestamp_ms)
    fresh = [Event("f1", "acme", "fresh", "i1", "rating", 5.0, t + 1),
             Event("f2", "acme", "fresh", "i2", "rating", 1.5, t + 2),
             Event("f3", "acme", "fresh", "i1", "rating", 1.0, t + 3),   # replaces 5.0
             Event("f4", "acme", "fresh", "i9", "rating", 4.0, t + 4),
             Event("f5", "acme", "fresh", "not-in-model", "rating", 3.0, t + 5)]
    seen = Collect(cfg, cfg.topics.profiles)
    handle = start_worker(cfg)
    try:
        produce(cfg, [(e.key, encode_event(e)) for e in own + fresh])

        def latest(user, n_rated):
            for _, value, _ in reversed(seen.get(cfg.topics.profiles)):
                p = profiles_pb2.UserProfile.FromString(value)
                if p.user_id == user and len(p.rated_item_ids) == n_rated and p.vectors:
                    return p
        p_fresh = wait_until(lambda: latest("fresh", 4), 30, what="fresh's profile")
        p_u3 = wait_until(lambda: latest("u3", len(own)), 30, what="u3's profile")
    finally:
        stop_worker(handle)
        seen.tail.stop()
    assert dict(zip(p_fresh.rated_item_ids, p_fresh.ratings)) == {
        "i1": 1.0, "i2": 1.5, "i9": 4.0, "not-in-model": 3.0}
    vec = next(x for x in p_fresh.vectors if x.algorithm == "mf")
    assert vec.model_version == v and vec.values[-1] == 1.0
    rows = np.array([ratings.item_row[i] for i in ("i1", "i2", "i9")])
    tgt = np.array([1.0, 1.5, 4.0]) - model.mu - model.b_i[rows]
    x, b = solver_from(model.hyperparameters["foldin"], model.Y).solve_one(rows, tgt)
    np.testing.assert_allclose(vec.values[:-1], x, rtol=1e-4, atol=1e-5)
    assert vec.user_bias == pytest.approx(b, rel=1e-4, abs=1e-5)
    assert set(rows) <= set(vec.suppressed_rows)
    # the same ratings give the trainer's stored vector
    vec = next(x for x in p_u3.vectors if x.algorithm == "mf")
    u = ratings.user_row["u3"]
    np.testing.assert_allclose(vec.values[:-1], model.X[u], rtol=1e-4, atol=1e-5)
    assert vec.user_bias == pytest.approx(model.b_u[u], rel=1e-4, abs=1e-5)
    # the worker's state keeps the latest rating per item
    state = StateStore(cfg.worker.state_dir)
    try:
        assert state.get(make_key("acme", "fresh")).ratings["i1"] == [1.0, t + 3]
    finally:
        state.close()


def test_magnitudes_add_weight_times_value_and_bad_ones_are_dead_letters(cfg):
    import dataclasses
    import time
    tenants = {t: dataclasses.replace(tc, max_magnitude=100.0) for t, tc in cfg.tenants.items()}
    cfg = cfg.replace(tenants=tenants)
    now = int(time.time() * 1000) - 1000
    good = [Event("m1", "acme", "w", "film", "view", 30.0, now),       # 30 s watched
            Event("m2", "acme", "w", "film", "view", None, now),       # magnitude 1
            Event("m3", "acme", "w", "album", "purchase", 1e9, now),   # capped at 100
            Event("m4", "acme", "w", "song", "rating", 4.0, now)]
    bad = [Event("b1", "acme", "w", "x", "view", -2.0, now),
           Event("b2", "acme", "w", "x", "click", float("nan"), now),
           Event("b3", "acme", "w", "x", "like", float("inf"), now),
           Event("b4", "acme", "w", "x", "rating", 7.0, now)]
    seen = Collect(cfg, cfg.topics.dlq)
    handle = start_worker(cfg)
    try:
        produce(cfg, [(e.key, encode_event(e)) for e in good + bad])
        wait_until(lambda: len(seen.get(cfg.topics.dlq)) >= len(bad), 30, what="DLQ records")
    finally:
        stop_worker(handle)
        seen.tail.stop()
    dlq = seen.get(cfg.topics.dlq)
    assert sorted(v for _, v, _ in dlq) == sorted(encode_event(e) for e in bad)
    assert {h["reason"].decode() for _, _, h in dlq} == {"bad_value"}
    errors = " | ".join(h["error"].decode() for _, _, h in dlq)
    assert "negative" in errors and "finite" in errors and "0.5..5" in errors
    state = StateStore(cfg.worker.state_dir)
    try:
        h = state.get(make_key("acme", "w"))
        w = cfg.tenant("acme").weights
        assert h.items["film"][0] == pytest.approx(w["view"] * 31.0)
        assert h.items["album"][0] == pytest.approx(w["purchase"] * 100.0)
        assert h.items["song"][0] == pytest.approx(w["rating"] * 4.0)
        assert h.ratings == {"song": [4.0, now]} and "x" not in h.items
    finally:
        state.close()
