"""What the broker fault tests share: a TCP proxy that can cut the network, and a scenario that
streams events into a whole deployment (worker, server, trainer as OS processes) while a fault
happens, then measures what arrived against an uninterrupted run.

Not a test module: ``test_broker_faults.py`` uses it.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from recsys_stream.broker import free_port
from confluent_kafka import TopicPartition

from recsys_stream.kafka import consumer, ensure_topics, producer, produce_all
from recsys_stream.serving.client import RecommenderClient
from recsys_stream.stack import DEMO_KEYS, Stack, load, wait_for_count, wait_until, write_config

from tests.integration.test_worker_recovery import Markers, dump


class Proxy:
    """A TCP proxy on loopback in front of one broker; ``cut()`` blackholes it.

    While cut, connections stay open and new ones are accepted, but no byte moves in either
    direction: what a switch that drops every packet looks like to both sides (requests time
    out; nothing is refused). Bytes held during the cut flow once it ends, unless a side has
    closed its socket meanwhile.
    """

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = port or free_port()
        self._open = threading.Event()
        self._open.set()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._threads = [threading.Thread(target=self._accept, daemon=True, name="proxy")]
        self._threads[0].start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cut(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._stop.set()
        self._open.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            t = threading.Thread(target=self._pump, args=(client,), daemon=True)
            t.start()

    def _pump(self, client: socket.socket) -> None:
        self._open.wait()  # a connection made during the cut gets no answer until it ends
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        pair = {client: upstream, upstream: client}
        try:
            while not self._stop.is_set():
                if not self._open.is_set():
                    time.sleep(0.05)  # hold: read nothing, send nothing
                    continue
                ready, _, _ = select.select(list(pair), [], [], 0.1)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    self._open.wait()
                    pair[s].sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()


@dataclass
class Figures:
    """What a fault scenario measured."""

    produced: int = 0
    lost: int = 0
    doubled: int = 0
    catch_up_s: float = 0.0
    requests_ok: int = 0
    requests_failed: int = 0
    failures: list[str] = field(default_factory=list)
    health_during: set[str] = field(default_factory=set)
    health_after: dict[str, str] = field(default_factory=dict)
    stall_s: float = 0.0

    def line(self, name: str) -> str:
        return (f"{name}: {self.produced} events produced; applied exactly once: {self.lost} "
                f"lost, {self.doubled} doubled; caught up {self.catch_up_s:.1f} s after the "
                f"fault ended; Recommend {self.requests_ok} ok, {self.requests_failed} failed "
                f"while it lasted; stall {self.stall_s:.1f} s; /healthz during "
                f"{sorted(self.health_during)}, after {self.health_after}")


def count_differences(expected: dict, got: dict) -> tuple[int, int]:
    """(events lost, events doubled) by each user's event count."""
    lost = doubled = 0
    for key in expected.keys() | got.keys():
        e = expected[key][2] if key in expected else 0
        g = got[key][2] if key in got else 0
        lost += max(e - g, 0)
        doubled += max(g - e, 0)
    return lost, doubled


