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


def test_status_quantile_sums_every_label_set_of_a_histogram():
    """A server exports one histogram per (method, status, source): the operator's p99 must
    pool them, not read whichever label set sorts last."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from recsys_stream.status import quantile

    reg = CollectorRegistry()
    h = Histogram("lat_seconds", "x", ["source"], buckets=(0.001, 0.01, 0.1), registry=reg)
    for _ in range(98):
        h.labels("NEARLINE").observe(0.0005)
    for _ in range(2):
        h.labels("TRENDING").observe(0.05)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(generate_latest(reg).decode())
               for s in fam.samples}
    assert quantile(samples, "lat_seconds", 0.5) == 0.001
    assert quantile(samples, "lat_seconds", 0.99) == 0.1
    assert quantile(samples, "missing_seconds", 0.99) is None
