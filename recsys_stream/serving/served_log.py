"""Every answer onto the ``recommendations`` topic, off the request path (DESIGN.md).

The request thread builds the ``ServedSlate`` and hands it to librdkafka's producer, whose
``produce`` only enqueues (its own C threads send, without the GIL) and whose queue is the
bounded buffer (``server.served_log_capacity`` records). Nothing here may fail or slow a
request: a full queue (the broker away long enough, or a burst) drops the record, counts it
(``recsys_served_log_dropped_total``) and says so in the log at most once a minute. The online
stage then misses those impressions, which the metric makes visible.

Measured with ``benchmarks/serving.py --users 50000 --seconds 10 --workers 2 --scenarios ''
--broker kafka --served-log on|off``, back to back (server CPU per Recommend, log on / off):
a Python thread producing the queued slates, 1,251 / 621 us (the GIL's handoffs); produce()
on the request thread at linger.ms 5, 927 and 905 / 632 and 614 us (the producer's threads
sent a request per few answers); at linger.ms 200 (the server's setting), 694 and 672 / 634
us, 1.06-1.09x.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from confluent_kafka import Producer

from recsys_stream.contracts.keys import make_key
from recsys_stream.contracts.pb import slates_pb2
from recsys_stream.serving.metrics import SERVED_DROPPED, SERVED_LOGGED

log = logging.getLogger(__name__)
_REASON_NAMES = None  # ScoredItem.Reason number -> name, filled on first use


def new_recommendation_id() -> str:
    """A unique answer id: 128 random bits as 32 hex digits (no coordination between servers)."""
    return uuid.uuid4().hex


def slate_of(method: str, tenant: str, unit: str, response, experiment: str = "",
             arm: str = "") -> slates_pb2.ServedSlate:
    """The ``ServedSlate`` of a Recommend / SimilarItems / RankItems response."""
    global _REASON_NAMES
    if _REASON_NAMES is None:
        from recsys_stream.contracts.pb import recommender_pb2
        _REASON_NAMES = {v.number: v.name
                         for v in recommender_pb2.ScoredItem.Reason.DESCRIPTOR.values}
    source = getattr(response, "source", None)
    source_name = "" if source is None else \
        type(response).DESCRIPTOR.fields_by_name["source"].enum_type.values_by_number[
            source].name
    return slates_pb2.ServedSlate(
        recommendation_id=response.recommendation_id, tenant=tenant, user_id=unit,
        items=[slates_pb2.ServedItem(item_id=it.item_id, position=n, score=it.score,
                                     reason=_REASON_NAMES.get(it.reason, "") if it.reason
                                     else "")
               for n, it in enumerate(response.items)],
        algorithm=response.algorithm, model_version=response.model_version,
        source=source_name, experiment=experiment, arm=arm,
        served_ms=int(time.time() * 1000), method=method)


class ServedLog:
    """The bounded, never-blocking writer of served answers.

    Parameters
    ----------
    topic : str
    make_producer : callable returning the producer, given its queue bound in records
    capacity : int
        Records the producer holds before it drops.
    """

    # delivery reports are served every this many answers (none is needed: poll only frees them)
    POLL_EVERY = 256

    def __init__(self, topic: str, make_producer, capacity: int = 10_000) -> None:
        self.topic = topic
        self._make_producer = make_producer
        self.capacity = capacity
        self._producer: Producer | None = None
        self._offered = 0
        self._last_warning = 0.0
        self._dropped_since = 0
        self._lock = threading.Lock()  # the counters above, across a pool's threads

    def start(self) -> ServedLog:
        self._producer = self._make_producer(self.capacity)
        return self

    def offer(self, slate: slates_pb2.ServedSlate) -> None:
        """Hand one answer to the producer; drop it (counted) when its queue is full."""
        prod = self._producer
        if prod is None:
            self._dropped(slate.tenant, "not_started")
            return
        key = make_key(slate.tenant, slate.user_id or slate.recommendation_id)
        try:
            prod.produce(self.topic, key=key, value=slate.SerializeToString())
            SERVED_LOGGED.labels(slate.tenant).inc()
        except BufferError:
            self._dropped(slate.tenant, "queue_full")
        self._offered += 1
        if self._offered % self.POLL_EVERY == 0:
            prod.poll(0)

    def _dropped(self, tenant: str, why: str) -> None:
        SERVED_DROPPED.labels(tenant, why).inc()
        with self._lock:
            self._dropped_since += 1
            now = time.monotonic()
            if now - self._last_warning < 60:
                return
            n, self._last_warning, self._dropped_since = self._dropped_since, now, 0
        log.warning("served log: %d answers dropped (%s) since the last warning: the online "
                    "stage will not count them", n, why)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Wait up to ``timeout_s`` for the broker to take what is queued."""
        if self._producer is not None:
            self._producer.flush(timeout_s)
