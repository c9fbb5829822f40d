"""The loop closed on the real server: every answer carries an id and its experiment arm, is
logged on `recommendations` off the request path, and the online stage (its own process,
killed with -9 midway) counts it, the impressions reported and the clicks sent back with (or
without) the id, exactly."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter

import pytest

from recsys_stream.contracts.events import Event, encode_event
from recsys_stream.contracts.pb import events_pb2
from recsys_stream.kafka import produce_all, producer
from recsys_stream.contracts.keys import make_key
from recsys_stream.online.store import OnlineStore
from recsys_stream.serving import arms
from recsys_stream.stack import Stack, wait_until
from tests.integration.test_server import _running, write_model
from tests.integration.test_trainer_ops import write_toml

pytestmark = pytest.mark.integration

EXPERIMENT = {"name": "ab", "arms": [{"name": "control", "share": 0.5},
                                     {"name": "varied", "share": 0.5, "mmr_lambda": 0.3}]}


def totals(store_dir) -> Counter:
    store = OnlineStore(store_dir, read_only=True)
    try:
        out = Counter()
        for dims, c in store.counts():
            for kind, n in zip(("impressions", "clicks", "conversions"), c):
                if n:
                    out[(dims[8], dims[6], kind)] += n  # method, arm, kind
        return out
    finally:
        store.close()


def test_served_answers_and_their_clicks_are_counted_per_arm(cfg, tmp_path):
    tenants = dict(cfg.tenants)
    tenants["acme"] = dataclasses.replace(tenants["acme"], experiments=(EXPERIMENT,))
    cfg = cfg.replace(tenants=tenants,
                      online={"state_dir": str(tmp_path / "online"), "commit_interval_ms": 100})
    write_model(cfg)
    stack = Stack(write_toml(cfg, tmp_path / "config.toml"), tmp_path)
    stack.start("online", "online")
    truth, ids, clicks = Counter(), set(), []
    try:
        with _running(cfg) as (c, _, client):
            # _running's readiness probe: one answered Recommend of 3 items for "p1"
            truth[("Recommend", arms.assign(c.tenant("acme"), "p1").arm, "impressions")] += 3
            users = [f"batch-{n}" for n in range(10)] + [f"visitor-{n}" for n in range(30)]
            for n, user in enumerate(users):
                a = client.recommend(user, k=5)
                want = arms.assign(c.tenant("acme"), user)
                assert (a.experiment, a.arm) == ("ab", want.arm)
                assert len(a.recommendation_id) == 32 and a.recommendation_id not in ids
                ids.add(a.recommendation_id)
                item = a.items[n % len(a.items)].item_id
                if n % 4 == 0:  # the client reports what it displayed: the item and one more
                    shown = {item, a.items[(n + 1) % len(a.items)].item_id}
                    for j, it in enumerate(sorted(shown)):
                        imp = events_pb2.Interaction(
                            event_id=f"shown-{n}-{j}", tenant="acme", user_id=user, item_id=it,
                            type=events_pb2.IMPRESSION, timestamp_ms=int(time.time() * 1000),
                            recommendation_id=a.recommendation_id)
                        clicks.append((imp, a.arm))
                    truth[("Recommend", a.arm, "impressions")] += len(shown)
                else:
                    truth[("Recommend", a.arm, "impressions")] += len(a.items)
                ev = events_pb2.Interaction.FromString(encode_event(Event(
                    f"click-{n}", "acme", user, item, "click", None, int(time.time() * 1000))))
                if n % 3:  # a third without the id: joined by the attribution window
                    ev.recommendation_id = a.recommendation_id
                clicks.append((ev, a.arm))
                truth[("Recommend", a.arm, "clicks")] += 1
            sim = client.similar_items("acme-0-7", k=4)
            assert len(sim.recommendation_id) == 32 and sim.recommendation_id not in ids
            truth[("SimilarItems", "", "impressions")] += len(sim.items)
        prod = producer(cfg)
        half = len(clicks) // 2

        def send(part):
            produce_all(prod, cfg.topics.interactions,
                        ((make_key(ev.tenant, ev.user_id), ev.SerializeToString())
                         for ev, _ in part))
            assert prod.flush(30) == 0
        send(clicks[:half])
        wait_until(lambda: (tmp_path / "online" / "CURRENT").exists() and any(
            kind == "clicks" for (_, _, kind) in totals(tmp_path / "online")), 60,
            what="the stage to commit a click", stack=stack)
        stack.kill("online")  # mid-run: what it had not committed is read again
        send(clicks[half:])
        stack.start("online", "online")
        # reported impressions take served ones back: the counts only settle, they do not only
        # grow, so wait for the truth itself (a miss still shows its difference below)
        try:
            wait_until(lambda: totals(tmp_path / "online") == truth, 60, stack=stack,
                       what="the stage to count every answer, impression and click")
        except TimeoutError:
            pass
        assert totals(tmp_path / "online") == truth
        assert {arm for (_, arm, _) in truth} >= {"control", "varied"}  # both arms served
    finally:
        stack.stop_all()
