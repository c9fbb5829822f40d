"""The item fold-in stage as an OS process: kill -9 at random points ends in the vectors (and
per-item states) of an uninterrupted run of the same records (issue 19), young items (seeded
from the version's slice, issue 30) included.

The records are ``ItemInteraction``s as the worker writes them, against a model written to the
store of each deployment; a share of them are re-sent (the worker re-emits after its own crash)
and some are garbage (to the DLQ).
"""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest
import scipy.sparse as sp
from rocksdict import AccessType, Options, Rdict

from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.item_foldin import ItemFoldInSolver
from recsys_stream.contracts.keys import make_key
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.pb import items_pb2
from recsys_stream.contracts.young_slice import YoungSlice
from recsys_stream.kafka import ensure_topics, produce_all, producer, read_to_end
from recsys_stream.nearline.item_app import run_item_stage
from recsys_stream.nearline.item_state import ItemStore, item_state_key
from recsys_stream.stack import Stack, load, wait_for_count, wait_until, write_config

pytestmark = pytest.mark.integration

K, USERS, ITEMS = 8, 400, 300
YOUNG = 30  # old-0 .. old-29: the version knows them from 2-6 training users each
KILLS = 8


def write_model(root) -> np.ndarray:
    rng = np.random.default_rng(3)
    X = rng.normal(0, 0.4, (USERS, K)).astype(np.float32)
    Y = rng.normal(0, 0.4, (50, K)).astype(np.float32)
    users = [np.sort(rng.choice(USERS, rng.integers(2, 7), replace=False)) for _ in range(YOUNG)]
    young = YoungSlice.from_columns(np.arange(YOUNG), sp.csc_matrix(
        (rng.uniform(1, 4, sum(map(len, users))), np.concatenate(users),
         np.cumsum([0] + [len(u) for u in users])), shape=(USERS, YOUNG)))
    ModelStore(root).write("acme", "als", 1, item_ids=[f"old-{i}" for i in range(50)],
                           item_factors=Y, user_ids=[f"u{u}" for u in range(USERS)],
                           user_factors=X, popularity=np.ones(50),
                           manifest={"hyperparameters": {"regularization": 0.2},
                                     "confidence": ConfidenceSettings().to_dict()},
                           young=young)
    ModelStore(root).set_current("acme", "als", 1)
    return X


def make_records(X: np.ndarray, seed: int) -> list[tuple[bytes, bytes]]:
    rng = np.random.default_rng(seed)
    out = []
    for n in range(20_000):
        item, user = f"new-{rng.integers(0, ITEMS)}", int(rng.integers(0, USERS))
        if rng.random() < 0.1:  # a young item of the version
            item = f"old-{rng.integers(0, YOUNG)}"
        # the user's current vector drifts a little from the batch one (their fold-in)
        x = X[user] + rng.normal(0, 0.05, K).astype(np.float32)
        rec = items_pb2.ItemInteraction(tenant="acme", item_id=item, user_id=f"u{user}",
                                        algorithm="als", model_version=1,
                                        confidence=float(1 + rng.uniform(0, 5)),
                                        user_vector=x.tolist(), event_ms=1_000 + n)
        out.append((make_key("acme", item), rec.SerializeToString()))
        if rng.random() < 0.01:   # re-sent later: counted once
            out.append(out[-1])
        if rng.random() < 0.002:  # garbage: to the DLQ
            out.append((make_key("acme", item), b"\x0a\xff\xff garbage"))
    return out


def deployment(tmp_path, bootstrap, name):
    workdir = tmp_path / name
    workdir.mkdir()
    path = write_config(workdir / "config.toml", bootstrap, workdir, "127.0.0.1:1",
                        topic_prefix=f"items{uuid.uuid4().hex[:8]}-")
    # manual assignment: a restarted stage resumes at once (a group would wait out the
    # killed member's session)
    path.write_text(path.read_text().replace(
        "[items]\n", "[items]\ncommit_interval_ms = 200\npartitions = [0, 1, 2, 3]\n"))
    cfg = load(path)
    ensure_topics(cfg)
    return cfg, Stack(path, workdir)


