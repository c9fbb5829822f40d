"""gRPC over TLS and mutual TLS on a real server, a real port and certificates made by openssl for
the test: TLS serves; a plaintext client, a client that does not trust the server's CA, and
(mutual TLS) a client without a certificate or with one from another CA are refused; a
certificate signed by the client CA is served; ``serve --workers 2`` serves TLS on its shared
port; ``recommend --ca/--cert/--key`` works."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading

import grpc
import pytest

from recsys_stream import devcerts
from recsys_stream.broker import free_port, free_port_run
from recsys_stream.serving.app import run_server
from recsys_stream.serving.client import RecommenderClient
from recsys_stream.stack import Stack, wait_until, write_config
from tests.conftest import KEYS
from tests.integration.test_server import write_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A server CA with the server's certificate, a client CA with a client's, and a rogue CA
    with a client certificate of its own."""
    d = tmp_path_factory.mktemp("pki")
    server_ca = devcerts.make_ca(d / "server-ca", "server CA")
    client_ca = devcerts.make_ca(d / "client-ca", "client CA")
    rogue_ca = devcerts.make_ca(d / "rogue-ca", "rogue CA")
    return {"server_ca": server_ca, "server": devcerts.make_cert(server_ca, "server"),
            "client_ca": client_ca,
            "client": devcerts.make_cert(client_ca, "client", hosts=("client.test",),
                                         client=True),
            "rogue": devcerts.make_cert(rogue_ca, "rogue", hosts=("client.test",),
                                        client=True)}


@contextlib.contextmanager
def _serving(cfg, tls: dict, **client_tls):
    address = f"127.0.0.1:{free_port()}"
    c = cfg.replace(server={"address": address, **tls})
    stop = threading.Event()
    t = threading.Thread(target=run_server, args=(c, stop), daemon=True)
    t.start()
    client = RecommenderClient(address, KEYS["acme"], **client_tls)
    try:
        wait_until(lambda: _answers(client), 60, what="the TLS server")
        yield address
    finally:
        client.close()
        stop.set()
        t.join(15)


def _answers(client) -> bool:
    try:
        return client.recommend("u", k=3).model_version > 0
    except grpc.RpcError:
        return False


def _refused(address, **client_tls) -> grpc.RpcError:
    with RecommenderClient(address, KEYS["acme"], timeout=5, **client_tls) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.recommend("u", k=3)
    return e.value


def test_tls_serves_and_refuses_plaintext_and_untrusting_clients(cfg, pki):
    write_model(cfg)
    tls = {"tls_cert": str(pki["server"].cert), "tls_key": str(pki["server"].key)}
    with _serving(cfg, tls, ca=str(pki["server_ca"].cert)) as address:
        with RecommenderClient(address, KEYS["acme"], ca=str(pki["server_ca"].cert)) as c:
            assert len(c.recommend("u", k=3).items) == 3
        # plaintext on the TLS port: the handshake never completes, nothing is served
        assert _refused(address).code() == grpc.StatusCode.UNAVAILABLE
        # TLS, but trusting another CA (the server's certificate does not verify)
        assert _refused(address, ca=str(pki["client_ca"].cert)).code() == \
            grpc.StatusCode.UNAVAILABLE
        # the operator's CLI with --ca
        out = subprocess.run([sys.executable, "-m", "recsys_stream.cli", "recommend",
                              "--address", address, "--api-key", KEYS["acme"], "--user", "u",
                              "--k", "2", "--ca", str(pki["server_ca"].cert)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("tenant=acme") and len(out.stdout.splitlines()) == 3


def test_mutual_tls_serves_only_clients_with_a_certificate_of_the_client_ca(cfg, pki):
    write_model(cfg)
    ca = str(pki["server_ca"].cert)
    tls = {"tls_cert": str(pki["server"].cert), "tls_key": str(pki["server"].key),
           "tls_client_ca": str(pki["client_ca"].cert)}
    client = {"cert": str(pki["client"].cert), "key": str(pki["client"].key)}
    with _serving(cfg, tls, ca=ca, **client) as address:
        with RecommenderClient(address, KEYS["acme"], ca=ca, **client) as c:
            assert len(c.recommend("u", k=3).items) == 3
        assert _refused(address, ca=ca).code() == grpc.StatusCode.UNAVAILABLE  # no certificate
        rogue = {"cert": str(pki["rogue"].cert), "key": str(pki["rogue"].key)}
        assert _refused(address, ca=ca, **rogue).code() == grpc.StatusCode.UNAVAILABLE
        assert _refused(address).code() == grpc.StatusCode.UNAVAILABLE  # plaintext
        # the API key still decides the tenant behind the certificate
        with RecommenderClient(address, "not-a-key", ca=ca, **client) as c:
            with pytest.raises(grpc.RpcError) as e:
                c.recommend("u", k=3)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        out = subprocess.run([sys.executable, "-m", "recsys_stream.cli", "recommend",
                              "--address", address, "--api-key", KEYS["acme"], "--user", "u",
                              "--k", "2", "--ca", ca, "--cert", client["cert"],
                              "--key", client["key"]],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("tenant=acme")


def test_a_server_pool_serves_tls_on_its_shared_port(cfg, pki, tmp_path):
    """``serve --workers 2``: both processes of the pool answer over TLS on the one port (each
    counts requests on its own metrics port), and none answers plaintext."""
    import urllib.request
    v, _ = write_model(cfg)
    address = f"127.0.0.1:{free_port()}"
    base = free_port_run(2)  # the pool serves metrics on base and base + 1
    path = write_config(tmp_path / "c.toml", cfg.kafka.bootstrap_servers, tmp_path, address,
                        keys={"acme": KEYS["acme"]}, topic_prefix=cfg.kafka.topic_prefix,
                        metrics_ports=(0, 0, base),
                        server_tls={"tls_cert": pki["server"].cert,
                                    "tls_key": pki["server"].key})
    path.write_text(path.read_text().replace(f'model_store = "{tmp_path / "models"}"',
                                             f'model_store = "{cfg.model_store}"'))
    stack = Stack(path, tmp_path)
    ca = str(pki["server_ca"].cert)
    try:
        stack.start("pool", "serve", "--workers", "2")

        def served_by_both_over_tls():
            for _ in range(20):  # fresh connections: the kernel picks a process per connection
                try:
                    with RecommenderClient(address, KEYS["acme"], timeout=2, ca=ca) as c:
                        assert c.recommend("u", k=3).model_version == v
                except grpc.RpcError:
                    return False
            counts = []
            for port in (base, base + 1):
                try:
                    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                                  timeout=2).read().decode()
                except OSError:
                    return False
                counts.append(sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                                  if line.startswith("recsys_server_requests_total{")))
            return all(n > 0 for n in counts) and counts
        wait_until(served_by_both_over_tls, 90, interval_s=0.5, what="both TLS pool processes",
                   stack=stack)
        for _ in range(10):  # plaintext to either process of the pool
            assert _refused(address).code() == grpc.StatusCode.UNAVAILABLE
        assert "without TLS" not in stack.tail("pool", 200)
    finally:
        assert stack.stop("pool") is not None
