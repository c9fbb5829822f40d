"""Fail fast on a cluster the process cannot use: one bounded metadata request at start.

librdkafka never gives up on a broker: a wrong password, an untrusted certificate or a plaintext
client on a TLS listener make every client retry forever, so a process would hang at its first
request (a consumer-group join waits without end) with the cause in a repeated log line. Every
process therefore asks for the cluster's metadata once at start (``check_connection``), within
``kafka.connect_timeout_s``, and exits with one line that names the cause: librdkafka's errors
and log lines of that request are translated (:func:`diagnose`). A decisive error (a refused
login, a failed TLS handshake) ends the check at once; no answer at all ends it at the deadline.
"""

from __future__ import annotations

import re
import threading
import time

from confluent_kafka import KafkaError, KafkaException

from recsys_stream import credentials
from recsys_stream.config import Config
from recsys_stream.kafka import admin


class KafkaConnectError(RuntimeError):
    """The cluster cannot be used with these settings; the message is one line naming why."""


class _Capture:
    """A librdkafka ``logger`` keeping the lines of one client (it calls ``log(level, fmt,
    *args)``), and its ``error_cb``."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.codes: list[int] = []
        self._lock = threading.Lock()

    def log(self, level, fmt, *args) -> None:
        with self._lock:
            self.lines.append(fmt % args if args else str(fmt))

    def error(self, err: KafkaError) -> None:
        with self._lock:
            self.codes.append(err.code())
            self.lines.append(err.str())

    def snapshot(self) -> tuple[list[int], list[str]]:
        with self._lock:
            return list(self.codes), list(self.lines)


def _clean(line: str) -> str:
    """A librdkafka line without its broker prefix and timing suffix."""
    line = re.sub(r"^[A-Z]+ \[\S+\] ", "", line)                  # "FAIL [rdkafka#producer-1] "
    line = re.sub(r"\[thrd:[^\]]*\]: ", "", line)
    line = re.sub(r"(\w+://)?[\w.:\[\]-]+/(bootstrap|\d+): ", "", line)  # "sasl_ssl://h:p/1: "
    line = re.sub(r" \(after \d+ms in state \w+\)", "", line)
    return re.sub(r"\s*\(_[A-Z_]+\)$", "", line).strip()


def diagnose(codes: list[int], lines: list[str], conf: dict) -> str | None:
    """The cause, as one line, if the errors and log lines so far decide it; else None.

    ``conf`` is the client's settings (to name the protocol, mechanism and user, never a
    secret).
    """
    protocol = str(conf.get("security.protocol", "plaintext")).upper()
    user = conf.get("sasl.username")
    mechanism = conf.get("sasl.mechanism", "GSSAPI")
    text = "\n".join(lines)
    if KafkaError._AUTHENTICATION in codes or "Authentication failed" in text \
            or "SASL authentication error" in text:
        return (f"authentication failed: the broker refused user {user!r} ({mechanism}); "
                "check sasl.username and sasl.password")
    for line in lines:
        if "certificate verify failed" in line:
            return ("TLS handshake failed: the broker's certificate is not trusted "
                    "(certificate verify failed); check ssl.ca.location or ssl.ca.pem")
    if "SSL" not in protocol and ("incorrect security.protocol" in text or re.search(
            r"Disconnected.*(state APIVERSION_QUERY|requesting ApiVersion)", text)):
        # a TLS listener reads the first request as a broken TLS ClientHello and hangs up
        return (f"the broker closed the connection at the first request: the listener "
                f"expects TLS (SSL or SASL_SSL), this client speaks {protocol}; set "
                "security.protocol (and the SASL/TLS settings) in [kafka.client]")
    if protocol == "SSL" and re.search(r"SSL connection closed by peer.*state UP", text):
        return ("the broker closed the connection after the TLS handshake: the listener "
                "expects a SASL login (SASL_SSL), this client speaks SSL; set "
                "security.protocol, sasl.mechanism, sasl.username and sasl.password")
    for line in lines:
        if "SSL handshake failed" in line or "wrong version number" in line:
            hint = (" (the listener speaks plaintext?)" if "wrong version number" in line
                    or "packet length too long" in line else "")
            return f"TLS handshake failed{hint}: {_clean(line).removeprefix('SSL handshake failed: ')}"
    for line in lines:
        if "Unsupported SASL mechanism" in line or "SASL mechanism" in line and "not" in line:
            return f"SASL mechanism refused: {_clean(line)}"
    if "SASL" in protocol and "Disconnected" in text and "AUTH" in text:
        return (f"the broker closed the connection during the SASL login of {user!r} "
                f"({mechanism}): is the listener SASL_SSL / SASL_PLAINTEXT?")
    return None


def check_connection(cfg: Config, timeout_s: float | None = None) -> int:
    """Ask the cluster for its metadata; return the number of brokers that answered.

    Raises
    ------
    KafkaConnectError
        With one line naming the cause (and the bootstrap servers), as soon as an error
        decides it, or after ``timeout_s`` (default ``kafka.connect_timeout_s``) without an
        answer. A bad setting (an unknown property, an unreadable CA file) raises at once too.
    """
    timeout_s = cfg.kafka.connect_timeout_s if timeout_s is None else timeout_s
    where = cfg.kafka.bootstrap_servers
    cap = _Capture()
    try:
        # log level 7 only for this client: the lines that name a cause are at 6 and 7
        adm = admin(cfg, logger=cap, log_level=7, error_cb=cap.error,
                    debug="security,broker,protocol")
    except KafkaException as e:
        why = str(e)
        m = re.search(r'str="(.*)"', why)
        why = m.group(1) if m else why
        raise KafkaConnectError(f"kafka {where}: bad client settings: "
                                f"{why.removeprefix('Failed to create admin client: ')}"
                                ) from None
    conf = dict(cfg.kafka.client)
    secrets = credentials.secrets_of(conf)
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            md = adm.list_topics(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            return len(md.brokers)
        except KafkaException as e:
            last = _clean(str(e.args[0].str() if e.args else e))
        adm.poll(0)  # serves error_cb
        codes, lines = cap.snapshot()
        why = diagnose(codes, lines, conf)
        if why is None and time.monotonic() >= deadline:
            errs = [_clean(ln) for ln in lines if ("FAIL" in ln or "rror" in ln)
                    and "_DESTROY" not in ln and "terminating" not in ln
                    and "suppressed" not in ln]
            why = (f"no answer within {timeout_s:g} s"
                   + (f" (last: {errs[-1]})" if errs else f" ({last})"))
        if why is not None:
            raise KafkaConnectError(credentials.scrub(f"kafka {where}: {why}", secrets))
