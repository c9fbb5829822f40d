"""Composition root of the gRPC server process."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from recsys_stream.config import Config
from recsys_stream.contracts.pb import recommender_pb2
from recsys_stream.follow import ModelFollower
from recsys_stream.kafka import BrokerWatch, ensure_topics, producer
from recsys_stream.observability import serve_metrics
from recsys_stream.serving.catalog_index import CatalogIndex
from recsys_stream.serving.item_delta import ItemDeltas
from recsys_stream.serving.handlers import add_to_server
from recsys_stream.serving.metrics import MODEL_CREATED, MODEL_VERSION, REJECTIONS, SWAPS
from recsys_stream.serving.pinned import PinnedModels
from recsys_stream.serving.profile_store import ProfileWriter, readers_dir
from recsys_stream.serving.read_models import ReadModels
from recsys_stream.serving.served_log import ServedLog
from recsys_stream.serving.service import RecommenderService
from recsys_stream.serving.snapshots import TenantSnapshot
from recsys_stream.serving.tls import server_credentials, warn_if_exposed
from recsys_stream.serving.trending import Trending

log = logging.getLogger(__name__)
SERVICE_NAME = recommender_pb2.DESCRIPTOR.services_by_name["Recommender"].full_name


def _swapped(tenant: str, algorithm: str, snap: TenantSnapshot) -> None:
    SWAPS.labels(tenant, algorithm).inc()
    MODEL_VERSION.labels(tenant, algorithm).set(snap.version)
    MODEL_CREATED.labels(tenant, algorithm).set(snap.created_ms / 1000)


def _rejected(tenant: str, algorithm: str, version: int, error: Exception) -> None:
    REJECTIONS.labels(tenant, algorithm).inc()


class Server:
    """The gRPC server with its read models and model follower; ``port`` once started.

    ``profiles_secondary``: read the profile store written by the pool's supervisor, as a
    RocksDB secondary keeping its files in this directory (default: write it in-process).
    """

    def __init__(self, cfg: Config, profiles_secondary: str | None = None) -> None:
        self.cfg = cfg
        self.models = ModelFollower(cfg, TenantSnapshot.from_artifacts, "server",
                                    on_swap=self._swapped, on_reject=_rejected)
        # experiment arms' pinned versions, rebuilt after each swap (before models: on_swap)
        self.pinned = PinnedModels(cfg, TenantSnapshot.from_artifacts)
        self.read = ReadModels(cfg, profiles_secondary)
        # the catalog's categories and attributes over each served version's rows (filters)
        self.catalog = CatalogIndex(self.read.catalog, self._live_snapshots)
        self.trending = Trending(cfg)
        self.deltas = ItemDeltas(cfg, served=self._served_version)
        self.health = health.aio.HealthServicer()
        # SO_REUSEPORT: `serve --workers N` runs N such servers on one port, the kernel spreads
        # connections between them (gRPC Python serves from one core per process)
        self.grpc = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
        self.port = 0
        # every answer onto `recommendations` for the online stage, off the request path
        self.served_log = ServedLog(
            cfg.topics.recommendations,
            # batches of a fifth of a second: a few requests a second, not one per answer
            # (at linger.ms 5 the producer's own threads cost ~0.3 ms of CPU per answer)
            lambda capacity: producer(cfg, **{"queue.buffering.max.messages": capacity,
                                              "linger.ms": 200}),
            cfg.server.served_log_capacity) if cfg.server.served_log else None

    def _swapped(self, tenant: str, algorithm: str, snap: TenantSnapshot) -> None:
        _swapped(tenant, algorithm, snap)
        self.catalog.wake()
        self.pinned.refresh(tenant, self.models.default_algorithm(tenant))

    def _live_snapshots(self):
        return [s for t in self.cfg.tenants for s in self.models.models(t).values()]

    def _served_version(self, tenant: str, algorithm: str) -> int | None:
        snap = self.models.models(tenant).get(algorithm)
        return snap.version if snap is not None else None

    async def start(self, catch_up_s: float = 30.0) -> None:
        ensure_topics(self.cfg)
        loop = asyncio.get_running_loop()
        # loading models and replaying the read models is blocking I/O: off the event loop
        await loop.run_in_executor(None, self.models.start)
        await loop.run_in_executor(None, self.read.start)
        await loop.run_in_executor(None, self.trending.start)
        await loop.run_in_executor(None, self.deltas.start)
        self.catalog.start()
        if self.served_log is not None:
            self.served_log.start()
        # bodies parsed by the service: one that does not parse is INVALID_ARGUMENT, not UNKNOWN
        add_to_server(RecommenderService(self.cfg, self.models, self.read, self.trending,
                                         self.deltas, self.catalog, self.served_log,
                                         self.pinned), self.grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), self.grpc)
        creds = server_credentials(self.cfg.server)
        self.port = (self.grpc.add_insecure_port(self.cfg.server.address) if creds is None
                     else self.grpc.add_secure_port(self.cfg.server.address, creds))
        await self.grpc.start()
        t0 = time.monotonic()
        caught_up = await loop.run_in_executor(None, self.read.wait_caught_up, catch_up_s)
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving on port %d (%s, profiles %s in %.1fs)", self.port,
                 ("mutual TLS" if self.cfg.server.tls_client_ca else "TLS") if creds
                 else "plaintext", "caught up" if caught_up else "still catching up",
                 time.monotonic() - t0)

    def health_view(self) -> dict:
        """``/healthz``: ok once the gRPC port is serving; profiles replayed; live versions."""
        return {"status": "ok" if self.port else "starting", "port": self.port,
                "profiles_caught_up": self.read.wait_caught_up(0),
                "models": {t: {a: s.version for a, s in self.models.models(t).items()}
                           for t in self.cfg.tenants},
                "default_algorithm": {t: self.models.default_algorithm(t)
                                      for t in self.cfg.tenants}}

    async def stop(self, grace: float = 2.0) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.grpc.stop(grace)
        self.models.stop()
        self.read.stop()
        self.trending.stop()
        self.deltas.stop()
        self.catalog.stop()
        if self.served_log is not None:
            await asyncio.to_thread(self.served_log.stop)


def run_server(cfg: Config, stop: threading.Event | None = None,
               profiles_secondary: str | None = None) -> None:
    """Serve until ``stop`` is set (or SIGTERM / SIGINT in the main thread)."""
    stop = stop or threading.Event()

    async def main() -> None:
        server = Server(cfg, profiles_secondary)
        watch = BrokerWatch(cfg).start()
        http = serve_metrics(cfg.server.metrics_port, watch.health(server.health_view))
        await server.start()
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        while not stop.is_set():
            await asyncio.sleep(0.2)
        await server.stop()
        watch.stop()
        if http is not None:
            http.shutdown()
        log.info("server stopped")

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(main())


def event_loop_factory():
    """uvloop's event loop where it is installed (a server process spends ~4 % less CPU per
    request than on asyncio's own loop, measured with ``benchmarks/serving.py``), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_server_pool(cfg: Config, workers: int) -> None:
    """``workers`` server processes on one port; worker i exposes metrics on ``metrics_port + i``.

    The parent owns the profile store: it tails ``profiles`` into ``server.profile_dir``, which
    the workers read as RocksDB secondaries (one copy of the profiles per host, not one per
    process). Otherwise it only supervises: SIGTERM / SIGINT stop every worker; a worker that
    dies stops the pool (its supervisor restarts the whole service); a worker whose supervisor
    dies stops itself.
    """
    import multiprocessing as mp
    import os

    warn_if_exposed(cfg.server)
    server_credentials(cfg.server)  # unreadable files: one error now, not one per process
    if workers <= 1:
        run_server(cfg)
        return
    ensure_topics(cfg)
    store = ProfileWriter(cfg).start()  # before the workers: a secondary needs the primary
    ctx = mp.get_context("spawn")
    procs = []
    for i in range(workers):
        port = cfg.server.metrics_port + i if cfg.server.metrics_port else 0
        p = ctx.Process(target=_pool_worker,
                        args=(cfg.replace(server={"metrics_port": port}),
                              str(readers_dir(cfg) / f"server-{i}"), os.getpid()),
                        name=f"server-{i}", daemon=False)
        p.start()
        procs.append(p)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("server pool of %d processes on %s (pids %s)", workers, cfg.server.address,
             [p.pid for p in procs])
    while not stop.wait(0.5):
        if any(not p.is_alive() for p in procs):
            log.error("a server process exited; stopping the pool")
            break
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGTERM)
    for p in procs:
        p.join(15)
    store.stop()


def _pool_worker(cfg: Config, profiles_secondary: str, supervisor_pid: int) -> None:
    from recsys_stream.lifeline import watch_parent
    from recsys_stream.observability import setup_logging
    setup_logging("serve")
    watch_parent(supervisor_pid)  # a supervisor killed outright cannot stop its workers
    run_server(cfg, profiles_secondary=profiles_secondary)
