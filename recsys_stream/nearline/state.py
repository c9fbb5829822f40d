"""RocksDB state of one worker: per-user aggregates and the input offsets, written together.

Keys: ``b"u" + tenant\\x1fuser`` -> ``recsys.v1.UserState`` bytes, and
``b"o" + topic\\x1fpartition`` -> next offset (decimal). One ``WriteBatch`` per micro-batch holds
both, so after any crash the stored offsets and the stored state describe the same prefix of the
input (bytewax / faust's "offsets stored with state").

The store may also hold users of partitions this worker no longer owns (scale-out moved them).
They are left alone: when such a partition comes back, ``nearline.restore`` either finds the
local snapshot still current (its stored offset is at or beyond the changelog's offset marker)
or overwrites the partition's users from the changelog with ``restore``.

Decoding a long history costs more than everything else the worker does for its user in a
batch, and Zipf traffic touches the same heavy users in every batch. So the store keeps the
committed ``UserHistory`` objects of recently touched users in memory (LRU, bounded by their
total item count) and hands them out instead of decoding. The cache only ever holds committed
state: ``commit`` puts, ``forget`` drops what a failed batch may have changed, ``restore``
clears it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rocksdict import Rdict, WriteBatch

from recsys_stream.contracts.rocks import mark_purge, purge_keys, purge_pending, store_options
from recsys_stream.contracts.user_state import UserHistory

_USER, _OFFSET = b"u", b"o"


def scan(db: Rdict, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key without ``prefix``, value) of every key under ``prefix``, in key order."""
    for k, v in db.items(from_key=prefix):
        if not k.startswith(prefix):
            break
        yield k[len(prefix):], v


def offset_key(topic: str, partition: int) -> bytes:
    """Where a store keeps the next input offset of ``topic``'s ``partition``."""
    return _OFFSET + f"{topic}\x1f{partition}".encode()


def stored_offsets(db: Rdict, topic: str) -> dict[int, int]:
    """Next offset to read per partition of ``topic``, as ``offset_key`` stored them."""
    return {int(p): int(v) for p, v in scan(db, _OFFSET + f"{topic}\x1f".encode())}


class StateStore:
    """Per-user state and input offsets in one RocksDB directory.

    Parameters
    ----------
    path : directory of the database (created if missing)
    cache_items : int
        Budget of the in-memory cache of decoded histories, in items (a user counts
        ``len(items) + 1``); 0 turns the cache off.
    """

    def __init__(self, path: str | Path, cache_items: int = 0) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._db = Rdict(self.path, options=store_options())
        purge_pending(self._db)  # erased users a killed worker committed and did not purge
        self._budget = cache_items
        self._cache: dict[bytes, tuple[UserHistory, int]] = {}  # insertion order = LRU order
        self._cached_items = 0

    def get_many(self, keys: list[bytes]) -> dict[bytes, UserHistory]:
        """The stored state of each key that has one (``keys`` are ``tenant\\x1fuser``).

        Histories may come from the cache and are then shared with it: a caller that changes
        one must ``commit`` it (with ``decoded``) or ``forget`` it.
        """
        out: dict[bytes, UserHistory] = {}
        missing = []
        for k in keys:
            hit = self._cache.pop(k, None)
            if hit is None:
                missing.append(k)
            else:
                self._cache[k] = hit  # most recently used goes last
                out[k] = hit[0]
        if missing:
            values = self._db[[_USER + k for k in missing]]
            out.update((k, UserHistory.decode(v)) for k, v in zip(missing, values)
                       if v is not None)
        return out

    def forget(self, keys: list[bytes] | None = None) -> None:
        """Drop cached histories (all with ``keys=None``): the next read decodes from disk."""
        if keys is None:
            self._cache.clear()
            self._cached_items = 0
            return
        for k in keys:
            hit = self._cache.pop(k, None)
            if hit is not None:
                self._cached_items -= hit[1]

    def _remember(self, decoded: dict[bytes, UserHistory]) -> None:
        if not self._budget:
            return
        self.forget(list(decoded))
        for k, h in decoded.items():
            size = len(h.items) + 1
            self._cache[k] = (h, size)
            self._cached_items += size
        while self._cached_items > self._budget:  # evict the least recently used
            self._cached_items -= self._cache.pop(next(iter(self._cache)))[1]

    def get(self, key: bytes) -> UserHistory | None:
        v = self._db.get(_USER + key)
        return UserHistory.decode(v) if v is not None else None

    def commit(self, states: dict[bytes, UserHistory | bytes],
               offsets: dict[tuple[str, int], int],
               decoded: dict[bytes, UserHistory] | None = None,
               deleted: list[bytes] = ()) -> None:
        """Write states (or their ``encode()`` bytes) and next input offsets atomically (one
        WriteBatch); ``decoded`` are the same states as objects, kept in the cache; ``deleted``:
        erased users (``nearline.erase``), deleted in the same WriteBatch."""
        wb = WriteBatch(raw_mode=True)
        for key in deleted:
            wb.delete(_USER + key)
        mark_purge(wb, [_USER + k for k in deleted])
        for key, h in states.items():
            wb.put(_USER + key, h if isinstance(h, bytes) else h.encode())
        for (topic, partition), nxt in offsets.items():
            wb.put(offset_key(topic, partition), str(nxt).encode())
        self._db.write(wb)
        if decoded:
            self._remember(decoded)

    def restore(self, topic: str, partition: int, states: dict[bytes, bytes | None],
                next_offset: int, other_offsets: dict[str, int] | None = None) -> None:
        """Take a partition's users from the state changelog, with its offset, atomically.

        ``states`` maps ``tenant\\x1fuser`` to ``UserState`` bytes (``None``: a tombstone,
        the user is deleted). The offset is written in the same ``WriteBatch``, so the store
        is again a consistent snapshot of the partition's input prefix ``[0, next_offset)``
        (plus, per user, any later events its ``applied_offset`` says it holds).
        ``other_offsets``: the next offsets of the same partition of other input topics (the
        frequency caps' ``recommendations``), in the same batch.
        """
        self.forget()
        wb = WriteBatch(raw_mode=True)
        for key, value in states.items():
            if value is None:
                wb.delete(_USER + key)
                mark_purge(wb, [_USER + key])
            else:
                wb.put(_USER + key, value)
        wb.put(offset_key(topic, partition), str(next_offset).encode())
        for other, nxt in (other_offsets or {}).items():
            wb.put(offset_key(other, partition), str(nxt).encode())
        self._db.write(wb)
        gone = [k for k, v in states.items() if v is None]
        if gone:  # an erased user's old state leaves the files too
            self.purge(gone)

    def purge(self, keys: list[bytes]) -> None:
        """Make deleted users' bytes leave the files (``purge_keys``)."""
        self.forget(keys)
        purge_keys(self._db, [_USER + k for k in keys])

    def offsets(self, topic: str) -> dict[int, int]:
        """Next offset to read per partition of ``topic``."""
        return stored_offsets(self._db, topic)

    def users(self) -> Iterator[tuple[bytes, UserHistory]]:
        """Every stored user, in key order."""
        for k, v in scan(self._db, _USER):
            yield k, UserHistory.decode(v)

    def close(self) -> None:
        self._db.close()
