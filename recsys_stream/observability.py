"""Logging and Prometheus exposition shared by every process.

One log line per meaningful event (batch committed, model published, swap, rejection), never
per message; ``--log-json`` switches to one JSON object per line for log shippers.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from prometheus_client import start_http_server


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


def serve_metrics(port: int) -> None:
    """Expose the default Prometheus registry on ``port`` (0 = off)."""
    if port:
        start_http_server(port)
        logging.getLogger(__name__).info("metrics on :%d/metrics", port)
