"""Shared fixtures: one broker per test session, a fresh deployment (topic prefix, state and
model directories) per test.

The broker is ``$KAFKA_BOOTSTRAP_SERVERS`` when set, else a testcontainers Kafka when a Docker
engine answers (``RECSYS_TEST_DOCKER=0`` opts out), else Apache Kafka started from the project's
own jars (``recsys_stream.kafka_cluster``; ``make test`` resolves them): the same scenarios run
either way, nothing is skipped for want of Docker. ``RECSYS_TEST_BROKER=tansu`` runs the suite
on the embedded tansu broker instead; the end-to-end loop runs on tansu in every session anyway
(``tansu_bootstrap``), because it is the broker of ``make demo``.
"""

from __future__ import annotations

import logging
import os
import uuid

import pytest

from recsys_stream.broker import EmbeddedBroker
from recsys_stream.config import AlsConfig, BprConfig, Config, ItemsConfig, KafkaConfig, \
    ServerConfig, TenantConfig, TrainerConfig, WorkerConfig, hash_key

logging.getLogger("recsys_stream").setLevel(logging.INFO)

# Small, fast models for tests; benchmarks use the configured defaults.
TEST_ALS = AlsConfig(factors=16, regularization=0.1, iterations=8)
TEST_BPR = BprConfig(factors=16, learning_rate=0.01, iterations=100)
KEYS = {"acme": "acme-test-key", "globex": "globex-test-key", "initech": "initech-test-key"}
ADMIN_KEYS = {t: f"{t}-admin-key" for t in KEYS}


def docker_available() -> bool:
    try:
        import docker
        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def tansu_bootstrap():
    """Bootstrap servers of an embedded tansu broker (the demo's), started once per session."""
    with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def kafka_bootstrap(request):
    """Bootstrap servers of the session's broker."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    if os.environ.get("RECSYS_TEST_DOCKER") != "0" and docker_available():
        from testcontainers.kafka import KafkaContainer
        with KafkaContainer() as kafka:
            logging.getLogger(__name__).warning("tests use a testcontainers Kafka")
            yield kafka.get_bootstrap_server()
        return
    if os.environ.get("RECSYS_TEST_BROKER", "kafka") == "tansu":
        logging.getLogger(__name__).warning("RECSYS_TEST_BROKER=tansu: tests use tansu")
        yield request.getfixturevalue("tansu_bootstrap")
        return
    from recsys_stream.kafka_cluster import KafkaCluster
    with KafkaCluster(nodes=1) as cluster:
        logging.getLogger(__name__).warning("no Docker engine: tests use Apache Kafka %s",
                                            cluster.bootstrap_servers)
        yield cluster.bootstrap_servers


@pytest.fixture(scope="session")
def apache_kafka_bootstrap(request):
    """Apache Kafka for tests of what only it does (compaction, kcat): the session broker,
    unless that is tansu (``RECSYS_TEST_BROKER=tansu``), then one started for them."""
    if os.environ.get("RECSYS_TEST_BROKER", "kafka") != "tansu":
        yield request.getfixturevalue("kafka_bootstrap")
        return
    from recsys_stream.kafka_cluster import KafkaCluster
    with KafkaCluster(nodes=1) as cluster:
        yield cluster.bootstrap_servers


@pytest.fixture(scope="session")
def secure_kafka():
    """A second Apache Kafka whose clients must use SASL_SSL (SCRAM-SHA-512 users made at
    format time, a CA and broker certificate made for the session): a ``KafkaCluster`` with
    ``bootstrap_servers`` and ``client_settings`` (the ``[kafka.client]`` of its application
    user), and ``secured`` (the CA, the password file). Started only by the tests that use it;
    the rest of the suite stays on the plaintext session broker."""
    from recsys_stream.kafka_cluster import KafkaCluster
    with KafkaCluster(nodes=1, secure=True) as cluster:
        yield cluster


def secure_client_settings(cluster) -> dict:
    """``[kafka.client]`` of the application user with the password read from its file."""
    pw = cluster.secured.directory / f"{cluster.secured.CLIENT_USER}.password"
    return {**cluster.client_settings, "sasl.password": f"file:{pw}"}


def make_config(tmp_path, bootstrap: str = "127.0.0.1:9", **tenant_overrides) -> Config:
    tenants = {t: TenantConfig(api_key_sha256=(hash_key(k),),
                               admin_key_sha256=(hash_key(ADMIN_KEYS[t]),),
                               als=TEST_ALS, bpr=TEST_BPR, **tenant_overrides)
               for t, k in KEYS.items()}
    return Config(
        model_store=str(tmp_path / "models"),
        # compacted topics roll a segment every 2 s so the cleaner can work while a test looks
        kafka=KafkaConfig(bootstrap_servers=bootstrap,
                          topic_prefix=f"t{uuid.uuid4().hex[:10]}-", interaction_partitions=4,
                          compacted_segment_ms=2000, compacted_dirty_ratio=0.01),
        worker=WorkerConfig(state_dir=str(tmp_path / "state")),
        items=ItemsConfig(state_dir=str(tmp_path / "item-state")),
        trainer=TrainerConfig(algorithms=("als",)),
        server=ServerConfig(profile_dir=str(tmp_path / "server-profiles")),
        tenants=tenants,
    )


@pytest.fixture
def cfg(tmp_path, kafka_bootstrap) -> Config:
    """A fresh deployment on the session broker: new topic prefix, empty state and model store."""
    from recsys_stream.kafka import ensure_topics
    c = make_config(tmp_path, kafka_bootstrap)
    ensure_topics(c)
    return c


@pytest.fixture
def offline_cfg(tmp_path) -> Config:
    """The same configuration without a broker, for unit tests."""
    return make_config(tmp_path)
