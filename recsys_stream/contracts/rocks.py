"""RocksDB settings shared by every process's store, and how an erased key leaves the files.

A RocksDB delete writes a marker; the deleted value stays in the write-ahead log and the table
files until a compaction drops it, and the MANIFEST names every table file's smallest and largest
key until it rolls over. Erasure (DESIGN.md "Security and erasure") needs the bytes gone.
"""

from __future__ import annotations

from rocksdict import BottommostLevelCompaction, CompactOptions, Options, Rdict

_PURGED = b"\x00purged"


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
    db.flush()
    opts = CompactOptions()
    opts.set_bottommost_level_compaction(BottommostLevelCompaction.force())
    for key in sorted(keys):
        db.compact_range(key, key + b"\x00", opts)
    db.put(_PURGED, b"1")
    db.flush()
