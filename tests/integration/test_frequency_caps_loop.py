"""Frequency caps on the real processes: the server logs its answers, the worker (its own
process, killed with -9) counts them in the users' states, and the server leaves capped items
out until their time; a click lifts a cap, and the counts stay exact across the kill."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter

import grpc
import pytest

from recsys_stream.config import FrequencyCapConfig
from recsys_stream.contracts.events import Event, encode_event
from recsys_stream.contracts.keys import is_offset_marker, make_key
from recsys_stream.contracts.pb import events_pb2
from recsys_stream.contracts.user_state import UserHistory
from recsys_stream.kafka import TopicTail, produce_all, producer
from recsys_stream.serving.client import RecommenderClient
from recsys_stream.stack import Stack, wait_until
from tests.conftest import ADMIN_KEYS
from tests.integration.test_server import _running, write_model
from tests.integration.test_trainer_ops import write_toml

pytestmark = pytest.mark.integration

CAP = 3


class States:
    """The latest state of every user on the worker's changelog (what it committed)."""

    def __init__(self, cfg) -> None:
        self.rule = cfg.tenant("acme").frequency_cap.rule
        self._states: dict[bytes, UserHistory] = {}
        self._lock = threading.Lock()
        self.tail = TopicTail(cfg, {cfg.topics.state_changelog: self._on}, name="caps").start()

    def _on(self, m) -> None:
        if m.key() is not None and not is_offset_marker(m.key()) and m.value():
            with self._lock:
                self._states[m.key()] = UserHistory.decode(m.value())

    def get(self, user: str) -> UserHistory | None:
        with self._lock:
            return self._states.get(make_key("acme", user))

    def answers(self, user: str) -> set[str]:
        h = self.get(user)
        return set(h.caps.shown) if h is not None and h.caps is not None else set()

    def counts(self, user: str) -> Counter:
        h = self.get(user)
        if h is None or h.caps is None:
            return Counter()
        return Counter({i: len(t) for i, t in h.caps.impressions().items()})

    def capped(self, user: str) -> set[str]:
        h = self.get(user)
        if h is None or h.caps is None:
            return set()
        return set(h.caps.capped(self.rule, int(time.time() * 1000)))


def served_caps(admin: RecommenderClient, user: str) -> set[str] | None:
    """The capped items of the profile the server reads (None: no profile yet)."""
    try:
        p = admin.get_profile(user)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    now = int(time.time() * 1000)
    return {i for i, t in zip(p.capped_item_ids, p.capped_until_ms) if t > now}


def test_capped_items_are_not_shown_again_a_click_lifts_the_cap_and_counts_survive_kill_9(
        cfg, tmp_path):
    tenants = dict(cfg.tenants)
    tenants["acme"] = dataclasses.replace(
        tenants["acme"], frequency_cap=FrequencyCapConfig(impressions=CAP, window_hours=24.0))
    cfg = cfg.replace(tenants=tenants, worker={"partitions": (0, 1, 2, 3),
                                               "commit_interval_ms": 100})
    write_model(cfg)
    stack = Stack(write_toml(cfg, tmp_path / "config.toml"), tmp_path)
    states = States(cfg)
    stack.start("worker", "worker")
    prod = producer(cfg)
    try:
        with _running(cfg) as (_, address, client):
            admin = RecommenderClient(address, ADMIN_KEYS["acme"])

            def settle(user: str, rec_ids: set[str]) -> None:
                """Wait until the worker committed these answers and the server reads the
                caps they make (the next answer must see them)."""
                wait_until(lambda: states.answers(user) >= rec_ids, 60, stack=stack,
                           what="the worker to commit the answers")
                want = states.capped(user)
                wait_until(lambda: (served_caps(admin, user) or set()) == want
                           or states.capped(user) != want, 60, stack=stack,
                           what="the server to read the user's caps")

            # 1. one user, answer after answer: an item is never shown a fourth time
            user, shown, ids, clicked = "cap-user", Counter(), set(), None
            for n in range(10):
                a = client.recommend(user, k=5)
                items = [i.item_id for i in a.items]
                assert len(items) == 5
                for item in items:
                    shown[item] += 1
                    assert shown[item] <= CAP, f"{item} shown a fourth time (answer {n})"
                ids.add(a.recommendation_id)
                if n == 4:  # mid-run, before the worker committed this answer
                    stack.kill("worker")
                    stack.start("worker", "worker")
                settle(user, ids)
                if n == 2:  # three answers of the same five popular items: all capped
                    assert states.capped(user) == set(items)
                    assert served_caps(admin, user) == set(items)
                    ranked = client.rank_items([*items, "acme-0-60"], user_id=user)
                    assert [i.item_id for i in ranked.items] == ["acme-0-60"]
                    shown["acme-0-60"] += 1  # a RankItems answer is shown too
                    ids.add(ranked.recommendation_id)
                    # 2. a click on one lifts its cap (and it is seen now: still not shown)
                    clicked = items[0]
                    ev = Event("click-1", "acme", user, clicked, "click", None,
                               int(time.time() * 1000))
                    produce_all(prod, cfg.topics.interactions, [(ev.key, encode_event(ev))])
                    assert prod.flush(30) == 0
                    wait_until(lambda: clicked not in (served_caps(admin, user) or {clicked}),
                               60, stack=stack, what="the click to lift the cap")
                    assert states.capped(user) == set(items) - {clicked}
            assert states.counts(user) == {i: c for i, c in shown.items() if i != clicked}

            # 3. answers in a burst, impressions reported for some, the worker killed midway:
            # every count exact (an answer counts once; reported items replace its own)
            truth: dict[str, Counter] = {}
            answers: dict[str, set[str]] = {}
            for n in range(60):
                u = f"burst-{n % 15}"
                a = client.recommend(u, k=4)
                answers.setdefault(u, set()).add(a.recommendation_id)
                items = [i.item_id for i in a.items]
                if n % 5 == 0:  # the client displayed only the first two
                    items = items[:2]
                    imps = [events_pb2.Interaction(
                        event_id=f"imp-{n}-{j}", tenant="acme", user_id=u, item_id=it,
                        type=events_pb2.IMPRESSION, timestamp_ms=int(time.time() * 1000),
                        recommendation_id=a.recommendation_id) for j, it in enumerate(items)]
                    produce_all(prod, cfg.topics.interactions,
                                [(make_key("acme", u), e.SerializeToString()) for e in imps])
                truth.setdefault(u, Counter()).update(items)
                if n == 30:
                    assert prod.flush(30) == 0
                    stack.kill("worker")
                    stack.start("worker", "worker")
            assert prod.flush(30) == 0
            for u, rec_ids in answers.items():
                wait_until(lambda: states.answers(u) >= rec_ids, 60, stack=stack,
                           what=f"the worker to count {u}'s answers")
            assert {u: states.counts(u) for u in truth} == truth
            admin.close()
    finally:
        stack.stop_all()
        states.tail.stop()


