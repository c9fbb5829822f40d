"""Logs as JSON lines on request; /metrics and /healthz on one port, 503 when unhealthy."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

import pytest

from recsys_stream.broker import free_port
from recsys_stream.observability import serve_metrics, setup_logging


def test_json_logs_are_one_object_per_line(capsys):
    setup_logging("worker", json_lines=True)
    try:
        logging.getLogger("recsys_stream.test").info("committed %d batches", 3)
    finally:
        setup_logging("pytest")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["msg"] == "committed 3 batches" and record["level"] == "INFO"
    assert record["logger"] == "recsys_stream.test" and record["ts"].endswith("Z")


def test_metrics_and_health_endpoints():
    state = {"status": "ok", "partitions": [0, 1]}
    port = free_port()
    server = serve_metrics(port, lambda: state, host="127.0.0.1")
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        assert "python_info" in body or "process_" in body or "# HELP" in body
        assert json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read()) \
            == state
        state["status"] = "stalled"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz")
        assert e.value.code == 503
    finally:
        server.shutdown()
    assert serve_metrics(0) is None
