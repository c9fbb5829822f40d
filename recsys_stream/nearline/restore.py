"""Taking over interaction partitions: local RocksDB if current, else the state changelog.

The recovery protocol (scale-out and crash safety):

- Every changelog record of a user goes to the changelog partition with the *number of the input
  partition* its events came from (explicit ``partition=``; the key partitioner of whoever
  produced ``interactions`` may differ from ours). Changelog partition ``p`` therefore holds the
  state of every user of input partition ``p``, and nothing else.
- After a micro-batch's outputs are acknowledged and its state is committed, the worker appends
  to changelog partition ``p`` an *offset marker* (key ``contracts.keys.offset_marker_key(p)``,
  value the next input offset, decimal) for every input partition ``p`` of the batch. Being
  produced only after the acknowledgement, a marker never overtakes the outputs it certifies: the
  last marker ``M`` of ``p`` says that the changelog holds every user's state at the input prefix
  ``[0, M)``, and that the profiles of that prefix were published. States past ``M`` (a batch
  whose worker died before its marker) may also be there; each carries its ``applied_offset``.
- A worker that takes partition ``p`` reads changelog partition ``p`` to its end (the partition
  EOF event, not the high watermark, which the embedded broker reports per record batch). With
  ``L`` its local stored offset for ``p``: if ``L >= M`` the local snapshot is current (it is the
  exact state at the prefix ``[0, L)``, and replaying from ``L`` recomputes anything the
  changelog holds beyond it). Otherwise the partition's users and ``M`` are written to RocksDB in
  one ``WriteBatch`` and the worker resumes at ``M``. Events of users restored past ``M`` are
  skipped by the per-user offset check on replay, so those users (whose profiles may be missing
  from the dead worker's last batch) are re-published at once.
- Reading a whole partition costs as much as the partition's users; a restart of a worker
  whose state is current need not pay it. The last ``_TAIL`` records are read first: a marker
  follows every batch, so the newest one is nearly always there, and the last marker of a tail
  read to the end is the partition's last marker. Only without one, or when it shows the local
  state stale, is the whole partition read.

Markers only move forward: a worker resumes at ``max(L, M)`` and every marker it writes is at or
past that point.

Frequency caps (``contracts.caps``): a worker of a tenant with caps also consumes
``recommendations``, whose partition ``p`` holds the answers of input partition ``p``'s users.
Its next offsets are committed in the same ``WriteBatch`` and get their own marker on changelog
partition ``p`` (``offset_marker_key(p, "recommendations")``), written alongside. The local
state is current only if it is at or past *both* markers; a restore writes both offsets with
the users. Answers applied past the marker by a dead worker are in the restored states and are
recognised by their ``recommendation_id`` when replayed (``ImpressionCaps.served``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from recsys_stream.config import Config
from recsys_stream.contracts.keys import is_offset_marker, marker_source
from recsys_stream.contracts.user_state import UserHistory
from recsys_stream.kafka import read_to_end
from recsys_stream.nearline.state import StateStore

log = logging.getLogger(__name__)
_TAIL = 1000  # changelog records read from the end first, to find the last offset marker


@dataclass
class ChangelogPartition:
    """What one changelog partition says: the latest value per user key and the last marker."""

    states: dict[bytes, bytes | None] = field(default_factory=dict)
    marker: int | None = None  # of interactions
    markers: dict[str, int] = field(default_factory=dict)  # of a second input ("recommendations")


@dataclass
class Resumed:
    """Where to resume each taken partition, and the restored users to re-publish."""

    offsets: dict[int, int] = field(default_factory=dict)
    republish: dict[bytes, UserHistory] = field(default_factory=dict)
    restored: dict[int, int] = field(default_factory=dict)  # partition -> users restored
    served_offsets: dict[int, int] = field(default_factory=dict)  # recommendations (caps)


def read_changelog_partitions(cfg: Config, partitions: list[int], timeout_s: float = 120.0,
                              tail: int | None = None) -> dict[int, ChangelogPartition]:
    """Read the given partitions of the state changelog to their end (``kafka.read_to_end``)."""
    out = {p: ChangelogPartition() for p in partitions}
    for m in read_to_end(cfg, cfg.topics.state_changelog, partitions, timeout_s, tail):
        part, key = out[m.partition()], m.key()
        if is_offset_marker(key):
            source = marker_source(key)  # compacted: the last one wins
            if source:
                part.markers[source] = int(m.value())
            else:
                part.marker = int(m.value())
        elif key is not None:
            part.states[key] = m.value()
    return out


def resume(cfg: Config, store: StateStore, partitions: list[int],
           served: str | None = None) -> Resumed:
    """Decide, per partition, between the local snapshot and the changelog (module docstring).

    ``served``: the recommendations topic when the worker consumes it (frequency caps); its
    resumed offsets are in ``Resumed.served_offsets``."""
    topic = cfg.topics.interactions
    local = store.offsets(topic)
    local_s = store.offsets(served) if served else {}
    source = "recommendations" if served else ""

    def current(p: int, part: ChangelogPartition) -> bool:
        """The local snapshot is at or past the partition's marker(s)."""
        if p not in local or local[p] < (part.marker or 0):
            return False
        return not served or local_s.get(p, 0) >= part.markers.get(source, 0)
    t0 = time.monotonic()
    out = Resumed()
    # Cheap first: a marker follows every batch, so the newest one is nearly always among the
    # last records; the last marker of the tail is the partition's last marker.
    known = [p for p in partitions if p in local]
    near_end = read_changelog_partitions(cfg, known, tail=_TAIL) if known else {}
    for p in known:
        # without its caps marker in the tail the whole partition is read (it may be older)
        if near_end[p].marker is not None and (not served or source in near_end[p].markers) \
                and current(p, near_end[p]):
            out.offsets[p] = local[p]
            if served:
                out.served_offsets[p] = local_s.get(p, 0)
    rest = [p for p in partitions if p not in out.offsets]
    logged = read_changelog_partitions(cfg, rest) if rest else {}
    for p in rest:
        marker = logged[p].marker or 0
        if current(p, logged[p]):
            out.offsets[p] = local[p]
            if served:
                out.served_offsets[p] = local_s.get(p, 0)
            continue
        states = logged[p].states
        also = {}
        if served:
            out.served_offsets[p] = also[served] = logged[p].markers.get(source, 0)
        store.restore(topic, p, states, marker, also)
        out.offsets[p] = marker
        out.restored[p] = len(states)
        for key, value in states.items():
            if value is None:
                continue
            h = UserHistory.decode(value)
            if h.input_partition == p and h.applied_offset >= marker:
                out.republish[key] = h
    log.info("took partitions %s in %.1fs: resuming at %s; restored from the changelog: %s; "
             "%d users past the marker re-published", partitions, time.monotonic() - t0,
             dict(sorted(out.offsets.items())), out.restored or "none", len(out.republish))
    return out
