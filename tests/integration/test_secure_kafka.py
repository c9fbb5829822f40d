"""The project's processes on a secured Apache Kafka (SASL_SSL, SCRAM-SHA-512, a CA made for the
session): the right settings work, from an environment variable; a wrong password, a plaintext
client and an untrusted certificate end the process with one line naming the cause, never a
hang and never the password; kcat connects as the README says."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid

import pytest

from recsys_stream.kafka import producer, read_to_end
from recsys_stream.stack import load, write_config

pytestmark = pytest.mark.integration

WRONG = "wrong-password-not-to-be-printed"


def _run(tmp_path, cluster, client: dict, command: str = "topics", env: dict | None = None):
    """``recsys-stream <command>`` against the secured cluster with ``client`` settings. The
    connect timeout is far longer than the subprocess may run: an answer proves the cause was
    decided by the broker's refusal, not by waiting out the deadline."""
    path = write_config(tmp_path / f"{uuid.uuid4().hex[:6]}.toml", cluster.bootstrap_servers,
                        tmp_path, "127.0.0.1:0", topic_prefix=f"sec{uuid.uuid4().hex[:6]}-",
                        kafka_client=client)
    path.write_text(path.read_text().replace("[kafka]\n", "[kafka]\nconnect_timeout_s = 600\n"))
    done = subprocess.run([sys.executable, "-m", "recsys_stream.cli", command, "--config",
                           str(path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    return done, path


def _refused(done, command: str = "topics") -> str:
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{command}: kafka 127.0.0.1:"), done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    return last


def test_processes_connect_with_the_password_from_the_environment(secure_kafka, tmp_path):
    password = secure_kafka.client_settings["sasl.password"]
    client = {**secure_kafka.client_settings, "sasl.password": "env:RECSYS_TEST_KAFKA_PW"}
    done, path = _run(tmp_path, secure_kafka, client, env={"RECSYS_TEST_KAFKA_PW": password})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "topics ready" in done.stdout
    assert password not in done.stdout + done.stderr
    # the project's own clients over SASL_SSL: a record produced is read back
    os.environ["RECSYS_TEST_KAFKA_PW"] = password
    try:
        cfg = load(path)
        prod = producer(cfg)
        prod.produce(cfg.topics.catalog, key=b"k", value=b"over-sasl-ssl")
        assert prod.flush(10) == 0
        assert [m.value() for m in read_to_end(cfg, cfg.topics.catalog)] == [b"over-sasl-ssl"]
    finally:
        del os.environ["RECSYS_TEST_KAFKA_PW"]


def test_a_wrong_password_ends_the_process_with_one_line(secure_kafka, tmp_path):
    (tmp_path / "pw").write_text(WRONG + "\n")
    client = {**secure_kafka.client_settings, "sasl.password": f"file:{tmp_path / 'pw'}"}
    done, _ = _run(tmp_path, secure_kafka, client, command="worker")
    last = _refused(done, "worker")
    assert "authentication failed: the broker refused user 'recsys' (SCRAM-SHA-512)" in last
    assert WRONG not in done.stdout + done.stderr


def test_a_plaintext_client_on_the_tls_listener_ends_with_one_line(secure_kafka, tmp_path):
    done, _ = _run(tmp_path, secure_kafka, {})
    last = _refused(done)
    assert "expects TLS" in last and "this client speaks PLAINTEXT" in last


def test_an_untrusted_broker_certificate_ends_with_one_line(secure_kafka, tmp_path):
    client = {k: v for k, v in secure_kafka.client_settings.items() if k != "ssl.ca.location"}
    done, _ = _run(tmp_path, secure_kafka, client, command="serve")
    last = _refused(done, "serve")
    assert "certificate is not trusted" in last
    assert secure_kafka.client_settings["sasl.password"] not in done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_over_sasl_ssl_as_the_readme_says(secure_kafka, tmp_path):
    """``broker --kafka --secure`` writes ``client.properties`` for ``kcat -F``."""
    props = secure_kafka.secured.directory / "client.properties"
    cfg = load(write_config(tmp_path / "c.toml", secure_kafka.bootstrap_servers, tmp_path,
                            "127.0.0.1:0", topic_prefix=f"kc{uuid.uuid4().hex[:6]}-",
                            kafka_client=secure_kafka.client_settings))
    from recsys_stream.kafka import ensure_topics
    ensure_topics(cfg)
    prod = producer(cfg)
    prod.produce(cfg.topics.catalog, key=b"k", value=b"seen-by-kcat")
    assert prod.flush(10) == 0
    # librdkafka < 2.6.1 (Debian 12's kcat) fails SCRAM against Kafka 4: PLAIN over TLS then
    version = subprocess.run(["kcat", "-V"], capture_output=True, text=True).stdout
    m = re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", version)
    old = m is not None and tuple(map(int, m.groups())) < (2, 6, 1)
    out = subprocess.run(["kcat", "-F", str(props), *(["-X", "sasl.mechanism=PLAIN"] if old
                                                      else []),
                          "-b", secure_kafka.bootstrap_servers,
                          "-C", "-t", cfg.topics.catalog, "-c", "1", "-e", "-q"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "seen-by-kcat"
    # and kcat without the settings is refused, not served
    out = subprocess.run(["kcat", "-b", secure_kafka.bootstrap_servers, "-L", "-m", "5"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0


@pytest.mark.timeout(600)
def test_spark_tasks_read_the_changelog_over_sasl_ssl(secure_kafka, tmp_path):
    """The trainer's Spark tasks build their consumers from the configuration they are shipped
    with: on the secured broker they read every user, and the password file they were loaded
    from is gone before they run (the secret travels with the configuration)."""
    pytest.importorskip("pyspark")
    from recsys_stream.batch.data import from_events
    from recsys_stream.batch.engines.spark_data import changelog_records
    from recsys_stream.batch.engines.spark_session import spark_session
    from recsys_stream.config import SparkConfig
    from recsys_stream.contracts.keys import make_key
    from recsys_stream.kafka import ensure_topics
    from recsys_stream.synthetic import generate_events, make_world
    from tests.conftest import make_config

    pw = tmp_path / "pw"
    pw.write_text(secure_kafka.client_settings["sasl.password"] + "\n")
    cfg = make_config(tmp_path, secure_kafka.bootstrap_servers)
    cfg = cfg.replace(kafka={"client": {**secure_kafka.client_settings,
                                        "sasl.password": f"file:{pw}"}})
    ensure_topics(cfg)
    world = make_world("acme", 40, genres=4)
    data = from_events("acme", generate_events(world, 30, 10, start_ms=1_700_000_000_000,
                                               seed=3), cfg.tenant("acme").confidence, 500, 0.0)
    prod = producer(cfg)
    for user, h in data.histories.items():
        prod.produce(cfg.topics.state_changelog, key=make_key("acme", user), value=h.encode())
    assert prod.flush(10) == 0
    pw.unlink()
    settings = SparkConfig(master="local[1]", settings={"spark.driver.memory": "512m"})
    with spark_session(settings) as spark:
        records = changelog_records(spark, cfg, ["acme"]).collect()
    assert {r[2] for r in records if r[0] == "user"} == set(data.histories)
    assert not [r for r in records if r[0] != "user"]
