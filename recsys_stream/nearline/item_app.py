"""Composition root of the item fold-in stage process (``recsys-stream items``)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from recsys_stream.config import Config
from recsys_stream.kafka import consumer, producer
from recsys_stream.nearline.item_stage import ItemStage, StageModels
from recsys_stream.nearline.item_state import ItemStore
from recsys_stream.process import run_stage


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
    run_stage(cfg, "item stage", build_item_stage, cfg.items.metrics_port, _close_clients,
              stop, on_start)


def _close_clients(stage: ItemStage) -> None:
    stage.producer.flush(10)  # vectors solved in the last batch
    stage.consumer.close()
    stage.consumer = stage.producer = None
