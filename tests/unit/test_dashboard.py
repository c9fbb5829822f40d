"""The committed Grafana dashboard only queries series the services really export."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import recsys_stream.batch.metrics  # noqa: F401 (registers the trainer's series)
import recsys_stream.nearline.item_metrics  # noqa: F401 (the item stage's series)
import recsys_stream.nearline.metrics  # noqa: F401
import recsys_stream.serving.metrics  # noqa: F401

DASHBOARD = Path(__file__).resolve().parents[2] / "services/grafana/dashboards/recsys-stream.json"


def _exported() -> set[str]:
    names = set()
    for collector in list(REGISTRY._collector_to_names):
        for fam in collector.describe() if hasattr(collector, "describe") else []:
            names.update(s.name for s in fam.samples)
            names.add(fam.name)
            names.update(fam.name + suffix for suffix in ("_total", "_bucket", "_sum", "_count"))
    return names


def test_every_query_uses_an_exported_series_and_every_group_has_panels():
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    exported = _exported()
    used = {m for e in exprs for m in re.findall(r"recsys_[a-z0-9_]+", e)}
    assert used and used <= exported, sorted(used - exported)
    for series in ("recsys_worker_dlq_total", "recsys_worker_consumer_lag",
                   "recsys_worker_event_to_profile_seconds_bucket",
                   "recsys_server_requests_total", "recsys_server_fallback_total",
                   "recsys_server_model_created_seconds", "recsys_trainer_ndcg_at_10",
                   "recsys_trainer_models_rejected_total", "recsys_server_new_item_vectors",
                   "recsys_server_new_item_oldest_solved_seconds",
                   "recsys_server_new_item_answers_total",
                   "recsys_items_event_to_vector_seconds_bucket"):
        assert series in used, f"the dashboard does not show {series}"
    assert {p["title"] for p in dash["panels"] if p["type"] == "row"} == {
        "Ingest (nearline worker)", "Freshness", "Serving", "Models", "New items (item fold-in)"}
