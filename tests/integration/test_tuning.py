"""A search, then a trainer round: the round trains with the tuned values and its manifests say
so (batch/tuning.py, batch/app.py); and trainer.tune_every_rounds runs the search itself."""

from __future__ import annotations

import json

import pytest

from recsys_stream.batch.app import run_trainer
from recsys_stream.batch.tuning import read_record, run_tune
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.synthetic import generate_events, make_world

pytestmark = pytest.mark.integration


def _events_file(tmp_path):
    path = tmp_path / "events.jsonl"
    with open(path, "w") as f:
        for e in generate_events(make_world("acme", 100, seed=1), 120, 25, 1_700_000_000_000,
                                 seed=2):
            f.write(json.dumps({"event_id": e.event_id, "tenant": e.tenant, "user_id": e.user_id,
                                "item_id": e.item_id, "type": e.type,
                                "timestamp_ms": e.timestamp_ms}) + "\n")
    return str(path)


def _newest_manifest(store, algorithm):
    v = store.versions("acme", algorithm)[-1]
    return store.load("acme", algorithm, v, verify=False).manifest


def _assert_trained_with(store, record):
    als, bpr = record["engines"]["implicit"]["als"], record["engines"]["implicit"]["bpr"]
    m = _newest_manifest(store, "als")
    assert m["hyperparameters"]["factors"] == als["params"]["als_factors"]
    assert m["hyperparameters"]["regularization"] == als["params"]["als_regularization"]
    assert m["confidence"]["alpha"] == als["params"]["alpha"]  # the worker folds in with it
    assert m["tuning"]["tuned"] and m["tuning"]["applied"]
    assert m["tuning"]["params"] == als["params"] and len(m["tuning"]["trials"]) == 3
    b = _newest_manifest(store, "bpr")
    assert b["hyperparameters"]["learning_rate"] == bpr["params"]["bpr_learning_rate"]
    assert b["hyperparameters"]["iterations"] == bpr["params"]["bpr_iterations"]
    assert b["tuning"]["params"] == bpr["params"]


def test_tune_then_a_round_uses_the_tuned_values(cfg, tmp_path):
    cfg = cfg.replace(trainer={"algorithms": ("als", "bpr"), "tune_als_factors": (4, 24),
                               "tune_bpr_iterations": (5, 40)})
    events = _events_file(tmp_path)
    store = ModelStore(cfg.model_store)
    record = run_tune(cfg, "acme", events, trials=3, budget_s=300)
    assert read_record(store, "acme") == record
    als = record["engines"]["implicit"]["als"]
    assert als["n_trials"] == 3 and als["trials"][0]["params"]["als_factors"] == 16  # config
    run_trainer(cfg, once=True, events_file=events, tenant="acme")
    _assert_trained_with(store, record)


def test_the_trainer_searches_on_its_schedule(cfg, tmp_path):
    cfg = cfg.replace(trainer={"algorithms": ("als", "bpr"), "tune_every_rounds": 1,
                               "tune_trials": 3, "tune_als_factors": (4, 24),
                               "tune_bpr_iterations": (5, 40)})
    events = _events_file(tmp_path)
    store = ModelStore(cfg.model_store)
    assert read_record(store, "acme") == {"engines": {}}
    run_trainer(cfg, once=True, events_file=events, tenant="acme")
    record = read_record(store, "acme")
    _assert_trained_with(store, record)
