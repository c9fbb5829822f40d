"""The online-evaluation stage on a real broker, as its own OS process: served answers and
clicks in (by id, and by the attribution window), counts out, exactly once across a kill -9,
and the report's verdict on an experiment."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

from recsys_stream.contracts.events import Event, encode_event
from recsys_stream.contracts.keys import make_key
from recsys_stream.contracts.pb import events_pb2, slates_pb2
from recsys_stream.kafka import produce_all, producer
from recsys_stream.online import report
from recsys_stream.online.store import OnlineStore
from recsys_stream.stack import Stack, wait_until
from tests.integration.test_trainer_ops import write_toml

pytestmark = pytest.mark.integration

T0 = int(time.time() * 1000) - 3_600_000  # within the worker's time bounds
ITEMS = [f"item-{n}" for n in range(40)]
CTR = {"control": 0.12, "treat": 0.04}  # true click probability per shown item


def simulate(n_users: int = 120, answers_per_user: int = 12, k: int = 8, seed: int = 0):
    """Answers and clicks with the ground truth the stage must count.

    Arms by user (half each); every answer holds k items; a shown item is clicked with its
    arm's probability, 2/3 of the clicks carrying the answer's id. A click without the id is
    only made on an item no other answer of the user in the window holds, so the window join
    has exactly one answer to find. A share of clicks is followed by a purchase (conversion).
    """
    rng = np.random.default_rng(seed)
    slates, events, truth = [], [], Counter()
    for u in range(n_users):
        user, arm = f"user-{u}", ("control", "treat")[u % 2]
        seen: Counter = Counter()
        answers = []
        for a in range(answers_per_user):
            items = list(rng.choice(ITEMS, k, replace=False))
            served = T0 + (u * answers_per_user + a) * 1000
            rec = f"rec-{u}-{a}"
            answers.append((rec, served, items))
            seen.update(items)
            slates.append(slates_pb2.ServedSlate(
                recommendation_id=rec, tenant="acme", user_id=user, algorithm="als",
                model_version=1, source="NEARLINE", experiment="ab", arm=arm, served_ms=served,
                method="Recommend",
                items=[slates_pb2.ServedItem(item_id=i, position=p, score=1.0 - p / k)
                       for p, i in enumerate(items)]))
            for p in range(k):
                truth[(arm, p, "impressions")] += 1
        for n, (rec, served, items) in enumerate(answers):
            for p, item in enumerate(items):
                if rng.random() >= CTR[arm]:
                    continue
                with_id = rng.random() < 2 / 3 or seen[item] > 1
                t = served + 500
                events.append((Event(f"{rec}-{item}-c", "acme", user, item, "click", None, t),
                               rec if with_id else ""))
                truth[(arm, p, "clicks")] += 1
                if rng.random() < 0.3:
                    events.append((Event(f"{rec}-{item}-b", "acme", user, item, "purchase",
                                         None, t + 100), rec if with_id else ""))
                    truth[(arm, p, "conversions")] += 1
        # organic activity: a click on an item no answer of the user held
        organic = next(i for i in ITEMS if not seen[i]) if len(seen) < len(ITEMS) else None
        if organic:
            events.append((Event(f"{user}-organic", "acme", user, organic, "click", None,
                                 T0 + (u + 1) * answers_per_user * 1000), ""))
    return slates, events, truth


def encode(e: Event, rec_id: str) -> bytes:
    msg = events_pb2.Interaction.FromString(encode_event(e))
    msg.recommendation_id = rec_id
    return msg.SerializeToString()


def counted(store_dir) -> Counter:
    store = OnlineStore(store_dir, read_only=True)
    try:
        out = Counter()
        for dims, c in store.counts():
            arm, position = dims[6], dims[7]
            for kind, n in zip(("impressions", "clicks", "conversions"), c):
                if n:
                    out[(arm, position, kind)] += n
        return out
    finally:
        store.close()


def test_counts_equal_what_was_served_and_clicked_across_a_kill_9(cfg, tmp_path):
    cfg = cfg.replace(online={"state_dir": str(tmp_path / "online"), "commit_interval_ms": 200})
    config = write_toml(cfg, tmp_path / "config.toml")
    slates, events, truth = simulate()
    prod = producer(cfg)
    third = len(slates) // 3

    def send(slate_part, event_part):
        produce_all(prod, cfg.topics.recommendations,
                    ((make_key(s.tenant, s.user_id), s.SerializeToString()) for s in slate_part))
        produce_all(prod, cfg.topics.interactions,
                    ((e.key, encode(e, rec)) for e, rec in event_part))
        assert prod.flush(30) == 0

    stack = Stack(config, tmp_path)
    try:
        # answers and clicks of the first third, clicks sent before their answers
        first_events = [(e, r) for e, r in events if e.timestamp_ms < slates[third].served_ms]
        send([], first_events)
        send(slates[:third], [])
        stack.start("online", "online")
        wait_until(lambda: (tmp_path / "online" / "CURRENT").exists() and
                   sum(n for (_, _, k), n in counted(tmp_path / "online").items()
                       if k == "impressions") > 0, 60, what="first commits", stack=stack)
        rest = [(e, r) for e, r in events if e.timestamp_ms >= slates[third].served_ms]
        send(slates[third:2 * third], rest[:len(rest) // 2])
        stack.kill("online")  # mid-stream: whatever was not committed is replayed
        send(slates[2 * third:], rest[len(rest) // 2:])
        stack.start("online", "online")
        expected = sum(truth.values())
        wait_until(lambda: sum(counted(tmp_path / "online").values()) >= expected, 90,
                   what="every answer and click counted", stack=stack)
        time.sleep(1.0)  # a double count would show in the commits that follow
        got = counted(tmp_path / "online")
    finally:
        stack.stop_all()
    assert got == truth  # nothing lost, nothing doubled, each at its arm and position

    # the report: CTR per arm with its interval, and the treatment against the control
    store = OnlineStore(tmp_path / "online", read_only=True)
    try:
        table = report.rows(store, "acme", experiment="ab")
    finally:
        store.close()
    by_arm = {r["arm"]: r for r in table}
    for arm in ("control", "treat"):
        imp = sum(n for (a, _, k), n in truth.items() if a == arm and k == "impressions")
        clicks = sum(n for (a, _, k), n in truth.items() if a == arm and k == "clicks")
        assert by_arm[arm]["impressions"] == imp and by_arm[arm]["clicks"] == clicks
        assert by_arm[arm]["ctr_low"] < clicks / imp < by_arm[arm]["ctr_high"]
    (test,) = report.arm_tests(table, {"ab": ["control", "treat"]})
    assert test["difference"] < 0 and test["p_value"] < 0.01
    done = subprocess.run([sys.executable, "-m", "recsys_stream.cli", "report", "--config",
                           str(config), "--tenant", "acme"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "experiment=ab arm=treat vs control" in done.stdout
    assert f"clicks={by_arm['control']['clicks']}" in done.stdout
