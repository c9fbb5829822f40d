"""API keys: each bound to one tenant, stored only as sha256 hex, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from recsys_stream.config import Config

METADATA_KEY = "x-api-key"


@dataclass(frozen=True)
class Caller:
    tenant: str
    admin: bool


class KeyRing:
    """Maps a presented API key to its tenant (and whether it is an operator's)."""

    def __init__(self, cfg: Config) -> None:
        self._entries = [(h.lower(), tenant, False) for tenant, tc in cfg.tenants.items()
                         for h in tc.api_key_sha256]
        self._entries += [(h.lower(), tenant, True) for tenant, tc in cfg.tenants.items()
                          for h in tc.admin_key_sha256]

    def identify(self, api_key: str | None) -> Caller | None:
        if not api_key:
            return None
        digest = hashlib.sha256(api_key.encode()).hexdigest()
        found = None
        for h, tenant, admin in self._entries:  # no early exit: timing says nothing
            if hmac.compare_digest(h, digest):
                found = Caller(tenant, admin)
        return found
