"""``recsys-stream export --engine spark`` on the project's two-worker standalone Spark cluster:
the executors' shards equal the local export of the same version (same items per user, scores
to 1e-5), the manifest checks out with ``--verify``, and no banned, seen or hidden item and no
erased user appears. The suppression comes from real parts: an events file of training items,
profiles and catalog bans on the session's broker."""

from __future__ import annotations

import random

import numpy as np
import psutil
import pytest

from recsys_stream.cli import main
from recsys_stream.config import SparkConfig
from recsys_stream.serving.export import iter_records, run_export, verify
from tests.export_world import BANNED, publish_suppression, write_events, write_model
from tests.spark_cluster import SparkCluster

pytestmark = pytest.mark.integration
N_USERS, N_ITEMS, WIDTH = 400, 900, 8
# small JVMs: the machine is shared
SETTINGS = {"spark.driver.memory": "512m", "spark.executor.memory": "512m",
            "spark.executor.cores": "1"}


def _records(path) -> dict:
    return {r["user_id"]: r for r in iter_records(path)}


@pytest.mark.timeout(1800)  # several Spark sessions; minutes when the shared cores are busy
def test_spark_export_equals_local_export_on_the_cluster(cfg, tmp_path):
    # 900 items: the index is walked for k = 10 (more than 4 x ef)
    write_model(cfg.model_store, N_ITEMS, N_USERS, WIDTH, seed=7, prefix="it", recall_floor=0.0)
    rnd = random.Random(11)
    seen = {f"u{u}": rnd.sample(range(N_ITEMS), rnd.randint(3, 15)) for u in range(N_USERS)}
    events = tmp_path / "events.jsonl"
    write_events(events, seen)
    hidden = {"u1": "it899", "u2": "it898"}  # hidden in the profile only (after training)
    publish_suppression(cfg, {u: seen.get(u, [5, 6, 7]) for u in ["u1", "u2", "u3", "newcomer"]},
                        hidden, "u3", WIDTH)
    banned = list(BANNED)
    users = tmp_path / "users.txt"  # every model user, the newcomer, an unknown one
    users.write_text("\n".join([*seen, "newcomer", "nobody"]) + "\n")

    cluster = SparkCluster(tmp_path / "spark", workers=2, cores=1, memory="1g").start()
    try:
        scfg = cfg.replace(trainer={"spark": SparkConfig(master=cluster.master,
                                                         settings=SETTINGS)})
        runs = {}
        for mode, fmt in (("exact", "jsonl"), ("index", "parquet")):
            runs[mode] = run_export(scfg, "acme", 10, str(tmp_path / f"spark-{mode}"),
                                    users_file=str(users), fmt=fmt, mode=mode,
                                    events_file=str(events), shard_users=150, engine="spark")
        executors = [pid for pid in cluster.seen if pid not in {p.pid for p in cluster.procs}]
    finally:
        survivors = cluster.stop()
    assert survivors == [], f"Spark processes outlived the cluster: {survivors}"
    assert executors, "no executor ran on the cluster's workers"
    assert not [p for p in psutil.Process().children(recursive=True)
                if p.is_running() and "java" in p.name()
                and "kafka.Kafka" not in " ".join(p.cmdline())], "a Spark JVM outlived the export"

    for mode, fmt in (("exact", "jsonl"), ("index", "parquet")):
        m = runs[mode]
        assert m["engine"] == "spark" and m["master"] == cluster.master
        assert m["users"] == N_USERS + 1 and m["erased_skipped"] == 1  # + newcomer, nobody - u7
        assert [s["users"] for s in m["shards"]] == [150, 150, 101]
        spark_dir = tmp_path / f"spark-{mode}"
        assert verify(spark_dir) == []
        assert main(["export", "--verify", str(spark_dir)]) == 0
        local = run_export(cfg, "acme", 10, str(tmp_path / f"local-{mode}"),
                           users_file=str(users), fmt=fmt, mode=mode, events_file=str(events),
                           shard_users=150, engine="local")
        assert "engine" not in local and m["sources"] == local["sources"]
        assert m["sources"] == {"BATCH": N_USERS - 2, "NEARLINE": 1, "PROFILE_FOLD_IN": 1,
                                "POPULARITY": 1}
        got, want = _records(spark_dir), _records(tmp_path / f"local-{mode}")
        assert list(got) == list(want) and "u7" not in got
        for u, r in want.items():
            assert [i["item_id"] for i in got[u]["items"]] == \
                [i["item_id"] for i in r["items"]], (mode, u)
            np.testing.assert_allclose([i["score"] for i in got[u]["items"]],
                                       [i["score"] for i in r["items"]], rtol=1e-5)
            assert got[u]["model_version"] == 1 and got[u]["source"] == r["source"]
        for u, r in got.items():
            ids = {i["item_id"] for i in r["items"]}
            assert len(ids) == 10, (mode, u)
            assert not ids & set(banned), (mode, u)
            assert not ids & {f"it{i}" for i in seen.get(u, [])}, (mode, u)
            assert hidden.get(u) not in ids
        assert not {i["item_id"] for i in got["newcomer"]["items"]} & {"it5", "it6", "it7"}
    # a shard cut short on the executors' output is caught by the manifest
    shard = tmp_path / "spark-exact" / runs["exact"]["shards"][1]["file"]
    shard.write_bytes(shard.read_bytes()[:-50])
    assert main(["export", "--verify", str(tmp_path / "spark-exact")]) == 1
