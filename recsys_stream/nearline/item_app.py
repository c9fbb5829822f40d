"""Composition root of the item fold-in stage process (``recsys-stream items``)."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from recsys_stream.config import Config
from recsys_stream.kafka import BrokerWatch, consumer, ensure_topics, producer
from recsys_stream.nearline.item_stage import ItemStage, StageModels
from recsys_stream.nearline.item_state import ItemStore
from recsys_stream.observability import serve_metrics

log = logging.getLogger(__name__)


def build_item_stage(cfg: Config) -> tuple[ItemStage, ItemStore]:
    store = ItemStore(cfg.items.state_dir)
    stage = ItemStage(cfg, store, StageModels(cfg),
                      consumer(cfg, group_id=f"{cfg.kafka.topic_prefix}recsys-items",
                               **{"session.timeout.ms": cfg.items.session_timeout_ms}),
                      producer(cfg))
    return stage, store


def run_item_stage(cfg: Config, stop: threading.Event | None = None,
                   on_start: Callable[[ItemStage], None] | None = None) -> None:
    """Run the stage until ``stop`` is set (or SIGTERM / SIGINT in the main thread)."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    ensure_topics(cfg)
    stage, store = build_item_stage(cfg)
    watch = BrokerWatch(cfg).start()
    http = serve_metrics(cfg.items.metrics_port, watch.health(stage.health))
    if on_start is not None:
        on_start(stage)
    try:
        stage.run(stop)
    finally:
        watch.stop()
        stage.producer.flush(10)
        stage.consumer.close()
        stage.consumer = stage.producer = None
        store.close()
        if http is not None:
            http.shutdown()
        log.info("item stage stopped")
