"""The Spark engine on real parts: a standalone Spark cluster started from the pip package (master
and two one-core workers on loopback), the session broker's state changelog read by Spark tasks,
a model published, folded into by the worker's and the server's code, and served over gRPC."""

from __future__ import annotations

import contextlib
import threading

import grpc
import numpy as np
import psutil
import pytest

from recsys_stream.batch.app import run_trainer
from recsys_stream.batch.data import build_matrix, from_events
from recsys_stream.batch.engines.spark_session import SparkEngineError
from recsys_stream.broker import free_port
from recsys_stream.config import SparkConfig
from recsys_stream.contracts.foldin import FoldInSolver
from recsys_stream.contracts.keys import make_key, offset_marker_key
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.pb import recommender_pb2 as pb
from recsys_stream.kafka import producer
from recsys_stream.nearline.item_stage import StageModels
from recsys_stream.nearline.models import FoldInModel
from recsys_stream.serving.app import run_server
from recsys_stream.serving.client import RecommenderClient
from recsys_stream.serving.snapshots import TenantSnapshot
from recsys_stream.stack import wait_until
from recsys_stream.synthetic import generate_events, make_world
from tests.conftest import KEYS
from tests.spark_cluster import SparkCluster

pytestmark = pytest.mark.integration

# small JVMs: the machine is shared; two ALS blocks so local[2] and the cluster split alike
SETTINGS = {"spark.driver.memory": "512m", "spark.executor.memory": "512m",
            "spark.executor.cores": "1", "spark.sql.shuffle.partitions": "4"}


def spark_cfg(cfg, master: str, solver: str = "unscaled"):
    return cfg.replace(trainer={"engine": "spark",
                                "spark": SparkConfig(master=master, settings=SETTINGS,
                                                     als_blocks=2, als_solver=solver)})


def _java_children() -> list[psutil.Process]:
    # the session's Apache Kafka is a java child too: only Spark's JVMs count here
    return [p for p in psutil.Process().children(recursive=True)
            if p.is_running() and "java" in p.name()
            and "kafka.Kafka" not in " ".join(p.cmdline())]


@pytest.fixture
def changelog(cfg):
    """User states on the changelog as the worker writes them, plus what compaction must hide:
    an older state of a user, a deleted user (tombstone) and the offset markers."""
    world = make_world("acme", 120, genres=4)
    events = generate_events(world, 200, 25, start_ms=1_700_000_000_000, seed=1)
    data = from_events("acme", events, cfg.tenant("acme").confidence, 500, 0.0)
    prod = producer(cfg)
    users = sorted(data.histories)
    stale = from_events("acme", [e for e in events if e.user_id == users[0]][:3],
                        cfg.tenant("acme").confidence, 500, 0.0).histories[users[0]]
    prod.produce(cfg.topics.state_changelog, key=make_key("acme", users[0]),
                 value=stale.encode())  # superseded below: the latest record per key wins
    for user in users:
        prod.produce(cfg.topics.state_changelog, key=make_key("acme", user),
                     value=data.histories[user].encode())
    prod.produce(cfg.topics.state_changelog, key=make_key("acme", users[1]), value=None)
    for p in range(cfg.kafka.interaction_partitions):
        prod.produce(cfg.topics.state_changelog, key=offset_marker_key(p), value=b"\x08\x01",
                     partition=p)
    assert prod.flush(10) == 0
    del data.histories[users[1]]  # the tombstone deleted it
    return data.histories


@contextlib.contextmanager
def serving(cfg):
    address = f"127.0.0.1:{free_port()}"
    c = cfg.replace(server={"address": address})
    stop = threading.Event()
    t = threading.Thread(target=run_server, args=(c, stop), daemon=True)
    t.start()
    client = RecommenderClient(address, KEYS["acme"])
    try:
        yield client
    finally:
        client.close()
        stop.set()
        t.join(15)


