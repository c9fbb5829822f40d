"""Erasing a user from every store, topic and model, proven on Apache Kafka (issue 31, "Proof").

Worker, item stage and server run as OS processes, the trainer as ``--once`` rounds. A user U
with a distinctive id, and others, interact; a model is trained and served; U touches a new item
with two others (the item stage gives it a vector). U is erased through ``rpc EraseUser``:
within 10 s GetProfile is NOT_FOUND, Recommend serves U as a new user (not from the batch
vector the served model still holds), and the new item, left below ``min_item_users``, loses its
vector. After the next retrain and the compaction of the compacted topics, a byte scan of every
RocksDB directory, the model store and every compacted topic's log segments finds no byte of
U's id, and every other user's state equals a run in which U's events were never produced.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest
from confluent_kafka.admin import ConfigResource

from recsys_stream.broker import free_port
from recsys_stream.config import hash_key
from recsys_stream.contracts.events import Event
from recsys_stream.contracts.keys import SEP, is_offset_marker, make_key
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.pb import recommender_pb2
from recsys_stream.kafka import TopicTail, admin, ensure_topics, read_to_end
from recsys_stream.nearline.app import run_worker
from recsys_stream.nearline.state import StateStore
from recsys_stream.produce import produce_events
from recsys_stream.serving.client import RecommenderClient
from recsys_stream.stack import DEMO_KEYS, Stack, load, wait_until, write_config
from recsys_stream.synthetic import generate_events, make_world

pytestmark = pytest.mark.integration

NEEDLE = b"erase-me-7f3a"
U = "erase-me-7f3a-0"
ADMIN = "acme-operator-key"
DAY = 86_400_000
USERS, EVENTS, ITEMS = 80, 15, 120


def deployment(tmp_path: Path, bootstrap: str, name: str, address: str = "127.0.0.1:1"):
    workdir = tmp_path / name
    workdir.mkdir()
    path = write_config(workdir / "config.toml", bootstrap, workdir, address,
                        topic_prefix=f"er{uuid.uuid4().hex[:8]}-")
    text = path.read_text()
    # compacted topics: segments roll every second, the cleaner takes any dirt, and a
    # tombstone goes at the cleaning after the one that first passed it
    text = text.replace("[kafka]\n", "[kafka]\ncompacted_segment_ms = 1000\n"
                        "compacted_dirty_ratio = 0.01\ncompacted_delete_retention_ms = 0\n", 1)
    key_line = f'api_key_sha256 = ["{hash_key(DEMO_KEYS["acme"])}"]\n'
    text = text.replace(key_line, key_line + f'admin_key_sha256 = ["{hash_key(ADMIN)}"]\n', 1)
    path.write_text(text)
    cfg = load(path)
    ensure_topics(cfg)
    return cfg, Stack(path, workdir)


class Latest:
    """The latest value per key of some topics (None: a tombstone)."""

    def __init__(self, cfg, *topics):
        self.values: dict[tuple[str, bytes], bytes | None] = {}
        self._lock = threading.Lock()
        self.tail = TopicTail(cfg, {t: self._on for t in topics}, name="latest").start()

    def _on(self, m):
        with self._lock:
            self.values[(m.topic(), m.key())] = m.value()

    def keys(self, topic):
        with self._lock:
            return {k for (t, k), v in self.values.items() if t == topic and v is not None
                    and not is_offset_marker(k)}

    def get(self, topic, key, default=b"absent"):
        with self._lock:
            return self.values.get((topic, key), default)


def kafka_log_dirs(cfg) -> list[Path]:
    """The brokers' log directories (``log.dirs`` as each broker reports it)."""
    adm = admin(cfg)
    out = []
    for broker in adm.list_topics(timeout=10).brokers:
        res = ConfigResource(ConfigResource.Type.BROKER, str(broker))
        conf = adm.describe_configs([res])[res].result(10)
        out += [Path(d) for d in conf["log.dirs"].value.split(",")]
    return out


def files_holding(needle: bytes, *roots: Path) -> list[str]:
    """Every file under ``roots`` whose bytes contain ``needle`` as UTF-8 or UTF-32 (numpy's
    string arrays, the model store's ids)."""
    forms = (needle, needle.decode().encode("utf-32-le"))
    hits = []
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                p = Path(dirpath) / name
                try:
                    data = p.read_bytes()
                    if any(n in data for n in forms):
                        hits.append(str(p))
                except (FileNotFoundError, IsADirectoryError, PermissionError):
                    continue  # rolled or cleaned away while we walked
    return hits


