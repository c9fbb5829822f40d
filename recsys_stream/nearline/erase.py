"""Erasing a user in the nearline worker (the right to be forgotten; DESIGN.md "Security and
erasure").

An erase record (``recsys.v1.Interaction`` of type ``ERASE``) travels on ``interactions`` on the
user's own key, so it is ordered after every earlier event of the user in their partition. The
worker treats it as one more event of the user, with the same exactly-once protocol:

- in the micro-batch (:meth:`Erasures.apply`, called once per batch before the events are
  applied): the user's state is dropped from memory, a tombstone goes to ``profiles`` (the server
  drops the profile and stops serving the user's batch vector), an erase record goes to
  ``item-interactions`` for every item of the user's history and every implicit algorithm of the
  tenant (the item stage drops the user's entry and re-solves the item), and the user's events
  of the batch *after* the erase record start a new user (an empty history whose applied offset is
  the erase record's). Events of the batch before it are never applied;
- at the commit (:meth:`Erasures.tombstones` and :meth:`Erasures.take` at its phase 1,
  :meth:`Erasures.committed` after its phase 2 wrote the store's ``WriteBatch``): a tombstone on
  the state changelog (to the partition numbered like the input partition, as every state
  record) for each erased user not re-created since, then
  the delete of the user's RocksDB state in the same ``WriteBatch`` as the input offsets, then a
  compaction of the user's key range so that the bytes of the deleted state leave the files too.

Why it is exactly once: an erase record at or below the applied offset of the user's stored
state (same partition) is a replay behind a newer user and is skipped. Otherwise the record
deletes whatever state there is, so replaying it, or replaying the user's earlier events and then
it (a restore from a changelog whose tombstone is there but whose offset marker is older), ends
in the same state: no user, or a new user built from the events after the erase. Replayed
outputs are the same records again (compacted topics keep the last: the tombstone).
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING

from confluent_kafka import Message

from recsys_stream.contracts.events import ERASE, Event
from recsys_stream.contracts.keys import make_key
from recsys_stream.contracts.pb import items_pb2
from recsys_stream.contracts.user_state import UserHistory
from recsys_stream.nearline.metrics import EVENTS

if TYPE_CHECKING:  # the worker owns this object; no import cycle at run time
    from recsys_stream.nearline.worker import Worker

log = logging.getLogger(__name__)


class Erasures:
    """The erasures of one worker since its last commit (module docstring)."""

    def __init__(self, worker: Worker) -> None:
        # weak: a stopped worker must be freed by reference counting alone (nearline/app.py
        # runs the cyclic collector rarely)
        self._worker = weakref.ref(worker)
        # erased key -> (input partition, offset of the erase record), since the commit
        self.pending: dict[bytes, tuple[int, int]] = {}

    @property
    def w(self) -> Worker:
        return self._worker()

    def apply(self, by_user: dict[bytes, list[tuple[Event, Message]]]) -> None:
        """Apply the batch's erase records; ``by_user`` keeps only the events to apply next."""
        w = self.w
        for key, events in by_user.items():
            if self.is_erased(key):  # erased in an earlier batch: these events start anew
                self._fresh(key, events[0][0], *self.pending[key])
        keys = [k for k, evs in by_user.items() if any(ev.type == ERASE for ev, _ in evs)]
        if not keys:
            return
        # the newest state: uncommitted in memory, else none if erased since the commit, else
        # a commit in flight's, else the store's
        states = w._states(keys)
        replayed = 0
        for key in keys:
            events = by_user[key]
            h = states.get(key)
            last = None
            for i, (ev, m) in enumerate(events):
                if ev.type != ERASE:
                    continue
                if h is not None and m.partition() == h.input_partition \
                        and m.offset() <= h.applied_offset:
                    replayed += 1  # the state already follows this erasure
                    continue
                last = i
            if last is None:
                by_user[key] = [(ev, m) for ev, m in events if ev.type != ERASE]
                if not by_user[key]:
                    del by_user[key]
                continue
            erase, m = events[last]
            before = {ev.item_id for ev, _ in events[:last] if ev.type != ERASE}
            self._erase(key, erase, m, h, before)
            after = [(ev, mm) for ev, mm in events[last + 1:] if ev.type != ERASE]
            if after:  # a new user from the erase record on
                self._fresh(key, erase, m.partition(), m.offset())
                by_user[key] = after
            else:
                del by_user[key]
        if replayed:
            EVENTS.labels("replayed").inc(replayed)

    def _erase(self, key: bytes, erase: Event, m: Message, h: UserHistory | None,
               batch_items: set[str]) -> None:
        w = self.w
        old = w._dirty.pop(key, None)
        if old is not None:
            w._dirty_items -= len(old.items) + 1
        w.store.forget([key])
        self.pending[key] = (m.partition(), m.offset())
        w._produce(w.cfg.topics.profiles, key, None)
        # every item the item stage may hold an entry of this user for: the history, the
        # suppressed (hidden after a first touch) and rated items, and this batch's events
        items = set(batch_items)
        if h is not None:
            items.update(h.items, h.suppressed, h.ratings)
        items.discard("")
        algorithms = [a for a, model in w.models.models(erase.tenant).items()
                      if model.explicit is None]  # mf emits no item records
        for item in sorted(items):
            for algorithm in algorithms:
                rec = items_pb2.ItemInteraction(tenant=erase.tenant, item_id=item,
                                                user_id=erase.user_id, algorithm=algorithm,
                                                event_ms=erase.timestamp_ms, erase=True)
                w._produce(w.cfg.topics.item_interactions, make_key(erase.tenant, item),
                           rec.SerializeToString())
        EVENTS.labels("erased").inc()
        log.info("erased a user of tenant %s (input partition %d, offset %d; %d items "
                 "forwarded to the item stage)", erase.tenant, m.partition(), m.offset(),
                 len(items) * len(algorithms))

    def _fresh(self, key: bytes, ev: Event, partition: int, offset: int) -> None:
        """An empty history for the user's events after an erasure (in the worker's dirty
        states, so that the store's stale state is never read before the commit)."""
        fresh = UserHistory(ev.tenant, ev.user_id)
        fresh.applied_offset, fresh.input_partition = offset, partition
        self.w._dirty[key] = fresh
        self.w._dirty_items += 1

    def tombstones(self) -> list[bytes]:
        """Before the commit's flush: a changelog tombstone for each erased user that no later
        event re-created (a re-created user's state record replaces the old one instead).
        Returns the keys whose RocksDB state the commit deletes."""
        w = self.w
        gone = [k for k in self.pending if k not in w._dirty]
        for key in gone:
            w._produce(w.cfg.topics.state_changelog, key, None, self.pending[key][0])
        return gone

    def take(self) -> dict[bytes, tuple[int, int]]:
        """At the commit's phase 1: the erasures it carries; none are pending after it."""
        taken, self.pending = self.pending, {}
        return taken

    def committed(self, keys: list[bytes]) -> None:
        """After the store's commit that carried the erasures of ``keys`` (``take``): compact
        their range out of the files."""
        if keys:
            self.w.store.purge(keys)

    def reset(self) -> None:
        """Nothing of the uncommitted erasures survives (the input replays)."""
        self.pending.clear()

    def is_erased(self, key: bytes) -> bool:
        """Erased since the commit and not re-created: the store's state is stale."""
        return key in self.pending and key not in self.w._dirty

