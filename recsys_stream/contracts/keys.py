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


# The worker's state changelog also carries, per partition, the next input offset its states
# cover (``nearline.restore``). A tenant cannot start with a control character, so these keys
# never collide with a user's.
_OFFSET_MARKER = b"\x00offset" + _SEP_B


def offset_marker_key(partition: int, source: str = "") -> bytes:
    """Changelog key of the offset marker of input ``partition``; ``source`` names a second
    input topic of the same partition number ("" = interactions; "recommendations" for the
    frequency caps' served answers)."""
    tag = source.encode() + _SEP_B if source else b""
    return _OFFSET_MARKER + tag + str(partition).encode()


def marker_source(key: bytes) -> str:
    """The ``source`` an offset marker key was made with ("" = interactions)."""
    rest = key[len(_OFFSET_MARKER):]
    source, sep, _ = rest.rpartition(_SEP_B)
    return source.decode() if sep else ""


def is_offset_marker(key: bytes | None) -> bool:
    """True for a changelog offset marker (not a user's state): readers of states skip it."""
    return key is not None and key.startswith(_OFFSET_MARKER)
