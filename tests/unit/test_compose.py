"""The docker-compose stack agrees with the CLI and the config it ships (no Docker needed)."""

from __future__ import annotations

from pathlib import Path

import yaml

from recsys_stream.cli import build_parser
from recsys_stream.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def _compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


def test_every_app_service_runs_an_existing_cli_command_with_valid_flags():
    compose = _compose()
    app_services = {n: s for n, s in compose["services"].items()
                    if s.get("image") == "recsys-stream:latest"}
    assert {"worker", "items", "trainer", "server", "kafka-init", "events"} <= set(app_services)
    choices = _subcommands()
    for name, svc in app_services.items():
        cmd = svc["command"]
        assert cmd[0] in choices, f"{name}: unknown command {cmd[0]}"
        build_parser().parse_args(cmd)  # raises SystemExit on an unknown flag


def test_ports_and_volumes_agree_with_the_compose_config():
    compose = _compose()
    cfg = load_config(ROOT / "services" / "config" / "compose.toml", env={})
    svc = compose["services"]
    assert f"{cfg.worker.metrics_port}:{cfg.worker.metrics_port}" in svc["worker"]["ports"]
    assert f"{cfg.trainer.metrics_port}:{cfg.trainer.metrics_port}" in svc["trainer"]["ports"]
    assert f"{cfg.server.metrics_port}:{cfg.server.metrics_port}" in svc["server"]["ports"]
    grpc_port = cfg.server.address.rsplit(":", 1)[1]
    assert f"{grpc_port}:{grpc_port}" in svc["server"]["ports"]
    assert cfg.kafka.bootstrap_servers.split(":")[0] == "kafka"
    models_mount = f"models:{cfg.model_store}"
    for name in ("worker", "trainer", "server"):
        assert models_mount in svc[name]["volumes"], f"{name} does not mount the model store"
    assert f"worker-state:{cfg.worker.state_dir}" in svc["worker"]["volumes"]
    assert f"{cfg.items.metrics_port}:{cfg.items.metrics_port}" in svc["items"]["ports"]
    assert models_mount in svc["items"]["volumes"]  # the stage loads versions by number
    assert f"item-state:{cfg.items.state_dir}" in svc["items"]["volumes"]
    assert set(compose["volumes"]) >= {"models", "worker-state", "item-state"}


def test_prometheus_scrapes_each_service_on_its_configured_port():
    cfg = load_config(ROOT / "services" / "config" / "compose.toml", env={})
    prom = yaml.safe_load((ROOT / "services" / "prometheus" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"][0]
               for job in prom["scrape_configs"]}
    assert targets == {"worker": f"worker:{cfg.worker.metrics_port}",
                       "items": f"items:{cfg.items.metrics_port}",
                       "trainer": f"trainer:{cfg.trainer.metrics_port}",
                       "server": f"server:{cfg.server.metrics_port}"}


def test_the_compose_kafka_runs_the_tests_broker_version_and_settings():
    from recsys_stream.kafka_cluster import kafka_version, shared_settings
    kafka = _compose()["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{kafka_version()}"
    env = {k: str(v) for k, v in kafka["environment"].items()}
    for key, value in shared_settings().items():
        var = "KAFKA_" + key.upper().replace(".", "_")
        assert env.get(var) == value, f"{var} in docker-compose.yml != {key}={value}"
