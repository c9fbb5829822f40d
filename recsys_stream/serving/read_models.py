"""The server's read models: user profiles (from the shared RocksDB store) and catalog bans.

Profiles live in ``profile_store``: in a ``serve --workers N`` pool the supervisor writes the
store and each server process reads it as a RocksDB secondary (``secondary_dir``); a single
server writes and reads its own store in-process. Either way there is one code path for reads,
and the profiles cost page cache shared by the processes instead of heap in each. They are kept
serialized and parsed per request (~2 us). Catalog bans are few: each process keeps its own.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from recsys_stream.config import Config
from recsys_stream.contracts.keys import make_key, split_key
from recsys_stream.contracts.pb import events_pb2, profiles_pb2
from recsys_stream.kafka import TopicTail
from recsys_stream.serving.catalog_index import Catalog
from recsys_stream.serving.profile_store import ProfileReader, ProfileWriter, erased_key

_UNSERVABLE = (events_pb2.BANNED, events_pb2.REMOVED)


class ReadModels:
    """Latest profile per user and banned/removed items per tenant.

    Parameters
    ----------
    cfg : Config
    secondary_dir : str or Path, optional
        Read the store of ``server.profile_dir``, written by another process, as a secondary
        keeping its own files here; by default this process writes the store itself.
    """

    def __init__(self, cfg: Config, secondary_dir: str | Path | None = None) -> None:
        self.cfg, self.secondary_dir = cfg, secondary_dir
        self._writer = None if secondary_dir is not None else ProfileWriter(cfg)
        self._profiles: ProfileReader | None = None
        self._banned: dict[str, frozenset[str]] = {}
        self._lock = threading.Lock()  # writers only; a reader's dict lookup is atomic
        self.catalog = Catalog()  # categories, attributes, launch times (serving.catalog_index)
        self._tail = TopicTail(cfg, {cfg.topics.catalog: self._on_catalog}, name="server-read")

    def start(self) -> ReadModels:
        if self._writer is None:
            self._profiles = ProfileReader(self.cfg.server.profile_dir, self.secondary_dir)
        else:
            self._profiles = ProfileReader(self.cfg.server.profile_dir,
                                           db=self._writer.start().db)
        self._tail.start()
        return self

    def wait_caught_up(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        return self._profiles is not None and self._profiles.wait_caught_up(timeout_s) \
            and self._tail.wait_caught_up(max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        self._tail.stop()
        if self._profiles is not None:
            self._profiles.close()
        if self._writer is not None:
            self._writer.stop()

    def profile(self, tenant: str, user_id: str) -> profiles_pb2.UserProfile | None:
        raw = self._profiles.get(make_key(tenant, user_id))
        return profiles_pb2.UserProfile.FromString(raw) if raw is not None else None

    def erased(self, tenant: str, user_id: str) -> bool:
        """True once the user's profile tombstone (an erasure) has been read: their batch
        vectors in the models trained before it are never served."""
        return self._profiles.get(erased_key(make_key(tenant, user_id))) is not None

    def banned(self, tenant: str) -> frozenset[str]:
        return self._banned.get(tenant, frozenset())

    def _on_catalog(self, msg) -> None:
        item = events_pb2.CatalogItem.FromString(msg.value() or b"")
        tenant, item_id = split_key(msg.key())
        self.catalog.put(tenant, item_id, item, msg.timestamp()[1])
        with self._lock:
            banned = set(self._banned.get(tenant, ()))
            if item.state in _UNSERVABLE:
                banned.add(item_id)
            else:
                banned.discard(item_id)
            self._banned[tenant] = frozenset(banned)  # copy-on-write for lock-free readers
