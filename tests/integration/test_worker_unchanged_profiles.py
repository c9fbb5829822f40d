"""Issue 27 on a real broker: a profile is published only when it says something new."""

from __future__ import annotations

import pytest

from recsys_stream.contracts.keys import split_key
from recsys_stream.contracts.pb import profiles_pb2
from recsys_stream.stack import wait_until
from tests.integration.test_worker import Collect, _publish_model, ev, produce, start_worker, \
    stop_worker

pytestmark = pytest.mark.integration


def test_an_update_that_moves_nothing_publishes_no_profile_and_the_next_change_does(cfg):
    _, version = _publish_model(cfg)
    seen = Collect(cfg, cfg.topics.profiles)
    handle = start_worker(cfg)
    worker = handle[2]
    topic = cfg.topics.interactions

    def committed():
        return sum(worker.store.offsets(topic).values())

    def profiles():
        return [profiles_pb2.UserProfile.FromString(v) for k, v, _ in seen.get(cfg.topics.profiles)
                if split_key(k)[1] == "w"]
    try:
        wait_until(lambda: worker.models.models("acme").get("als") is not None, 30,
                   what="the worker's model")
        produce(cfg, [ev(1, "w", "i3", "purchase"), ev(2, "w", "i9", "hide")])
        wait_until(lambda: any(list(p.suppressed_item_ids) == ["i9"] for p in profiles()), 30,
                   what="the first profile")
        wait_until(lambda: committed() == 2, 30, what="the first events committed")
        # a re-sent event, a hidden item hidden again and viewed: the state's offsets move,
        # its vector and ids do not
        produce(cfg, [ev(1, "w", "i3", "purchase"), ev(3, "w", "i9", "hide"),
                      ev(4, "w", "i9", "view")])
        wait_until(lambda: committed() == 5, 30, what="the updates that change nothing")
        produce(cfg, [ev(5, "w", "i7", "click")])
        wait_until(lambda: any("i7" in p.item_ids for p in profiles()), 30,
                   what="the profile of the next change")
    finally:
        stop_worker(handle)
        seen.tail.stop()
    got = profiles()
    first = next(j for j, p in enumerate(got) if list(p.suppressed_item_ids) == ["i9"])
    nxt = next(j for j, p in enumerate(got) if "i7" in p.item_ids)
    # profiles of one user arrive in order (one key, one partition): nothing came in between
    assert nxt == first + 1
    assert list(got[nxt].item_ids) == ["i3", "i7"] and got[nxt].vectors[0].model_version == version
    assert list(got[nxt].suppressed_item_ids) == ["i9"]
