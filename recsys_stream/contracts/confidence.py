"""The one confidence model shared by the batch trainer and the nearline worker (DESIGN.md).

``strength = sum(weight(event type) * magnitude * decay(age))``, ``c = 1 + alpha * log1p(strength)``,
``p = 1`` for any positive strength. HIDE / DISLIKE / REPORT never become negative ratings:
they suppress the item. The magnitude is the event's ``value``: a rating's value, or for any other
positive type its amount (seconds watched, a play count, a quantity; default 1), capped at
``max_magnitude``.

Decay is referred to the user's own latest event, not to the wall clock: the same events give
the same confidences whenever and wherever they are aggregated (state replay, trainer, worker),
and an item the user touched long before their latest activity counts less than a recent one.
The settings travel in every model manifest; the worker folds in with the manifest's copy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

# Event type names as in recsys.v1.EventType, lower-cased.
POSITIVE_TYPES = ("view", "click", "add_to_cart", "purchase", "rating", "like")
SUPPRESSING_TYPES = ("hide", "dislike", "report")
EVENT_TYPES = POSITIVE_TYPES + SUPPRESSING_TYPES

DEFAULT_WEIGHTS = MappingProxyType({
    "view": 1.0,
    "click": 2.0,
    "add_to_cart": 4.0,
    "purchase": 8.0,
    "rating": 1.0,  # multiplied by the rating value (0.5..5)
    "like": 4.0,
})

_MS_PER_DAY = 86_400_000.0


@dataclass(frozen=True)
class ConfidenceSettings:
    """Per-tenant event weights, recency half-life and alpha.

    Parameters
    ----------
    weights : mapping of positive event type name to weight
    half_life_days : float
        An event this many days older than the user's latest event counts half.
        ``0`` or ``inf`` disables decay.
    alpha : float
        Confidence slope in ``c = 1 + alpha * log1p(strength)``.
    max_magnitude : float
        Largest magnitude (``value``) a non-rating event counts with.
    """

    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    half_life_days: float = 30.0
    alpha: float = 2.0
    max_magnitude: float = 1e6

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(POSITIVE_TYPES)
        if unknown:
            raise ValueError(f"confidence weights for unknown event types: {sorted(unknown)}")
        if self.alpha <= 0 or not math.isfinite(self.alpha):
            raise ValueError(f"confidence alpha must be a positive number, got {self.alpha}")
        if self.half_life_days < 0:
            raise ValueError(f"half_life_days must be >= 0, got {self.half_life_days}")
        if not self.max_magnitude > 0:
            raise ValueError(f"max_magnitude must be positive, got {self.max_magnitude}")

    def event_strength(self, type_name: str, value: float | None = None) -> float:
        """Strength one positive event adds (before decay): ``weight * magnitude``.

        A rating's magnitude is its value; any other type's is ``value`` (default 1), capped
        at ``max_magnitude``. Validation (``contracts.events``) has already refused negative,
        NaN and infinite values.
        """
        w = float(self.weights.get(type_name, 0.0))
        if type_name == "rating":
            return w * float(value if value is not None else 0.0)
        if value is None:
            return w
        return w * min(float(value), self.max_magnitude)

    def decay(self, age_ms: float | np.ndarray) -> float | np.ndarray:
        """``2 ** (-age / half_life)``; ages are clipped at 0 (no growth for the future)."""
        if not self.half_life_days or math.isinf(self.half_life_days):
            return np.ones_like(age_ms, dtype=np.float64) if isinstance(age_ms, np.ndarray) else 1.0
        age = np.maximum(age_ms, 0.0)
        return np.exp2(-age / (self.half_life_days * _MS_PER_DAY))

    def confidence(self, strength: np.ndarray) -> np.ndarray:
        """``c = 1 + alpha * log1p(strength)`` (float32, as the solvers take it)."""
        s = np.maximum(np.asarray(strength, dtype=np.float64), 0.0)
        return (1.0 + self.alpha * np.log1p(s)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"weights": dict(self.weights), "half_life_days": self.half_life_days,
                "alpha": self.alpha, "max_magnitude": self.max_magnitude}

    @classmethod
    def from_dict(cls, d: Mapping) -> ConfidenceSettings:
        return cls(weights=dict(d.get("weights", DEFAULT_WEIGHTS)),
                   half_life_days=float(d.get("half_life_days", 30.0)),
                   alpha=float(d.get("alpha", 2.0)),
                   max_magnitude=float(d.get("max_magnitude", 1e6)))
