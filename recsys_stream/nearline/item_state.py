"""The item fold-in stage's state: per new item its first users' latest vectors, and offsets.

Keys: ``b"i" + tenant\\x1falgorithm\\x1fitem`` -> ``recsys.v1.ItemFoldInState`` bytes and
``b"o" + topic\\x1fpartition`` -> next offset (decimal), written together in one ``WriteBatch``
(as the worker's ``StateStore``), so the stored offsets and the stored items always describe
the same prefix of ``item-interactions``.

An item's record applies ``ItemInteraction`` records in offset order (an item's records all
live in one partition, its key's):

- a record at or below the item's applied offset is a replay and changes nothing;
- a record of an older model version than the item's is stale and changes nothing;
- a newer version starts the item afresh (its users' vectors of the old version are useless);
- an erase record (``erase``: the worker forwards a user's erasure) drops the user's entry;
- a young item (``contracts.young_slice``) is seeded by the stage with its training users
  (``seed``) before the first record of a version that knows it applies;
- otherwise the user's entry is replaced by the record's (latest confidence and vector), or the
  user is added while the item has fewer than ``max_item_users`` users (later users are counted
  only by the next retrain: the bound on the item's state and on the cost of its re-solves).

The state is therefore a function of the record sequence alone, and so is the vector solved
from it: a replayed prefix changes neither.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rocksdict import Rdict, WriteBatch

from recsys_stream.contracts.keys import SEP
from recsys_stream.contracts.pb import items_pb2
from recsys_stream.contracts.rocks import mark_purge, purge_keys, purge_pending, store_options
from recsys_stream.nearline.state import offset_key, scan, stored_offsets

_ITEM = b"i"  # offsets under state.offset_key, as the worker's store keeps them


def item_state_key(tenant: str, algorithm: str, item_id: str) -> bytes:
    """``tenant \\x1f algorithm \\x1f item``: the state key and the ``item-vectors`` key."""
    return f"{tenant}{SEP}{algorithm}{SEP}{item_id}".encode()


@dataclass
class ItemRecord:
    """One new item of one algorithm: its users of one model version."""

    tenant: str
    algorithm: str
    item_id: str
    version: int = 0
    users: dict[str, tuple[float, np.ndarray]] = field(default_factory=dict)  # insertion order
    first_solved_ms: int = 0
    event_ms: int = 0
    input_partition: int = -1
    applied_offset: int = -1
    young: bool = False  # a young item of ``version``: seeded from its training users

    def replays(self, partition: int, offset: int) -> bool:
        """Whether the record at (partition, offset) was applied already."""
        return partition == self.input_partition and offset <= self.applied_offset

    def seed(self, version: int, users: dict[str, tuple[float, np.ndarray]]) -> None:
        """Start the item afresh as ``version``'s young item, from its training users
        (``StageModel.seed``); the record that named the version is applied next."""
        self.version, self.users, self.first_solved_ms, self.young = version, dict(users), 0, True

    def apply(self, rec: items_pb2.ItemInteraction, partition: int, offset: int,
              max_users: int) -> bool:
        """Apply one record (see the module docstring); True when the state changed."""
        if self.replays(partition, offset):
            return False  # replayed
        self.input_partition, self.applied_offset = partition, offset
        if rec.erase:  # the user was erased: their entry goes, whatever its version
            return self.users.pop(rec.user_id, None) is not None
        if rec.model_version < self.version:
            return False  # stale: the item has users of a newer version already
        if rec.model_version > self.version:
            self.version, self.users, self.first_solved_ms = rec.model_version, {}, 0
            self.young = False
        x = np.asarray(rec.user_vector, dtype=np.float32)
        if self.users and len(x) != self.width:
            return False  # not of this version's width: never mixed into a solve
        if rec.user_id not in self.users and len(self.users) >= max_users:
            return False
        self.users[rec.user_id] = (float(rec.confidence), x)
        self.event_ms = max(self.event_ms, rec.event_ms)
        return True

    @property
    def width(self) -> int:
        return len(next(iter(self.users.values()))[1]) if self.users else 0

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``X_i`` (users x width) and ``c`` of the item's users."""
        c = np.fromiter((u[0] for u in self.users.values()), np.float64, len(self.users))
        return np.stack([u[1] for u in self.users.values()]), c

    def encode(self) -> bytes:
        X, c = self.arrays() if self.users else (np.empty((0, 0), np.float32), np.empty(0))
        return items_pb2.ItemFoldInState(
            tenant=self.tenant, algorithm=self.algorithm, item_id=self.item_id,
            model_version=self.version, user_ids=list(self.users), confidences=c.tolist(),
            user_vectors=X.ravel().tolist(), width=X.shape[1] if X.size else 0,
            first_solved_ms=self.first_solved_ms, event_ms=self.event_ms,
            input_partition=self.input_partition,
            applied_offset=self.applied_offset, young=self.young).SerializeToString()

    @classmethod
    def decode(cls, raw: bytes) -> ItemRecord:
        s = items_pb2.ItemFoldInState.FromString(raw)
        X = np.asarray(s.user_vectors, dtype=np.float32).reshape(len(s.user_ids), s.width or 0)
        users = {u: (float(c), X[j]) for j, (u, c) in enumerate(zip(s.user_ids, s.confidences))}
        return cls(s.tenant, s.algorithm, s.item_id, s.model_version, users, s.first_solved_ms,
                   s.event_ms, s.input_partition, s.applied_offset, s.young)


class ItemStore:
    """Per-item state and input offsets in one RocksDB directory (one stage process each)."""

    def __init__(self, path: str | Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._db = Rdict(self.path, options=store_options())
        purge_pending(self._db)  # items an erasure changed that a killed stage did not purge

    def get_many(self, keys: list[bytes]) -> dict[bytes, ItemRecord]:
        if not keys:
            return {}
        values = self._db[[_ITEM + k for k in keys]]
        return {k: ItemRecord.decode(v) for k, v in zip(keys, values) if v is not None}

    def commit(self, states: dict[bytes, ItemRecord | None],
               offsets: dict[tuple[str, int], int], purge: list[bytes] = ()) -> None:
        """Write states (``None``: delete) and next input offsets atomically; ``purge``: items
        whose older values named an erased user, marked for ``purge`` in the same batch."""
        wb = WriteBatch(raw_mode=True)
        mark_purge(wb, [_ITEM + k for k in purge])
        for key, r in states.items():
            if r is None:
                wb.delete(_ITEM + key)
            else:
                wb.put(_ITEM + key, r.encode())
        for (topic, partition), nxt in offsets.items():
            wb.put(offset_key(topic, partition), str(nxt).encode())
        self._db.write(wb)

    def offsets(self, topic: str) -> dict[int, int]:
        """Next offset to read per partition of ``topic``."""
        return stored_offsets(self._db, topic)

    def purge(self, keys: list[bytes]) -> None:
        """Make the older values of these items (which named an erased user) leave the files."""
        purge_keys(self._db, [_ITEM + k for k in keys])

    def items(self) -> Iterator[tuple[bytes, ItemRecord]]:
        """Every stored item, in key order."""
        for k, v in scan(self._db, _ITEM):
            yield k, ItemRecord.decode(v)

    def close(self) -> None:
        self._db.close()
