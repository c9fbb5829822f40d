"""Composition root of the nearline worker process."""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import Callable

from recsys_stream.config import Config
from recsys_stream.follow import ModelFollower
from recsys_stream.kafka import BrokerWatch, consumer, ensure_topics, producer
from recsys_stream.nearline.item_feed import ItemFeed
from recsys_stream.nearline.models import model_follower
from recsys_stream.nearline.state import StateStore
from recsys_stream.nearline.worker import Worker
from recsys_stream.observability import serve_metrics

log = logging.getLogger(__name__)

# The worker holds millions of long-lived objects (cached histories, a 20k-event batch's
# messages). With CPython's default thresholds (700, 10, 10) the cyclic collector took ~20 % of
# the hot path; there are no reference cycles in it to collect. Measured with
# benchmarks/hot_path.py (1M events, 100k users, batches of 20k): 17.9k events per CPU second
# by default, 21.6k with these thresholds, 22.1k with the collector off.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Collect less often: see ``GC_THRESHOLDS``."""
    gc.set_threshold(*GC_THRESHOLDS)


def build_worker(cfg: Config) -> tuple[Worker, ModelFollower, StateStore]:
    store = StateStore(cfg.worker.state_dir, cfg.worker.state_cache_items)
    worker = Worker(cfg, store, None,
                    consumer(cfg, group_id=f"{cfg.kafka.topic_prefix}recsys-worker",
                             # range: partition p of interactions and of recommendations
                             # (frequency caps) go to the same worker, with the user's state
                             **{"session.timeout.ms": cfg.worker.session_timeout_ms,
                                "partition.assignment.strategy": "range"}),
                    producer(cfg))
    worker.models = follower = model_follower(cfg, on_new_model=worker.request_resolve)
    worker.item_feed = ItemFeed(cfg, follower, worker._produce)
    return worker, follower, store


def run_worker(cfg: Config, stop: threading.Event | None = None,
               on_start: Callable[[Worker], None] | None = None) -> None:
    """Run the worker until ``stop`` is set (or SIGTERM / SIGINT in the main thread).

    ``on_start(worker)`` is called once the worker is built (tests and benchmarks watch it).
    """
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    ensure_topics(cfg)
    tune_gc()
    worker, follower, store = build_worker(cfg)
    watch = BrokerWatch(cfg).start()
    http = serve_metrics(cfg.worker.metrics_port, watch.health(worker.health))
    follower.start()
    worker.item_feed.start()
    if on_start is not None:
        on_start(worker)
    try:
        worker.run(stop)
    finally:
        worker.producer.flush(10)
        worker.consumer.close()
        follower.stop()
        worker.item_feed.stop()
        watch.stop()
        # The clients and the follower hold the worker's callbacks (subscribe's on_assign and
        # on_revoke, on_new_model): cycles, which this process's rare cyclic collection
        # (GC_THRESHOLDS) frees only much later. A process that runs many workers (tests,
        # benchmarks) kept their producers connected until then. Broken here, the worker and
        # its librdkafka clients are freed as soon as the caller lets go of the worker.
        worker.consumer = worker.producer = worker.models = worker.item_feed = None
        store.close()
        if http is not None:
            http.shutdown()
        log.info("worker stopped")
