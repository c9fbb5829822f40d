"""Setup shared by the nearline benchmarks: a deployment on the embedded broker, a published ALS
model, Zipf-skewed interaction records, the worker as its own process, and what we watch of it.

Nothing here asserts; the scripts print figures. Every figure is printed next to the machine's
load average, since these runs share two cores with whatever else is running.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from recsys_stream.broker import EmbeddedBroker, free_port  # noqa: E402
from recsys_stream.config import Config  # noqa: E402
from recsys_stream.contracts.confidence import EVENT_TYPES  # noqa: E402
from recsys_stream.contracts.keys import make_key  # noqa: E402
from recsys_stream.contracts.model_store import ModelStore  # noqa: E402
from recsys_stream.contracts.pb import events_pb2  # noqa: E402
from recsys_stream.contracts.young_slice import YoungSlice  # noqa: E402
from recsys_stream.kafka import ensure_topics, produce_all, producer  # noqa: E402
from recsys_stream.nearline.state import _OFFSET  # noqa: E402
from recsys_stream.stack import Stack, load, wait_until, write_config  # noqa: E402
from recsys_stream.synthetic import _TYPES, make_world  # noqa: E402

TENANT = "bench"
_TYPE_CODE = {n: events_pb2.EventType.Value(n.upper()) for n in EVENT_TYPES}


def load_note() -> str:
    """The 1/5/15-minute load averages, printed beside every figure."""
    return "load %.2f %.2f %.2f on %d cores" % (*os.getloadavg(), os.cpu_count())


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


BROKERS = ("tansu", "kafka")


@contextlib.contextmanager
def start_broker(kind: str = "tansu") -> Iterator[object]:
    """The embedded tansu broker or a one-node Apache Kafka (``recsys_stream.kafka_cluster``);
    either has ``bootstrap_servers`` and ``pid`` (for CPU and RSS figures)."""
    if kind == "tansu":
        with EmbeddedBroker() as broker:
            broker.pid = broker.proc.pid
            yield broker
    elif kind == "kafka":
        from recsys_stream.kafka_cluster import KafkaCluster
        with KafkaCluster(nodes=1) as cluster:
            cluster.pid = cluster.nodes[0].proc.pid
            yield cluster
    else:
        raise SystemExit(f"--broker must be one of {BROKERS}, not {kind!r}")


def add_broker_arg(ap) -> None:
    ap.add_argument("--broker", choices=BROKERS, default="tansu",
                    help="the embedded tansu (the demo's) or Apache Kafka from the project's jars")


@dataclass
class Deployment:
    broker: object
    cfg: Config
    config_path: Path
    workdir: Path
    stack: Stack


@contextlib.contextmanager
def deployment(broker_kind: str = "tansu", worker_metrics_port: int = 0
               ) -> Iterator[Deployment]:
    """A broker (``start_broker``), a one-tenant config in a temporary directory, the topics;
    ``worker_metrics_port``: the worker's /metrics port (0 = off)."""
    with start_broker(broker_kind) as broker, tempfile.TemporaryDirectory() as tmp:
        wd = Path(tmp)
        path = write_config(wd / "bench.toml", broker.bootstrap_servers, wd,
                            f"127.0.0.1:{free_port()}", keys={TENANT: "bench-key"},
                            metrics_ports=(worker_metrics_port, 0, 0))
        cfg = load(path)
        ensure_topics(cfg)
        stack = Stack(path, wd)
        try:
            yield Deployment(broker, cfg, path, wd, stack)
        finally:
            stack.stop_all()


def publish_model(cfg: Config, n_items: int, factors: int = 64, seed: int = 0,
                  young_items: int = 0) -> None:
    """Write ALS item factors for the tenant's items and make them CURRENT.

    The worker loads ``CURRENT`` at start, so every micro-batch folds in. The factors are
    low-rank (16 latent directions) and unevenly scaled, as ALS factors are. ``young_items``:
    the last that many items are young (``contracts.young_slice``), each with 2-5 training
    users among the model's users.
    """
    rng = np.random.default_rng(seed)
    world = make_world(TENANT, n_items)
    basis = rng.normal(size=(16, factors)) / 4
    Y = (rng.normal(size=(n_items, 16)) @ basis * rng.gamma(2.0, 0.5, (n_items, 1))
         ).astype(np.float32)
    X = (rng.normal(size=(100, 16)) @ basis).astype(np.float32)
    young = None
    if young_items:
        counts = rng.integers(2, 6, young_items)
        users = np.concatenate([rng.choice(len(X), c, replace=False) for c in counts])
        young = YoungSlice.from_columns(
            np.arange(n_items - young_items, n_items),
            sp.csc_matrix((rng.uniform(1, 4, len(users)), users,
                           np.concatenate([[0], np.cumsum(counts)])),
                          shape=(len(X), young_items)))
    store = ModelStore(cfg.model_store)
    store.write(TENANT, "als", 1, item_ids=world.item_ids.tolist(), item_factors=Y,
                user_ids=[f"b{j}" for j in range(len(X))], user_factors=X,
                popularity=world.popularity * 1e6,
                manifest={"hyperparameters": {"factors": factors, "regularization": 0.05},
                          "confidence": cfg.tenants[TENANT].confidence.to_dict()},
                young=young)
    store.set_current(TENANT, "als", 1)


