"""gRPC transport settings: the TLS keys of ``[server]``, the plaintext warning off loopback,
and API keys checked against their stored sha256 in constant time."""

from __future__ import annotations

import hmac
import logging

import pytest

from recsys_stream.config import Config, ServerConfig, TenantConfig, hash_key
from recsys_stream.serving import auth
from recsys_stream.serving.tls import (TlsConfigError, channel_credentials, is_loopback,
                                       server_credentials, warn_if_exposed)


@pytest.mark.parametrize("address,loopback", [
    ("127.0.0.1:50051", True), ("localhost:50051", True), ("[::1]:50051", True),
    ("127.0.0.5:1", True), ("0.0.0.0:50051", False), ("[::]:50051", False),
    ("10.1.2.3:50051", False), ("api.example.com:443", False), (":50051", False)])
def test_loopback_addresses(address, loopback):
    assert is_loopback(address) is loopback


def test_plaintext_off_loopback_warns_at_start_tls_or_loopback_do_not(caplog):
    with caplog.at_level(logging.WARNING, "recsys_stream.serving.tls"):
        assert warn_if_exposed(ServerConfig(address="0.0.0.0:50051"))
        assert not warn_if_exposed(ServerConfig(address="127.0.0.1:50051"))
        assert not warn_if_exposed(ServerConfig(address="0.0.0.0:50051", tls_cert="c.pem",
                                                tls_key="k.pem"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "0.0.0.0:50051 without TLS" in warnings[0].getMessage()


def test_tls_settings_go_together_and_unreadable_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="tls_cert and server.tls_key go together"):
        ServerConfig(tls_cert="c.pem")
    with pytest.raises(ValueError, match="tls_client_ca needs"):
        ServerConfig(tls_client_ca="ca.pem")
    assert server_credentials(ServerConfig()) is None
    with pytest.raises(TlsConfigError, match=f"server.tls_key: cannot read {tmp_path}/k.pem"):
        server_credentials(ServerConfig(tls_cert=str(tmp_path / "c.pem"),
                                        tls_key=str(tmp_path / "k.pem")))
    with pytest.raises(TlsConfigError, match="--cert and --key together"):
        channel_credentials(cert="c.pem")


def test_api_keys_are_compared_in_constant_time_over_their_sha256(monkeypatch):
    """Every stored hash is compared with ``hmac.compare_digest`` (no early exit), against the
    sha256 hex of the presented key; the key itself is never stored or compared."""
    cfg = Config(tenants={"acme": TenantConfig(api_key_sha256=(hash_key("k1"),)),
                          "globex": TenantConfig(admin_key_sha256=(hash_key("k2"),))})
    ring = auth.KeyRing(cfg)
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest",
                        lambda a, b: calls.append((a, b)) or real(a, b))
    assert ring.identify("k1") == auth.Caller("acme", False)
    assert len(calls) == 2 and all(b == hash_key("k1") for _, b in calls)
    calls.clear()
    assert ring.identify("k2") == auth.Caller("globex", True)
    assert ring.identify("nope") is None and ring.identify("") is None
    assert len(calls) == 4  # every entry compared, whether a match came first or never


def test_serve_with_an_unreadable_certificate_is_one_line(tmp_path, monkeypatch):
    from recsys_stream import cli
    monkeypatch.setattr(cli, "_connected", lambda args, cfg=None: cli._config(args))
    p = tmp_path / "c.toml"
    p.write_text(f'[server]\ntls_cert = "{tmp_path}/none.pem"\ntls_key = "{tmp_path}/k.pem"\n')
    with pytest.raises(SystemExit) as e:
        cli.main(["serve", "--config", str(p)])
    assert str(e.value) == f"serve: server.tls_key: cannot read {tmp_path}/k.pem " \
                           "(No such file or directory)"
