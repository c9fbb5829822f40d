"""Kafka clients (confluent-kafka) configured once for every process, and topic tailing.

``TopicTail`` follows a topic from its beginning with manual assignment of every partition: the
server and the worker use it for the compacted read models (profiles, catalog) and for model
announcements, where each replica needs every record and a consumer-group join would only add
seconds of waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, \
    Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import Gauge

from recsys_stream import credentials
from recsys_stream.config import Config

log = logging.getLogger(__name__)

# fetch.wait.max.ms of consumers on the freshness path (the worker's input): a broker that does
# not answer a fetch as soon as data arrives (tansu) delays records by up to it
FETCH_WAIT_MS = 10
# ... and of read models that may lag by a fraction of a second (the server's profile store,
# catalog bans, model announcements, trending). Every idle consumer sends one fetch per wait: at
# 10 ms, eight idle consumers kept the embedded broker 0.15 core busy, at 100 ms 0.04 (measured,
# 2 cores). The profile store's secondaries catch up every 0.1 s anyway; its tail at 100 ms
# took the idle broker of `serve --workers 2` from 0.19 to 0.14 core.
READ_MODEL_FETCH_WAIT_MS = 100


class _RateLimit(logging.Filter):
    """Let one record per (logger, message shape) through per ``interval_s``; count the rest.

    librdkafka repeats a failure for every connection attempt (``Connect to ipv4#127.0.0.1:9092
    failed: Connection refused`` a few times a second per client while a broker is down): one
    line per interval, with how many were held back, keeps an outage readable in a test log.
    """

    def __init__(self, interval_s: float = 30.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        # the shape: digits (ports, counts, ms) vary between repeats of one failure
        shape = "".join("#" if ch.isdigit() else ch for ch in str(record.msg)[:160])
        key = (record.name, shape)
        now = time.monotonic()
        with self._lock:
            last, held = self._last.get(key, (-1e18, 0))
            if now - last < self.interval_s:
                self._last[key] = (last, held + 1)
                return False
            self._last[key] = (now, 0)
            if len(self._last) > 10_000:        # bounded: shapes of long-gone brokers
                self._last.clear()
        if held:
            record.msg = f"{record.msg} ({held} alike in the last {self.interval_s:.0f} s)"
        return True


# librdkafka's own log, through Python logging: WARNING and above, rate-limited. The client
# delivers its log records on poll()/consume()/flush() of the client that made them.
LIBRDKAFKA_LOG = logging.getLogger("recsys_stream.librdkafka")
LIBRDKAFKA_LOG.addFilter(_RateLimit())
# librdkafka's syslog levels: 4 = warning. Debug chatter never reaches Python at all.
_LIBRDKAFKA_LOG_LEVEL = 4


def client_conf(cfg: Config, **overrides) -> dict:
    """The settings every Kafka client of the project starts from (the one place they are built).

    ``bootstrap.servers``, then ``[kafka.client]`` (librdkafka properties passed through as they
    are: security protocol, SASL, TLS), then librdkafka's log routed to ``LIBRDKAFKA_LOG``, then
    the caller's ``overrides``. Secrets stay :class:`~recsys_stream.credentials.Secret` here (the
    dict can be logged); ``_build`` reveals them to librdkafka only.
    """
    conf = {"bootstrap.servers": cfg.kafka.bootstrap_servers}
    conf.update(cfg.kafka.client)
    conf.setdefault("logger", LIBRDKAFKA_LOG)
    conf.setdefault("log_level", _LIBRDKAFKA_LOG_LEVEL)
    conf.update(overrides)
    return conf


def _build(cls, conf: dict):
    """``cls(conf)`` with the secrets revealed; an error about the settings never shows one.

    librdkafka quotes a value it rejects ("Invalid value "..." for configuration property"),
    so the message is scrubbed of every secret of ``conf`` before it leaves.
    """
    try:
        return cls(credentials.reveal(conf))
    except (KafkaException, ValueError, TypeError) as e:
        msg = credentials.scrub(str(e), credentials.secrets_of(conf))
        if msg == str(e):
            raise
        raise (KafkaException if isinstance(e, KafkaException) else type(e))(msg) from None


def consume_ready(consumer: Consumer, max_records: int, timeout_s: float) -> list[Message]:
    """Up to ``max_records`` records: those already fetched at once, else wait ``timeout_s``.

    librdkafka's batch consume waits out its whole timeout unless ``max_records`` are queued,
    so a loop that consumes with a timeout starts every batch of a paced stream that late
    (the worker's freshness p50 at 5k events/s went from 39-40 to 25-26 ms without it). Only an
    empty queue waits here, so an idle loop still sleeps instead of spinning.
    """
    return consumer.consume(max_records, timeout=0) or consumer.consume(max_records,
                                                                          timeout=timeout_s)


def producer(cfg: Config, **overrides) -> Producer:
    return _build(Producer, client_conf(cfg, **{
        "linger.ms": 5,                 # small batches: freshness matters more than a few %
        "enable.idempotence": True,     # a retried send is written once
        "queue.buffering.max.messages": 500_000,
        **overrides}))


def consumer(cfg: Config, group_id: str, **overrides) -> Consumer:
    return _build(Consumer, client_conf(cfg, **{
        "group.id": group_id,
        "enable.auto.commit": False,    # offsets live with the state (RocksDB), not in Kafka
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": FETCH_WAIT_MS,
        **overrides}))


def admin(cfg: Config, **overrides) -> AdminClient:
    return _build(AdminClient, client_conf(cfg, **overrides))


def ensure_topics(cfg: Config, timeout_s: float = 10.0) -> None:
    """Create the deployment's topics if missing (compacted where the design says so)."""
    adm = admin(cfg)
    topics = cfg.topics
    existing = set(adm.list_topics(timeout=timeout_s).topics)
    rf = cfg.kafka.replication_factor
    new = []
    for name in topics.all():
        if name in existing:
            continue
        parts = cfg.kafka.interaction_partitions if name in topics.partitioned() else 1
        conf = {"cleanup.policy": "compact",
                "segment.ms": str(cfg.kafka.compacted_segment_ms),
                "min.cleanable.dirty.ratio": str(cfg.kafka.compacted_dirty_ratio),
                "delete.retention.ms": str(cfg.kafka.compacted_delete_retention_ms),
                } if name in topics.compacted() else {}
        if name in topics.raw():  # retention-bound, never compacted (erasure: raw events age out)
            conf = {"cleanup.policy": "delete", "retention.ms": str(cfg.kafka.raw_retention_ms)}
        new.append(NewTopic(name, num_partitions=parts, replication_factor=rf, config=conf))
    if not new:
        return
    for name, fut in adm.create_topics(new, operation_timeout=timeout_s).items():
        try:
            fut.result()
            log.info("created topic %s", name)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise
    for name in (t.topic for t in new):
        _ready_partitions(adm, name, timeout_s)


def _not_ready(md) -> str | None:
    """Why a topic's metadata answer does not (yet) describe a usable topic, or None."""
    if md is None:
        return "not in the metadata"
    if md.error is not None:
        return str(md.error)
    if not md.partitions:
        return "no partitions"
    bad = [p.id for p in md.partitions.values() if p.leader < 0 or p.error is not None]
    return f"partitions {bad} without a leader" if bad else None


def _ready_partitions(adm: AdminClient, topic: str, timeout_s: float) -> list[int]:
    """The partitions of ``topic`` once every one has a leader, asking again until ``timeout_s``.

    Every answer short of that is "not yet", never "no": Apache Kafka acknowledges CreateTopics
    before the partitions' leaders are elected, and each broker learns a new topic (or a moved
    leader) from the controller on its own schedule, so a metadata request that lands on
    another node right after a creation or a leader loss names the topic with
    UNKNOWN_TOPIC_OR_PART or LEADER_NOT_AVAILABLE, or leaves it out (seen on three nodes). A
    watermark query in that window fails with NOT_LEADER_FOR_PARTITION.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        left = max(0.5, deadline - time.monotonic())
        try:
            md = adm.list_topics(topic, timeout=min(left, 5.0)).topics.get(topic)
            why = _not_ready(md)
            if why is None:
                return sorted(md.partitions)
        except KafkaException as e:             # the metadata request itself timed out
            why = str(e)
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic!r}: {why} after {timeout_s:.0f} s") from None
        time.sleep(0.1)


# errors of a watermark query that a moment cures: a topic just created whose leader the
# client's metadata does not know yet, or a leader that just moved (Apache Kafka)
_RETRIABLE = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART,
              KafkaError.LEADER_NOT_AVAILABLE, KafkaError._TIMED_OUT)


def watermarks(cons: Consumer, topic: str, partition: int, timeout_s: float = 30.0
               ) -> tuple[int, int]:
    """(low, high) offsets of a partition, retrying the errors a leader election causes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return cons.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        except KafkaException as e:
            if e.args[0].code() not in _RETRIABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def partitions_of(cfg: Config, topic: str, timeout_s: float = 30.0) -> list[int]:
    """The partitions of ``topic``, once each has a leader (a transient error is "not yet").

    Raises
    ------
    RuntimeError
        When the topic is not usable within ``timeout_s`` (missing, or leaderless throughout).
    """
    try:
        return _ready_partitions(admin(cfg), topic, timeout_s)
    except TimeoutError as e:
        raise RuntimeError(f"{e} on {cfg.kafka.bootstrap_servers}") from None


class TopicTail:
    """Follow whole topics from the beginning on a background thread.

    Parameters
    ----------
    cfg : Config
    handlers : mapping of topic name to ``handler(message)``; called on the tail's thread.
    name : str
        Used in the thread name and log lines.
    backfill : int, optional
        Start each partition this many records before its end instead of at its beginning
        (for streams whose old records do not matter, like trending counts).
    after_poll : callable, optional
        Called on the tail's thread after each poll's records were handled (and after a poll
        that returned none, at least every 0.02 s): lets a handler batch its writes per poll.
    fetch_wait_ms : int, optional
        The broker's longest wait for data per fetch (``fetch.wait.max.ms``). An idle tail
        sends one fetch per wait; ``READ_MODEL_FETCH_WAIT_MS`` suits a read model that may lag
        by a fraction of a second.
    """

    def __init__(self, cfg: Config, handlers: dict[str, Callable[[Message], None]],
                 name: str = "tail", backfill: int | None = None,
                 after_poll: Callable[[], None] | None = None,
                 fetch_wait_ms: int = FETCH_WAIT_MS) -> None:
        self.cfg, self.handlers, self.name, self.backfill = cfg, handlers, name, backfill
        self.after_poll = after_poll
        self._consumer = consumer(cfg, group_id=f"{name}-tail-unused",
                                  **{"fetch.wait.max.ms": fetch_wait_ms})
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-tail", daemon=True)
        self._targets: dict[tuple[str, int], int] = {}

    def start(self) -> TopicTail:
        assignment = []
        for topic in self.handlers:
            for p in partitions_of(self.cfg, topic):
                low, high = watermarks(self._consumer, topic, p)
                start = OFFSET_BEGINNING if self.backfill is None else max(low, high - self.backfill)
                assignment.append(TopicPartition(topic, p, start))
                if high > 0 and (self.backfill is None or high > start):
                    self._targets[(topic, p)] = high
        self._consumer.assign(assignment)
        if not self._targets:
            self._caught_up.set()
        self._thread.start()
        return self

    def wait_caught_up(self, timeout_s: float | None = None) -> bool:
        """True once every record that existed at ``start()`` has been handled."""
        return self._caught_up.wait(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msgs = consume_ready(self._consumer, 1000, 0.02)
            except KafkaException as e:  # broker hiccup: keep following
                log.warning("%s tail: %s", self.name, e)
                time.sleep(0.5)
                continue
            for m in msgs:
                if m.error():
                    continue
                try:
                    self.handlers[m.topic()](m)
                except Exception:  # a bad record must not stop the read model
                    log.exception("%s tail: handler failed on %s[%d]@%d", self.name, m.topic(),
                                  m.partition(), m.offset())
                tp = (m.topic(), m.partition())
                if tp in self._targets and m.offset() + 1 >= self._targets[tp]:
                    del self._targets[tp]
                    if not self._targets:
                        self._caught_up.set()
            if self.after_poll is not None:
                try:
                    self.after_poll()
                except Exception:
                    log.exception("%s tail: after_poll failed", self.name)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._consumer.close()
        if not self._thread.is_alive():
            # handlers are mostly bound methods of the tail's owner, which holds the tail: a
            # cycle, left to the cyclic collector (rare in the worker, see GC_THRESHOLDS)
            # unless it is broken here
            self.handlers, self.after_poll = {}, None


def read_to_end(cfg: Config, topic: str, partitions: Iterable[int] | None = None,
                timeout_s: float = 60.0, tail: int | None = None,
                start_at: dict[int, int] | None = None) -> Iterator[Message]:
    """Every record of ``partitions`` (default: all) of ``topic``, from the beginning to the end.

    The end is the client's partition-EOF event, not the high watermark (the embedded tansu
    broker reports the base offset of the last record batch + 1 there). Partitions empty at the
    start are not read. With ``tail``, each partition is read from ``tail`` records before its
    high watermark instead of from its beginning. With ``start_at``, a partition it names is
    read from that offset (an offset past the partition's end, as after the topic was
    recreated, resets to its beginning: ``auto.offset.reset=earliest``).

    Raises
    ------
    TimeoutError
        When the end of every partition is not reached within ``timeout_s``.
    """
    cons = consumer(cfg, group_id=f"{cfg.kafka.topic_prefix}read-to-end-unused",
                    **{"enable.partition.eof": True})
    try:
        start = {}
        for p in partitions_of(cfg, topic) if partitions is None else partitions:
            low, high = watermarks(cons, topic, p)
            if high > max(low, 0):
                start[p] = OFFSET_BEGINNING if tail is None else max(low, high - tail)
                if start_at and p in start_at:
                    # not skipped when at the high watermark: tansu reports it short
                    start[p] = start_at[p]
        pending = set(start)
        if pending:
            cons.assign([TopicPartition(topic, p, o) for p, o in sorted(start.items())])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took over {timeout_s}s "
                                   f"(partitions left: {sorted(pending)})")
            # a short wait: consume() returns early only once it has all 10k records
            for m in cons.consume(10_000, timeout=0.05):
                err = m.error()
                if err is None:
                    yield m
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(m.partition())
    finally:
        cons.close()


def produce_all(prod: Producer, topic: str, records: Iterable[tuple[bytes, bytes]]) -> int:
    """Produce ``(key, value)`` pairs, waiting for queue space; returns the count (unflushed)."""
    n = 0
    for key, value in records:
        while True:
            try:
                prod.produce(topic, key=key, value=value)
                break
            except BufferError:
                prod.poll(0.05)
        n += 1
        if n % 10_000 == 0:
            prod.poll(0)
    return n


BROKER_REACHABLE = Gauge("recsys_broker_reachable",
                         "1 while a metadata request to the Kafka cluster answers, else 0")


class BrokerWatch:
    """Whether the cluster answers, asked every ``interval_s`` from a background thread.

    A process whose broker is down or cut off keeps doing what it can without it (the server
    answers from what it holds, the worker's clients retry); ``/healthz`` reports
    ``degraded`` meanwhile (``health()``), so an operator sees the cause, not only the lag.
    """

    def __init__(self, cfg: Config, interval_s: float = 2.0, timeout_s: float = 3.0) -> None:
        # log_level 0: the process's own clients log an outage, this one would only repeat it
        self._admin = admin(cfg, log_level=0)
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self.reachable = True
        self.since = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-watch", daemon=True)

    def start(self) -> BrokerWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._admin.list_topics(timeout=self.timeout_s)
                ok = True
            except KafkaException:
                ok = False
            if ok != self.reachable:
                self.reachable, self.since = ok, time.time()
                (log.info if ok else log.warning)(
                    "kafka cluster %s", "reachable again" if ok else "unreachable")
            BROKER_REACHABLE.set(1 if ok else 0)
            self._stop.wait(self.interval_s)

    def health(self, view: Callable[[], dict]) -> Callable[[], dict]:
        """``view`` plus ``broker``; an ``ok`` status becomes ``degraded`` while it is down."""
        def combined() -> dict:
            state = dict(view())
            state["broker"] = {"reachable": self.reachable, "since": round(self.since, 3)}
            if not self.reachable and state.get("status") == "ok":
                state["status"] = "degraded"
            return state
        return combined