def zipf_draws(n_events: int, n_users: int, n_items: int, zipf: float = 1.0, seed: int = 1,
               distinct_first: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """User rows, item rows and event type names of ``n_events`` events.

    User ``u`` (rank ``u + 1``) is drawn with probability ``∝ 1 / (u + 1) ** zipf``; items follow
    the synthetic world's Zipf popularity. With ``distinct_first`` the first ``n_users`` events
    visit every user once (so the state really holds ``n_users`` users).
    """
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, n_users + 1) ** zipf
    users = rng.choice(n_users, size=n_events, p=w / w.sum())
    if distinct_first:
        users[:min(n_users, n_events)] = rng.permutation(n_users)[:n_events]
    items = rng.choice(n_items, size=n_events, p=make_world(TENANT, n_items).popularity)
    return users, items, rng.choice(_TYPES, n_events)


def encode_interaction(j: int, user: int, item_id: str, type_name: str, ts_ms: int
                       ) -> tuple[bytes, bytes]:
    """The record key and ``Interaction`` bytes of event ``j``."""
    uid = f"u{user}"
    msg = events_pb2.Interaction(event_id=f"e{j}", tenant=TENANT, user_id=uid, item_id=item_id,
                                 type=_TYPE_CODE[type_name], timestamp_ms=ts_ms)
    return make_key(TENANT, uid), msg.SerializeToString()


def zipf_records(n_events: int, n_users: int, n_items: int, zipf: float = 1.0, seed: int = 1,
                 now_ms: int | None = None, distinct_first: bool = False,
                 span_ms: int = 3_600_000) -> Iterator[tuple[bytes, bytes, int]]:
    """``(key, Interaction bytes, timestamp_ms)`` of :func:`zipf_draws`'s events, with
    timestamps increasing over the ``span_ms`` (an hour) that ends at ``now_ms``."""
    users, items, types = zipf_draws(n_events, n_users, n_items, zipf, seed, distinct_first)
    ids = make_world(TENANT, n_items).item_ids
    now_ms = now_ms or int(time.time() * 1000)
    ts = now_ms - span_ms + np.arange(n_events) * span_ms // max(n_events, 1)
    for j in range(n_events):
        yield (*encode_interaction(j, users[j], ids[items[j]], types[j], int(ts[j])), int(ts[j]))


def preproduce(cfg: Config, records: Iterator[tuple[bytes, bytes, int]], total: int) -> int:
    """Produce every record to the interactions topic before anything consumes it."""
    from tqdm import tqdm
    prod = producer(cfg, **{"linger.ms": 50, "batch.size": 1_000_000,
                            "queue.buffering.max.messages": 1_000_000})
    t = time.perf_counter()
    n = produce_all(prod, cfg.topics.interactions,
                    ((k, v) for k, v, _ in tqdm(records, total=total, unit="ev", desc="produce",
                                                mininterval=5)))
    if prod.flush(300):
        raise RuntimeError("events were not all delivered")
    log(f"pre-produced {n} events in {time.perf_counter() - t:.1f}s ({load_note()})")
    return n


class OffsetWatch:
    """Reads the worker's committed input offsets from its RocksDB as a secondary instance.

    A secondary instance follows the primary's files without locking them, so the worker is
    watched without being slowed down beyond the file reads themselves.
    """

    def __init__(self, state_dir: str, topic: str, secondary_dir: Path) -> None:
        from rocksdict import AccessType, Options, Rdict
        self._db = Rdict(state_dir, options=Options(raw_mode=True),
                         access_type=AccessType.secondary(str(secondary_dir)))
        self._prefix = _OFFSET + f"{topic}\x1f".encode()

    def committed(self) -> int:
        """Sum over partitions of the next offset to read: events committed so far."""
        self._db.try_catch_up_with_primary()
        total = 0
        for k, v in self._db.items(from_key=self._prefix):
            if not k.startswith(self._prefix):
                break
            total += int(v)
        return total

    def close(self) -> None:
        self._db.close()


def start_worker(dep: Deployment):
    """``recsys-stream worker`` as its own process, as ``recsys_stream.stack`` runs it."""
    return dep.stack.start("worker", "worker")


def wait_for_state_dir(dep: Deployment, timeout_s: float = 60) -> None:
    current = Path(dep.cfg.worker.state_dir) / "CURRENT"
    wait_until(current.exists, timeout_s, interval_s=0.01, what="the worker's RocksDB",
               stack=dep.stack)


def rss_mb(pid: int) -> float:
    import psutil
    return psutil.Process(pid).memory_info().rss / 2**20
