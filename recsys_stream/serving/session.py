"""Session context at request time: the vector of an anonymous visitor, or of a user with
this session's items joined to their profile (DESIGN.md "Serving").

The context items count as clicks: each adds a click's strength (the tenant's weight, as in
``contracts.confidence``) to the item, on top of what the profile already holds for it, and the
confidences ``c = 1 + alpha log1p(strength)`` go through the model's own fold-in solver, the
same exact least-squares step the worker takes for a profile. So an anonymous session of three
items gets the vector a new user with those three clicks would get, with no state kept.

A profile stores confidences ``c``; the strength behind one is ``expm1((c - 1) / alpha)``, which
is what a click's strength is added to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from recsys_stream.contracts.confidence import ConfidenceSettings

MAX_CONTEXT_ITEMS = 200


def basis(snap, profile, context: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray] | None:
    """``(rows, confidences)`` the fold-in solves from: the profile's items the model knows,
    plus the context items as clicks; None when no item of either is known."""
    settings = snap.confidence or ConfidenceSettings()
    row_of = snap.item_row
    conf: dict[int, float] = {}
    if profile is not None:
        for item, c in zip(profile.item_ids, profile.confidences):
            r = row_of.get(item)
            if r is not None:
                conf[r] = float(c)
    click = settings.event_strength("click")
    for item in context:
        r = row_of.get(item)
        if r is not None:
            before = math.expm1(max(conf[r] - 1.0, 0.0) / settings.alpha) if r in conf else 0.0
            conf[r] = float(settings.confidence(before + click))
    if not conf:
        return None
    return (np.fromiter(conf, np.int64, len(conf)),
            np.fromiter(conf.values(), np.float64, len(conf)))


def knows_any(snap, context: Sequence[str]) -> bool:
    return any(i in snap.item_row for i in context)
