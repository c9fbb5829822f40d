"""A Spark session for one training round: Java found, master checked, every JVM stopped after.

PySpark (the project's ``spark`` extra) ships Spark's jars and ``bin/spark-class``; it needs a
Java 17+ runtime: ``JAVA_HOME`` when set, else the ``java`` on ``PATH`` (Debian:
``openjdk-17-jre-headless``). The driver's JVM is PySpark's gateway process; PySpark keeps it
for the life of the Python process even after ``SparkSession.stop()``, so :func:`spark_session`
closes its stdin as well (the gateway exits on EOF: ``PythonGatewayServer``) and waits for it:
a periodic trainer holds no JVM between rounds, and a test leaves none behind.

Failures that have one clear cause are one-line :class:`SparkEngineError` s: PySpark not
installed, no Java, a ``spark://`` master that does not accept a connection (checked with a TCP
connect before the session starts: Spark itself would retry registering for a minute and then
leave the driver waiting for executors).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recsys_stream.config import SparkConfig

log = logging.getLogger(__name__)

# Settings every session gets unless trainer.spark.settings says otherwise: the UI is not served
# (no port to collide with), one BLAS thread per Python worker as in the rest of the project.
DEFAULTS = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.executorEnv.OPENBLAS_NUM_THREADS": "1",
    "spark.executorEnv.MKL_NUM_THREADS": "1",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


class SparkEngineError(RuntimeError):
    """A Spark engine failure with one clear cause; its message is one line."""


def find_java(env: dict | None = None) -> str:
    """``JAVA_HOME`` for Spark: the environment's, else the home of the ``java`` on ``PATH``.

    Raises
    ------
    SparkEngineError
        Neither names a ``bin/java``.
    """
    env = os.environ if env is None else env
    home = env.get("JAVA_HOME")
    if home:
        if (Path(home) / "bin" / "java").is_file():
            return home
        raise SparkEngineError(f"JAVA_HOME={home} has no bin/java: the Spark engine needs a "
                               "Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)")
    java = shutil.which("java", path=env.get("PATH"))
    if java is None:
        raise SparkEngineError("no Java found (JAVA_HOME unset, no java on PATH): the Spark engine "
                               "needs a Java 17+ runtime (Debian: apt-get install "
                               "openjdk-17-jre-headless)")
    return str(Path(java).resolve().parent.parent)  # /usr/lib/jvm/<jdk>/bin/java -> <jdk>


def check_master(master: str, timeout_s: float) -> None:
    """A ``spark://host:port[,host:port]`` master must accept a TCP connection (any one of an
    HA list); ``local[...]`` and other schemes are not checked.

    Raises
    ------
    SparkEngineError
        No listed master accepts a connection within ``timeout_s``.
    """
    if not master.startswith("spark://"):
        return
    errors = []
    for hostport in master[len("spark://"):].split(","):
        host, _, port = hostport.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s):
                return
        except (OSError, ValueError) as e:
            errors.append(f"{hostport}: {e}")
    raise SparkEngineError(f"Spark master {master} is unreachable ({'; '.join(errors)})")


def _import_pyspark():
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkEngineError("trainer engine \"spark\" needs PySpark: pip install "
                               "'recsys-stream[spark]'") from None
    return SparkSession


@contextmanager
def spark_session(cfg: SparkConfig, app_name: str = "recsys-stream-trainer") -> Iterator:
    """A ``SparkSession`` on ``cfg.master`` with ``DEFAULTS`` and ``cfg.settings``; stopped, and
    its gateway JVM ended, on exit.

    Executors run this interpreter (``PYSPARK_PYTHON = sys.executable``): on a cluster of
    several machines the same environment must exist at the same path on each of them.
    """
    SparkSession = _import_pyspark()
    java_home = find_java()
    check_master(cfg.master, cfg.connect_timeout_s)
    os.environ["JAVA_HOME"] = java_home
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.master(cfg.master).appName(app_name)
    for k, v in {**DEFAULTS, **{str(k): str(v) for k, v in cfg.settings.items()}}.items():
        builder = builder.config(k, v)
    log.info("starting Spark on %s (JAVA_HOME %s)", cfg.master, java_home)
    try:
        spark = builder.getOrCreate()
    except Exception as e:
        raise SparkEngineError(f"Spark session on {cfg.master} did not start: "
                               f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    spark.sparkContext.setLogLevel("WARN")
    try:
        yield spark
    finally:
        stop_session(spark)


def stop_session(spark) -> None:
    """Stop the session and end PySpark's gateway JVM (it would outlive ``stop()``)."""
    from pyspark import SparkContext
    gateway = SparkContext._gateway
    try:
        spark.stop()
    finally:
        if gateway is not None:
            proc = getattr(gateway, "proc", None)
            try:
                gateway.shutdown()
            except Exception:  # already gone
                pass
            if proc is not None:
                try:
                    proc.stdin.close()  # EOF: PythonGatewayServer exits
                    proc.wait(timeout=30)
                except Exception:
                    proc.kill()
                    proc.wait(timeout=10)
            SparkContext._gateway = None
            SparkContext._jvm = None
