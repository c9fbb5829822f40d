"""The dead-letter topic: a rejected record is re-published as it came, with headers saying why.

Nothing is dropped silently. After a crash a batch is replayed, so a bad record may appear twice
in the DLQ (at-least-once there); the state itself is exactly-once.
"""

from __future__ import annotations

from confluent_kafka import Message

from recsys_stream.contracts.events import InvalidEvent
from recsys_stream.nearline.metrics import DLQ, EVENTS


def dead_letter(produce, dlq_topic: str, msg: Message, err: InvalidEvent) -> None:
    """Re-publish ``msg`` to the DLQ with headers saying why; ``produce(topic, key, value,
    headers=...)`` is the worker's (it counts the output for the commit)."""
    headers = [
        ("reason", err.reason.encode()),
        ("error", err.message.encode()[:1000]),
        ("source.topic", msg.topic().encode()),
        ("source.partition", str(msg.partition()).encode()),
        ("source.offset", str(msg.offset()).encode()),
    ]
    produce(dlq_topic, msg.key(), msg.value(), headers=headers)
    DLQ.labels(err.reason).inc()
    EVENTS.labels("invalid").inc()
