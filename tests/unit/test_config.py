"""The documented config file is complete, loads, and typos are errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from recsys_stream.config import Config, TenantConfig, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "recsys-stream.toml"


def _keys(cls, prefix=""):
    for f in dataclasses.fields(cls):
        yield prefix + f.name
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(sub):
            yield from _keys(type(sub), prefix + f.name + ".")


def test_example_config_documents_every_key_and_loads():
    cfg = load_config(EXAMPLE, env={})
    text = EXAMPLE.read_text()
    for key in _keys(Config):
        if key == "tenants":
            continue
        assert key.rsplit(".", 1)[-1] in text, f"{key} is not documented in {EXAMPLE.name}"
    for key in _keys(TenantConfig):
        assert key.rsplit(".", 1)[-1] in text, f"tenant key {key} is not documented"
    assert cfg.tenant("acme").als.factors == 64
    assert cfg.tenant("acme").confidence.alpha == 2.0
    # every non-table line of the example carries a comment
    for line in text.splitlines():
        s = line.strip()
        if s and not s.startswith(("#", "[")) and "=" in s and not s.split("=")[0].strip() in (
                "view", "click", "add_to_cart", "purchase", "rating", "like", "model_store"):
            assert "#" in s, f"uncommented key: {s}"


def test_unknown_key_is_an_error(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[kafka]\nbootstrap_server = 'x'\n")
    with pytest.raises(ValueError, match="bootstrap_server"):
        load_config(p, env={})


def test_environment_overrides_bootstrap():
    cfg = load_config(None, env={"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"})
    assert cfg.kafka.bootstrap_servers == "kafka:9092"
    with pytest.raises(KeyError, match="unknown tenant"):
        cfg.tenant("nope")
