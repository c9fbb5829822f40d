"""The hyperparameter search: pins, bounds, the configured start, reproducibility; the record
applied to a round's configuration (batch/tuning.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from recsys_stream.batch import tuning
from recsys_stream.batch.data import from_events
from recsys_stream.batch.engines.local import ImplicitEngine
from recsys_stream.config import SparkConfig, TenantConfig
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.synthetic import generate_events, make_world
from tests.conftest import make_config


@pytest.fixture(scope="module")
def events():
    return generate_events(make_world("acme", 120, seed=1), 150, 25, 1_700_000_000_000, seed=2)


def _setup(tmp_path, events, pin=None):
    cfg = make_config(tmp_path)
    tc = dataclasses.replace(cfg.tenant("acme"), pin=pin or {})
    cfg = dataclasses.replace(cfg, tenants={"acme": tc}).replace(
        trainer={"algorithms": ("als", "bpr"), "tune_als_factors": (4, 12),
                 "tune_als_regularization": (0.01, 10.0), "tune_alpha": (0.5, 8.0),
                 "tune_bpr_iterations": (5, 30)})
    engine = ImplicitEngine(cfg)
    rnd = engine.round(cfg, from_events("acme", events, tc.confidence, tc.history_cap, 0.2))
    return cfg, engine, rnd


def test_search_respects_pins_bounds_and_starts_at_the_config(tmp_path, events):
    cfg, engine, rnd = _setup(tmp_path, events, pin={"als_factors": 6})
    valid = tuning.validation_round(cfg, engine, "acme", rnd, None, [])
    s = tuning.search(cfg, engine, valid, "als", trials=6, budget_s=300)
    tc = cfg.tenant("acme")
    assert s["n_trials"] == 6 and len(s["trials"]) == 6
    # trial 0 is the configured values; factors (16) widens its bounds to take it in
    assert s["trials"][0]["params"] == {"als_factors": 6, "als_regularization":
                                        tc.als.regularization, "alpha": tc.alpha}
    assert s["bounds"]["als_regularization"] == [0.01, 10.0]
    for t in s["trials"]:
        assert t["params"]["als_factors"] == 6  # pinned: never searched
        assert 0.01 <= t["params"]["als_regularization"] <= 10.0
        assert 0.5 <= t["params"]["alpha"] <= 8.0
    assert s["params"]["als_factors"] == 6 and s["pinned"] == {"als_factors": 6}
    assert s["best_value"] == max(t["value"] for t in s["trials"]) >= s["start_value"]
    # validation never reaches into the test: the fit's users' items exclude the test items
    for u, items in rnd.test.items():
        assert not items & set(valid.data.histories.get(u).items if u in
                               valid.data.histories else ())


def test_search_is_reproducible_with_the_seed(tmp_path, events):
    cfg, engine, rnd = _setup(tmp_path, events)
    valid = tuning.validation_round(cfg, engine, "acme", rnd, None, [])
    a = tuning.search(cfg, engine, valid, "bpr", trials=4, budget_s=300)
    b = tuning.search(cfg, engine, valid, "bpr", trials=4, budget_s=300)
    assert [t["params"] for t in a["trials"]] == [t["params"] for t in b["trials"]]
    assert [t["value"] for t in a["trials"]] == [t["value"] for t in b["trials"]]
    for t in a["trials"]:
        assert 5 <= t["params"]["bpr_iterations"] <= 100  # 100 (configured) widens 30
    c = tuning.search(cfg.replace(trainer={"seed": 7}), engine, valid, "bpr", trials=4,
                      budget_s=300)
    assert [t["params"] for t in c["trials"][1:]] != [t["params"] for t in a["trials"][1:]]


def test_alpha_rescaling_equals_rebuilding(tmp_path, events):
    """c' = 1 + (a'/a)(c - 1): the search's alpha without rebuilding the matrix."""
    import numpy as np
    from recsys_stream.batch.data import build_matrix
    cfg, engine, rnd = _setup(tmp_path, events)
    tc = cfg.tenant("acme")
    r = tuning._AlphaRescaler(rnd, tc.alpha)
    r.set(5.0)
    rebuilt = build_matrix(rnd.data.train, dataclasses.replace(tc, alpha=5.0).confidence).C
    np.testing.assert_allclose(rnd.handle["train"].toarray(), rebuilt.toarray(), rtol=1e-5)
    r.restore()
    np.testing.assert_allclose(rnd.handle["train"].toarray(),
                               build_matrix(rnd.data.train, tc.confidence).C.toarray(), rtol=1e-6)