def states(state_dir) -> dict:
    """Every user's worker state, without the input offset (it differs between two runs whose
    inputs differ by U's records; everything else is a function of the user's own events)."""
    store = StateStore(state_dir)
    try:
        out = {}
        for k, h in store.users():
            h.applied_offset = -1
            out[k] = h.encode()
        return out
    finally:
        store.close()


def test_an_erased_user_leaves_no_byte_in_any_store_topic_or_model(tmp_path, kafka_bootstrap):
    address = f"127.0.0.1:{free_port()}"
    cfg, stack = deployment(tmp_path, kafka_bootstrap, "erased", address)
    roots = [Path(d) for d in kafka_log_dirs(cfg)]
    if not all(r.is_dir() for r in roots):
        pytest.skip("the broker's log directories are not on this machine")
    start = int(time.time() * 1000) - 31 * DAY
    world = make_world("acme", ITEMS)
    others = generate_events(world, USERS, EVENTS, start, seed=3)
    mine = generate_events(world, 1, 25, start, seed=4, user_prefix="erase-me-7f3a-")
    assert {e.user_id for e in mine} == {U}
    history = sorted(others + mine, key=lambda e: e.timestamp_ms)
    now = int(time.time() * 1000)
    # a new item (no model knows it) bought by U and two others: the item stage solves it
    newcomers = [Event(f"new-{u}", "acme", u, "brand-new-item", "purchase", None, now - 1000 + i)
                 for i, u in enumerate((U, "user-1", "user-2"))]
    produced: list[Event] = []  # everything, in order: the control run gets it minus U's

    def produce(events):
        produced.extend(events)
        produce_events(cfg, events, progress=False)

    latest = Latest(cfg, cfg.topics.state_changelog, cfg.topics.profiles, cfg.topics.item_vectors)
    acme = RecommenderClient(address, DEMO_KEYS["acme"])
    operator = RecommenderClient(address, ADMIN)
    try:
        stack.start("worker", "worker")
        stack.start("items", "items")
        produce(history)
        wait_until(lambda: len(latest.keys(cfg.topics.state_changelog)) == USERS + 1, 90,
                   what="every user's state on the changelog", stack=stack)
        stack.run("trainer", "trainer", "--once")
        store = ModelStore(cfg.model_store)
        v1 = store.current_version("acme", "als")
        assert v1 is not None and U in store.load("acme", "als").user_ids.tolist()
        stack.start("server", "serve")

        def answer(user):
            try:
                return acme.recommend(user, k=5)
            except grpc.RpcError:
                return None
        first = wait_until(lambda: (r := answer(U)) and r.model_version == v1 and r, 60,
                           what="the server to serve v1", stack=stack)
        assert first.source in (recommender_pb2.NEARLINE, recommender_pb2.BATCH)

        # the worker folds U into v1 (a nearline vector), then U's purchase of a new item
        wait_until(lambda: any(v.model_version == v1
                               for v in operator.get_profile(U).vectors), 60,
                   what="U's nearline vector of v1", stack=stack)
        produce(newcomers)
        item_key = f"acme{SEP}als{SEP}brand-new-item".encode()
        wait_until(lambda: latest.get(cfg.topics.item_vectors, item_key) not in (b"absent", None),
                   60, what="the new item's vector from its three users", stack=stack)

        # -- the erasure ---------------------------------------------------------------------
        with pytest.raises(grpc.RpcError) as denied:
            acme.erase_user(U)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as bad:
            operator.erase_user("")
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "user_id" in bad.value.details()
        with pytest.raises(grpc.RpcError) as bad:
            operator.erase_user("a\x1fb")
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "user_id" in bad.value.details()
        erased = operator.erase_user(U)
        assert erased.user_id == U and erased.offset >= 0

        def profile_gone():
            try:
                operator.get_profile(U)
            except grpc.RpcError as e:
                return e.code() == grpc.StatusCode.NOT_FOUND
            return False
        t0 = time.monotonic()
        wait_until(profile_gone, 10, interval_s=0.05, what="GetProfile NOT_FOUND within 10 s")
        # served as new: v1 still holds U's batch row, and it is not used
        after = wait_until(lambda: (r := answer(U)) and r.source not in (
            recommender_pb2.NEARLINE, recommender_pb2.BATCH) and r,
            max(0.1, 10 - (time.monotonic() - t0)), interval_s=0.05,
            what="Recommend to serve U as new within 10 s")
        print(f"EraseUser answered -> GetProfile NOT_FOUND and Recommend as new within "
              f"{time.monotonic() - t0:.2f} s")
        assert after.model_version == v1 and after.source in (recommender_pb2.TRENDING,
                                                              recommender_pb2.POPULARITY)
        assert answer("user-5").source in (recommender_pb2.NEARLINE, recommender_pb2.BATCH)
        # the new item kept two users (< min_item_users = 3): its vector is withdrawn
        wait_until(lambda: latest.get(cfg.topics.item_vectors, item_key) is None, 30,
                   what="the new item's vector tombstone", stack=stack)
        u_key = make_key("acme", U)
        wait_until(lambda: latest.get(cfg.topics.state_changelog, u_key) is None, 30,
                   what="U's changelog tombstone", stack=stack)

        # -- the next retrain; kept versions rewritten -------------------------------------
        stack.run("trainer", "trainer", "--once")
        assert len(store.versions("acme", "als")) >= 2
        for v in store.versions("acme", "als"):
            assert U not in store.load("acme", "als", v).user_ids.tolist(), v  # verified

        # -- compaction: other users keep writing so that segments roll and get cleaned ----
        compacted = [d for r in roots for t in cfg.topics.compacted()
                     for d in r.glob(f"{t}-*")]
        assert compacted
        stores = [Path(cfg.worker.state_dir), Path(cfg.items.state_dir),
                  Path(cfg.server.profile_dir), Path(cfg.model_store)]
        base = int(time.time() * 1000)
        deadline = time.monotonic() + 120
        rounds = 0
        while True:
            # one event per other user per round, at least one segment.ms apart
            produce([Event(f"roll-{rounds}-{u}", "acme", f"user-{u}", f"item-{rounds % 7}",
                           "view", None, base + rounds) for u in range(USERS)])
            rounds += 1
            hits = files_holding(NEEDLE, *compacted, *stores)
            if not hits:
                break
            assert time.monotonic() < deadline, f"{NEEDLE!r} still in {hits}"
            stack.check_alive()
            time.sleep(cfg.kafka.compacted_segment_ms / 1000 + 0.2)
        print(f"no byte of {NEEDLE!r} left after {rounds} rounds of other users' events")
        wait_until(lambda: latest.get(cfg.topics.state_changelog,
                                      make_key("acme", f"user-{USERS - 1}")) is not None
                   and _committed(cfg) == len(produced) + 1, 60,
                   what="the worker to commit everything", stack=stack)
        assert stack.stop("worker") == 0
    finally:
        stack.stop_all()
        latest.tail.stop()
        acme.close()
        operator.close()
    assert not files_holding(NEEDLE, *stores)
    final = states(cfg.worker.state_dir)
    assert u_key not in final

    # -- the control: the same events without U's, one worker ---------------------------------
    ctl, _ = deployment(tmp_path, kafka_bootstrap, "control")
    produce_events(ctl, [e for e in produced if e.user_id != U], progress=False)
    stop, built = threading.Event(), []
    t = threading.Thread(target=run_worker, args=(ctl, stop, built.append), daemon=True)
    t.start()
    wait_until(lambda: built, 30, what="the control worker to start")
    n = sum(1 for e in produced if e.user_id != U)
    try:
        wait_until(lambda: sum(built[0].store.offsets(ctl.topics.interactions).values()) == n,
                   90, what="the control run")
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    control = states(ctl.worker.state_dir)
    assert len(control) == USERS
    assert final == control


def _committed(cfg) -> int:
    """Input records the worker has committed: the sum of its offset markers."""
    at: dict[int, int] = {}
    for m in read_to_end(cfg, cfg.topics.state_changelog):
        if is_offset_marker(m.key()):
            at[m.partition()] = max(at.get(m.partition(), 0), int(m.value()))
    return sum(at.values())

