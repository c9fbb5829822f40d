"""The served log never blocks a request: a full queue drops the answer and counts it."""

from __future__ import annotations

from recsys_stream.contracts.pb import recommender_pb2, slates_pb2
from recsys_stream.serving.metrics import SERVED_DROPPED
from recsys_stream.serving.served_log import ServedLog, new_recommendation_id, slate_of


def test_a_full_queue_drops_and_counts_instead_of_blocking():
    log = ServedLog("t-recommendations", make_producer=None, capacity=2)  # never started
    before = SERVED_DROPPED.labels("acme", "queue_full")._value.get()
    for n in range(5):
        log.offer(slates_pb2.ServedSlate(recommendation_id=str(n), tenant="acme"))
    assert log._queue.qsize() == 2
    assert SERVED_DROPPED.labels("acme", "queue_full")._value.get() - before == 3


def test_the_slate_holds_what_the_answer_showed():
    r = recommender_pb2.RecommendResponse(tenant="acme", algorithm="als", model_version=4,
                                          source=recommender_pb2.NEARLINE,
                                          recommendation_id=new_recommendation_id())
    r.items.add(item_id="a", score=0.9, reason=recommender_pb2.ScoredItem.EXPLORATION)
    r.items.add(item_id="b", score=0.5)
    s = slate_of("Recommend", "acme", "u1", r, "ab", "varied")
    assert (s.recommendation_id, s.user_id, s.algorithm, s.model_version, s.source) == (
        r.recommendation_id, "u1", "als", 4, "NEARLINE")
    assert [(i.item_id, i.position, i.reason) for i in s.items] == [
        ("a", 0, "EXPLORATION"), ("b", 1, "")]
    assert (s.experiment, s.arm, s.method) == ("ab", "varied", "Recommend")
    assert new_recommendation_id() != new_recommendation_id()
