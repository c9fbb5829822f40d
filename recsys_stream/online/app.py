"""Composition root of the online-evaluation stage (``recsys-stream online``)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from recsys_stream.config import Config
from recsys_stream.kafka import consumer
from recsys_stream.online.stage import OnlineStage
from recsys_stream.online.store import OnlineStore
from recsys_stream.process import run_stage


def build_online_stage(cfg: Config) -> tuple[OnlineStage, OnlineStore]:
    store = OnlineStore(cfg.online.state_dir)
    # range: partition p of both topics goes to the same member (co-partitioned join)
    cons = consumer(cfg, group_id=f"{cfg.kafka.topic_prefix}recsys-online",
                    **{"session.timeout.ms": cfg.online.session_timeout_ms,
                       "partition.assignment.strategy": "range"})
    return OnlineStage(cfg, store, cons), store


def run_online_stage(cfg: Config, stop: threading.Event | None = None,
                     on_start: Callable[[OnlineStage], None] | None = None) -> None:
    """Run the stage until ``stop`` is set (or SIGTERM / SIGINT in the main thread)."""
    run_stage(cfg, "online stage", build_online_stage, cfg.online.metrics_port,
              lambda stage: stage.consumer.close(), stop, on_start)
