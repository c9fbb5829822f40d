"""Attribution of a user's positive events to the answers they were served (pure logic).

Per user (the key both topics share, so one stage process sees both streams of a user), the
state holds the answers served within the attribution window and the positive events that
named an answer not seen yet. The rules:

- A served answer (``ServedSlate``) counts one impression per item, at its position, under its
  dimensions (algorithm, version, source, experiment, arm). Once the client reports an item it
  displayed (an ``IMPRESSION`` event with the answer's id), the answer's impressions are what
  was reported instead: the served ones are taken back and each reported item counts once.
- A positive event of a click type or a conversion type is attributed
  * by its ``recommendation_id`` to that answer, if the answer holds the item;
  * else (no id) to the user's latest answer served at or before the event, within the
    tenant's ``attribution_window_s``, that holds the item;
  and counts once per (answer, item, kind): a second click on the same slot is not a second
  click-through. An event with no answer to join yet waits (``pending``) until one arrives:
  the server logs answers off the request path, and the two topics are consumed side by side,
  so a click can be read before the answer it came from.
- Answers older than the window (by the user's latest event or answer time) are dropped, and so
  are pending events that no answer claimed (organic ones); both lists are bounded.

So the counts do not depend on how the two topics' records interleave, with one exception:
an event without an id that two answers of the window could claim goes to the latest one read
before it, or to the first one read after it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from recsys_stream.contracts.pb import slates_pb2

MAX_SLATES = 64    # answers kept per user (the latest)
MAX_PENDING = 64   # events waiting for their answer, per user

# counter key: hour served (ms // 3,600,000), tenant, algorithm, version, source, experiment,
# arm, position, method
Dims = tuple[int, str, str, int, str, str, str, int, str]
HOUR_MS = 3_600_000
KINDS = ("impressions", "clicks", "conversions")


@dataclass
class Slate:
    rec_id: str
    served_ms: int
    dims: list            # Dims without the position: hour, tenant .. arm, method
    items: dict[str, int]  # item -> position
    done: list = field(default_factory=list)  # "kind\x1fitem" already counted
    shown: list = field(default_factory=list)  # items the client reported displaying

    def dims_at(self, position: int) -> Dims:
        h, t, a, v, s, e, arm, method = self.dims
        return (int(h), t, a, int(v), s, e, arm, position, method)


@dataclass
class UserAttribution:
    """One user's answers within the window and events waiting for theirs."""

    slates: list[Slate] = field(default_factory=list)
    pending: list[list] = field(default_factory=list)  # [rec_id, item, kind, t_ms]
    latest_ms: int = 0
    # per "tenant \x1f experiment \x1f arm": the user's impressions and clicks in it so far
    # (the per-user test's unit; ``user_moments``)
    totals: dict[str, list[int]] = field(default_factory=dict)

    # -- encoding (RocksDB value) ----------------------------------------------------------
    def encode(self) -> bytes:
        return json.dumps({"s": [[s.rec_id, s.served_ms, s.dims, s.items, s.done, s.shown]
                                 for s in self.slates],
                           "p": self.pending, "t": self.latest_ms, "u": self.totals},
                          separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> UserAttribution:
        if not raw:
            return cls()
        d = json.loads(raw)
        return cls([Slate(*s) for s in d["s"]], d["p"], d["t"], d.get("u", {}))

    # -- the two inputs --------------------------------------------------------------------
    def served(self, slate: slates_pb2.ServedSlate, window_ms: int, counts: Counter) -> None:
        """An answer was served: its impressions, then the events that were waiting for it."""
        s = Slate(slate.recommendation_id, slate.served_ms,
                  [slate.served_ms // HOUR_MS, slate.tenant, slate.algorithm,
                   slate.model_version, slate.source, slate.experiment, slate.arm,
                   slate.method],
                  {it.item_id: it.position for it in slate.items})
        for item, position in s.items.items():
            counts[(s.dims_at(position), "impressions")] += 1
        self.slates.append(s)
        self.latest_ms = max(self.latest_ms, slate.served_ms)
        waiting, self.pending = self.pending, []
        for rec_id, item, kind, t in waiting:
            if kind == "shown":
                if rec_id == s.rec_id:
                    self._show(s, item, counts)
                else:
                    self.pending.append([rec_id, item, kind, t])
            elif (rec_id == s.rec_id and item in s.items) or (
                    not rec_id and self._eligible(s, item, t, window_ms)):
                self._count(s, item, kind, counts)
            elif rec_id != s.rec_id:
                self.pending.append([rec_id, item, kind, t])
        self._expire(window_ms)

    def acted(self, rec_id: str, item: str, kind: str, t_ms: int, window_ms: int,
              counts: Counter) -> str:
        """A positive event: "attributed", "pending" (no answer seen yet that it joins; it
        waits for one until the window has passed) or "organic" (its answer does not hold the
        item, or that slot was counted already)."""
        self.latest_ms = max(self.latest_ms, t_ms)
        if rec_id:
            s = next((s for s in self.slates if s.rec_id == rec_id), None)
        else:  # the latest answer served before it, within the window, that holds the item
            s = next((s for s in reversed(self.slates)
                      if self._eligible(s, item, t_ms, window_ms)), None)
        if s is None:
            self.pending.append([rec_id, item, kind, t_ms])
            self._expire(window_ms)
            return "pending"
        return "attributed" if self._count(s, item, kind, counts) else "organic"

    def shown(self, rec_id: str, item: str, t_ms: int, window_ms: int, counts: Counter) -> None:
        """The client displayed ``item`` of answer ``rec_id`` (an IMPRESSION event)."""
        self.latest_ms = max(self.latest_ms, t_ms)
        s = next((s for s in self.slates if s.rec_id == rec_id), None)
        if s is None:
            self.pending.append([rec_id, item, "shown", t_ms])
            self._expire(window_ms)
        else:
            self._show(s, item, counts)

    @staticmethod
    def _show(s: Slate, item: str, counts: Counter) -> None:
        if item not in s.items or item in s.shown:
            return
        if not s.shown:  # the first report: the served-as-shown count is taken back
            for position in s.items.values():
                counts[(s.dims_at(position), "impressions")] -= 1
        s.shown.append(item)
        counts[(s.dims_at(s.items[item]), "impressions")] += 1

    @staticmethod
    def _eligible(s: Slate, item: str, t_ms: int, window_ms: int) -> bool:
        return s.served_ms <= t_ms and t_ms - s.served_ms <= window_ms and item in s.items

    def _count(self, s: Slate, item: str, kind: str, counts: Counter) -> bool:
        position = s.items.get(item)
        tag = f"{kind}\x1f{item}"
        if position is None or tag in s.done:
            return False
        s.done.append(tag)
        counts[(s.dims_at(position), kind)] += 1
        return True

    def _expire(self, window_ms: int) -> None:
        horizon = self.latest_ms - window_ms
        self.slates = [s for s in self.slates if s.served_ms >= horizon][-MAX_SLATES:]
        self.pending = [p for p in self.pending if p[3] >= horizon][-MAX_PENDING:]

    @property
    def empty(self) -> bool:
        return not self.slates and not self.pending and not self.totals

    def user_moments(self, counts: Counter, moments: Counter) -> None:
        """Fold one record's counter deltas (``counts``) into the user's experiment totals and
        add the per-arm moment deltas to ``moments``: keyed ``(tenant, experiment, arm, m)``
        for ``m`` in ``MOMENTS``. A user's (i, c) becoming (i + di, c + dc) adds
        ``2 i di + di**2`` to the sum of i**2 (and alike), so the sums stay exact per user
        while only per-arm numbers are kept; ``n`` counts the user once, on their first."""
        step: dict[str, list[int]] = {}
        for (dims, kind), n in counts.items():
            if n and dims[5] and kind in ("impressions", "clicks"):
                d = step.setdefault(f"{dims[1]}\x1f{dims[5]}\x1f{dims[6]}", [0, 0])
                d[kind == "clicks"] += n
        for key, (di, dc) in step.items():
            if not di and not dc:
                continue
            tot = self.totals.get(key)
            tenant, exp, arm = key.split("\x1f")
            if tot is None:
                tot = self.totals[key] = [0, 0]
                moments[(tenant, exp, arm, "n")] += 1
            i, c = tot
            for m, v in (("i", di), ("c", dc), ("ii", 2 * i * di + di * di),
                         ("cc", 2 * c * dc + dc * dc), ("ic", i * dc + c * di + di * dc)):
                moments[(tenant, exp, arm, m)] += v
            tot[0], tot[1] = i + di, c + dc


MOMENTS = ("n", "i", "c", "ii", "cc", "ic")


def encode_counts(c: tuple[int, int, int]) -> bytes:
    return ",".join(map(str, c)).encode()


def decode_counts(raw: bytes | None) -> list[int]:
    return [int(x) for x in raw.split(b",")] if raw else [0, 0, 0]


def dims_key(d: Dims) -> bytes:
    return "\x1f".join(map(str, d)).encode()


def dims_of(key: bytes) -> Dims:
    h, t, a, v, s, e, arm, pos, method = key.decode().split("\x1f")
    return (int(h), t, a, int(v), s, e, arm, int(pos), method)
