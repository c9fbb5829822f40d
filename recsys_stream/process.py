"""The life of a stage process (item fold-in, online evaluation): one place for what each
composition root would otherwise repeat.

Start: SIGTERM / SIGINT set ``stop`` (in the main thread), the topics exist, the stage and its
store are built, the broker watch and ``/metrics`` + ``/healthz`` run. Stop: the stage's loop
returns after its last commit, then its clients, its store and the HTTP server close, in that
order (a store closed before the loop's last commit would lose it).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from recsys_stream.config import Config
from recsys_stream.kafka import BrokerWatch, ensure_topics
from recsys_stream.observability import serve_metrics

log = logging.getLogger(__name__)


def run_stage(cfg: Config, name: str, build: Callable[[Config], tuple[Any, Any]],
              metrics_port: int, close_clients: Callable[[Any], None],
              stop: threading.Event | None = None,
              on_start: Callable[[Any], None] | None = None) -> None:
    """Run ``build(cfg)``'s stage until ``stop`` is set.

    Parameters
    ----------
    name : for the log ("item stage", "online stage")
    build : returns ``(stage, store)``; the stage has ``run(stop)`` and ``health()``, the
        store ``close()``
    metrics_port : Prometheus /metrics (and /healthz) port; 0 = off
    close_clients : closes the stage's Kafka clients after its loop returned
    on_start : called with the stage before its loop starts (tests keep a handle)
    """
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    ensure_topics(cfg)
    stage, store = build(cfg)
    watch = BrokerWatch(cfg).start()
    http = serve_metrics(metrics_port, watch.health(stage.health))
    if on_start is not None:
        on_start(stage)
    try:
        stage.run(stop)
    finally:
        watch.stop()
        close_clients(stage)
        store.close()
        if http is not None:
            http.shutdown()
        log.info("%s stopped", name)


class PartitionOwner:
    """The input assignment of a stage whose input offsets live with its state (RocksDB).

    Manual partitions (``assign``), or the consumer group's, committing everything applied
    before a partition is taken away. The stage provides ``consumer``, ``partitions``,
    ``commit()`` and ``_positions(partitions)`` (where each partition resumes: its stored
    offsets).
    """

    def assign_inputs(self, topics, manual) -> None:
        if manual:
            self.consumer.assign(self._positions(list(manual)))
        else:
            self.consumer.subscribe(list(topics), on_assign=self._on_assign,
                                    on_revoke=self._on_revoke, on_lost=self._on_revoke)

    def _on_assign(self, consumer, tps) -> None:
        consumer.assign(self._positions([tp.partition for tp in tps]))

    def _on_revoke(self, consumer, tps) -> None:
        self.commit()
        gone = {tp.partition for tp in tps}
        self.partitions = [p for p in self.partitions if p not in gone]