def test_record_applies_then_pins_win(tmp_path, events):
    cfg, engine, rnd = _setup(tmp_path, events, pin={"bpr_iterations": 11})
    store = ModelStore(cfg.model_store)
    tuning.tune_tenant(cfg, engine, "acme", store, rnd, trials=3, budget_s=300)
    rec = tuning.read_record(store, "acme")["engines"]["implicit"]
    tuned = tuning.tuned_config(cfg, store).tenant("acme")
    assert tuned.als.factors == rec["als"]["params"]["als_factors"]
    assert tuned.als.regularization == rec["als"]["params"]["als_regularization"]
    assert tuned.alpha == rec["als"]["params"]["alpha"]
    assert tuned.bpr.learning_rate == rec["bpr"]["params"]["bpr_learning_rate"]
    assert tuned.bpr.iterations == 11
    assert tuned.als.iterations == cfg.tenant("acme").als.iterations  # not searched
    entry = tuning.manifest_entry(store, "acme", "implicit", "als", tuned)
    assert entry["tuned"] and entry["applied"] and len(entry["trials"]) == 3
    assert not tuning.manifest_entry(store, "acme", "implicit", "als",
                                     cfg.tenant("acme"))["applied"]
    # another engine's record does not apply
    spark = cfg.replace(trainer={"engine": "spark"})
    assert tuning.tuned_config(spark, store).tenant("acme").als == cfg.tenant("acme").als
    # nor one of the Spark engine's other solver: MLlib's regParam is not unscaled lambda
    rec = tuning.read_record(store, "acme")
    rec["engines"] = {"spark": rec["engines"]["implicit"]}  # as an MLlib search files it
    tuning._write_record(store, "acme", rec)
    assert tuning.tuned_config(spark, store).tenant("acme").als == cfg.tenant("acme").als
    mllib = spark.replace(trainer={"spark": SparkConfig(als_solver="mllib")})
    assert tuning.tuned_config(mllib, store).tenant("acme").als == tuned.als


def test_unknown_pin_is_a_config_error():
    with pytest.raises(ValueError, match="pin"):
        TenantConfig(pin={"als_lambda": 3})


def test_due():
    cfg = make_config(Path("/tmp"))
    assert not any(tuning.due(cfg, n) for n in range(5))
    cfg = cfg.replace(trainer={"tune_every_rounds": 3})
    assert [tuning.due(cfg, n) for n in range(7)] == [True, False, False, True, False, False,
                                                      True]


def test_an_engine_that_scales_lambda_by_count_searches_its_own_bounds(tmp_path):
    """MLlib's regParam x n_u: its own log-scale bounds, widened only by a configured start;
    the Spark engine's unscaled solver searches implicit's."""
    from recsys_stream.batch.engines.spark import SparkEngine
    cfg = make_config(tmp_path).replace(trainer={"tune_als_regularization": (1e-3, 100.0),
                                                 "tune_spark_als_regularization": (0.01, 1.0)})
    unscaled = SparkEngine(cfg)  # no session until used
    assert unscaled.regularization_scaling == "none"
    assert tuning._bounds(cfg, "als_regularization", 0.05, unscaled) == (1e-3, 100.0)
    cfg = cfg.replace(trainer={"spark": SparkConfig(als_solver="mllib")})
    spark = SparkEngine(cfg)
    assert spark.regularization_scaling == "count"
    assert tuning._bounds(cfg, "als_regularization", 0.05, spark) == (0.01, 1.0)
    assert tuning._bounds(cfg, "als_regularization", 20.0, spark) == (0.01, 20.0)
    assert tuning._bounds(cfg, "als_regularization", 0.05, ImplicitEngine(cfg)) == (1e-3, 100.0)
    assert tuning._bounds(cfg, "alpha", 2.0, spark) == cfg.trainer.tune_alpha
