"""Frequency caps: which items a user was shown too often without responding (pure logic).

Per tenant ``frequency_cap = { impressions = N, window_hours = H }``. An item shown to a user
``N`` times within a sliding window of ``H`` hours, with no positive event of theirs on it since,
is *capped* until fewer than ``N`` of those impressions remain in the window: with the
impressions since the latest positive at times ``t_1 <= ... <= t_n`` (``n >= N``), it is capped
until ``t_(n-N+1) + W`` (the oldest of the ``N`` latest, plus the window). So no window of length
``W`` ever holds more than ``N`` impressions of an item the user did not respond to, provided
the server learns of the cap before it answers again.

What counts as shown (no double counting): the facts are kept per answer (``Shown``, keyed by
``recommendation_id``), and an item counts once per answer that showed it.

- A served answer (``ServedSlate`` on ``recommendations``) shows all its items at ``served_ms``,
- unless the client reports what it displayed: from the first ``IMPRESSION`` event carrying
  that answer's id on, the answer shows only the reported items (each once, at the time the
  first report of it says), whether the answer was read before or after its reports.
- An ``IMPRESSION`` without an id shows its item once on its own (keyed by its event id, else
  its input offset).

A positive event (every event the user history applies that does not suppress: a view, a
click, a rating, a purchase) on an item at time ``t`` clears the item's impressions at or
before ``t``. Everything here is a function of the *set* of facts applied, never of their
order, because the two input topics interleave differently on a replay: a click read before the
answer it came from still clears it, and an answer replayed twice is the same answer.

The state keeps only what the window can still need: facts older than the user's latest time
minus ``W`` are dropped (they can never count again, since times only move forward), and at
most ``MAX_SHOWN`` answers are kept (the oldest dropped first).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recsys_stream.contracts.pb import state_pb2

MAX_SHOWN = 512  # answers kept per user within the window (the oldest dropped first)
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class CapRule:
    """A tenant's cap: ``impressions`` (0 = off) within ``window_ms``."""

    impressions: int
    window_ms: int

    @property
    def on(self) -> bool:
        return self.impressions > 0 and self.window_ms > 0


