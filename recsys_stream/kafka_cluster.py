"""Apache Kafka, started by the project itself: the broker of the test suite and of
``recsys-stream broker --kafka``.

The jars are Apache Kafka's own from Maven Central (``kafka/pom.xml``, a pinned version; Maven
checks every checksum), copied once into ``.cache/kafka-<version>/`` by ``fetch_jars``
(``make kafka-jars``). Each node runs KRaft in combined mode (broker and controller in one JVM)
on loopback with a real log directory, so a node can be killed with SIGKILL and restarted on
the same directory, which is what the fault tests do. ``nodes=3`` gives a three-voter quorum
with replication factor 3 and ``min.insync.replicas=2``.

Unlike tansu this broker keeps its log on disk, compacts, honours ``LogAppendTime`` and takes
1-3 s to start; nothing else in the code knows the difference.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from recsys_stream.broker import free_port
from recsys_stream.lifeline import die_with_parent

log = logging.getLogger(__name__)

PROJECT = Path(__file__).resolve().parents[1]
POM = PROJECT / "kafka" / "pom.xml"
SETTINGS = PROJECT / "kafka" / "broker.properties"
CACHE = PROJECT / ".cache"
# Heap of one node: the tests' traffic needs ~200 MB; 2 cores gain nothing from parallel GC
# threads fighting the services under test. The whole heap is committed and touched at start
# (-Xms = -Xmx, AlwaysPreTouch): a node's RSS is then flat from its first minute, so a soak's
# memory figure measures the broker, not the heap filling up to its bound.
JVM_OPTS = ("-Xms768m", "-Xmx768m", "-XX:+AlwaysPreTouch", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:ParallelGCThreads=1", "-XX:ConcGCThreads=1", "-Djava.awt.headless=true")


class KafkaSetupError(RuntimeError):
    """Java or Maven is missing, or the jars cannot be resolved: one line says which."""


def kafka_version() -> str:
    """The pinned Kafka version (``kafka.version`` of ``kafka/pom.xml``)."""
    m = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if not m:
        raise KafkaSetupError(f"{POM}: no <kafka.version>")
    return m.group(1)


def jar_dir() -> Path:
    return CACHE / f"kafka-{kafka_version()}"


def java_bin() -> str:
    """``$JAVA_HOME/bin/java`` when set, else ``java`` on PATH; a clear error when neither."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise KafkaSetupError("Apache Kafka needs Java 17 or newer: set JAVA_HOME or install "
                              "OpenJDK 17 (Debian: apt-get install openjdk-17-jre-headless)")
    return found


