"""Decoding and validation of interaction events (protobuf canonical, JSON for hand-made producers).

Every rejection carries a machine-readable ``reason`` (the DLQ header and the metric label) and
a human message. Validation is pure: tenants and time bounds are passed in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Container, Mapping
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from recsys_stream.contracts.confidence import EVENT_TYPES, SUPPRESSING_TYPES
from recsys_stream.contracts.keys import SEP, make_key
from recsys_stream.contracts.pb import events_pb2

MAX_ID_BYTES = 256
_SURELY_SHORT = MAX_ID_BYTES // 4  # characters that fit MAX_ID_BYTES in any UTF-8
# An erase record (events.proto ERASE): not an interaction, so not one of the confidence
# model's EVENT_TYPES; the worker routes it to ``nearline.erase``.
ERASE = "erase"
# What a client displayed (events.proto IMPRESSION): not a preference either; the online stage
# counts it, the worker only moves past it.
IMPRESSION = "impression"
_TYPE_BY_NAME = {n: events_pb2.EventType.Value(n.upper())
                 for n in (*EVENT_TYPES, ERASE, IMPRESSION)}
_NAME_BY_TYPE = {v: k for k, v in _TYPE_BY_NAME.items()}


class InvalidEvent(ValueError):
    """A record that cannot be applied. ``reason`` is one of a small fixed set of codes."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


@dataclass(frozen=True, slots=True)
class Event:
    """A validated interaction."""

    event_id: str
    tenant: str
    user_id: str
    item_id: str
    type: str           # lower-case name, one of confidence.EVENT_TYPES
    value: float | None
    timestamp_ms: int

    @property
    def key(self) -> bytes:
        return make_key(self.tenant, self.user_id)


def type_name(t: int) -> str:
    return _NAME_BY_TYPE.get(t, "")


def encode_event(e: Event) -> bytes:
    """The canonical protobuf encoding of an event."""
    msg = events_pb2.Interaction(event_id=e.event_id, tenant=e.tenant, user_id=e.user_id,
                                 item_id=e.item_id, type=_TYPE_BY_NAME[e.type],
                                 timestamp_ms=e.timestamp_ms)
    if e.value is not None:
        msg.value = e.value
    return msg.SerializeToString()


def erase_event(tenant: str, user_id: str, now_ms: int | None = None,
                event_id: str | None = None) -> Event:
    """The erase record of a user (``recsys-stream erase``, ``rpc EraseUser``): produce it with
    :func:`encode_event` on its ``key`` (the user's own key, after their events)."""
    import time
    import uuid
    ts = int(time.time() * 1000) if now_ms is None else now_ms
    return Event(event_id or f"erase-{uuid.uuid4().hex}", tenant, user_id, "", ERASE, None, ts)


def _parse(value: bytes) -> tuple[str, str, str, str, str, float | None, int]:
    if value[:1] == b"{":  # JSON starts with '{'; protobuf field 1..15 tags never do (0x7b = field 15, wire 3)
        try:
            d = json.loads(value)
            if not isinstance(d, dict):
                raise ValueError("not an object")
            t = d.get("type", "")
            val = d.get("value")
            ts = d.get("timestamp_ms", 0)
            if val is not None and not isinstance(val, (int, float)):
                raise InvalidEvent("bad_value", f"value must be a number, got {val!r}")
            if not isinstance(ts, int) or isinstance(ts, bool):
                raise InvalidEvent("bad_timestamp", f"timestamp_ms must be an integer, got {ts!r}")
            fields = [d.get(f, "") for f in ("event_id", "tenant", "user_id", "item_id")]
            if not all(isinstance(f, str) for f in fields) or not isinstance(t, str):
                raise InvalidEvent("missing_field", "ids and type must be strings")
            return (*fields, t.lower(), None if val is None else float(val), ts)
        except (ValueError, UnicodeDecodeError) as e:
            if isinstance(e, InvalidEvent):
                raise
            raise InvalidEvent("undecodable", f"invalid JSON: {e}") from None
    msg = events_pb2.Interaction()
    try:
        msg.ParseFromString(value)
    except DecodeError as e:
        raise InvalidEvent("undecodable", f"not an Interaction protobuf: {e}") from None
    return (msg.event_id, msg.tenant, msg.user_id, msg.item_id, type_name(msg.type),
            msg.value if msg.HasField("value") else None, msg.timestamp_ms)