@pytest.mark.timeout(1800)  # two Spark rounds; minutes when the shared cores are busy
def test_standalone_cluster_trains_what_the_worker_and_server_fold_into(cfg, changelog,
                                                                        tmp_path):
    cluster = SparkCluster(tmp_path / "spark", workers=2, cores=1, memory="1g").start()
    try:
        (res,) = run_trainer(spark_cfg(cfg, cluster.master), once=True, tenant="acme")
        executors = [pid for pid in cluster.seen if pid not in {p.pid for p in cluster.procs}]
    finally:
        survivors = cluster.stop()
    assert survivors == [], f"Spark processes outlived the cluster: {survivors}"
    assert executors, "no executor ran on the cluster's workers"
    assert not _java_children(), "the driver's JVM outlived the round"
    assert res["version"] == 1 and not res["rejected"], res

    store = ModelStore(cfg.model_store)
    art = store.load("acme", "als")
    m = art.manifest
    assert m["engine"] == "spark" and m["regularization_scaling"] == "none"
    assert m["hyperparameters"]["solver"] == "unscaled"
    assert m["hyperparameters"]["alpha"] == cfg.tenant("acme").alpha
    assert set(art.user_ids) == set(changelog)  # the stale state and the deleted user gone
    assert m["metrics"]["ndcg_at_10"] > m["baseline_metrics"]["popularity"]["ndcg_at_10"]

    # the executors' sweeps are the alternating exact steps run here, from the same start
    settings = art.confidence
    full = build_matrix({u: changelog[u] for u in art.user_ids.tolist()}, settings)
    assert list(full.item_ids) == art.item_ids.tolist()
    assert list(full.user_ids) == art.user_ids.tolist()
    _assert_is_the_alternating_fold_in(art, full.C, cfg.tenant("acme").als, cfg.trainer.seed)

    # the worker's fold-in of the training histories equals the published user factors
    _assert_worker_folds_in_the_user_factors(art, changelog, heavy_users=64)
    # ... and with MLlib's count scaling it would not (the test can fail)
    worker = FoldInModel.from_artifacts(art, heavy_users=64)
    scaled = worker.solver.__class__(art.item_factors, worker.solver.regularization,
                                     scaling="count")
    assert not np.allclose(scaled.solve_one(np.arange(3), np.full(3, 2.0)),
                           worker.solver.solve_one(np.arange(3), np.full(3, 2.0)))
    # the server's snapshot solves the same way
    snap = TenantSnapshot.from_artifacts(art)
    u = art.user_ids.tolist()[5]
    ids, c = changelog[u].confidences(settings)
    rows = np.array([snap.item_row[i] for i in ids])
    x = snap.solver.solve_one(rows, c)
    assert np.linalg.norm(x - art.user_factors[5]) <= 1e-4 * np.linalg.norm(art.user_factors[5])

    # the young slice: each item with fewer than young_item_users training users, its column
    # in the fold-ins' c (MLlib was handed r = log1p(s); the slice gives back c = 1 + alpha*r)
    C = full.C.tocsc()
    n = np.diff(C.indptr)
    want = np.flatnonzero((n > 0) & (n < cfg.tenant("acme").young_item_users))
    assert len(want) and m["young_items"] == len(want)
    np.testing.assert_array_equal(art.young.items, want)
    for row in want:
        users, conf = art.young.column(row)
        np.testing.assert_array_equal(users, np.sort(C[:, row].indices))
        np.testing.assert_allclose(conf, C[:, row].toarray().ravel()[users], rtol=1e-5)

    # the item stage solves new items of the model with the manifest's (unscaled) lambda
    stage = StageModels(cfg).get("acme", "als", 1)
    assert stage is not None and stage.solver.scaling == "none"

    # served end to end: the batch vector of a trained user (no profile: no worker ran, so
    # the server knows none of the user's items to suppress)
    with serving(cfg) as client:
        def answered():
            try:
                return client.recommend(u, k=10).model_version == 1
            except grpc.RpcError:
                return False
        wait_until(answered, 30, what="the server on the Spark model")
        r = client.recommend(u, k=10)
        got = [i.item_id for i in r.items]
        assert r.source == pb.BATCH and r.model_version == 1 and len(got) == 10
        scores = art.user_factors[5] @ art.item_factors.T
        best = set(art.item_ids[np.argsort(-scores)[:10]].tolist())
        assert len(best & set(got)) >= 9  # the index may swap a near tie

    # MLlib's ALS on local[2]: lambda x n_u, said by the manifest and applied by every fold-in
    (local,) = run_trainer(spark_cfg(cfg, "local[2]", "mllib"), once=True, tenant="acme")
    assert not _java_children()
    assert local["version"] == 2 and not local["rejected"], local
    art = store.load("acme", "als", 2)
    assert art.manifest["regularization_scaling"] == "count"
    assert art.manifest["metrics"]["ndcg_at_10"] > \
        art.manifest["baseline_metrics"]["popularity"]["ndcg_at_10"]
    _assert_worker_folds_in_the_user_factors(art, changelog, heavy_users=64)
    stage = StageModels(cfg).get("acme", "als", 2)
    assert stage is not None and stage.solver.scaling == "count"
    # Spark's own item factors cannot be the reference of the item stage on MLlib: its last
    # sweep solves items against the previous sweep's user factors (2-7 % off the final ones)


