"""Logging and Prometheus exposition shared by every process.

One log line per meaningful event (batch committed, model published, swap, rejection), never
per message; ``--log-json`` switches to one JSON object per line for log shippers.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z", "level": record.levelname,
               "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(process: str, json_lines: bool = False, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if json_lines else logging.Formatter(
        f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def serve_metrics(port: int, health: Callable[[], dict] | None = None,
                  host: str = "0.0.0.0") -> ThreadingHTTPServer | None:
    """Serve ``/metrics`` (Prometheus text) and ``/healthz`` (JSON) on ``port`` (0 = off).

    ``health()`` returns the process's own view (``{"status": "ok", ...}``); a status other than
    ``"ok"`` answers 503 so orchestrators and compose health checks can act on it.
    """
    if not port:
        return None
    health = health or (lambda: {"status": "ok"})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.startswith("/metrics"):
                body, ctype, code = generate_latest(), CONTENT_TYPE_LATEST, 200
            elif self.path.startswith("/healthz"):
                state = health()
                body = json.dumps(state).encode()
                ctype, code = "application/json", 200 if state.get("status") == "ok" else 503
            else:
                body, ctype, code = b"see /metrics and /healthz\n", "text/plain", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # scrapes are not meaningful events
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    logging.getLogger(__name__).info("metrics on :%d/metrics, health on :%d/healthz", port, port)
    return server