def test_resume_is_current_only_at_or_past_both_markers(cfg, tmp_path):
    """With caps the local state must be at or past the interactions marker and the
    recommendations marker of a partition; else the partition is restored with both offsets."""
    from recsys_stream.contracts.caps import ImpressionCaps
    from recsys_stream.contracts.keys import offset_marker_key
    from recsys_stream.nearline.restore import resume
    from recsys_stream.nearline.state import StateStore

    rule = FrequencyCapConfig(impressions=CAP).rule
    topic, served = cfg.topics.interactions, cfg.topics.recommendations
    u0, u1 = make_key("acme", "u0"), make_key("acme", "u1")
    logged = UserHistory("acme", "u0", input_partition=0, applied_offset=9)
    logged.caps = ImpressionCaps()
    logged.caps.served("r1", 1000, ["a"], rule)
    prod = producer(cfg)
    for partition, key, value in [
            (0, u0, logged.encode()), (0, offset_marker_key(0), b"10"),
            (0, offset_marker_key(0, "recommendations"), b"5"),
            (1, u1, UserHistory("acme", "u1", input_partition=1).encode()),
            (1, offset_marker_key(1), b"4"),
            (1, offset_marker_key(1, "recommendations"), b"6")]:
        prod.produce(cfg.topics.state_changelog, key=key, value=value, partition=partition)
    assert prod.flush(10) == 0
    store = StateStore(tmp_path / "local")
    try:
        # partition 0: past the interactions marker, behind the recommendations one: stale;
        # partition 1: past both: current
        store.commit({u0: UserHistory("acme", "u0", input_partition=0, applied_offset=11)},
                     {(topic, 0): 12, (served, 0): 3, (topic, 1): 4, (served, 1): 7})
        r = resume(cfg, store, [0, 1], served)
        assert r.offsets == {0: 10, 1: 4} and r.served_offsets == {0: 5, 1: 7}
        assert r.restored == {0: 1}
        assert set(store.get(u0).caps.shown) == {"r1"}
        assert store.offsets(served) == {0: 5, 1: 7}
    finally:
        store.close()


def test_two_workers_in_the_group_count_every_users_answers(cfg, tmp_path):
    """Group mode: the range assignor gives partition p of both topics to one worker, so two
    workers sharing the group count each user's answers in that user's state, exactly."""
    tenants = dict(cfg.tenants)
    tenants["acme"] = dataclasses.replace(
        tenants["acme"], frequency_cap=FrequencyCapConfig(impressions=CAP, window_hours=24.0))
    cfg = cfg.replace(tenants=tenants, worker={"commit_interval_ms": 100})
    write_model(cfg)
    stack = Stack(write_toml(cfg, tmp_path / "config.toml"), tmp_path)
    states = States(cfg)
    stack.start("a", "worker", "--state-dir", str(tmp_path / "state-a"))
    stack.start("b", "worker", "--state-dir", str(tmp_path / "state-b"))
    try:
        with _running(cfg) as (_, _, client):
            truth: dict[str, Counter] = {}
            answers: dict[str, set[str]] = {}
            # an anonymous answer keyed like a user: not counted for that user (a session's
            # answers do not shape anyone's caps); it precedes the user's on the same key
            client.recommend("", k=3, session_id="group-0", context_item_ids=["acme-0-1"])
            for n in range(40):
                u = f"group-{n % 20}"
                a = client.recommend(u, k=3)
                answers.setdefault(u, set()).add(a.recommendation_id)
                truth.setdefault(u, Counter()).update(i.item_id for i in a.items)
            for u, rec_ids in answers.items():
                wait_until(lambda: states.answers(u) >= rec_ids, 90, stack=stack,
                           what=f"a worker to count {u}'s answers")
            assert {u: states.counts(u) for u in truth} == truth
    finally:
        stack.stop_all()
        states.tail.stop()
