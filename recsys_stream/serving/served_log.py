"""Every answer onto the ``recommendations`` topic, off the request path (DESIGN.md).

A request thread only builds the ``ServedSlate`` and offers it to a bounded queue; one
background thread hands the queue to an idempotent producer. Nothing here may fail or slow a
request: a full queue, or a producer whose own buffer is full because the broker is away, drops
the record, counts it (``recsys_served_log_dropped_total``) and says so in the log at most once
a minute. The online stage then misses those impressions, which the metric makes visible.
"""

from __future__ import annotations

import logging
import queue
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
    make_producer : callable returning the producer (called on the writer thread, once)
    capacity : int
        Records the queue holds before it drops.
    """

    def __init__(self, topic: str, make_producer, capacity: int = 10_000) -> None:
        self.topic = topic
        self._make_producer = make_producer
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._stop = threading.Event()
        self._last_warning = 0.0
        self._dropped_since = 0
        self._thread = threading.Thread(target=self._run, name="served-log", daemon=True)
        self._producer: Producer | None = None

    def start(self) -> ServedLog:
        self._thread.start()
        return self

    def offer(self, slate: slates_pb2.ServedSlate) -> None:
        """Queue one answer; drop it (counted) when the queue is full. Never blocks."""
        try:
            self._queue.put_nowait(slate)
        except queue.Full:
            self._dropped(slate.tenant, "queue_full")

    def _dropped(self, tenant: str, why: str) -> None:
        SERVED_DROPPED.labels(tenant, why).inc()
        self._dropped_since += 1
        now = time.monotonic()
        if now - self._last_warning >= 60:
            log.warning("served log: %d answers dropped (%s) since the last warning: the online "
                        "stage will not count them", self._dropped_since, why)
            self._last_warning, self._dropped_since = now, 0

    def _run(self) -> None:
        self._producer = self._make_producer()
        while not self._stop.is_set() or not self._queue.empty():
            try:
                slate = self._queue.get(timeout=0.05)
            except queue.Empty:
                self._producer.poll(0)
                continue
            key = make_key(slate.tenant, slate.user_id or slate.recommendation_id)
            try:
                self._producer.produce(self.topic, key=key, value=slate.SerializeToString())
                SERVED_LOGGED.labels(slate.tenant).inc()
            except BufferError:  # the broker is away long enough to fill the producer
                self._dropped(slate.tenant, "producer_full")
            self._producer.poll(0)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Hand what is queued to the producer and wait up to ``timeout_s`` for the broker."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self._producer is not None:
            self._producer.flush(timeout_s)
