"""Composition root of the online-evaluation stage (``recsys-stream online``)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from recsys_stream.config import Config
from recsys_stream.kafka import BrokerWatch, consumer, ensure_topics
from recsys_stream.observability import serve_metrics
from recsys_stream.online.stage import OnlineStage
from recsys_stream.online.store import OnlineStore

log = logging.getLogger(__name__)


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
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    ensure_topics(cfg)
    stage, store = build_online_stage(cfg)
    watch = BrokerWatch(cfg).start()
    http = serve_metrics(cfg.online.metrics_port, watch.health(stage.health))
    if on_start is not None:
        on_start(stage)
    try:
        stage.run(stop)
    finally:
        watch.stop()
        stage.consumer.close()
        store.close()
        if http is not None:
            http.shutdown()
        log.info("online stage stopped")
