"""gRPC transport security: the server's TLS (and mutual TLS) credentials, the client's, and
the warning for a plaintext port others can reach.

Plaintext stays the default on loopback (a laptop, a sidecar). Anywhere else the API key in
each request's metadata would cross the network readable, so a server bound to a non-loopback
address without ``server.tls_cert`` says so at start.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import grpc

from recsys_stream.config import ServerConfig

log = logging.getLogger(__name__)


class TlsConfigError(ValueError):
    """A certificate or key file that cannot be read: names the setting and the file."""


def _read(setting: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise TlsConfigError(f"{setting}: cannot read {path} ({e.strerror or e})") from None


def server_credentials(server: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from ``server.tls_cert`` / ``tls_key``; with ``tls_client_ca`` every
    client must present a certificate signed by it (mutual TLS). None: plaintext."""
    if not server.tls_cert:
        return None
    pair = (_read("server.tls_key", server.tls_key), _read("server.tls_cert", server.tls_cert))
    ca = _read("server.tls_client_ca", server.tls_client_ca) if server.tls_client_ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=ca,
                                       require_client_auth=ca is not None)


def channel_credentials(ca: str | None = None, cert: str | None = None,
                        key: str | None = None) -> grpc.ChannelCredentials:
    """A client's TLS credentials: ``ca`` (PEM) to trust instead of the system's roots, and
    ``cert`` + ``key`` (PEM) to present for mutual TLS."""
    if bool(cert) != bool(key):
        raise TlsConfigError("a client certificate needs its key (--cert and --key together)")
    return grpc.ssl_channel_credentials(
        root_certificates=_read("--ca", ca) if ca else None,
        private_key=_read("--key", key) if key else None,
        certificate_chain=_read("--cert", cert) if cert else None)


def host_of(address: str) -> str:
    """The host part of a gRPC listen address: ``[::1]:50051`` -> ``::1``, ``:50051`` -> ``""``."""
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return host.strip("[]")


def is_loopback(address: str) -> bool:
    host = host_of(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, "" or 0.0.0.0-like wildcards: reachable from elsewhere
        return False


def warn_if_exposed(server: ServerConfig) -> bool:
    """Log a warning when the server listens in plaintext on a non-loopback address; True if
    it did."""
    if server.tls_cert or is_loopback(server.address):
        return False
    log.warning("gRPC server on %s without TLS: API keys and answers cross the network in "
                "clear; set server.tls_cert and server.tls_key (and tls_client_ca for mutual "
                "TLS)", server.address)
    return True
