"""RocksDB settings shared by every process's store, and how an erased key leaves the files.

A RocksDB delete writes a marker; the deleted value stays in the write-ahead log and the table
files until a compaction drops it, and the MANIFEST names every table file's smallest and largest
key until it rolls over. Erasure (DESIGN.md "Security and erasure") needs the bytes gone.
"""

from __future__ import annotations

from collections.abc import Iterable

from rocksdict import BottommostLevelCompaction, CompactOptions, Options, Rdict, WriteBatch

_PURGED = b"\x00purged"
# Keys still to purge, written in the WriteBatch that deletes them: a process killed between its
# commit and its purge purges them when it opens the store again (``purge_pending``).
_PENDING = b"\x00purge\x1f"


def store_options() -> Options:
    """Options of the project's RocksDB stores: raw keys, and a MANIFEST rolled on every change
    (``purge_keys``: the MANIFEST records each file's smallest and largest key, so a rolled-over
    one is the only way an erased key leaves it; a roll writes a few KB per hundred files)."""
    opts = Options(raw_mode=True)
    opts.set_max_manifest_file_size(1)
    return opts


def purge_keys(db: Rdict, keys: list[bytes]) -> None:
    """Physically remove deleted keys (erasure): flush the memtable (the write-ahead log with
    the old values is then dropped), compact each key's range to the bottom level (the deleted
    values and the delete markers go), then one more flushed write so that the MANIFEST, which
    rolls on every change (``store_options``), no longer names the old files' boundary keys.

    The bottom level is compacted by force: a file that overlaps nothing below is otherwise
    moved down as it is (a trivial move), delete marker and all."""
    if not keys:
        return
    db.flush()
    opts = CompactOptions()
    opts.set_bottommost_level_compaction(BottommostLevelCompaction.force())
    done = WriteBatch(raw_mode=True)
    for key in keys:
        done.delete(_PENDING + key)
    db.write(done)
    db.flush()
    for key in sorted({*keys, *(_PENDING + k for k in keys)}):
        db.compact_range(key, key + b"\x00", opts)
    db.put(_PURGED, b"1")
    db.flush()


def mark_purge(wb: WriteBatch, keys: Iterable[bytes]) -> None:
    """Record in ``wb`` (the batch that deletes or rewrites ``keys``) that they must be purged."""
    for key in keys:
        wb.put(_PENDING + key, b"")


def purge_pending(db: Rdict) -> list[bytes]:
    """Purge what a killed process had marked and not purged yet; returns those keys."""
    keys = []
    for k in db.keys(from_key=_PENDING):
        if not k.startswith(_PENDING):
            break
        keys.append(k[len(_PENDING):])
    purge_keys(db, keys)
    return keys
