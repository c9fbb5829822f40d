"""The Apache Kafka the project starts: its settings and its errors (no JVM started here)."""

from __future__ import annotations

import pytest

from recsys_stream import kafka_cluster
from recsys_stream.kafka_cluster import KafkaCluster, KafkaSetupError


def test_three_nodes_form_one_quorum_with_replication_3_and_min_isr_2(tmp_path):
    c = KafkaCluster(nodes=3, data_dir=tmp_path)
    props = [c.node_properties(n) for n in c.nodes]
    voters = {p["controller.quorum.voters"] for p in props}
    assert len(voters) == 1 and voters.pop().count("@127.0.0.1:") == 3
    assert sorted(p["node.id"] for p in props) == ["1", "2", "3"]
    assert {p["min.insync.replicas"] for p in props} == {"2"}
    assert {p["offsets.topic.replication.factor"] for p in props} == {"3"}
    assert len({p["log.dirs"] for p in props}) == 3
    assert c.bootstrap_servers.count(",") == 2
    # the shared settings are on every node
    for key, value in kafka_cluster.shared_settings().items():
        assert all(p[key] == value for p in props)


def test_one_node_replicates_once_and_advertises_a_proxy_when_told(tmp_path):
    c = KafkaCluster(nodes=1, port=19092, data_dir=tmp_path, advertised={1: "127.0.0.1:29092"})
    p = c.node_properties(c.nodes[0])
    assert p["min.insync.replicas"] == "1" and p["default.replication.factor"] == "1"
    assert p["listeners"].startswith("PLAINTEXT://127.0.0.1:19092,")
    assert p["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert c.bootstrap_servers == "127.0.0.1:29092"


def test_a_restart_on_the_same_directory_keeps_the_cluster_id(tmp_path):
    meta = tmp_path / "node-1" / "meta"
    meta.mkdir(parents=True)
    (meta / "meta.properties").write_text("version=1\ncluster.id=AbCdEfGhIjKlMnOpQrStUv\n")
    assert KafkaCluster(data_dir=tmp_path).cluster_id == "AbCdEfGhIjKlMnOpQrStUv"
    assert KafkaCluster(data_dir=tmp_path / "other").cluster_id != "AbCdEfGhIjKlMnOpQrStUv"


def test_no_java_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(KafkaSetupError, match="needs Java 17"):
        kafka_cluster.java_bin()


def test_no_maven_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(kafka_cluster, "CACHE", tmp_path)  # nothing resolved yet
    monkeypatch.setattr(kafka_cluster.shutil, "which",
                        lambda name: "/usr/bin/java" if name == "java" else None)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(KafkaSetupError, match="needs Maven"):
        kafka_cluster.fetch_jars()


def test_the_version_is_pinned_in_the_pom():
    v = kafka_cluster.kafka_version()
    assert v.split(".")[0] == "4" and "SNAPSHOT" not in v
    assert kafka_cluster.jar_dir().name == f"kafka-{v}"


def test_a_new_cluster_id_never_reads_as_an_option(tmp_path):
    ids = {KafkaCluster(data_dir=tmp_path / str(i)).cluster_id for i in range(400)}
    assert len(ids) == 400 and not any(i.startswith("-") for i in ids)
    assert all(len(i) == 22 for i in ids)
