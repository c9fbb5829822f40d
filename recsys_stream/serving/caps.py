"""Frequency caps at read time: the profile's capped items whose time has not come yet.

The worker publishes each capped item with the time its cap ends (``contracts.caps``); a
profile is not re-published when a cap runs out, so every serving path compares with now.
"""

from __future__ import annotations

import time


def capped_items(profile, now_ms: int | None = None) -> set[str]:
    """The items ``profile`` (a ``UserProfile`` or None) caps at ``now_ms`` (default: now)."""
    if profile is None or not profile.capped_item_ids:
        return set()
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return {i for i, until in zip(profile.capped_item_ids, profile.capped_until_ms)
            if until > now}
