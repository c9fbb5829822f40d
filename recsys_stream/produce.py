"""Producers of interaction events: generated (synthetic, with latent structure) or from a file.

Events are encoded as ``recsys.v1.Interaction`` protobuf and keyed ``tenant \\x1f user`` so one
user's events stay ordered in one partition.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from tqdm import tqdm

from recsys_stream.config import Config
from recsys_stream.contracts.events import MAX_ID_BYTES, Event, encode_event, erase_event
from recsys_stream.contracts.keys import SEP
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


def check_erase_ids(tenant: str, user_id: str) -> str | None:
    """Why ``(tenant, user_id)`` cannot be erased (the field named), or None: the ids an event
    could carry (the worker's validation), so that an erase record is never a dead letter."""
    for name, v in (("tenant", tenant), ("user_id", user_id)):
        if not v:
            return f"{name} is required"
        if len(v.encode()) > MAX_ID_BYTES:
            return f"{name} is longer than {MAX_ID_BYTES} bytes"
        if SEP in v or not v.isprintable():
            return f"{name} contains control characters"
    return None


def erase_user(cfg: Config, tenant: str, user_id: str, prod=None,
               timeout_s: float = 30.0) -> tuple[Event, int, int]:
    """Produce a user's erase record on ``interactions`` (their own key, after their events)
    and wait for the broker's acknowledgement.

    Returns
    -------
    (event, partition, offset) of the acknowledged record

    Raises
    ------
    ValueError
        bad ids or an unconfigured tenant (the message names the field)
    RuntimeError
        the broker did not acknowledge in ``timeout_s``
    """
    why = check_erase_ids(tenant, user_id)
    if why is None and tenant not in cfg.tenants:
        why = f"tenant {tenant!r} is not configured"
    if why is not None:
        raise ValueError(why)
    ev = erase_event(tenant, user_id)
    own = prod is None
    prod = producer(cfg) if own else prod
    done: dict = {}

    def delivered(err, msg) -> None:
        done.update(err=err, partition=msg.partition(), offset=msg.offset())

    prod.produce(cfg.topics.interactions, key=ev.key, value=encode_event(ev),
                 on_delivery=delivered)
    deadline = time.monotonic() + timeout_s
    while not done and time.monotonic() < deadline:
        prod.poll(0.1)
    if not done:
        raise RuntimeError(f"the erase record was not acknowledged by "
                           f"{cfg.topics.interactions} within {timeout_s:.0f}s")
    if done["err"] is not None:
        raise RuntimeError(f"the erase record was not delivered: {done['err']}")
    return ev, done["partition"], done["offset"]