def fetch_jars(quiet: bool = True) -> Path:
    """Resolve Kafka and its runtime dependencies from Maven Central into ``jar_dir()`` once.

    A stamp file marks a complete copy, so an interrupted download is redone, not half used.
    """
    target = jar_dir()
    stamp = target / ".complete"
    if stamp.exists():
        return target
    java_bin()
    mvn = shutil.which("mvn")
    if not mvn:
        raise KafkaSetupError("resolving Apache Kafka's jars needs Maven: install it (Debian: "
                              "apt-get install maven) or put mvn on PATH")
    tmp = Path(tempfile.mkdtemp(prefix="kafka-jars-", dir=CACHE if CACHE.exists() else None))
    cmd = [mvn, "-B", "-f", str(POM), "dependency:copy-dependencies",
           f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"]
    if quiet:
        cmd.insert(1, "-q")
    log.info("resolving Apache Kafka %s from Maven Central into %s", kafka_version(), target)
    done = subprocess.run(cmd, capture_output=quiet, text=True)
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = (done.stdout or "").strip().splitlines()[-1:] if quiet else []
        raise KafkaSetupError(f"mvn could not resolve Apache Kafka {kafka_version()} "
                              f"(exit {done.returncode}){': ' + tail[0] if tail else ''}")
    shutil.rmtree(target, ignore_errors=True)
    CACHE.mkdir(exist_ok=True)
    tmp.rename(target)
    (target / ".complete").write_text(kafka_version() + "\n")
    return target


def shared_settings() -> dict[str, str]:
    """``kafka/broker.properties`` as a dict: the settings every node and docker-compose share."""
    out = {}
    for line in SETTINGS.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="{path}"><PatternLayout pattern="[%d] %p %m (%c)%n"/></File>
  </Appenders>
  <Loggers>
    <Logger name="kafka" level="INFO"/><Logger name="org.apache.kafka" level="INFO"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Root level="WARN"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""


@dataclass
class Secured:
    """What a ``secure`` cluster's listeners need: certificates and SCRAM users, made once per
    data directory (``secure/``, mode 0700) and reused on a restart on it.

    Users: ``admin`` (the brokers' own login to each other) and ``recsys`` (the application's),
    passwords random per run. The broker's keystore is PKCS#12 (made with openssl), its trust
    store the CA's PEM file.
    """

    directory: Path
    users: dict[str, str]
    keystore_password: str

    CLIENT_USER = "recsys"

    @classmethod
    def load_or_make(cls, directory: Path) -> Secured:
        import json
        import secrets

        from recsys_stream import devcerts
        state = directory / "secure.json"
        if state.exists():
            saved = json.loads(state.read_text())
            return cls(directory, saved["users"], saved["keystore_password"])
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        ca = devcerts.make_ca(directory, "recsys-stream kafka CA")
        self = cls(directory, {"admin": secrets.token_urlsafe(18),
                               cls.CLIENT_USER: secrets.token_urlsafe(18)},
                   secrets.token_urlsafe(18))
        devcerts.make_pkcs12(devcerts.make_cert(ca, "broker"), self.keystore_password)
        state.touch(mode=0o600)
        state.write_text(json.dumps({"users": self.users,
                                     "keystore_password": self.keystore_password}))
        self._write_client_files()
        return self

    def _write_client_files(self) -> None:
        """What a client of this cluster needs, beside the CA: the application user's
        password (``recsys.password``), a ``[kafka.client]`` table reading it from there
        (``client.toml``) and librdkafka properties for ``kcat -F`` (``client.properties``)."""
        user = self.CLIENT_USER
        pw = self.directory / f"{user}.password"
        props = self.directory / "client.properties"
        for f in (pw, props):
            f.touch(mode=0o600)
        pw.write_text(self.users[user] + "\n")
        conf = self.client_settings()
        props.write_text("".join(f"{k}={v}\n" for k, v in conf.items()))
        conf["sasl.password"] = f"file:{pw}"
        (self.directory / "client.toml").write_text(
            "[kafka.client]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in conf.items()))

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    def client_settings(self, user: str = CLIENT_USER) -> dict[str, str]:
        return {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": user, "sasl.password": self.users[user],
                "ssl.ca.location": str(self.ca)}

    def broker_properties(self, port: int, controller_port: int, advertised: str
                          ) -> dict[str, str]:
        admin = self.users["admin"]
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"SASL_SSL://{advertised}",
            # KRaft controllers cannot authenticate with SCRAM (the users are in the metadata
            # they serve): their listener is TLS, the brokers check its certificate
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SSL",
            "inter.broker.listener.name": "SASL_SSL",
            # PLAIN (over TLS) too, with the same users and passwords, for clients built on
            # librdkafka < 2.6.1 (Debian 12's kcat: 2.0.2), whose SCRAM proof Kafka 4 rejects
            # (the client nonce sent twice, librdkafka#4895); the project's clients use SCRAM
            "sasl.enabled.mechanisms": "SCRAM-SHA-512,PLAIN",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="admin" password="{admin}";',
            "listener.name.sasl_ssl.plain.sasl.jaas.config":
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="admin" password="{admin}" '
                + " ".join(f'user_{u}="{pw}"' for u, pw in self.users.items()) + ";",
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.directory / "broker.p12"),
            "ssl.keystore.password": self.keystore_password,
            "ssl.key.password": self.keystore_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca),
        }


