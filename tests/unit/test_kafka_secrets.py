"""Secrets of ``[kafka.client]``: read from the environment or a file, handed to librdkafka,
never shown in a config dump, a log line or an error; librdkafka's connection errors translated
into one line naming the cause."""

from __future__ import annotations

import logging
import pickle

import pytest
from confluent_kafka import KafkaError, KafkaException

from recsys_stream import kafka
from recsys_stream.config import Config, load_config
from recsys_stream.credentials import Secret, SecretError
from recsys_stream.kafka_check import diagnose

PASSWORD = "hunter2-do-not-print"


def _secured(tmp_path, monkeypatch) -> Config:
    monkeypatch.setenv("TEST_KAFKA_PASSWORD", PASSWORD)
    (tmp_path / "key-pw").write_text("key-secret-xyz\n")
    p = tmp_path / "c.toml"
    p.write_text('[kafka.client]\n"security.protocol" = "SASL_SSL"\n'
                 '"sasl.mechanism" = "SCRAM-SHA-512"\n"sasl.username" = "recsys"\n'
                 '"sasl.password" = "env:TEST_KAFKA_PASSWORD"\n'
                 f'"ssl.key.password" = "file:{tmp_path / "key-pw"}"\n'
                 '"sasl.oauthbearer.client.secret" = "inline-secret-abc"\n')
    return load_config(p, env={})


def test_references_are_read_and_every_client_gets_the_plain_values(tmp_path, monkeypatch):
    cfg = _secured(tmp_path, monkeypatch)
    seen = []
    for cls in ("Producer", "Consumer", "AdminClient"):
        monkeypatch.setattr(kafka, cls, lambda conf: seen.append(conf) or object())
    kafka.producer(cfg), kafka.consumer(cfg, "g"), kafka.admin(cfg)
    for conf in seen:
        assert conf["sasl.password"] == PASSWORD
        assert conf["ssl.key.password"] == "key-secret-xyz"  # the file's newline dropped
        assert conf["sasl.oauthbearer.client.secret"] == "inline-secret-abc"
        assert conf["sasl.username"] == "recsys"
        assert all(isinstance(v, (str, int, bool)) or k == "logger" for k, v in conf.items())


def test_no_dump_log_line_or_copy_of_the_config_shows_a_secret(tmp_path, monkeypatch, caplog):
    cfg = _secured(tmp_path, monkeypatch)
    copy = cfg.replace(kafka={"topic_prefix": "x-"})  # resolved again: Secrets pass through
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("config %s %r", cfg, copy.kafka)
        logging.getLogger("test").info(f"conf {kafka.client_conf(cfg)}")
    shown = caplog.text + repr(cfg) + str(cfg) + f"{cfg}" + repr(kafka.client_conf(copy))
    for secret in (PASSWORD, "key-secret-xyz", "inline-secret-abc"):
        assert secret not in shown
    assert "Secret('env:TEST_KAFKA_PASSWORD')" in shown  # where it came from: safe to show
    assert copy.kafka.client["sasl.password"].reveal() == PASSWORD


