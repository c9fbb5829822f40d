"""User profiles kept once per host in RocksDB, shared by the server processes.

One process owns the store (``ProfileWriter``): it tails the compacted ``profiles`` topic into a
RocksDB *primary*, one ``WriteBatch`` per poll, tombstones as deletes. The directory is rebuilt
from the topic at every start (the topic is the source of truth, and a wiped store can never
serve a profile the topic no longer has). Readers (``ProfileReader``) are the other server
processes, each a RocksDB *secondary* that catches up with the primary's manifest and WAL every
``CATCH_UP_S``, or, in a single-process server, the primary itself. The OS page cache holds the
files once for every process; each keeps only a small block cache, so the profiles no longer
cost ~700 B of heap per user per process.

Caught up: once the tail has replayed every record that existed at its start, the writer puts
``MARKER`` after that data; a reader is caught up once it sees the marker.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from pathlib import Path

from rocksdict import AccessType, BlockBasedOptions, Cache, DBCompressionType, Options, Rdict, \
    WriteBatch

from recsys_stream.config import Config
from recsys_stream.kafka import READ_MODEL_FETCH_WAIT_MS, TopicTail
from recsys_stream.contracts.rocks import purge_keys

log = logging.getLogger(__name__)

# No tenant name starts with NUL, so this key never collides with a `tenant \x1f user` key.
MARKER = b"\x00profiles-caught-up"
# Erased users (a tombstone on ``profiles``): ``ERASED + sha256(tenant \x1f user)``. A digest, so
# the store holds no byte of the erased id; the server stops serving the user's batch vector
# while the key is there (``ReadModels.erased``).
ERASED = b"\x00erased\x1f"


def erased_key(key: bytes) -> bytes:
    """Where the store marks the user of profile ``key`` erased."""
    return ERASED + hashlib.sha256(key).digest()


# A secondary's WAL-tailing interval, the staleness it adds. rocksdict holds the GIL through a
# catch-up (~0.8 ms with nothing new, measured on 2 busy cores): at 0.1 s that is under 1% of a
# process's time, and a profile still reaches every process in ~0.2 s.
CATCH_UP_S = 0.1
BLOCK_CACHE_MB = 32     # per process; the page cache, shared, holds the rest


def _options(cache_mb: int) -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    table = BlockBasedOptions()
    table.set_block_cache(Cache(cache_mb << 20))  # LRU
    table.set_bloom_filter(10, False)  # users without a profile are common: skip their reads
    opts.set_block_based_table_factory(table)
    # serialized float vectors barely compress; decompressing would cost every read
    opts.set_compression_type(DBCompressionType.none())
    # a secondary replays the unflushed WAL into its own memtable: keep that part small
    opts.set_write_buffer_size(16 << 20)
    # a secondary must keep every file open: the primary's compactions delete the files it reads
    opts.set_max_open_files(-1)
    # a MANIFEST rolled on every change: an erased key leaves it (contracts.rocks.store_options)
    opts.set_max_manifest_file_size(1)
    return opts


def _purged_file(path: str | Path) -> Path:
    """Beside the store: how many purges the writer has made (``ProfileReader`` reopens)."""
    return Path(f"{path}.purged")


def _purges(path: str | Path) -> str:
    try:
        return _purged_file(path).read_text()
    except FileNotFoundError:
        return ""


def readers_dir(cfg: Config) -> Path:
    """Where the secondaries keep their own (log) directories, next to the store."""
    return Path(f"{cfg.server.profile_dir}.readers")


class ProfileWriter:
    """Owner of the store: rebuilds ``server.profile_dir`` from ``profiles`` and follows it."""

    def __init__(self, cfg: Config) -> None:
        self.path = Path(cfg.server.profile_dir)
        self.db: Rdict | None = None
        self._batch = WriteBatch(raw_mode=True)
        self._deleted: list[bytes] = []
        self._purges = 0
        self._marked = False
        self._readers = readers_dir(cfg)
        self._tail = TopicTail(cfg, {cfg.topics.profiles: self._on_profile}, name="profiles",
                               after_poll=self._write, fetch_wait_ms=READ_MODEL_FETCH_WAIT_MS)

    def start(self) -> ProfileWriter:
        """Wipe and reopen the store, then start the tail.

        Raises
        ------
        RuntimeError
            When another live server owns the directory (it holds RocksDB's lock).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            try:
                Rdict.destroy(str(self.path))  # refuses while another process holds the lock
            except Exception as e:
                raise RuntimeError(f"server.profile_dir {self.path} is in use by another "
                                   f"server (each server needs its own): {e}") from e
        shutil.rmtree(self._readers, ignore_errors=True)
        _purged_file(self.path).unlink(missing_ok=True)
        self.db = Rdict(str(self.path), options=_options(8))  # it only writes: a token cache
        self._tail.start()
        return self

    def stop(self) -> None:
        self._tail.stop()
        if self.db is not None:
            self.db.close()
            self.db = None

    def _on_profile(self, msg) -> None:
        value = msg.value()
        if value is None:  # tombstone: the worker erased the user (nearline.erase)
            self._batch.delete(msg.key())
            self._batch.put(erased_key(msg.key()), b"")
            self._deleted.append(msg.key())
        else:
            self._batch.put(msg.key(), value)

    def _write(self) -> None:
        if len(self._batch):
            self.db.write(self._batch)
            self._batch = WriteBatch(raw_mode=True)
        if self._deleted:  # the erased profiles' bytes leave the files too
            # A secondary that misses the write-ahead log of the deletes (the purge flushes at
            # once) keeps the old values in its memtable: readers reopen when this file
            # changes. Changed before the flush, so a reader that has caught up with the flush
            # sees the change on its next look (ProfileReader._run looks right after).
            self._purges += 1
            tmp = _purged_file(self.path).with_suffix(".tmp")
            tmp.write_text(str(self._purges))
            os.replace(tmp, _purged_file(self.path))
            purge_keys(self.db, self._deleted)
            self._deleted = []
        if not self._marked and self._tail.wait_caught_up(0):
            self.db.put(MARKER, b"1")  # after the replayed data: a reader seeing it has all of it
            self._marked = True


class ProfileReader:
    """Profiles by key, from a secondary of the store (``secondary_dir``) or from ``db`` itself."""

    def __init__(self, path: str | Path, secondary_dir: str | Path | None = None,
                 db: Rdict | None = None) -> None:
        self._path, self._secondary_dir = path, secondary_dir
        self._purges = _purges(path)
        # held by ``get`` and by a catch-up with its purge check (``_run``): see there
        self._lock = threading.Lock()
        if db is None:
            db = self._open_secondary(self._purges)
        self.db, self._secondary = db, secondary_dir is not None
        self._caught_up = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="profiles-catch-up", daemon=True)
        self._thread.start()

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            return self.db.get(key)

    def wait_caught_up(self, timeout_s: float | None = None) -> bool:
        return self._caught_up.wait(timeout_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._secondary:
            self.db.close()

    def _open_secondary(self, purges: str) -> Rdict:
        """A secondary of the store as of the writer's ``purges``-th purge (its own dir)."""
        d = Path(self._secondary_dir) / f"gen-{purges or 0}"
        d.mkdir(parents=True, exist_ok=True)
        return Rdict(str(self._path), options=_options(BLOCK_CACHE_MB),
                     access_type=AccessType.secondary(str(d)))

    def _reopen_after_purge(self) -> None:
        """A secondary keeps the memtable it replayed from the write-ahead log; when the writer
        purged erased keys (flushing at once) it may have missed the deletes and would serve
        the erased profile: a fresh secondary replaces it. Called under ``_lock``, so no
        request is reading the old one when it is closed."""
        purges = _purges(self._path)
        if purges == self._purges:
            return
        fresh = self._open_secondary(purges)
        fresh.try_catch_up_with_primary()
        # only now: an open that failed is tried again next round, not forgotten
        self._purges = purges
        self.db, old = fresh, self.db
        old.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._secondary:
                    # One step for readers: a catch-up that took in the purge's flush leaves
                    # the old memtable's values above the flushed deletes until the reopen
                    # (the writer changed the purge file before that flush, so the check
                    # right after sees it); a get in between served an erased profile.
                    with self._lock:
                        self.db.try_catch_up_with_primary()
                        self._reopen_after_purge()
                if not self._caught_up.is_set() and self.db.get(MARKER) is not None:
                    self._caught_up.set()
            except Exception:  # a failed catch-up leaves the previous view: retry next round
                log.exception("profiles: catching up with the primary failed")
            self._stop.wait(CATCH_UP_S)
