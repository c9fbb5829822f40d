"""Child processes that stop when the process that started them dies.

``Stack`` (the demo, tests, benchmarks) and ``serve --workers N`` start processes that must not
outlive their parent: a parent killed by SIGKILL, a crash or a CI timeout cannot stop them, and
an orphaned broker or server pool goes on taking CPU and ports (seen: a server pool and its
broker kept 0.3 of 2 cores busy for 25 minutes after a benchmark script died).

- Our own processes get their parent's pid in ``PARENT_ENV`` (or as an argument) and watch it:
  once their parent is gone they send themselves SIGTERM, the same graceful stop ``Stack.stop``
  asks for.
- A binary we do not control (the embedded broker) is started through util-linux ``setpriv
  --pdeathsig``: the kernel sends it SIGTERM when the *thread* that started it exits, so start
  it from a thread that lives as long as it should (every caller uses the main thread).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading

log = logging.getLogger(__name__)

PARENT_ENV = "RECSYS_STREAM_PARENT_PID"
CHECK_S = 1.0


def child_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` plus this process as the parent the child must not outlive."""
    return dict(env, **{PARENT_ENV: str(os.getpid())})


def watch_parent(parent_pid: int | None = None) -> threading.Thread | None:
    """SIGTERM this process once ``parent_pid`` (default: ``PARENT_ENV``) is no longer its
    parent. Returns the watching thread, or None when there is no parent to watch."""
    if parent_pid is None:
        value = os.environ.get(PARENT_ENV, "")
        if not value.isdigit():
            return None
        parent_pid = int(value)
    # children inherit the environment: the variable names this process's parent, not theirs
    os.environ.pop(PARENT_ENV, None)

    def run() -> None:
        stop = threading.Event()
        while not stop.wait(CHECK_S):
            if os.getppid() != parent_pid:
                log.warning("parent process %d is gone: stopping", parent_pid)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=run, name="lifeline", daemon=True)
    thread.start()
    return thread


def die_with_parent(argv: list[str]) -> list[str]:
    """``argv`` run so that the kernel SIGTERMs it when the calling thread exits (Linux, when
    ``setpriv`` is installed; otherwise ``argv`` unchanged)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return argv
    return [setpriv, "--pdeathsig", "TERM", "--", *argv]
