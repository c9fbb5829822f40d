"""Run the processes of a deployment as real OS processes (the demo and end-to-end tests).

Each process is ``python -m recsys_stream.cli <command> --config <file>`` with its output in
``<workdir>/logs/<name>.log``; ``stop()`` sends SIGTERM, then SIGKILL after a grace period, so
nothing is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from recsys_stream.config import Config, hash_key
from recsys_stream.lifeline import child_env

DEMO_KEYS = {"acme": "acme-demo-key", "globex": "globex-demo-key"}


def write_config(path: Path, bootstrap: str, workdir: Path, server_address: str,
                 keys: dict[str, str] = DEMO_KEYS, topic_prefix: str = "",
                 metrics_ports: tuple[int, int, int] = (0, 0, 0),
                 trainer_interval_s: float = 300.0, kafka_client: dict | None = None,
                 server_tls: dict | None = None) -> Path:
    """A TOML config for a local deployment with one API key per tenant (stored hashed).

    ``metrics_ports`` are the worker's, trainer's and server's /metrics ports (0 = off).
    ``kafka_client``: the ``[kafka.client]`` table (a secured cluster); ``server_tls``: the
    server's ``tls_cert`` / ``tls_key`` / ``tls_client_ca``.
    """
    worker_port, trainer_port, server_port = metrics_ports
    lines = [
        f'model_store = "{workdir / "models"}"',
        "[kafka]",
        f'bootstrap_servers = "{bootstrap}"',
        f'topic_prefix = "{topic_prefix}"',
        "[worker]",
        f'state_dir = "{workdir / "state"}"',
        f"metrics_port = {worker_port}",
        "[items]",
        f'state_dir = "{workdir / "item-state"}"',
        "[online]",
        f'state_dir = "{workdir / "online-state"}"',
        "[server]",
        f'address = "{server_address}"',
        f"metrics_port = {server_port}",
        f'profile_dir = "{workdir / "server-profiles"}"',
        *(f'{k} = "{v}"' for k, v in (server_tls or {}).items()),
        "[trainer]",
        'algorithms = ["als"]',
        f"metrics_port = {trainer_port}",
        f"interval_s = {trainer_interval_s}",
    ]
    if kafka_client:
        lines += ["[kafka.client]", *(f'"{k}" = "{v}"' for k, v in kafka_client.items())]
    for tenant, key in keys.items():
        lines += [f"[tenants.{tenant}]", f'api_key_sha256 = ["{hash_key(key)}"]',
                  # the generated worlds have 8 latent genres: small k, strong lambda
                  f"[tenants.{tenant}.als]", "factors = 8", "iterations = 10",
                  "regularization = 5.0"]
    path.write_text("\n".join(lines) + "\n")
    return path


class Stack:
    """Start, watch and stop the processes of one deployment."""

    def __init__(self, config_path: Path, workdir: Path) -> None:
        self.config_path, self.logs = config_path, workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}

    def _argv(self, command: str, *args: str) -> list[str]:
        return [sys.executable, "-m", "recsys_stream.cli", command, "--config",
                str(self.config_path), *args]

    def start(self, name: str, command: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        # each process stops itself if this one dies without stopping it (lifeline.py)
        env = child_env(dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1"))
        proc = subprocess.Popen(self._argv(command, *args), stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        self.procs[name] = proc
        return proc

    def run(self, name: str, command: str, *args: str, timeout_s: float = 300) -> None:
        """Run a process to completion; raise with its log tail if it fails."""
        proc = self.start(name, command, *args)
        try:
            rc = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.stop(name)
            raise RuntimeError(f"{name} did not finish in {timeout_s}s:\n{self.tail(name)}")
        self.procs.pop(name, None)
        if rc != 0:
            raise RuntimeError(f"{name} exited with {rc}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        p = self.logs / f"{name}.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-lines:]) if p.exists() else ""

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash would (no clean shutdown)."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self, name: str, grace_s: float = 10.0) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        return proc.returncode

    def stop_all(self) -> None:
        for name in list(self.procs)[::-1]:
            self.stop(name)


def wait_until(predicate, timeout_s: float, interval_s: float = 0.1, what: str = "condition",
               stack: Stack | None = None):
    """Poll ``predicate`` until it returns a truthy value; fail fast if a stack process died."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if stack is not None:
            stack.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def wait_for_count(count, target: int, stall_s: float, what: str = "records",
                   stack: Stack | None = None, interval_s: float = 0.1) -> int:
    """Wait until ``count()`` reaches ``target``; fail only once it has not moved for ``stall_s``.

    For waits on work in progress (a process committing a backlog): on a loaded machine the
    work is slow, not wrong, so a total deadline makes a correct run fail at random, while a
    stall (no progress at all for ``stall_s``) is what a stuck process looks like. Fails fast
    too if a stack process died.
    """
    last, moved = None, time.monotonic()
    while True:
        value = count()
        if value >= target:
            return value
        if value != last:
            last, moved = value, time.monotonic()
        if stack is not None:
            stack.check_alive()
        if time.monotonic() - moved > stall_s:
            raise TimeoutError(f"{what}: stuck at {value} of {target} for {stall_s}s")
        time.sleep(interval_s)


def load(config_path: Path) -> Config:
    from recsys_stream.config import load_config
    return load_config(config_path, env={})
