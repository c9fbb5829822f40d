"""Nothing outlives a parent killed outright: a server pool's workers, a Stack's processes and
the embedded broker all stop when the process that started them dies by SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

from recsys_stream.stack import wait_until

ROOT = Path(__file__).resolve().parents[2]

# the parent: a `serve --workers 2` pool and a worker through Stack, on the session's broker,
# and brokers of its own, tansu and Apache Kafka (started here, so the kernel ties them to this
# process); prints the pids, then waits to be killed
PARENT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from recsys_stream.broker import EmbeddedBroker, free_port
    from recsys_stream.kafka_cluster import KafkaCluster
    from recsys_stream.stack import Stack, write_config
    wd, bootstrap = Path(sys.argv[1]), sys.argv[2]
    broker = EmbeddedBroker().start()
    kafka = KafkaCluster(data_dir=wd / "kafka").start()
    path = write_config(wd / "c.toml", bootstrap, wd, f"127.0.0.1:{free_port()}",
                        topic_prefix=wd.name + "-")
    stack = Stack(path, wd)
    server = stack.start("server", "serve", "--workers", "2")
    worker = stack.start("worker", "worker")
    print(json.dumps({"broker": broker.proc.pid, "kafka": kafka.nodes[0].proc.pid,
                      "server": server.pid, "worker": worker.pid}),
          flush=True)
    time.sleep(600)
""")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_killed_parent_leaves_no_process_behind(tmp_path, kafka_bootstrap):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path), kafka_bootstrap],
                              cwd=ROOT,
                              stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        pids = json.loads(parent.stdout.readline())
        supervisor = psutil.Process(pids["server"])
        wait_until(lambda: len([c for c in supervisor.children()
                                if "spawn_main" in " ".join(c.cmdline())]) == 2, 60,
                   what="the server pool's two workers")
        workers = [c.pid for c in supervisor.children() if "spawn_main" in " ".join(c.cmdline())]

        # 1. the pool's supervisor dies outright: its workers stop themselves
        os.kill(pids["server"], signal.SIGKILL)
        wait_until(lambda: not any(map(_alive, workers)), 30,
                   what="the pool workers to stop after their supervisor was killed")

        # 2. the parent dies outright: the worker it started and its broker go with it
        assert _alive(pids["broker"]) and _alive(pids["kafka"]) and _alive(pids["worker"])
        parent.kill()
        parent.wait(10)
        wait_until(lambda: not _alive(pids["worker"]), 30,
                   what="the worker to stop after the Stack's process was killed")
        wait_until(lambda: not _alive(pids["broker"]), 30,
                   what="the broker to stop after its parent was killed")
        wait_until(lambda: not _alive(pids["kafka"]), 30,
                   what="the Apache Kafka JVM to stop after its parent was killed")
    finally:
        parent.kill()
        for pid in [*pids.values(), *workers] if "workers" in locals() else ():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
