"""Record keys shared by every topic and by RocksDB: ``tenant \\x1f id``.

The unit separator cannot appear in a valid tenant or id (validation rejects control
characters), so the split is unambiguous.
"""

from __future__ import annotations

SEP = "\x1f"
_SEP_B = SEP.encode()


def make_key(tenant: str, entity_id: str) -> bytes:
    """Key of a user (interactions, profiles, state) or an item (catalog) within a tenant."""
    return f"{tenant}{SEP}{entity_id}".encode()


def split_key(key: bytes) -> tuple[str, str]:
    """Inverse of :func:`make_key`; raises ``ValueError`` for a key without a separator."""
    tenant, sep, entity_id = key.partition(_SEP_B)
    if not sep:
        raise ValueError(f"key {key[:64]!r} has no tenant separator")
    return tenant.decode(), entity_id.decode()
