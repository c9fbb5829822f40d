"""RocksDB state of one worker: per-user aggregates and the input offsets, written together.

Keys: ``b"u" + tenant\\x1fuser`` -> ``recsys.v1.UserState`` bytes, and
``b"o" + topic\\x1fpartition`` -> next offset (decimal). One ``WriteBatch`` per micro-batch holds
both, so after any crash the stored offsets and the stored state describe the same prefix of the
input (bytewax / faust's "offsets stored with state").

The store may also hold users of partitions this worker no longer owns (scale-out moved them).
They are left alone: when such a partition comes back, ``nearline.restore`` either finds the
local snapshot still current (its stored offset is at or beyond the changelog's offset marker)
or overwrites the partition's users from the changelog with ``restore``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

from recsys_stream.contracts.user_state import UserHistory

_USER, _OFFSET = b"u", b"o"


class StateStore:
    """Per-user state and input offsets in one RocksDB directory.

    Parameters
    ----------
    path : directory of the database (created if missing)
    """

    def __init__(self, path: str | Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._db = Rdict(self.path, options=Options(raw_mode=True))

    def get_many(self, keys: list[bytes]) -> dict[bytes, UserHistory]:
        """The stored state of each key that has one (``keys`` are ``tenant\\x1fuser``)."""
        if not keys:
            return {}
        values = self._db[[_USER + k for k in keys]]
        return {k: UserHistory.decode(v) for k, v in zip(keys, values) if v is not None}

    def get(self, key: bytes) -> UserHistory | None:
        v = self._db.get(_USER + key)
        return UserHistory.decode(v) if v is not None else None

    def commit(self, states: dict[bytes, UserHistory | bytes],
               offsets: dict[tuple[str, int], int]) -> None:
        """Write states (or their ``encode()`` bytes) and next input offsets atomically (one
        WriteBatch)."""
        wb = WriteBatch(raw_mode=True)
        for key, h in states.items():
            wb.put(_USER + key, h if isinstance(h, bytes) else h.encode())
        for (topic, partition), nxt in offsets.items():
            wb.put(_OFFSET + f"{topic}\x1f{partition}".encode(), str(nxt).encode())
        self._db.write(wb)

    def restore(self, topic: str, partition: int, states: dict[bytes, bytes | None],
                next_offset: int) -> None:
        """Take a partition's users from the state changelog, with its offset, atomically.

        ``states`` maps ``tenant\\x1fuser`` to ``UserState`` bytes (``None``: a tombstone,
        the user is deleted). The offset is written in the same ``WriteBatch``, so the store
        is again a consistent snapshot of the partition's input prefix ``[0, next_offset)``
        (plus, per user, any later events its ``applied_offset`` says it holds).
        """
        wb = WriteBatch(raw_mode=True)
        for key, value in states.items():
            if value is None:
                wb.delete(_USER + key)
            else:
                wb.put(_USER + key, value)
        wb.put(_OFFSET + f"{topic}\x1f{partition}".encode(), str(next_offset).encode())
        self._db.write(wb)

    def offsets(self, topic: str) -> dict[int, int]:
        """Next offset to read per partition of ``topic``."""
        prefix = _OFFSET + f"{topic}\x1f".encode()
        out = {}
        for k, v in self._db.items(from_key=prefix):
            if not k.startswith(prefix):
                break
            out[int(k[len(prefix):])] = int(v)
        return out

    def users(self) -> Iterator[tuple[bytes, UserHistory]]:
        """Every stored user, in key order."""
        for k, v in self._db.items(from_key=_USER):
            if not k.startswith(_USER):
                break
            yield k[1:], UserHistory.decode(v)

    def close(self) -> None:
        self._db.close()
