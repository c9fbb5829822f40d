"""A Spark standalone cluster from the pip package, on loopback, for tests and benchmarks.

PySpark's wheel has ``bin/spark-class`` but no ``sbin`` start scripts, so the master and each
worker are ``spark-class org.apache.spark.deploy.{master.Master,worker.Worker}`` processes
(``spark-class`` execs the JVM: the pid is the JVM's). Each is started through
``lifeline.die_with_parent`` (the kernel SIGTERMs it when the starting thread dies) and stopped
by :meth:`SparkCluster.stop`; a watcher records every process below them (the executors the
workers launch) so a test can prove every one of them is gone afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil

from recsys_stream.batch.engines.spark_session import find_java
from recsys_stream.broker import free_port
from recsys_stream.lifeline import die_with_parent

SPARK_CLASS = str(Path(sys.executable).parent / "spark-class")


class SparkCluster:
    """Master + ``workers`` workers with ``cores`` cores and ``memory`` each, on 127.0.0.1."""

    def __init__(self, workdir: Path, workers: int = 2, cores: int = 1,
                 memory: str = "1g") -> None:
        self.workdir = Path(workdir)
        self.port, self.ui_port = free_port(), free_port()
        self.master = f"spark://127.0.0.1:{self.port}"
        self.n_workers, self.cores, self.memory = workers, cores, memory
        self.procs: list[subprocess.Popen] = []
        self.seen: dict[int, float] = {}  # pid -> create_time of every process of the cluster
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None

    def _env(self) -> dict:
        import pyspark
        # SPARK_HOME is the pip package: spark-class's own search runs `python`, maybe not ours
        env = dict(os.environ, JAVA_HOME=find_java(), SPARK_LOCAL_IP="127.0.0.1",
                   SPARK_HOME=str(Path(pyspark.__file__).parent),
                   SPARK_LOCAL_DIRS=str(self.workdir / "local"), SPARK_DAEMON_MEMORY="256m",
                   OPENBLAS_NUM_THREADS="1")
        return env

    def _start(self, name: str, *args: str) -> None:
        log = open(self.workdir / f"{name}.log", "wb")
        p = subprocess.Popen(die_with_parent([SPARK_CLASS, *args]), env=self._env(),
                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(p)

    def start(self, timeout_s: float = 300.0) -> SparkCluster:
        """Start the master and the workers, and wait until every worker has registered (a
        minute each when the shared cores are busy); on failure nothing is left running."""
        try:
            return self._start_all(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start_all(self, timeout_s: float) -> SparkCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(self.port), "--webui-port", str(self.ui_port))
        for n in range(self.n_workers):
            self._start(f"worker{n}", "org.apache.spark.deploy.worker.Worker",
                        "--host", "127.0.0.1", "--webui-port", str(free_port()),
                        "--cores", str(self.cores), "--memory", self.memory,
                        "--work-dir", str(self.workdir / f"work{n}"), self.master)
        self._watch = threading.Thread(target=self._record, daemon=True, name="spark-watch")
        self._watch.start()
        deadline = time.monotonic() + timeout_s
        while self.alive_workers() < self.n_workers:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a Spark cluster process exited: {p.args}\n"
                                       + self.tail())
            if time.monotonic() > deadline:
                raise TimeoutError("Spark workers did not register\n" + self.tail())
            time.sleep(0.5)
        return self

    def alive_workers(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/",
                                        timeout=2) as r:
                return int(json.load(r).get("aliveworkers", 0))
        except OSError:
            return 0

    def _record(self) -> None:
        while not self._stop.wait(0.3):
            self._snapshot()

    def _snapshot(self) -> None:
        for p in self.procs:
            try:
                root = psutil.Process(p.pid)
                for q in [root, *root.children(recursive=True)]:
                    self.seen.setdefault(q.pid, q.create_time())
            except psutil.NoSuchProcess:
                pass

    def left_running(self) -> list[int]:
        """Pids of the cluster's processes (any ever seen) that still exist."""
        out = []
        for pid, created in self.seen.items():
            try:
                q = psutil.Process(pid)
                if q.create_time() == created and q.status() != psutil.STATUS_ZOMBIE:
                    out.append(pid)
            except psutil.NoSuchProcess:
                pass
        return out

    def tail(self, lines: int = 20) -> str:
        out = []
        for f in sorted(self.workdir.glob("*.log")):
            out.append(f"--- {f.name}\n" + "\n".join(
                f.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    def stop(self, grace_s: float = 20.0) -> list[int]:
        """SIGTERM the workers and the master; returns the pids still running ``grace_s``
        after (then killed): a test asserts there were none."""
        self._snapshot()
        self._stop.set()
        for p in reversed(self.procs):  # workers first: they end their executors
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + grace_s
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        # executors a worker launched are its children: give them the same grace, then kill
        deadline = time.monotonic() + grace_s
        while self.left_running() and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = self.left_running()
        for pid in survivors:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        return survivors

    def __enter__(self) -> SparkCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