class Scenario:
    """A deployment on ``bootstrap`` (the broker, or a proxy advertised as it) with a worker,
    a server and a periodic trainer as OS processes, fed ``records`` by a producer that
    rides out the fault, and queried all the while."""

    def __init__(self, tmp_path: Path, bootstrap: str, name: str,
                 replication_factor: int = 1) -> None:
        self.workdir = tmp_path / name
        self.workdir.mkdir()
        self.address = f"127.0.0.1:{free_port()}"
        self.ports = (free_port(), free_port(), free_port())
        path = write_config(self.workdir / "config.toml", bootstrap, self.workdir, self.address,
                            topic_prefix=f"{name}{uuid.uuid4().hex[:6]}-",
                            metrics_ports=self.ports, trainer_interval_s=10.0)
        text = path.read_text().replace(
            "[kafka]\n", f"[kafka]\nreplication_factor = {replication_factor}\n", 1)
        # one fixed assignment: a fault test is about the broker, not about group rebalances
        text = text.replace("[worker]\n", "[worker]\npartitions = [0, 1, 2, 3]\n", 1)
        path.write_text(text)
        self.cfg = load(path)
        ensure_topics(self.cfg)
        self.stack = Stack(path, self.workdir)
        self.figures = Figures()
        self._querying = threading.Event()
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._streaming = threading.Event()  # the stall is measured from the stream's start

    # -- the parts ----------------------------------------------------------------------------
    def start(self) -> None:
        self.stack.start("worker", "worker")
        self.stack.start("server", "serve")
        self.stack.start("trainer", "trainer", "--periodic")
        self.markers = Markers(self.cfg)
        threading.Thread(target=self._watch_progress, daemon=True, name="progress").start()
        wait_until(lambda: self.health("server").get("status") == "ok", 60, stack=self.stack,
                   what="the server to serve")

    def _watch_progress(self) -> None:
        """The longest time the worker's committed input did not move while input waited."""
        last, since = -1, time.monotonic()
        while not self._stop.is_set():
            total = self.markers.total()
            now = time.monotonic()
            if total != last or self._caught_up.is_set() or not self._streaming.is_set():
                last, since = total, now
            self.figures.stall_s = max(self.figures.stall_s, now - since)
            time.sleep(0.2)

    def health(self, name: str) -> dict:
        port = self.ports[("worker", "trainer", "server").index(name)]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # 503 carries the body too
            return json.loads(e.read() or b"{}")
        except OSError:
            return {}

    def stream(self, records: list[tuple[bytes, bytes]], seconds: float,
               chunks: int = 50) -> threading.Thread:
        """Produce ``records`` in order over about ``seconds`` on a thread; the producer is
        idempotent and retries for up to 10 minutes, so a broker outage only delays it."""
        self._streaming.set()

        def run() -> None:
            prod = producer(self.cfg, partitioner="murmur2_random",
                            **{"message.timeout.ms": 600_000})
            step = -(-len(records) // chunks)
            for i in range(0, len(records), step):
                produce_all(prod, self.cfg.topics.interactions, records[i:i + step])
                prod.poll(0)
                time.sleep(seconds / chunks)
            while prod.flush(1.0):
                pass
            self.figures.produced = len(records)

        t = threading.Thread(target=run, daemon=True, name="stream")
        t.start()
        return t

    def query(self, users: list[str]) -> threading.Thread:
        """Ask Recommend for known users ~20 times a second; failures counted while
        ``during()`` is on."""
        def run() -> None:
            client = RecommenderClient(self.address, DEMO_KEYS["acme"], timeout=2.0)
            i = 0
            while not self._stop.is_set():
                try:
                    client.recommend(users[i % len(users)], k=10)
                    ok = True
                except Exception as e:  # noqa: BLE001 - counted and shown
                    ok = False
                    if len(self.figures.failures) < 5:
                        self.figures.failures.append(repr(e)[:200])
                if self._querying.is_set():
                    if ok:
                        self.figures.requests_ok += 1
                    else:
                        self.figures.requests_failed += 1
                i += 1
                time.sleep(0.05)
        t = threading.Thread(target=run, daemon=True, name="query")
        t.start()
        return t

    def during(self, fault: Callable[[], None], hold_s: float,
               recover: Callable[[], None]) -> float:
        """``fault()``, watch /healthz for ``hold_s``, ``recover()``; returns when it ended."""
        self._querying.set()
        fault()
        t_end = time.monotonic() + hold_s
        while time.monotonic() < t_end:
            for name in ("worker", "server", "trainer"):
                status = self.health(name).get("status")
                if status:
                    self.figures.health_during.add(f"{name}:{status}")
            time.sleep(0.5)
        recover()
        self._querying.clear()
        return time.monotonic()

    def input_end(self) -> int:
        """Records in the interactions topic: the sum of its partitions' high watermarks."""
        c = consumer(self.cfg, group_id="watermarks-unused")
        try:
            return sum(c.get_watermark_offsets(TopicPartition(self.cfg.topics.interactions, p),
                                               timeout=10)[1]
                       for p in range(self.cfg.kafka.interaction_partitions))
        finally:
            c.close()

    def finish(self, streamer: threading.Thread, fault_ended: float,
               timeout_s: float = 180.0) -> dict:
        """Wait for every record in the topic to be committed by the worker (its offset
        markers); the worker, trainer and server must still be up and healthy."""
        streamer.join(timeout_s)
        assert not streamer.is_alive(), "the producer did not deliver every event"
        end = self.input_end()
        wait_for_count(self.markers.total, end, timeout_s, stack=self.stack,
                       what=f"the worker to commit all {end} records")
        self._caught_up.set()
        self.figures.catch_up_s = time.monotonic() - fault_ended
        wait_until(lambda: all(self.health(n).get("status") == "ok"
                               for n in ("worker", "server", "trainer")), 60, stack=self.stack,
                   what="every process healthy again")
        self.figures.health_after = {n: self.health(n).get("status")
                                     for n in ("worker", "server", "trainer")}
        self.stack.check_alive()  # nobody died of it
        self._stop.set()
        assert self.stack.stop("worker") == 0
        self.stack.stop_all()
        self.markers.tail.stop()
        return dump(self.cfg.worker.state_dir)
