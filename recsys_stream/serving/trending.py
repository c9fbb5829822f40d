"""Tenant trending: time-decayed interaction strength per item, kept live from the event stream.

``score_i = sum_j w_j * 2^(-(now - t_j) / half_life)`` over the tenant's positive events, with the
tenant's event weights. Kept per item as ``(score at t_ref, t_ref)`` and decayed lazily; the
ranked list is recomputed at most once a second per tenant, so a request only filters it.
Events are validated like the worker does; invalid ones are simply not counted here (the worker
dead-letters them).
"""

from __future__ import annotations

import threading
import time

import numpy as np

from recsys_stream.config import Config
from recsys_stream.contracts.confidence import SUPPRESSING_TYPES
from recsys_stream.contracts.events import ERASE, InvalidEvent, decode_event
from recsys_stream.kafka import READ_MODEL_FETCH_WAIT_MS, TopicTail

_RANK_EVERY_S = 1.0
_MAX_RANKED = 5000


class Trending:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.half_life_ms = cfg.server.trending_half_life_s * 1000
        self._tenants = frozenset(cfg.tenants)
        self._scores: dict[str, dict[str, list[float]]] = {t: {} for t in cfg.tenants}
        self._ranked: dict[str, tuple[float, list[tuple[str, float]]]] = {}
        self._lock = threading.Lock()
        self._tail = TopicTail(cfg, {cfg.topics.interactions: self._on_event}, name="trending",
                               backfill=cfg.server.trending_backfill,
                               fetch_wait_ms=READ_MODEL_FETCH_WAIT_MS)

    def start(self) -> Trending:
        self._tail.start()
        return self

    def stop(self) -> None:
        self._tail.stop()

    def _on_event(self, msg) -> None:
        now = int(time.time() * 1000)
        try:
            e = decode_event(msg.key(), msg.value(), self._tenants, now,
                             self.cfg.worker.max_future_ms, self.cfg.worker.max_past_ms,
                             {t: (tc.rating_min, tc.rating_max)
                              for t, tc in self.cfg.tenants.items()})
        except InvalidEvent:
            return
        if e.type in SUPPRESSING_TYPES or e.type == ERASE:
            return
        w = self.cfg.tenants[e.tenant].confidence.event_strength(e.type, e.value)
        self.add(e.tenant, e.item_id, w, e.timestamp_ms)

    def add(self, tenant: str, item_id: str, weight: float, t_ms: float) -> None:
        with self._lock:
            cur = self._scores[tenant].get(item_id)
            if cur is None:
                self._scores[tenant][item_id] = [weight, t_ms]
            elif t_ms >= cur[1]:
                cur[0] = cur[0] * 2 ** (-(t_ms - cur[1]) / self.half_life_ms) + weight
                cur[1] = t_ms
            else:
                cur[0] += weight * 2 ** (-(cur[1] - t_ms) / self.half_life_ms)

    def ranked(self, tenant: str, now_ms: float | None = None) -> list[tuple[str, float]]:
        """The tenant's items by decayed score, best first (at most a few thousand)."""
        cached = self._ranked.get(tenant)
        now = time.monotonic()
        if cached is not None and now - cached[0] < _RANK_EVERY_S:
            return cached[1]
        now_ms = now_ms or time.time() * 1000
        with self._lock:
            items = list(self._scores.get(tenant, {}).items())
        if not items:
            return []
        ids = [i for i, _ in items]
        agg = np.array([v for _, v in items], dtype=np.float64)
        score = agg[:, 0] * np.exp2(-(now_ms - agg[:, 1]) / self.half_life_ms)
        order = np.argsort(-score, kind="stable")[:_MAX_RANKED]
        ranked = [(ids[i], float(score[i])) for i in order]
        self._ranked[tenant] = (now, ranked)
        return ranked
