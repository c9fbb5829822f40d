"""The served log never blocks a request: a full queue drops the answer and counts it."""

from __future__ import annotations

from recsys_stream.contracts.pb import recommender_pb2, slates_pb2
from recsys_stream.serving.metrics import SERVED_DROPPED
from recsys_stream.serving.served_log import ServedLog, new_recommendation_id, slate_of


class FullAfter:
    """A producer whose queue holds ``n`` records (librdkafka raises BufferError past it)."""

    def __init__(self, n):
        self.n, self.records, self.polls = n, [], 0

    def produce(self, topic, key, value):
        if len(self.records) >= self.n:
            raise BufferError("Local: Queue full")
        self.records.append((topic, key, value))

    def poll(self, timeout):
        self.polls += 1

    def flush(self, timeout):
        return 0


def test_a_full_queue_drops_and_counts_instead_of_blocking():
    fake = FullAfter(2)
    log = ServedLog("t-recommendations", make_producer=lambda capacity: fake, capacity=2)
    log.start()
    before = SERVED_DROPPED.labels("acme", "queue_full")._value.get()
    for n in range(5):
        log.offer(slates_pb2.ServedSlate(recommendation_id=str(n), tenant="acme", user_id="u"))
    assert [k for _, k, _ in fake.records] == [b"acme\x1fu"] * 2  # the user's key
    assert SERVED_DROPPED.labels("acme", "queue_full")._value.get() - before == 3
    # an answer with no user (SimilarItems) goes under its own id
    log2 = ServedLog("t", make_producer=lambda capacity: FullAfter(9)).start()
    log2.offer(slates_pb2.ServedSlate(recommendation_id="r9", tenant="acme"))
    assert log2._producer.records[0][1] == b"acme\x1fr9"


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