def _assert_worker_folds_in_the_user_factors(art, histories, heavy_users: int) -> None:
    """The worker's fold-in of every trained user's history equals the published vector."""
    keys, hist = [], []
    for user in art.user_ids.tolist():
        keys.append(user.encode())
        hist.append(histories[user].confidences(art.confidence))
    worker = FoldInModel.from_artifacts(art, heavy_users=heavy_users)
    assert worker.solver.scaling == art.manifest["regularization_scaling"]
    solved, X, _ = worker.foldin.solve(keys, hist)
    assert len(solved) == len(keys)
    B = art.user_factors[[list(art.user_ids).index(k.decode()) for k in solved]]
    rel = np.linalg.norm(X - B, axis=1) / np.linalg.norm(B, axis=1)
    assert rel.max() <= 1e-4, rel.max()


def _assert_is_the_alternating_fold_in(art, C, als, seed: int) -> None:
    """The published factors equal implicit ALS's alternating exact steps (unscaled lambda)
    run in this process from the engine's start (items U[0, 0.01) in id order, float32 between
    the steps); C: the full split's confidences, rows and columns in the model's order."""
    C = C.tocsr()
    Ct = C.T.tocsr()
    Y = (np.random.default_rng(seed).random((C.shape[1], als.factors)) * 0.01).astype(np.float32)
    for _ in range(als.iterations):
        X = FoldInSolver(Y, als.regularization).solve(C.indptr, C.indices, C.data)
        Y = FoldInSolver(X, als.regularization).solve(Ct.indptr, Ct.indices, Ct.data)
    X = FoldInSolver(Y, als.regularization).solve(C.indptr, C.indices, C.data)
    for got, want in ((art.item_factors, Y), (art.user_factors, X)):
        rel = np.linalg.norm(got - want, axis=1) / np.maximum(np.linalg.norm(want, axis=1), 1e-9)
        assert rel.max() <= 1e-3, rel.max()


def test_unreachable_master_is_one_line_and_publishes_nothing(cfg, changelog):
    port = free_port()  # nobody listens there
    with pytest.raises(SparkEngineError) as e:
        run_trainer(spark_cfg(cfg, f"spark://127.0.0.1:{port}"), once=True, tenant="acme")
    msg = str(e.value)
    assert "\n" not in msg and f"127.0.0.1:{port}" in msg and "unreachable" in msg
    assert ModelStore(cfg.model_store).current_version("acme", "als") is None


def test_missing_java_is_one_line(cfg, changelog, monkeypatch, tmp_path):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(SparkEngineError) as e:
        run_trainer(spark_cfg(cfg, "local[1]"), once=True, tenant="acme")
    assert "\n" not in str(e.value) and "Java" in str(e.value)
    monkeypatch.delenv("JAVA_HOME")
    monkeypatch.setenv("PATH", str(tmp_path))  # no java on it
    with pytest.raises(SparkEngineError) as e:
        run_trainer(spark_cfg(cfg, "local[1]"), once=True, tenant="acme")
    assert "\n" not in str(e.value) and "no Java found" in str(e.value)
    assert ModelStore(cfg.model_store).current_version("acme", "als") is None


@pytest.mark.timeout(900)
def test_undecodable_changelog_is_one_line_and_publishes_nothing(cfg):
    prod = producer(cfg)
    for n in range(20):
        prod.produce(cfg.topics.state_changelog, key=make_key("acme", f"u{n}"),
                     value=b"\xff\xfe not a UserState " + bytes([n]))
    assert prod.flush(10) == 0
    with pytest.raises(SparkEngineError) as e:
        run_trainer(spark_cfg(cfg, "local[1]"), once=True, tenant="acme")
    msg = str(e.value)
    assert "\n" not in msg and "do not decode" in msg and cfg.topics.state_changelog in msg
    assert not _java_children()
    assert ModelStore(cfg.model_store).current_version("acme", "als") is None
