"""The speed layer: per-user state in RocksDB and the closed-form fold-in, one micro-batch at a time."""