def stream(cfg, records, seconds: float, chunks: int = 40) -> None:
    prod = producer(cfg)
    step = -(-len(records) // chunks)
    for i in range(0, len(records), step):
        produce_all(prod, cfg.topics.item_interactions, records[i:i + step])
        assert prod.flush(30) == 0
        time.sleep(seconds / chunks)


def committed(cfg, secondary) -> int:
    """Records the stage has committed (its stored offsets), read as a RocksDB secondary."""
    try:
        db = Rdict(cfg.items.state_dir, options=Options(raw_mode=True),
                   access_type=AccessType.secondary(str(secondary)))
    except Exception:
        return 0
    try:
        prefix = b"o" + f"{cfg.topics.item_interactions}\x1f".encode()
        return sum(int(v) for k, v in db.items(from_key=prefix) if k.startswith(prefix))
    finally:
        db.close()


def final_vectors(cfg) -> dict[bytes, tuple[int, int, list[float]]]:
    last = {}
    for m in read_to_end(cfg, cfg.topics.item_vectors):
        v = items_pb2.ItemVector.FromString(m.value())
        last[m.key()] = (v.model_version, v.users, list(v.values), v.young)
    return last


def states(cfg) -> dict:
    store = ItemStore(cfg.items.state_dir)
    try:
        return {k: (r.version, {u: (c, x.tolist()) for u, (c, x) in r.users.items()},
                    r.applied_offset, r.young) for k, r in store.items()}
    finally:
        store.close()


def uninterrupted(tmp_path, bootstrap, records):
    cfg, _ = deployment(tmp_path, bootstrap, "uninterrupted")
    write_model(cfg.model_store)
    stream(cfg, records, 0.0, chunks=1)
    stop, built = threading.Event(), []
    t = threading.Thread(target=run_item_stage, args=(cfg, stop, built.append), daemon=True)
    t.start()
    wait_until(lambda: built, 30, what="the reference stage to start")
    try:
        wait_for_count(lambda: sum(built[0].store.offsets(cfg.topics.item_interactions)
                                   .values()), len(records), 60, what="the reference run")
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    return states(cfg), final_vectors(cfg)


def test_kill_9_of_the_stage_at_random_points_ends_in_the_uninterrupted_vectors(
        tmp_path, kafka_bootstrap):
    rng = np.random.default_rng(20261203)
    cfg, stack = deployment(tmp_path, kafka_bootstrap, "killed")
    X = write_model(cfg.model_store)
    records = make_records(X, seed=5)
    progress = lambda: committed(cfg, tmp_path / "secondary")  # noqa: E731
    streamer = threading.Thread(target=stream, args=(cfg, records, 25.0), daemon=True)
    try:
        stack.start("items", "items")
        streamer.start()
        during = 0
        for k in range(1, KILLS + 1):
            before = progress()
            wait_until(lambda: progress() > before or not streamer.is_alive(), 60, stack=stack,
                       what=f"start {k} to commit")
            time.sleep(rng.uniform(0.0, 0.4))
            during += streamer.is_alive()
            stack.kill("items")
            stack.start("items", "items")
        streamer.join(120)
        wait_for_count(progress, len(records), 60, stack=stack,
                       what="the stage to commit every record")
        assert stack.stop("items") == 0
    finally:
        stack.stop_all()
    print(f"{KILLS} kills, {during} of them while records streamed")
    assert during >= KILLS // 2

    got_states, got_vectors = states(cfg), final_vectors(cfg)
    want_states, want_vectors = uninterrupted(tmp_path, kafka_bootstrap, records)
    assert set(got_states) == set(want_states) and len(got_states) == ITEMS + YOUNG
    for key, (version, users, offset, young) in want_states.items():
        g = got_states[key]
        assert g[0] == version and g[2:] == (offset, young) and list(g[1]) == list(users), key
        assert young == key.decode().split("\x1f")[2].startswith("old-")
        for u, (c, x) in users.items():
            assert g[1][u][0] == pytest.approx(c) and np.allclose(g[1][u][1], x), (key, u)
    assert set(got_vectors) == set(want_vectors) and len(got_vectors) == ITEMS + YOUNG
    for key, (version, n, y, young) in want_vectors.items():
        assert got_vectors[key][:2] == (version, n) and got_vectors[key][3] == young
        np.testing.assert_allclose(got_vectors[key][2], y, atol=1e-5, rtol=0)
    # and each final vector is the direct solve of its item's final users: a young item's
    # training users (their batch vectors) are among them
    solver = ItemFoldInSolver(X, 0.2)
    checked = [k for k in want_states if want_states[k][3]][:10] + \
        [k for k in want_states if not want_states[k][3]][:10]
    for key in checked:
        version, users, _, young = want_states[key]
        Xi = np.array([x for _, x in users.values()], np.float32)
        c = np.array([c for c, _ in users.values()])
        np.testing.assert_allclose(want_vectors[key][2], solver.solve_one(Xi, c), atol=1e-4)
    dlq = [m for m in read_to_end(cfg, cfg.topics.dlq)]
    assert dlq and all(dict(m.headers())["reason"] == b"undecodable" for m in dlq)


def test_a_new_version_drops_the_items_it_knows_and_solves_the_rest_afresh(cfg):
    rng = np.random.default_rng(9)
    store = ModelStore(cfg.model_store)
    X = {}
    # v2's young item old-0 was trained by u1, u2 and u3 (confidences 2, 3, 4)
    young = YoungSlice.from_columns([0], sp.csc_matrix(([2.0, 3.0, 4.0], ([1, 2, 3], [0, 0, 0])),
                                                       shape=(50, 1)))
    for version, known in ((1, []), (2, ["new-a"])):  # v2 was retrained with new-a in it
        X[version] = rng.normal(0, 0.4, (50, K)).astype(np.float32)
        ids = [f"old-{i}" for i in range(20)] + known
        store.write("acme", "als", version, item_ids=ids,
                    item_factors=rng.normal(0, 0.4, (len(ids), K)).astype(np.float32),
                    user_ids=[f"u{u}" for u in range(50)], user_factors=X[version],
                    popularity=np.ones(len(ids)),
                    manifest={"hyperparameters": {"regularization": 0.2},
                              "confidence": ConfidenceSettings().to_dict()},
                    young=young if version == 2 else None)
    store.set_current("acme", "als", 2)

    def recs(version, item, users):
        return [(make_key("acme", item), items_pb2.ItemInteraction(
            tenant="acme", item_id=item, user_id=f"u{u}", algorithm="als",
            model_version=version, confidence=2.0, user_vector=X[version][u].tolist(),
            event_ms=1).SerializeToString()) for u in users]

    stop, built = threading.Event(), []
    t = threading.Thread(target=run_item_stage, args=(cfg, stop, built.append), daemon=True)
    t.start()
    try:
        stream(cfg, recs(1, "new-a", [1, 2, 3]) + recs(1, "new-b", [1, 2]), 0.0, chunks=1)

        def last():
            out = {}
            for m in read_to_end(cfg, cfg.topics.item_vectors):
                out[m.key()] = None if m.value() is None else \
                    items_pb2.ItemVector.FromString(m.value())
            return out
        a, b = (item_state_key("acme", "als", i) for i in ("new-a", "new-b"))
        first = wait_until(lambda: (v := last()).get(a) and v, 30, what="new-a's v1 vector")
        assert first[a].model_version == 1 and first[a].users == 3
        assert b not in first  # 2 users: below min_item_users
        # the worker re-solved its users against v2 and re-emitted new-b, the one v2 lacks
        stream(cfg, recs(2, "new-b", [4, 5, 6]) + recs(1, "new-b", [7]), 0.0, chunks=1)
        final = wait_until(lambda: (v := last()).get(b) and a in v and v[a] is None and v, 30,
                           what="new-a's tombstone and new-b's v2 vector")
        assert final[b].model_version == 2 and final[b].users == 3  # afresh, the v1 record stale
        y = ItemFoldInSolver(X[2], 0.2).solve_one(X[2][[4, 5, 6]], np.full(3, 2.0))
        np.testing.assert_allclose(final[b].values, y, atol=1e-4)

        # u2, a training user of v2's young item old-0, is erased before any record of it:
        # the erasure seeds old-0 without u2, and a later record never seeds u2 back
        erase = items_pb2.ItemInteraction(tenant="acme", item_id="old-0", user_id="u2",
                                          algorithm="als", erase=True, event_ms=2)
        stream(cfg, [(make_key("acme", "old-0"), erase.SerializeToString())]
               + recs(2, "old-0", [9]), 0.0, chunks=1)
        o = item_state_key("acme", "als", "old-0")
        young_v = wait_until(lambda: (v := last()).get(o) and v[o].users == 3 and v[o], 30,
                             what="old-0's young vector")
        assert young_v.young and young_v.model_version == 2
        want = ItemFoldInSolver(X[2], 0.2).solve_one(X[2][[1, 3, 9]], np.array([2.0, 4.0, 2.0]))
        np.testing.assert_allclose(young_v.values, want, atol=1e-4)
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    items = ItemStore(cfg.items.state_dir)
    try:  # no entry of u2 in the stage's state
        assert "u2" not in items.get_many([o])[o].users
    finally:
        items.close()