DEFAULT_SCALE = (0.5, 5.0)


def decode_event(key: bytes | None, value: bytes | None, tenants: Container[str],
                 now_ms: int, max_future_ms: int, max_past_ms: int,
                 rating_scales: Mapping[str, tuple[float, float]] | None = None) -> Event:
    """Decode and validate one record of the interactions topic.

    ``rating_scales``: each tenant's ``(rating_min, rating_max)`` (default 0.5..5). A rating
    needs a value within it; any other positive type's ``value`` is its magnitude and must be
    finite and not negative.

    Raises
    ------
    InvalidEvent
        with the reason for the dead-letter topic.
    """
    if not value:
        raise InvalidEvent("undecodable", "empty record value")
    event_id, tenant, user_id, item_id, tname, val, ts = _parse(value)
    for name, v in (("tenant", tenant), ("user_id", user_id), ("item_id", item_id)):
        if not v and not (name == "item_id" and tname == ERASE):
            raise InvalidEvent("missing_field", f"{name} is missing or empty")
        # UTF-8 takes at most 4 bytes a character: short ids need no encoding to be measured
        if len(v) > _SURELY_SHORT and len(v.encode()) > MAX_ID_BYTES:
            raise InvalidEvent("id_too_long", f"{name} is longer than {MAX_ID_BYTES} bytes")
        if SEP in v or not v.isprintable():
            raise InvalidEvent("bad_id", f"{name} contains control characters")
    if len(event_id) > _SURELY_SHORT and len(event_id.encode()) > MAX_ID_BYTES:
        raise InvalidEvent("id_too_long", f"event_id is longer than {MAX_ID_BYTES} bytes")
    if tname not in EVENT_TYPES and tname not in (ERASE, IMPRESSION):
        raise InvalidEvent("unknown_type", f"unknown event type {tname or '(unspecified)'!r}")
    if tenant not in tenants:
        raise InvalidEvent("unknown_tenant", f"tenant {tenant!r} is not configured")
    if tname == "rating":
        lo, hi = (rating_scales or {}).get(tenant, DEFAULT_SCALE)
        if val is None or not math.isfinite(val) or not lo <= val <= hi:
            raise InvalidEvent("bad_value", f"rating value must be in {lo:g}..{hi:g}, "
                                            f"got {val!r}")
    elif tname == ERASE:
        item_id, val = "", None  # ignored (events.proto)
    elif val is not None and not math.isfinite(val):
        raise InvalidEvent("bad_value", f"value must be finite, got {val!r}")
    elif val is not None and val < 0 and tname not in SUPPRESSING_TYPES:
        raise InvalidEvent("bad_value", f"the magnitude (value) of a {tname} event must not be "
                                        f"negative, got {val!r}")
    if ts <= 0:
        raise InvalidEvent("bad_timestamp", "timestamp_ms is missing")
    if ts > now_ms + max_future_ms:
        raise InvalidEvent("timestamp_future", f"timestamp_ms {ts} is too far in the future")
    if ts < now_ms - max_past_ms:
        raise InvalidEvent("timestamp_past", f"timestamp_ms {ts} is too far in the past")
    if key is not None and key != make_key(tenant, user_id):
        raise InvalidEvent("key_mismatch", "record key is not tenant\\x1fuser_id of the event")
    return Event(event_id, tenant, user_id, item_id, tname, val, ts)


def recommendation_id_of(value: bytes) -> str:
    """The ``recommendation_id`` an interaction record carries ("" when none or undecodable).

    Read apart from :func:`decode_event`: only the online stage needs it, and the worker's hot
    path stays as it is.
    """
    try:
        if value[:1] == b"{":
            rid = json.loads(value).get("recommendation_id", "")
            return rid if isinstance(rid, str) else ""
        return events_pb2.Interaction.FromString(value).recommendation_id
    except (ValueError, UnicodeDecodeError, DecodeError, AttributeError):
        return ""