@dataclass
class ImpressionCaps:
    """One user's impressions within the window and latest positives (module docstring).

    ``shown`` maps an answer id to ``[shown_ms, reported, items]`` where ``items`` maps an item
    to the time it was shown (the answer's time, or its first report's).
    """

    shown: dict[str, list] = field(default_factory=dict)
    positive: dict[str, int] = field(default_factory=dict)  # item -> latest positive ms
    latest_ms: int = 0
    # Not stored: item -> {answer id: time}, built on first use and kept in step, so that the
    # worker's check of a fact's items costs per item, not per answer the user holds.
    _index: dict | None = field(default=None, compare=False, repr=False)

    def _idx(self) -> dict[str, dict[str, int]]:
        if self._index is None:
            idx: dict[str, dict[str, int]] = {}
            for rid, (_, _, items) in self.shown.items():
                for item, t in items.items():
                    idx.setdefault(item, {})[rid] = t
            self._index = idx
        return self._index

    def _unindex(self, rid: str) -> None:
        if self._index is not None and rid in self.shown:
            for item in self.shown[rid][2]:
                d = self._index.get(item)
                if d is not None:
                    d.pop(rid, None)
                    if not d:
                        del self._index[item]

    def _reindex(self, rid: str) -> None:
        if self._index is not None:
            for item, t in self.shown[rid][2].items():
                self._index.setdefault(item, {})[rid] = t

    # -- facts ------------------------------------------------------------------------------
    def served(self, rec_id: str, served_ms: int, items, rule: CapRule) -> None:
        """An answer served ``items`` at ``served_ms``; nothing if its id is known already
        (a replayed answer, or one whose displayed items the client reported)."""
        if rec_id in self.shown or not self._advance(served_ms, rule):
            return
        self.shown[rec_id] = [served_ms, False, dict.fromkeys(items, served_ms)]
        self._reindex(rec_id)
        self._bound()

    def reported(self, rec_id: str, item_id: str, t_ms: int, rule: CapRule) -> None:
        """The client displayed ``item_id`` of answer ``rec_id`` (an IMPRESSION event)."""
        if not self._advance(t_ms, rule):
            return
        s = self.shown.get(rec_id)
        if s is None or not s[1]:  # the reports replace what the answer served
            self._unindex(rec_id)
            s = self.shown[rec_id] = [t_ms, True, {}]
        items = s[2]
        if item_id not in items or t_ms < items[item_id]:
            items[item_id] = t_ms  # the earliest report of an item stands, in any order
            if self._index is not None:
                self._index.setdefault(item_id, {})[rec_id] = t_ms
        s[0] = min(s[0], t_ms)
        self._bound()

    def positive_event(self, item_id: str, t_ms: int, rule: CapRule) -> None:
        """A positive event on ``item_id`` at ``t_ms``: its impressions until then stop
        counting."""
        if not self._advance(t_ms, rule):
            return
        if t_ms > self.positive.get(item_id, -1):
            self.positive[item_id] = t_ms

    def _advance(self, t_ms: int, rule: CapRule) -> bool:
        """Move the latest time to ``t_ms`` and drop what left the window; False when
        ``t_ms`` itself is out of it (a fact that can never count)."""
        if t_ms > self.latest_ms:
            self.latest_ms = t_ms
            horizon = t_ms - rule.window_ms
            if any(s[0] < horizon for s in self.shown.values()):
                for rid in [r for r, s in self.shown.items() if s[0] < horizon]:
                    items = self.shown[rid][2]
                    self._unindex(rid)
                    # a reported answer may hold items shown later than its first report
                    kept = {i: t for i, t in items.items() if t >= horizon}
                    if kept:
                        self.shown[rid][2], self.shown[rid][0] = kept, min(kept.values())
                        self._reindex(rid)
                    else:
                        del self.shown[rid]
            self.positive = {i: t for i, t in self.positive.items() if t >= horizon}
        return t_ms >= self.latest_ms - rule.window_ms

    def _bound(self) -> None:
        while len(self.shown) > MAX_SHOWN:  # one over at a time: a scan, not a sort
            rid = min(self.shown, key=lambda r: self.shown[r][0])
            self._unindex(rid)
            del self.shown[rid]

    # -- the caps ---------------------------------------------------------------------------
    def impressions(self, only=None) -> dict[str, list[int]]:
        """Per item (of ``only``, default all), the times it was shown since its latest
        positive event, ascending."""
        out: dict[str, list[int]] = {}
        pos = self.positive
        if only is not None:
            idx = self._idx()
            for item in only:
                p = pos.get(item, -1)
                times = [t for t in idx.get(item, {}).values() if t > p]
                if times:
                    out[item] = sorted(times)
            return out
        for _, _, items in self.shown.values():
            for item, t in items.items():
                if t > pos.get(item, -1):
                    out.setdefault(item, []).append(t)
        for times in out.values():
            times.sort()
        return out

    def capped(self, rule: CapRule, now_ms: int | None = None, only=None) -> dict[str, int]:
        """Capped items (of ``only``, default all) and until when (ms); only caps still
        running at ``now_ms`` (default: the latest time seen)."""
        if not rule.on:
            return {}
        now = self.latest_ms if now_ms is None else now_ms
        n = rule.impressions
        out = {}
        for item, times in self.impressions(only).items():
            if len(times) >= n:
                until = times[-n] + rule.window_ms
                if until > now:
                    out[item] = until
        return out

    @property
    def empty(self) -> bool:
        return not self.shown and not self.positive

    # -- encoding (inside UserState) --------------------------------------------------------
    def to_proto(self) -> state_pb2.ImpressionCaps:
        msg = state_pb2.ImpressionCaps(latest_ms=self.latest_ms,
                                       positive_item_ids=list(self.positive),
                                       positive_ms=list(self.positive.values()))
        for rid, (t, reported, items) in self.shown.items():
            s = msg.shown.add(recommendation_id=rid, shown_ms=t, reported=reported,
                              item_ids=list(items))
            if reported:  # reported items carry their own times, after the ids
                s.item_ms.extend(items.values())
        return msg

    @classmethod
    def from_proto(cls, msg: state_pb2.ImpressionCaps) -> ImpressionCaps:
        shown = {}
        for s in msg.shown:
            times = list(s.item_ms) if s.reported else [s.shown_ms] * len(s.item_ids)
            shown[s.recommendation_id] = [s.shown_ms, s.reported,
                                          dict(zip(s.item_ids, times))]
        return cls(shown, dict(zip(msg.positive_item_ids, msg.positive_ms)), msg.latest_ms)