def test_a_missing_variable_or_file_names_the_key_and_source(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    with pytest.raises(SecretError, match="kafka.client.sasl.password: environment variable "
                                          "NOPE_NOT_SET is not set"):
        Config().replace(kafka={"client": {"sasl.password": "env:NOPE_NOT_SET"}})
    with pytest.raises(SecretError, match=f"cannot read file {tmp_path}/missing"):
        Config().replace(kafka={"client": {"sasl.password": f"file:{tmp_path}/missing"}})


def test_the_cli_says_which_secret_is_missing_in_one_line(tmp_path, monkeypatch):
    from recsys_stream.cli import main
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    p = tmp_path / "c.toml"
    p.write_text('[kafka.client]\n"sasl.password" = "env:NOPE_NOT_SET"\n')
    with pytest.raises(SystemExit) as e:
        main(["topics", "--config", str(p)])
    assert str(e.value) == ("topics: config kafka.client.sasl.password: environment variable "
                            "NOPE_NOT_SET is not set")


def test_an_error_librdkafka_raises_about_the_settings_is_scrubbed(monkeypatch):
    """librdkafka quotes a value it rejects: a secret read into any key never reaches the
    message (the real client, no broker needed)."""
    monkeypatch.setenv("TEST_PROTO", PASSWORD)
    cfg = Config().replace(kafka={"client": {"security.protocol": "env:TEST_PROTO"}})
    with pytest.raises(KafkaException) as e:
        kafka.admin(cfg)
    assert PASSWORD not in str(e.value) and "***" in str(e.value)
    assert "security.protocol" in str(e.value)


def test_secrets_travel_with_the_config_to_pool_processes_and_spark_tasks(tmp_path, monkeypatch):
    """Pickled (``serve --workers``) and cloudpickled (the Spark tasks reading the changelog
    build their consumer from the captured config): the same settings on the other side,
    with no variable or file needed there."""
    cfg = _secured(tmp_path, monkeypatch)
    back = pickle.loads(pickle.dumps(cfg))
    assert back.kafka.client == cfg.kafka.client
    assert back.kafka.client["sasl.password"].reveal() == PASSWORD
    cloudpickle = pytest.importorskip("pyspark.cloudpickle")
    monkeypatch.delenv("TEST_KAFKA_PASSWORD")
    (tmp_path / "key-pw").unlink()
    task = pickle.loads(cloudpickle.dumps(lambda: kafka.client_conf(cfg)))
    conf = task()
    assert conf["sasl.password"].reveal() == PASSWORD
    assert conf["ssl.key.password"].reveal() == "key-secret-xyz"


def test_secret_equality_and_repr():
    assert Secret("a") == Secret("a", "env:X") and Secret("a") != Secret("b")
    assert repr(Secret("a", "file:/run/pw")) == "Secret('file:/run/pw')"
    assert "a" not in f"{Secret('abc')}"


CONF = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "recsys"}


@pytest.mark.parametrize("codes,lines,conf,expected", [
    ([KafkaError._AUTHENTICATION],
     ["sasl_ssl://127.0.0.1:1/bootstrap: SASL authentication error: Authentication failed "
      "during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"],
     CONF, "authentication failed: the broker refused user 'recsys' (SCRAM-SHA-512)"),
    ([KafkaError._SSL],
     ["sasl_ssl://127.0.0.1:1/bootstrap: SSL handshake failed: error:0A000086:SSL routines::"
      "certificate verify failed: broker certificate could not be verified"],
     CONF, "the broker's certificate is not trusted"),
    ([KafkaError._ALL_BROKERS_DOWN],
     ["FAIL [rdkafka#producer-2] [thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: "
      "Disconnected: connection closed by peer: receive 0 after POLLIN (after 2ms in state "
      "APIVERSION_QUERY) (_TRANSPORT)"],
     {}, "the listener expects TLS (SSL or SASL_SSL), this client speaks PLAINTEXT"),
    ([], ["FAIL [rdkafka#producer-3] [thrd:ssl://127.0.0.1:1/bootstrap]: ssl://127.0.0.1:1/"
          "bootstrap: Disconnected: SSL connection closed by peer (after 5ms in state UP)"],
     {"security.protocol": "SSL"}, "the listener expects a SASL login (SASL_SSL)"),
    ([KafkaError._SSL],
     ["sasl_ssl://127.0.0.1:1/bootstrap: SSL handshake failed: Disconnected: SSL connection "
      "closed by peer: connecting to a PLAINTEXT broker listener? (_TRANSPORT)"],
     CONF, "TLS handshake failed: Disconnected: SSL connection closed by peer: connecting to "
           "a PLAINTEXT broker listener?"),
])
def test_librdkafka_errors_become_one_line_naming_the_cause(codes, lines, conf, expected):
    why = diagnose(codes, lines, conf)
    assert why is not None and expected in why and "\n" not in why


def test_a_broker_that_is_merely_down_is_not_a_decided_cause():
    """Connection refused: maybe starting; the check waits for its deadline."""
    lines = ["FAIL [rdkafka#producer-4] [thrd:127.0.0.1:9/bootstrap]: 127.0.0.1:9/bootstrap: "
             "Connect to ipv4#127.0.0.1:9 failed: Connection refused (after 0ms in state "
             "CONNECT) (_TRANSPORT)"]
    assert diagnose([KafkaError._TRANSPORT], lines, {}) is None
    assert diagnose([KafkaError._TRANSPORT], lines, CONF) is None
