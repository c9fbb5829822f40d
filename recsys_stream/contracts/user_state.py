"""Per-user aggregation of interactions: the worker's RocksDB value and the changelog record.

The worker applies events here, and the trainer replays the same code over a file of historical
events or reads the changelog, so batch and nearline see identical strengths.

Aggregation per item keeps ``(strength, last_seen_ms)`` with the strength referred to
``last_seen_ms``. An event at ``t`` with strength ``w`` gives
``s' = s * decay(t - last_seen) + w`` when ``t >= last_seen`` and ``s' = s + w * decay(last_seen - t)``
otherwise, which equals ``sum_j w_j * decay(T - t_j)`` with ``T = max t_j`` in any arrival order.

Rating events also keep the latest rating per item, ``ratings[item] = [value, time]``: the
rating with the latest event time wins in any arrival order (a re-rating replaces; at equal times
the later arrival). Explicit models train on these; the implicit strength adds as before. The map
is bounded like the history (``history_cap`` plus slack, the oldest ratings dropped first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter

import numpy as np

from recsys_stream.contracts.caps import ImpressionCaps
from recsys_stream.contracts.confidence import SUPPRESSING_TYPES, ConfidenceSettings
from recsys_stream.contracts.pb import state_pb2

# Re-sent events are recognised among this many most recent event ids of the user.
DEDUP_WINDOW = 64
# Suppressions kept per user (oldest dropped first).
MAX_SUPPRESSED = 1000
_FIRST, _SECOND = itemgetter(0), itemgetter(1)


def cap_slack(cap: int) -> int:
    """Items a history may hold beyond ``cap`` before it is trimmed back to ``cap``.

    Trimming sorts the whole history; doing it on every new item of a capped user was the
    worker's largest single cost (~19 % of ``Worker.process`` on Zipf traffic). With a 10 %
    slack a capped user is sorted once per ``cap // 10`` new items, and a history never holds
    more than ``cap + cap // 10`` items. Batch and nearline share this code, so they agree.
    """
    return max(1, cap // 10)


@dataclass
class UserHistory:
    """Mutable aggregate of one user's interactions.

    ``items`` maps item id to ``[strength at last_seen, last_seen_ms, first_seen_ms]``.
    """

    tenant: str
    user_id: str
    items: dict[str, list] = field(default_factory=dict)
    suppressed: dict[str, None] = field(default_factory=dict)  # insertion-ordered set
    last_event_ms: int = 0
    input_partition: int = -1
    applied_offset: int = -1
    recent_event_ids: list[str] = field(default_factory=list)
    event_count: int = 0
    ratings: dict[str, list] = field(default_factory=dict)  # item -> [latest rating, its time]
    caps: ImpressionCaps | None = None  # frequency caps (contracts.caps); None: nothing shown
    # Not stored: bumped whenever the ids a profile carries change (an item added, dropped or
    # trimmed, a suppression, a rating), so the worker can tell a profile whose vector did not
    # move apart from one that must be published (``nearline.worker``). Starts at 0 on decode.
    revision: int = field(default=0, compare=False, repr=False)
    # Not stored: the worker's note of the last profile it published from this object.
    published: object = field(default=None, compare=False, repr=False)

    # -- applying events -------------------------------------------------------------------
    def apply(self, event_id: str, item_id: str, type_name: str, value: float | None,
              timestamp_ms: int, settings: ConfidenceSettings, history_cap: int) -> bool:
        """Fold one validated event in; returns False for a re-sent ``event_id`` (and for an
        impression: what a client displayed is not a preference)."""
        if type_name == "impression":
            return False
        if event_id:
            if event_id in self.recent_event_ids:
                return False
            self.recent_event_ids.append(event_id)
            if len(self.recent_event_ids) > DEDUP_WINDOW:
                del self.recent_event_ids[0]
        self.event_count += 1
        if timestamp_ms > self.last_event_ms:
            self.last_event_ms = timestamp_ms
        if type_name in SUPPRESSING_TYPES:
            # A hidden item stops counting as positive evidence; it is not a negative rating.
            if self.items.pop(item_id, None) is not None or item_id not in self.suppressed:
                self.revision += 1  # hiding a hidden item again changes no id set
            self.suppressed.pop(item_id, None)
            self.suppressed[item_id] = None
            if len(self.suppressed) > MAX_SUPPRESSED:
                del self.suppressed[next(iter(self.suppressed))]
            return True
        if item_id in self.suppressed:
            return True  # hide is explicit: later views do not bring the item back
        if type_name == "rating" and value is not None:
            self._rate(item_id, float(value), timestamp_ms, history_cap)
        w = settings.event_strength(type_name, value)
        agg = self.items.get(item_id)
        if agg is None:
            self.items[item_id] = [w, timestamp_ms, timestamp_ms]
            self.revision += 1
        elif timestamp_ms >= agg[1]:
            agg[0] = agg[0] * settings.decay(timestamp_ms - agg[1]) + w
            agg[1] = timestamp_ms
        else:
            agg[0] += w * settings.decay(agg[1] - timestamp_ms)
            agg[2] = min(agg[2], timestamp_ms)
        if len(self.items) > history_cap + cap_slack(history_cap):
            self._cap(settings, history_cap)
        return True

    def _rate(self, item_id: str, value: float, timestamp_ms: int, cap: int) -> None:
        old = self.ratings.get(item_id)
        if old is not None and timestamp_ms < old[1]:
            return  # an older rating arriving late does not replace a newer one
        self.revision += 1
        self.ratings.pop(item_id, None)  # re-insert: the dict stays in rating-time order
        self.ratings[item_id] = [value, timestamp_ms]
        if len(self.ratings) > cap + cap_slack(cap):
            # drop the oldest ratings (by event time; ties keep insertion order)
            keep = sorted(self.ratings.items(), key=lambda kv: kv[1][1])[-cap:]
            self.ratings = dict(keep)

    def rating_arrays(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Rated item ids, their latest ratings (float64) and the ratings' times (int64)."""
        ids = list(self.ratings)
        vals = list(self.ratings.values())
        return (ids, np.fromiter(map(_FIRST, vals), np.float64, len(vals)),
                np.fromiter(map(_SECOND, vals), np.int64, len(vals)))

    def _cap(self, settings: ConfidenceSettings, cap: int) -> None:
        # Keep the `cap` strongest items at the user's latest event time (recent ones win ties).
        # Keys (strength decayed to last_event_ms, last_seen_ms) computed in one vectorised step;
        # a stable lexsort on the negated keys gives exactly the order of
        # sorted(..., reverse=True) (ties keep insertion order).
        # Times are read as int64 (3x cheaper than int -> float64 from Python ints); the ages
        # and keys are the same exact values either way (ms times are far below 2**53).
        vals = list(self.items.values())
        strength = np.fromiter(map(_FIRST, vals), np.float64, len(vals))
        last_seen = np.fromiter(map(_SECOND, vals), np.int64, len(vals))
        now = strength * settings.decay(self.last_event_ms - last_seen)
        order = np.lexsort((-last_seen, -now))
        ids, keep = list(self.items), order[:cap].tolist()
        self.items = dict(zip(map(ids.__getitem__, keep), map(vals.__getitem__, keep)))

    # -- reading ---------------------------------------------------------------------------
    def strengths_now(self, settings: ConfidenceSettings) -> tuple[list[str], np.ndarray]:
        """Item ids and strengths decayed to the user's latest event."""
        ids = list(self.items)
        if not ids:
            return ids, np.zeros(0)
        vals = list(self.items.values())
        strength = np.fromiter(map(_FIRST, vals), np.float64, len(vals))
        last_seen = np.fromiter(map(_SECOND, vals), np.int64, len(vals))
        return ids, strength * settings.decay(self.last_event_ms - last_seen)

    def confidences(self, settings: ConfidenceSettings) -> tuple[list[str], np.ndarray]:
        """Item ids and ``c = 1 + alpha * log1p(strength)`` for every positive item."""
        ids, s = self.strengths_now(settings)
        return ids, settings.confidence(s)

    # -- encoding --------------------------------------------------------------------------
    def to_proto(self) -> state_pb2.UserState:
        """The compact ``UserState`` (see state.proto): one step per column, not per element."""
        msg = state_pb2.UserState(
            tenant=self.tenant, user_id=self.user_id, last_event_ms=self.last_event_ms,
            input_partition=self.input_partition, applied_offset=self.applied_offset,
            event_count=self.event_count)
        _put_ids(msg, "recent_event_ids", self.recent_event_ids)
        _put_ids(msg, "suppressed_item_ids", self.suppressed)
        if self.items:
            vals = list(self.items.values())
            n = len(vals)
            _put_ids(msg, "item_ids", self.items)
            msg.strengths_f64 = np.fromiter(map(_FIRST, vals), _F64, n).tobytes()
            msg.last_seen_ms_i64 = np.fromiter(map(_SECOND, vals), _I64, n).tobytes()
            msg.first_seen_ms_i64 = np.fromiter(map(_THIRD, vals), _I64, n).tobytes()
        if self.ratings:
            vals = list(self.ratings.values())
            n = len(vals)
            _put_ids(msg, "rated_item_ids", self.ratings)
            msg.ratings_f64 = np.fromiter(map(_FIRST, vals), _F64, n).tobytes()
            msg.rating_ms_i64 = np.fromiter(map(_SECOND, vals), _I64, n).tobytes()
        if self.caps is not None and not self.caps.empty:
            msg.caps.CopyFrom(self.caps.to_proto())
        return msg

    def encode(self) -> bytes:
        return self.to_proto().SerializeToString()

    @classmethod
    def from_proto(cls, msg: state_pb2.UserState) -> UserHistory:
        if msg.strengths_f64:
            strengths = np.frombuffer(msg.strengths_f64, _F64).tolist()
            last = np.frombuffer(msg.last_seen_ms_i64, _I64).tolist()
            first = np.frombuffer(msg.first_seen_ms_i64, _I64).tolist()
        else:  # the earlier per-element columns
            strengths, last = msg.strengths, msg.item_last_seen_ms
            first = msg.item_first_seen_ms or msg.item_last_seen_ms
        if msg.ratings_f64:
            ratings = np.frombuffer(msg.ratings_f64, _F64).tolist()
            rating_ms = np.frombuffer(msg.rating_ms_i64, _I64).tolist()
        else:
            ratings, rating_ms = msg.ratings, msg.rating_ms
        return cls(
            tenant=msg.tenant, user_id=msg.user_id,
            items={i: [s, t, f] for i, s, t, f in zip(
                _get_ids(msg, "item_ids"), strengths, last, first)},
            suppressed=dict.fromkeys(_get_ids(msg, "suppressed_item_ids")),
            last_event_ms=msg.last_event_ms, input_partition=msg.input_partition,
            applied_offset=msg.applied_offset,
            recent_event_ids=_get_ids(msg, "recent_event_ids"), event_count=msg.event_count,
            ratings={i: [r, t] for i, r, t in zip(_get_ids(msg, "rated_item_ids"), ratings,
                                                  rating_ms)},
            caps=ImpressionCaps.from_proto(msg.caps) if msg.HasField("caps") else None)

    @classmethod
    def decode(cls, data: bytes) -> UserHistory:
        msg = state_pb2.UserState()
        msg.ParseFromString(data)
        return cls.from_proto(msg)


_F64, _I64 = np.dtype("<f8"), np.dtype("<i8")  # little-endian on any host
_THIRD = itemgetter(2)


def _put_ids(msg: state_pb2.UserState, name: str, ids) -> None:
    """Set the id list ``name`` as one NUL-joined string (``<name>_nul``); an id holding a NUL
    itself (ids are free-form) falls back to the per-element field ``name``."""
    if not ids:
        return
    joined = "\x00".join(ids)
    if joined.count("\x00") == len(ids) - 1:
        setattr(msg, name + "_nul", joined.encode())
    else:
        getattr(msg, name).extend(ids)


def _get_ids(msg: state_pb2.UserState, name: str) -> list[str]:
    """The id list ``name`` as ``_put_ids`` stored it (or as the earlier encoding did)."""
    joined = getattr(msg, name + "_nul")
    # ids are never empty (validated), so an empty string is an empty list
    return joined.decode().split("\x00") if joined else list(getattr(msg, name))
