"""Pure logic of the Spark engine: count-scaled fold-in, Java and master checks, config keys,
the per-user rows Spark tasks emit, engine selection. No JVM is started here."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from recsys_stream.batch.app import train_tenant
from recsys_stream.batch.data import from_events, replay_user, split_history
from recsys_stream.batch.engines import make_engine
from recsys_stream.batch.engines import record_key
from recsys_stream.batch.engines.spark_data import R_MIN, rating_rows
from recsys_stream.batch.engines.spark_session import SparkEngineError, check_master, find_java
from recsys_stream.config import SparkConfig, TenantConfig, TrainerConfig, load_config
from recsys_stream.contracts.foldin import FoldInSolver, solver_for_model
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.synthetic import generate_events, make_world


def _naive(Y, lam, idx, c, scale):
    """x = (YtY + Y_u^T (C_u - I) Y_u + lam*n*I)^-1 Y_u^T C_u 1, one user, by the formula."""
    k = Y.shape[1]
    Yu = Y[idx]
    n = len(idx) if scale else 1
    A = Y.T @ Y + Yu.T @ np.diag(c - 1) @ Yu + lam * n * np.eye(k)
    return np.linalg.solve(A, Yu.T @ c)


@pytest.mark.parametrize("scaling", ["none", "count"])
def test_foldin_matches_the_formula_with_and_without_count_scaling(scaling):
    rng = np.random.default_rng(3)
    Y = rng.normal(size=(200, 16)) * 0.3
    lengths = [0, 1, 3, 5, 8, 9, 40, 120, 7, 2]
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    idx = np.concatenate([rng.choice(200, n, replace=False) for n in lengths])
    c = 1 + rng.gamma(2.0, 1.0, size=len(idx))
    s = FoldInSolver(Y, 0.7, scaling=scaling)
    X = s.solve(indptr, idx, c)
    for u, n in enumerate(lengths):
        sl = slice(indptr[u], indptr[u + 1])
        want = _naive(Y, 0.7, idx[sl], c[sl], scaling == "count") if n else np.zeros(16)
        np.testing.assert_allclose(X[u], want, rtol=2e-4, atol=1e-6)
    A, b = s.normal_equations(indptr, idx, c)
    np.testing.assert_allclose(s.solve_normal_equations(A[1:], b[1:]), X[1:], rtol=2e-4,
                               atol=1e-6)
    assert s.supports_updates == (scaling == "none")


def test_count_scaling_changes_the_solution_and_is_read_from_the_manifest():
    Y = np.random.default_rng(0).normal(size=(50, 8))
    idx, c = np.arange(10), np.full(10, 3.0)
    plain = solver_for_model(Y, {"hyperparameters": {"regularization": 0.5}})
    scaled = solver_for_model(Y, {"hyperparameters": {"regularization": 0.5},
                                  "regularization_scaling": "count"})
    assert plain.scaling == "none" and scaled.scaling == "count"
    assert not np.allclose(plain.solve_one(idx, c), scaled.solve_one(idx, c))
    with pytest.raises(ValueError, match="scaling"):
        FoldInSolver(Y, 0.5, scaling="sqrt")
    with pytest.raises(ValueError, match="cannot be updated"):
        scaled.update_normal_equations(np.zeros((1, 8, 8)), np.zeros((1, 8)), np.array([0, 1]),
                                       np.array([0]), np.array([1.0]), np.array([0.0]))


def test_find_java_prefers_java_home_and_says_what_is_missing(tmp_path):
    jdk = tmp_path / "jdk"
    (jdk / "bin").mkdir(parents=True)
    (jdk / "bin" / "java").write_text("#!/bin/sh\n")
    (jdk / "bin" / "java").chmod(0o755)
    assert find_java({"JAVA_HOME": str(jdk), "PATH": ""}) == str(jdk)
    assert find_java({"PATH": str(jdk / "bin")}) == str(jdk.resolve())
    with pytest.raises(SparkEngineError, match="has no bin/java"):
        find_java({"JAVA_HOME": str(tmp_path / "nope"), "PATH": ""})
    with pytest.raises(SparkEngineError, match="no Java found") as e:
        find_java({"PATH": str(tmp_path)})
    assert "\n" not in str(e.value)


def test_check_master_connects_to_spark_urls_only():
    check_master("local[2]", 0.1)  # nothing to check
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        check_master(f"spark://127.0.0.1:1,127.0.0.1:{port}", 1.0)  # one HA master answers
    with pytest.raises(SparkEngineError, match="unreachable") as e:
        check_master(f"spark://127.0.0.1:{port}", 1.0)
    assert "\n" not in str(e.value)


def test_config_engine_keys(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[trainer]\nengine = "spark"\n[trainer.spark]\nmaster = "spark://h:7077"\n'
                 'als_blocks = 4\n[trainer.spark.settings]\n"spark.executor.memory" = "2g"\n'
                 '[tenants.a]\nengine = "implicit"\n[tenants.b]\n')
    cfg = load_config(p)
    assert cfg.trainer.spark.settings == {"spark.executor.memory": "2g"}
    assert (cfg.engine_of("a"), cfg.engine_of("b")) == ("implicit", "spark")
    with pytest.raises(ValueError, match="trainer.engine"):
        TrainerConfig(engine="mahout")
    with pytest.raises(ValueError, match="tenant engine"):
        TenantConfig(engine="mahout")
    with pytest.raises(ValueError, match="not Spark properties"):
        SparkConfig(settings={"executor.memory": "1g"})
    with pytest.raises(ValueError, match="als_solver"):
        SparkConfig(als_solver="cg")
    assert load_config("config/recsys-stream.toml").trainer.engine == "implicit"
    assert cfg.trainer.spark.als_solver == "unscaled"
    assert (record_key(cfg, "a"), record_key(cfg, "b")) == ("implicit", "spark-unscaled")
    mllib = cfg.replace(trainer={"spark": SparkConfig(als_solver="mllib")})
    assert record_key(mllib, "b") == "spark"  # where searches were filed before the solver


def test_rating_rows_reproduce_the_confidences(offline_cfg):
    """What Spark tasks emit: r = log1p(strength) per item of each split, c = 1 + alpha*r."""
    cfg = offline_cfg
    tc = cfg.tenant("acme")
    events = generate_events(make_world("acme", 60), 30, 12, start_ms=1_700_000_000_000, seed=2)
    by_user = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append(e)
    records = []
    for user, evs in by_user.items():
        full, train, first = replay_user("acme", user, evs, tc.confidence, tc.history_cap, 0.2)
        records.append(("user", "acme", user, full.encode(),
                        None if train is full else train.encode(), sorted(first.items()),
                        0, 0, len(evs), full.event_count))
    data = from_events("acme", events, tc.confidence, tc.history_cap, 0.2)

    class Seq(list):  # the one RDD method rating_rows uses
        def flatMap(self, f):
            return Seq(x for r in self for x in f(r))
    rows = rating_rows(Seq(records + [("bad", 0, 1, "x")]), cfg, ["acme"])
    got_full = {(u, i): r for _, u, i, r, _ in rows if r is not None}
    got_train = {(u, i): r for _, u, i, _, r in rows if r is not None}
    for split, hist in (("full", data.histories), ("train", data.train)):
        got = got_full if split == "full" else got_train
        want = {}
        for u, h in hist.items():
            ids, c = h.confidences(tc.confidence)
            want.update({(u, i): float(x) for i, x in zip(ids, c)})
        assert set(got) == set(want)
        c_spark = {k: 1 + tc.alpha * v for k, v in got.items()}
        np.testing.assert_allclose([c_spark[k] for k in want], [want[k] for k in want],
                                   rtol=1e-6)
    assert min(got_full.values()) >= R_MIN


def test_split_history_is_the_changelog_holdout(offline_cfg):
    tc = offline_cfg.tenant("acme")
    events = generate_events(make_world("acme", 60), 5, 20, start_ms=1_700_000_000_000, seed=4)
    data = from_events("acme", events, tc.confidence, tc.history_cap, 0.0)
    for h in data.histories.values():
        train, first = split_history(h, 0.2)
        assert set(train.items) | set(first) == set(h.items)
        assert not set(train.items) & set(first)
        assert max(v[2] for v in train.items.values()) <= min(first.values())


def test_bpr_is_not_trained_on_an_engine_without_it_and_the_log_says_so(offline_cfg, caplog):
    """The trainer asks the engine what it can fit: MLlib has no BPR, never skipped silently."""
    cfg = offline_cfg.replace(trainer={"algorithms": ("als", "bpr")})
    events = generate_events(make_world("acme", 60), 40, 15, start_ms=1_700_000_000_000, seed=5)
    data = from_events("acme", events, cfg.tenant("acme").confidence, 500, 0.2)
    engine = make_engine("implicit", cfg)
    engine.algorithms = ("als",)  # as the Spark engine declares
    engine.name = "spark-like"
    with caplog.at_level("WARNING"):
        res = train_tenant(cfg, engine.round(cfg, data), ModelStore(cfg.model_store),
                           engine=engine)
    assert [r["algorithm"] for r in res] == ["als"]
    assert any("no bpr" in r.message and "Spark MLlib has no BPR" in r.message
               for r in caplog.records)
    art = ModelStore(cfg.model_store).load("acme", "als", res[0]["version"], verify=False)
    assert art.manifest["engine"] == "spark-like"
    assert art.manifest["regularization_scaling"] == "none"
