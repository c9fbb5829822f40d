"""The worker's side of frequency caps: served answers and impressions into the user's state.

A worker of a tenant with ``frequency_cap`` on also consumes ``recommendations`` (same key and
partition number as the user's interactions, so the user's state is local; DESIGN.md). Its
records join the micro-batch as :class:`Served` entries beside the user's events, and
``apply`` folds both into ``UserHistory.caps`` (the rules are in :mod:`recsys_stream.contracts.caps`).
The caps travel in the state (RocksDB and the changelog) and so are committed exactly once with
the input offsets of both topics; a change of the capped set bumps the history's revision, so
the profile, which carries the capped items and their expiry, is published again.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from recsys_stream.config import Config
from recsys_stream.contracts.caps import CapRule, ImpressionCaps
from recsys_stream.contracts.confidence import SUPPRESSING_TYPES
from recsys_stream.contracts.events import ERASE, IMPRESSION, recommendation_id_of
from recsys_stream.contracts.keys import make_key
from recsys_stream.contracts.pb import slates_pb2
from recsys_stream.contracts.user_state import UserHistory

SERVED = "served"  # the pseudo event type of an answer in a batch


@dataclass(frozen=True, slots=True)
class Served:
    """An answer of ``recommendations`` in a worker's batch (shaped like ``events.Event``)."""

    tenant: str
    user_id: str
    recommendation_id: str
    items: tuple[str, ...]
    timestamp_ms: int
    type: str = SERVED
    event_id: str = ""
    item_id: str = ""

    @property
    def key(self) -> bytes:
        return make_key(self.tenant, self.user_id)


def rules(cfg: Config) -> dict[str, CapRule]:
    """The tenants with caps on, and their rules."""
    return {t: tc.frequency_cap.rule for t, tc in cfg.tenants.items()
            if tc.frequency_cap.rule.on}


def decode_served(key: bytes | None, value: bytes | None,
                  caps: dict[str, CapRule]) -> Served | None:
    """The answer of a ``recommendations`` record, or None when it is not one to count: a
    tenant without caps, an anonymous answer (keyed by a session, ``anonymous``, or by its own
    id: no ``user_id``), or a record
    that does not decode (the server writes these: skipped, never dead-lettered)."""
    try:
        slate = slates_pb2.ServedSlate.FromString(value or b"")
    except DecodeError:
        return None
    if slate.tenant not in caps or not slate.user_id or slate.anonymous \
            or not slate.recommendation_id \
            or key != make_key(slate.tenant, slate.user_id):
        return None
    return Served(slate.tenant, slate.user_id, slate.recommendation_id,
                  tuple(it.item_id for it in slate.items), slate.served_ms)


def apply(h: UserHistory, ev, raw: bytes | None, offset: int, rule: CapRule) -> None:
    """Fold one answer or event of the user into ``h.caps``; bumps ``h.revision`` when the
    set of capped items changes (the profile must be published again).

    ``raw``: the event's record value (its ``recommendation_id``); ``offset``: its input offset
    (the id of an impression reported without an answer's id)."""
    if ev.type == ERASE or ev.type in SUPPRESSING_TYPES:
        return  # a hidden item is suppressed anyway; not a positive
    caps = h.caps if h.caps is not None else ImpressionCaps()
    # only the fact's items can become capped or lifted (a cap running out needs no profile:
    # the server compares with now), so only theirs are recomputed: a heavy user holds
    # hundreds of answers
    if ev.type == SERVED:
        affected = set(ev.items)
    elif ev.type == IMPRESSION:
        rec_id = recommendation_id_of(raw) if raw else ""
        s = caps.shown.get(rec_id) if rec_id else None
        affected = {ev.item_id, *(s[2] if s is not None else ())}  # a served answer replaced
    else:
        affected = {ev.item_id}
    before = caps.capped(rule, only=affected)
    if ev.type == SERVED:
        caps.served(ev.recommendation_id, ev.timestamp_ms, ev.items, rule)
    elif ev.type == IMPRESSION:
        # without an answer's id, the event's own id (a re-sent one counts once), else its offset
        caps.reported(rec_id or f"@{ev.event_id or offset}", ev.item_id, ev.timestamp_ms, rule)
    else:
        caps.positive_event(ev.item_id, ev.timestamp_ms, rule)
    if h.caps is None and caps.empty:
        return
    h.caps = caps
    if caps.capped(rule, only=affected).keys() != before.keys():
        h.revision += 1
