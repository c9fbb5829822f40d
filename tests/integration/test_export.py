"""``recsys-stream export`` against a real server: the same answers as ``Recommend`` for the same
version, no banned or seen item, and a manifest that catches a shard cut short."""

from __future__ import annotations

import random

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys_stream.contracts.pb import recommender_pb2 as pb
from recsys_stream.serving.export import iter_records, run_export, verify
from tests.export_world import BANNED, publish_suppression, write_events, write_model
from recsys_stream.stack import wait_until
from tests.integration.test_server import _running

pytestmark = pytest.mark.integration
N_USERS, N_ITEMS, WIDTH = 60, 150, 8


def test_export_equals_recommend_and_suppresses(cfg, tmp_path):
    write_model(cfg.model_store, N_ITEMS, N_USERS, WIDTH, seed=3, prefix="it",
                index_users=None, recall_floor=0.0)  # 150 items: Recommend scores them all
    version = 1
    rnd = random.Random(5)
    # training events: 4-12 items per user; the worker's profile holds the same items
    seen = {f"u{u}": rnd.sample(range(N_ITEMS), rnd.randint(4, 12)) for u in range(N_USERS)}
    events = tmp_path / "events.jsonl"
    write_events(events, seen)
    hidden = {"u1": "it149", "u2": "it148"}  # hidden in the profile only (after training)
    publish_suppression(cfg, seen, hidden, "u3", WIDTH)
    banned = list(BANNED)

    m = run_export(cfg, "acme", 10, str(tmp_path / "out"), events_file=str(events))
    assert m["users"] == N_USERS - 1 and m["erased_skipped"] == 1
    assert m["model_version"] == version
    assert m["sources"] == {"BATCH": N_USERS - 2, "NEARLINE": 1}
    assert verify(tmp_path / "out") == []
    records = {r["user_id"]: r for r in iter_records(tmp_path / "out")}
    assert set(records) == set(seen) - {"u7"}  # an erased user is sent nothing
    for u, r in records.items():
        got = {i["item_id"] for i in r["items"]}
        assert len(got) == 10 and r["model_version"] == version
        assert not got & set(banned), u
        assert not got & {f"it{i}" for i in seen[u]}, u
        assert hidden.get(u) not in got

    with _running(cfg) as (_, address, client):
        # health says SERVING once the server has replayed the profiles written before it
        # started (or given up waiting: then u3's nearline vector tells); bans likewise
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
        wait_until(lambda: health.Check(health_pb2.HealthCheckRequest()).status
                   == health_pb2.HealthCheckResponse.SERVING, 30, what="profiles replayed")
        wait_until(lambda: client.recommend("u3", k=1).source == pb.NEARLINE, 30,
                   what="u3's profile on the server")
        wait_until(lambda: not {i.item_id for i in client.recommend("u0", k=140).items}
                   & set(banned), 30, what="the server's catalog bans")
        for u in ["u1", "u2", "u3", *rnd.sample(sorted(set(seen) - {"u7"}), 20)]:
            a = client.recommend(u, k=10)
            assert a.model_version == version
            want = [(i.item_id, i.score) for i in a.items]
            got = [(i["item_id"], i["score"]) for i in records[u]["items"]]
            assert [i for i, _ in got] == [i for i, _ in want], u
            np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-5)
