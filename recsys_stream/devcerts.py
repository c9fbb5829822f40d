"""Certificates made for one run with ``openssl``: a CA, and server or client certificates it
signs. For the project's own secured broker (``broker --kafka --secure``) and the TLS tests;
never for production, where certificates come from the deployment's own CA.

The ``openssl`` command line is used rather than a Python package: it is on every machine that
runs Apache Kafka's tests here, and the ``cryptography`` package is not a dependency.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# a run's certificates outlive no test session; a day covers a clock skew and a long soak
DAYS = "2"


class CertError(RuntimeError):
    """openssl is missing or failed: the message names the step."""


@dataclass(frozen=True)
class CertFiles:
    """PEM files of one certificate: ``cert`` (with the CA after it: the chain), ``key``, and
    the ``ca`` that signed it."""

    cert: Path
    key: Path
    ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise CertError("making certificates needs openssl (Debian: apt-get install openssl)")
    done = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise CertError(f"openssl {args[0]} failed: {(done.stderr or done.stdout).strip()[-300:]}")


def make_ca(directory: str | Path, name: str = "recsys-stream test CA") -> CertFiles:
    """A self-signed CA (``ca.pem``, ``ca.key``) in ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.pem", "-days", DAYS, "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    (d / "ca.key").chmod(0o600)
    return CertFiles(d / "ca.pem", d / "ca.key", d / "ca.pem")


def make_cert(ca: CertFiles, name: str, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
              client: bool = False) -> CertFiles:
    """A certificate for ``hosts`` (DNS names and IP addresses, as subjectAltName) signed by
    ``ca``: ``<name>.pem`` (leaf then CA) and ``<name>.key`` beside the CA's files.

    ``client=True`` makes a client certificate (extendedKeyUsage clientAuth) for mutual TLS.
    """
    d = ca.cert.parent
    sans = ",".join(("IP:" if h.replace(".", "").isdigit() or ":" in h else "DNS:") + h
                    for h in hosts)
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={sans}\n"
                   f"extendedKeyUsage={'clientAuth' if client else 'serverAuth,clientAuth'}\n"
                   "basicConstraints=CA:FALSE\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", ca.cert.name, "-CAkey", ca.key.name,
             "-CAcreateserial", "-out", f"{name}.leaf.pem", "-days", DAYS,
             "-extfile", ext.name, cwd=d)
    (d / f"{name}.pem").write_text((d / f"{name}.leaf.pem").read_text() + ca.cert.read_text())
    (d / f"{name}.key").chmod(0o600)
    for tmp in (f"{name}.csr", f"{name}.leaf.pem", ext.name):
        (d / tmp).unlink()
    return CertFiles(d / f"{name}.pem", d / f"{name}.key", ca.cert)


def make_pkcs12(files: CertFiles, password: str) -> Path:
    """``files`` as a PKCS#12 keystore (``<name>.p12``) for a JVM (Kafka's ``ssl.keystore``)."""
    out = files.cert.with_suffix(".p12")
    _openssl("pkcs12", "-export", "-in", files.cert.name, "-inkey", files.key.name,
             "-name", files.cert.stem, "-out", out.name, "-passout", f"pass:{password}",
             cwd=files.cert.parent)
    out.chmod(0o600)
    return out