@dataclass
class KafkaNode:
    """One KRaft node (broker + controller) of a ``KafkaCluster``."""

    node_id: int
    port: int
    controller_port: int
    data_dir: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class KafkaCluster:
    """Start, kill, restart and stop a loopback Apache Kafka of one or three KRaft nodes.

    Parameters
    ----------
    nodes : int
        1, or 3 for a cluster that survives the loss of one node (replication 3, min ISR 2).
    port : int, optional
        Client port of the first node (later nodes take free ports); a free one by default.
    data_dir : str or Path, optional
        Where the nodes' logs live (``node-<id>/``); a temporary directory, removed on
        ``stop()``, by default. A given directory is kept and reused: a restart on it keeps
        every topic and offset.
    advertised : dict of node id to "host:port", optional
        Addresses the nodes advertise to clients instead of their own (a test's TCP proxy).
    secure : bool
        Clients connect over SASL_SSL only (see ``Secured``): SCRAM-SHA-512 users created at
        format time, a CA and broker certificate made for the run; brokers talk to each other
        over the same listener as the ``admin`` user, to the controllers over TLS.
        ``client_settings`` are the librdkafka properties a client needs.
    """

    def __init__(self, nodes: int = 1, port: int | None = None,
                 data_dir: str | Path | None = None,
                 advertised: dict[int, str] | None = None, secure: bool = False) -> None:
        if nodes < 1:
            raise ValueError("nodes must be >= 1")
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="recsys-kafka-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.advertised = dict(advertised or {})
        self.nodes = [KafkaNode(i + 1, port if (i == 0 and port) else free_port(), free_port(),
                                self.data_dir / f"node-{i + 1}") for i in range(nodes)]
        self.cluster_id = self._cluster_id()
        self.secured = Secured.load_or_make(self.data_dir / "secure") if secure else None

    # -- addresses and settings -------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        return ",".join(self.advertised.get(n.node_id, n.address) for n in self.nodes)

    @property
    def client_settings(self) -> dict[str, str]:
        """librdkafka properties of a client of this cluster (``[kafka.client]``); {} in
        plaintext."""
        return self.secured.client_settings() if self.secured else {}

    @property
    def replication_factor(self) -> int:
        return min(3, len(self.nodes))

    def node_properties(self, node: KafkaNode) -> dict[str, str]:
        rf = str(self.replication_factor)
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        props = shared_settings()
        props.update({
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},"
                         f"CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": "PLAINTEXT://" + self.advertised.get(node.node_id,
                                                                         node.address),
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            **(self.secured.broker_properties(node.port, node.controller_port,
                                              self.advertised.get(node.node_id, node.address))
               if self.secured else {}),
            "log.dirs": str(node.data_dir / "log"),
            "metadata.log.dir": str(node.data_dir / "meta"),
            # internal topics replicated like the project's own topics
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": str(min(2, len(self.nodes))),
            "min.insync.replicas": str(min(2, len(self.nodes))),
            "default.replication.factor": rf,
        })
        return props

    def _cluster_id(self) -> str:
        """The id stored in the first node's ``meta.properties``, or a new one."""
        meta = self.nodes[0].data_dir / "meta" / "meta.properties"
        if meta.exists():
            m = re.search(r"^cluster\.id=(.+)$", meta.read_text(), re.M)
            if m:
                return m.group(1).strip()
        while True:
            # as Kafka's Uuid.randomUuid: an id starting with "-" reads as an option to the
            # storage tool ("argument --cluster-id/-t: expected one argument"), 1 in 64 starts
            cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            if not cid.startswith("-"):
                return cid

    # -- lifecycle --------------------------------------------------------------------------
    def _java(self, node: KafkaNode, main: str, *args: str) -> list[str]:
        jars = fetch_jars()
        return [java_bin(), *JVM_OPTS,
                f"-Dlog4j2.configurationFile={node.data_dir / 'log4j2.xml'}",
                "-cp", f"{jars}/*", main, *args]

    def _prepare(self, node: KafkaNode) -> Path:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        (node.data_dir / "log4j2.xml").write_text(LOG4J2.format(path=node.data_dir / "server.log"))
        props = node.data_dir / "server.properties"
        props.touch(mode=0o600)  # holds the keystore's and the inter-broker user's passwords
        props.write_text("".join(f"{k}={v}\n" for k, v in self.node_properties(node).items()))
        if not (node.data_dir / "meta" / "meta.properties").exists():
            # SCRAM users live in the cluster metadata: created with it, before any broker
            # listens (the inter-broker login needs its user at once)
            scram = [a for name, pw in (self.secured.users.items() if self.secured else ())
                     for a in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={pw}]")]
            done = subprocess.run(
                self._java(node, "kafka.tools.StorageTool", "format", "-t", self.cluster_id,
                           "-c", str(props), "--ignore-formatted", *scram),
                capture_output=True, text=True)
            if done.returncode != 0:
                raise KafkaSetupError(f"kafka-storage format failed for node {node.node_id}: "
                                      + (done.stderr or done.stdout).strip()[-400:])
        return props

    def start_node(self, node: KafkaNode) -> None:
        """Start one node (formatting its storage the first time)."""
        if node.running:
            return
        props = self._prepare(node)
        out = open(node.data_dir / "stdout.log", "ab")
        # started from the calling thread: the JVM gets SIGTERM when that thread ends
        node.proc = subprocess.Popen(die_with_parent(self._java(node, "kafka.Kafka", str(props))),
                                     stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()
        log.info("kafka node %d starting on %s (pid %d, log dir %s)", node.node_id,
                 node.address, node.proc.pid, node.data_dir)

    def start(self, timeout_s: float = 90.0) -> KafkaCluster:
        for node in self.nodes:
            self.start_node(node)
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 90.0, nodes: int | None = None) -> None:
        """Return once a metadata request lists ``nodes`` (default: all running) brokers."""
        from confluent_kafka.admin import AdminClient
        want = nodes if nodes is not None else sum(n.running for n in self.nodes)
        addresses = ",".join(n.address for n in self.nodes if n.running)
        admin = AdminClient({"bootstrap.servers": addresses, "log_level": 0,
                             **self.client_settings})
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            for n in self.nodes:
                if n.proc is not None and n.proc.poll() is not None:
                    raise RuntimeError(f"kafka node {n.node_id} exited with code "
                                       f"{n.proc.returncode}: {self._last_words(n)}")
            try:
                md = admin.list_topics(timeout=2)
                if len(md.brokers) >= want:
                    log.info("apache kafka ready on %s (%d node(s))", self.bootstrap_servers,
                             len(md.brokers))
                    return
                last = f"{len(md.brokers)} of {want} brokers"
            except Exception as e:  # noqa: BLE001 - retried until the deadline
                last = str(e)
            time.sleep(0.2)
        raise TimeoutError(f"apache kafka not ready in {timeout_s}s ({last})")

    @staticmethod
    def _last_words(node: KafkaNode) -> str:
        """The last lines a node logged (its directory may be removed right after)."""
        lines = []
        for name in ("stdout.log", "server.log"):
            f = node.data_dir / name
            if f.exists():
                lines += [ln for ln in f.read_text(errors="replace").splitlines()
                          if "ERROR" in ln or "Exception" in ln or name == "stdout.log"][-4:]
        return " | ".join(lines)[-1500:] or f"nothing logged in {node.data_dir}"

    def kill_node(self, node: KafkaNode) -> None:
        """SIGKILL a node: no clean shutdown, its log directory as a crash leaves it."""
        if node.running:
            os.killpg(node.proc.pid, signal.SIGKILL)
            node.proc.wait()
        node.proc = None

    def stop_node(self, node: KafkaNode, timeout_s: float = 30.0) -> None:
        if node.running:
            node.proc.terminate()
            try:
                node.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill_node(node)
        node.proc = None

    def stop(self) -> None:
        # brokers first, and all at once: a controller quorum that loses its majority makes
        # the remaining nodes wait for it on shutdown
        for node in self.nodes:
            if node.running:
                node.proc.terminate()
        for node in self.nodes:
            self.stop_node(node, timeout_s=20.0)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def node_of_leader(self, topic: str, partition: int, timeout_s: float = 30.0) -> KafkaNode:
        """The running node leading ``topic``'s ``partition`` now.

        Asks again while the answer names no leader, or a node that is down: an election in
        progress, a node that has not yet learnt the topic (metadata reaches each broker on its
        own schedule), or a killed leader the controller has not fenced yet.
        """
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient
        admin = AdminClient({"bootstrap.servers": ",".join(n.address for n in self.nodes
                                                           if n.running), "log_level": 0,
                             **self.client_settings})
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while True:
            try:
                md = admin.list_topics(topic, timeout=5).topics.get(topic)
                p = None if md is None or md.error else md.partitions.get(partition)
                leader = p.leader if p is not None and p.error is None else -1
                node = next((n for n in self.nodes if n.node_id == leader and n.running), None)
                if node is not None:
                    return node
                last = f"leader {leader}"
            except KafkaException as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no running leader of {topic}[{partition}] in {timeout_s}s "
                                   f"({last})")
            time.sleep(0.2)

    def __enter__(self) -> KafkaCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m recsys_stream.kafka_cluster fetch``: resolve the jars (``make kafka-jars``)."""
    import sys
    args = sys.argv[1:] if argv is None else argv
    if args != ["fetch"]:
        print("usage: python -m recsys_stream.kafka_cluster fetch", file=sys.stderr)
        return 2
    try:
        print(f"apache kafka {kafka_version()} jars in {fetch_jars()}")
    except KafkaSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
