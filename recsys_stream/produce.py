"""Producers of interaction events: generated (synthetic, with latent structure) or from a file.

Events are encoded as ``recsys.v1.Interaction`` protobuf and keyed ``tenant \\x1f user`` so one
user's events stay ordered in one partition.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from tqdm import tqdm

from recsys_stream.config import Config
from recsys_stream.contracts.events import Event, encode_event
from recsys_stream.kafka import produce_all, producer
from recsys_stream.synthetic import generate_events, make_world


def produce_events(cfg: Config, events: Iterable[Event], total: int | None = None,
                   progress: bool = True) -> int:
    """Produce validated-shape events to the interactions topic and wait for delivery."""
    prod = producer(cfg)
    records = ((e.key, encode_event(e)) for e in tqdm(events, total=total, unit="ev",
                                                        disable=not progress, desc="produce"))
    n = produce_all(prod, cfg.topics.interactions, records)
    remaining = prod.flush(30)
    if remaining:
        raise RuntimeError(f"{remaining} events were not delivered to {cfg.topics.interactions}")
    return n


def produce_generated(cfg: Config, tenant: str, users: int, events_per_user: int, items: int,
                      seed: int = 0) -> int:
    """Synthetic events for ``users`` users of ``tenant`` over the last 30 days."""
    world = make_world(tenant, items)
    now = int(time.time() * 1000)
    events = generate_events(world, users, events_per_user, start_ms=now - 30 * 86_400_000,
                             seed=seed)
    return produce_events(cfg, events, total=len(events))


def produce_file(cfg: Config, path: str, tenant: str | None = None) -> int:
    """Events from a JSONL or CSV file (MovieLens ``ratings.csv`` included)."""
    from recsys_stream.batch.data import iter_events_file
    return produce_events(cfg, iter_events_file(path, tenant=tenant))
