"""Secrets of the Kafka client settings: read from the environment or a file, never shown.

A value of ``[kafka.client]`` may name where it comes from instead of holding it:
``"env:NAME"`` is the environment variable ``NAME``, ``"file:/path"`` the content of a file (one
trailing newline dropped, as ``echo secret > file`` leaves one). :func:`resolve` reads every such
reference once, when the configuration is built, so a missing variable or file stops a process
at start with one line naming the key and the variable or file (never the value).

Every resolved reference, and every value of a key that is a secret by its name (passwords,
private keys, SASL/OAuth configs: :data:`SENSITIVE`), is held as a :class:`Secret`: its
``repr``/``str`` show only where it came from, so a config dump, a log line or an exception
message built from the configuration prints ``Secret('env:NAME')``, not the password. The one
place a secret is revealed is the conf dict handed to librdkafka (``kafka._build``); errors
librdkafka raises from it go through :func:`scrub` first.

Secrets travel with the configuration when it is pickled: to ``serve --workers N`` processes
and to the Spark tasks that read the changelog, which therefore need neither the variable nor
the file on the executors.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

# librdkafka properties whose values are secrets whatever their source: sasl.password,
# ssl.key.password, ssl.keystore.password, ssl.key.pem (a private key), sasl.jaas.config,
# sasl.oauthbearer.client.secret, sasl.oauthbearer.config (may hold a secret)
SENSITIVE = re.compile(r"password|secret|\.key\.pem$|jaas\.config|oauthbearer\.config")
_REFERENCE = re.compile(r"^(env|file):(.+)$", re.S)


class Secret:
    """A string that does not show itself: ``reveal()`` is the only way to the value."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "inline") -> None:
        self._value = value
        self.source = source            # "inline", "env:NAME" or "file:/path": safe to show

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.source!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self.source)

    def __reduce__(self):  # pickled with the config (pool processes, Spark tasks)
        return (Secret, (self._value, self.source))


class SecretError(ValueError):
    """A reference to a variable or file that cannot be read: names the key and the source."""


def _read(key: str, kind: str, where: str, env: Mapping[str, str]) -> str:
    if kind == "env":
        if where not in env:
            raise SecretError(f"config kafka.client.{key}: environment variable {where} "
                              f"is not set")
        return env[where]
    try:
        text = open(where, encoding="utf-8").read()
    except OSError as e:
        raise SecretError(f"config kafka.client.{key}: cannot read file {where} "
                          f"({e.strerror or type(e).__name__})") from None
    return text[:-1] if text.endswith("\n") else text


def resolve(settings: Mapping[str, Any], env: Mapping[str, str] | None = None) -> dict:
    """``settings`` with every ``env:`` / ``file:`` reference read and every secret wrapped.

    Idempotent: a :class:`Secret` stays as it is (a config copied by ``Config.replace`` is
    resolved again).

    Raises
    ------
    SecretError
        When a referenced variable is not set or a file cannot be read.
    """
    env = os.environ if env is None else env
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, str):
            m = _REFERENCE.match(value)
            if m:
                value = Secret(_read(key, m.group(1), m.group(2), env), value)
            elif SENSITIVE.search(key):
                value = Secret(value)
        out[key] = value
    return out


def reveal(conf: Mapping[str, Any]) -> dict:
    """The plain dict librdkafka takes: every :class:`Secret` replaced by its value."""
    return {k: v.reveal() if isinstance(v, Secret) else v for k, v in conf.items()}


def secrets_of(conf: Mapping[str, Any]) -> list[str]:
    return [v.reveal() for v in conf.values() if isinstance(v, Secret) and v.reveal()]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of a secret (longest first) replaced by ``***``."""
    for s in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(s, "***")
    return text
