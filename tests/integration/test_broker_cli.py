"""``recsys-stream broker --kafka`` as a user runs it: prints its address, keeps its log in
``--data-dir`` across a restart, stops cleanly on SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from recsys_stream.broker import free_port
from recsys_stream.lifeline import child_env

pytestmark = pytest.mark.integration


def _start(port, data_dir, *flags):
    import os
    proc = subprocess.Popen([sys.executable, "-m", "recsys_stream.cli", "broker", "--kafka",
                             "--port", str(port), "--data-dir", str(data_dir), *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(dict(os.environ)))
    line = proc.stdout.readline()
    assert proc.poll() is None, f"the broker command exited: {proc.stderr.read()[-2000:]}"
    return proc, line


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0


def test_broker_kafka_prints_its_address_and_keeps_its_log_across_a_restart(tmp_path):
    port = free_port()
    proc, line = _start(port, tmp_path / "kafka")
    try:
        assert re.search(rf"apache kafka 4\.\S+ \(1 node\(s\), KRaft, log in .*\) on "
                         rf"127\.0\.0\.1:{port}\b", line), line
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
        admin.create_topics([NewTopic("kept", 2, 1)])["kept"].result(30)
    finally:
        _stop(proc)
    proc, line = _start(port, tmp_path / "kafka")
    try:
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
        assert "kept" in admin.list_topics(timeout=30).topics
    finally:
        _stop(proc)


def test_tansu_has_no_nodes_or_data_dir():
    done = subprocess.run([sys.executable, "-m", "recsys_stream.cli", "broker", "--nodes", "3"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "need --kafka" in done.stderr


def test_broker_kafka_secure_prints_the_client_settings_and_keeps_them_across_a_restart(
        tmp_path):
    """``--secure``: the printed ``client.toml`` connects over SASL_SSL; a restart on the same
    directory keeps the users and the certificates (the users live in the formatted metadata);
    a plaintext client is refused."""
    from recsys_stream.config import load_config
    from recsys_stream.kafka_check import KafkaConnectError, check_connection
    port = free_port()
    data = tmp_path / "kafka"
    for _ in range(2):
        proc, line = _start(port, data, "--secure")
        try:
            assert f"on 127.0.0.1:{port} (SASL_SSL, SCRAM-SHA-512)" in line, line
            clients = proc.stdout.readline()
            m = re.search(r"\[kafka.client\] in (\S+), kcat -F (\S+)", clients)
            assert m and clients.startswith("clients: user recsys, CA "), clients
            cfg_file = tmp_path / "c.toml"
            cfg_file.write_text(f'[kafka]\nbootstrap_servers = "127.0.0.1:{port}"\n'
                                + open(m.group(1)).read())
            cfg = load_config(cfg_file, env={})
            assert cfg.kafka.client["sasl.password"].source.startswith("file:")
            assert check_connection(cfg, timeout_s=30) == 1
            with pytest.raises(KafkaConnectError, match="expects TLS"):
                check_connection(cfg.replace(kafka={"client": {}}), timeout_s=30)
        finally:
            _stop(proc)
    assert (data / "secure" / "ca.pem").exists()
