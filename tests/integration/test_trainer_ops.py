"""Operating the trainer end to end: events files in, pruning across rounds, and the
``models list`` / ``models rollback`` commands, on a real model store and broker."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Self

import pytest

from recsys_stream.batch import app
from recsys_stream.batch.app import rollback, run_trainer
from recsys_stream.config import Config, load_config
from recsys_stream.contracts.model_store import ModelStore
from recsys_stream.contracts.pb import models_pb2
from recsys_stream.kafka import TopicTail
from recsys_stream.stack import wait_until
from recsys_stream.synthetic import generate_events, make_world

pytestmark = pytest.mark.integration

MOVIELENS = Path(__file__).resolve().parents[3] / "shared" / "data" / \
    "movielens-latest-small-ratings.csv"
CLI = Path(sys.executable).with_name("recsys-stream")
START_MS = 1_700_000_000_000
# A gate every model fails (no vector is this short): a rejected round on demand, through the
# real gates, whatever the data.
REJECT_ALL = {"max_vector_norm": 1e-6}


# -- helpers -------------------------------------------------------------------------------------
def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table (experiment arms); None = the key's default
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()
                                if x is not None) + " }"
    raise TypeError(f"no TOML for {v!r}")


def write_toml(cfg: Config, path: Path) -> Path:
    """``cfg`` as the TOML file a CLI process reads; checked to load back to ``cfg``."""
    lines: list[str] = []

    def table(name: str, d: dict) -> None:
        if name:
            lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict))
        for k, v in d.items():
            if isinstance(v, dict):
                table(f"{name}.{k}" if name else k, v)
    table("", dataclasses.asdict(cfg))
    path.write_text("\n".join(lines) + "\n")
    assert load_config(path, env={}) == cfg  # the processes run exactly this deployment
    return path


def cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed ``recsys-stream`` console script."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    return subprocess.run([str(CLI), *argv], capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)  # the tests read the exit code themselves


def write_jsonl(path: Path, events) -> Path:
    """Events as ``recsys.v1.Interaction`` objects, one a line."""
    with open(path, "w") as f:
        f.writelines(json.dumps(dataclasses.asdict(e)) + "\n" for e in events)
    return path


def expected_window(events) -> dict:
    """The manifest's ``data_window`` of one tenant's events, computed from the file's rows."""
    return {"from_ms": min(e.timestamp_ms for e in events),
            "to_ms": max(e.timestamp_ms for e in events), "n_events": len(events),
            "n_users": len({e.user_id for e in events}),
            "n_items": len({e.item_id for e in events})}


def acme_events():
    # the generated world has latent structure ALS finds, so its models pass the gates
    return generate_events(make_world("acme", 120, genres=4), 200, 25, start_ms=START_MS, seed=1)


class Announcements:
    """Every ``ModelPublished`` on the deployment's models topic, in arrival order."""

    def __init__(self, cfg: Config) -> None:
        self.messages: list[models_pb2.ModelPublished] = []
        self._lock = threading.Lock()
        self._tail = TopicTail(cfg, {cfg.topics.models: self._on}, name="test-ops")

    def _on(self, m) -> None:
        with self._lock:
            self.messages.append(models_pb2.ModelPublished.FromString(m.value()))

    def versions(self) -> list[int]:
        with self._lock:
            return [a.version for a in self.messages]

    def wait_for(self, versions: list[int]) -> None:
        """Wait until exactly ``versions`` were announced, then check nothing more comes."""
        wait_until(lambda: len(self.versions()) >= len(versions), 15,
                   what=f"announcements {versions}")
        assert self.versions() == versions

    def __enter__(self) -> Self:
        self._tail.start()
        return self

    def __exit__(self, *exc) -> None:
        self._tail.stop()


def on_disk(store: ModelStore, tenant: str = "acme", algorithm: str = "als") -> list[int]:
    """Version directories on disk, checked complete: each one loads and verifies."""
    d = store.root / tenant / algorithm
    assert not [p.name for p in d.iterdir() if p.name.startswith(".tmp")], "half-written version"
    versions = store.versions(tenant, algorithm)
    for v in versions:
        store.load(tenant, algorithm, v)  # checksums, shapes, values
    return versions


# -- 1. pruning through the trainer --------------------------------------------------------------
def test_rounds_keep_the_last_n_good_versions_and_the_last_n_rejected(cfg, tmp_path):
    cfg = cfg.replace(trainer={"keep_versions": 2})
    events_file = write_jsonl(tmp_path / "events.jsonl", acme_events())
    store = ModelStore(cfg.model_store)

    def round_(c: Config = cfg) -> dict:
        (res,) = run_trainer(c, once=True, events_file=str(events_file), tenant="acme")
        return res

    with Announcements(cfg) as announced:
        disk = []
        for v in (1, 2, 3):
            res = round_()
            assert (res["version"], res["rejected"]) == (v, [])
            disk.append(on_disk(store))
            assert store.current_version("acme", "als") == v
        assert disk == [[1], [1, 2], [2, 3]]  # v1 pruned by the third round

        # failing rounds: the version is written and marked, CURRENT stays, nothing is pruned
        # (pruning runs only after a passing model), so rejected versions pile up meanwhile
        for v in (4, 5):
            res = round_(cfg.replace(trainer=REJECT_ALL))
            assert res["version"] == v and any("exceeds" in r for r in res["rejected"])
            assert store.rejected_reasons("acme", "als", v) == res["rejected"]
            assert store.current_version("acme", "als") == 3
        assert on_disk(store) == [2, 3, 4, 5]

        # the next passing round keeps the newest two good versions and the newest two
        # rejected ones apart: failures never push out the version to roll back to
        assert round_()["version"] == 6
        assert on_disk(store) == [3, 4, 5, 6]
        assert store.current_version("acme", "als") == 6
        assert store.rejected_reasons("acme", "als", 5)
        # a failing round prunes too: the rejected ones keep their newest two
        res = round_(cfg.replace(trainer=REJECT_ALL))
        assert res["version"] == 7 and res["rejected"]
        assert on_disk(store) == [3, 5, 6, 7]
        announced.wait_for([1, 2, 3, 6])  # rejected versions are never announced
        assert rollback(cfg, "acme") == 3


def test_an_operators_rollback_waits_for_a_publishing_round(cfg, tmp_path, monkeypatch):
    """A rollback issued while a round publishes lands after the round (the tenant's lock), so
    CURRENT and the last announcement never disagree."""
    cfg = cfg.replace(trainer={"keep_versions": 2})
    events_file = write_jsonl(tmp_path / "events.jsonl", acme_events())
    store = ModelStore(cfg.model_store)
    with Announcements(cfg) as announced:
        for _ in range(2):
            run_trainer(cfg, once=True, events_file=str(events_file), tenant="acme")
        assert on_disk(store) == [1, 2]

        real_announce = app.announce
        operator: list = []

        def announce_then_rollback(c, s, tenant, algorithm, version):
            real_announce(c, s, tenant, algorithm, version)
            if version == 3:  # the operator rolls back to v2 now, from another thread
                t = threading.Thread(target=lambda: operator.append(
                    rollback(cfg, "acme", version=2)))
                t.start()
                operator.append(t)
                time.sleep(0.5)
                assert store.current_version("acme", "als") == 3, "rollback inside a round"
        monkeypatch.setattr(app, "announce", announce_then_rollback)
        (res,) = run_trainer(cfg, once=True, events_file=str(events_file), tenant="acme")
        monkeypatch.setattr(app, "announce", real_announce)
        operator[0].join(30)
        assert res["version"] == 3 and not res["rejected"] and operator[1:] == [2]
        assert store.current_version("acme", "als") == 2
        assert on_disk(store) == [2, 3]  # v1 pruned by the round, before the rollback
        announced.wait_for([1, 2, 3, 2])  # the rollback's announcement is the last word


# -- 2. the events-file input --------------------------------------------------------------------
def movielens_subset(path: Path, n_users: int = 100, n_movies: int = 100) -> list[dict]:
    """The ratings of users 1..n_users on the n_movies most rated movies, as a ratings.csv."""
    # CI and every checkout keep ../shared beside the clone: missing data is a failure, not a skip
    assert MOVIELENS.exists(), f"{MOVIELENS} is missing (../shared must sit beside the clone)"
    with open(MOVIELENS, newline="") as f:
        rows = list(csv.DictReader(f))
    top = {m for m, _ in Counter(r["movieId"] for r in rows).most_common(n_movies)}
    # dense enough that ALS beats popularity on the holdout (NDCG@10 about 0.25 against 0.17)
    rows = [r for r in rows if int(r["userId"]) <= n_users and r["movieId"] in top]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["userId", "movieId", "rating", "timestamp"])
        w.writeheader()
        w.writerows(rows)
    return rows


def test_cli_trains_once_from_a_movielens_csv(cfg, tmp_path):
    rows = movielens_subset(tmp_path / "ratings.csv")
    config = write_toml(cfg, tmp_path / "config.toml")
    with Announcements(cfg) as announced:
        done = cli("trainer", "--config", str(config), "--once", "--events-file",
                   str(tmp_path / "ratings.csv"), "--tenant", "acme")
        assert done.returncode == 0, done.stderr[-3000:]
        announced.wait_for([1])
    store = ModelStore(cfg.model_store)
    assert store.tenants() == ["acme"]  # --tenant: nobody else was trained
    assert store.current_version("acme", "als") == 1
    assert store.rejected_reasons("acme", "als", 1) is None
    art = store.load("acme", "als")  # verified, as the server loads it
    ts = [int(r["timestamp"]) * 1000 for r in rows]  # MovieLens times are seconds
    users, movies = {r["userId"] for r in rows}, {r["movieId"] for r in rows}
    assert art.manifest["data_window"] == {
        "from_ms": min(ts), "to_ms": max(ts), "n_events": len(rows),
        "n_users": len(users), "n_items": len(movies)}
    assert set(art.user_ids.tolist()) == users and set(art.item_ids.tolist()) == movies
    a = announced.messages[0]
    assert (a.tenant, a.algorithm, a.artifact_uri) == ("acme", "als", art.uri)


def test_training_from_a_file_with_no_broker_publishes_to_the_store_and_exits_0(offline_cfg,
                                                                                 tmp_path):
    """The first thing a user tries: ``trainer --once --events-file`` on a laptop with no
    broker. The model is the point; that no server heard of it is one line, not a failure."""
    movielens_subset(tmp_path / "ratings.csv")
    config = write_toml(offline_cfg, tmp_path / "config.toml")  # a broker address nobody serves
    done = cli("trainer", "--config", str(config), "--once", "--events-file",
               str(tmp_path / "ratings.csv"), "--tenant", "acme")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "v1 is CURRENT" in done.stderr and "no server was told" in done.stderr
    assert "training failed" not in done.stderr
    store = ModelStore(offline_cfg.model_store)
    assert store.current_version("acme", "als") == 1
    store.load("acme", "als")  # verified, as a server starting later loads it
    # --no-announce: the store only, without waiting for a broker at all
    done = cli("trainer", "--config", str(config), "--once", "--no-announce", "--events-file",
               str(tmp_path / "ratings.csv"), "--tenant", "acme")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "not announced (--no-announce)" in done.stderr
    assert "no server was told" not in done.stderr
    assert store.current_version("acme", "als") == 2  # the same data: level with v1


def test_one_jsonl_file_trains_each_tenant_on_its_own_events(cfg, tmp_path):
    acme = acme_events()
    # the same user and item ids in another tenant: isolation must not rely on distinct ids
    globex = generate_events(make_world("globex", 120, genres=4), 200, 25,
                             start_ms=START_MS + 86_400_000, seed=2)
    events = sorted(acme + globex, key=lambda e: e.timestamp_ms)  # interleaved in the file
    path = write_jsonl(tmp_path / "events.jsonl", events)
    results = run_trainer(cfg, once=True, events_file=str(path))  # every configured tenant
    assert sorted((r["tenant"], r["version"], tuple(r["rejected"])) for r in results) == [
        ("acme", 1, ()), ("globex", 1, ())]  # initech has no events: skipped
    store = ModelStore(cfg.model_store)
    assert store.tenants() == ["acme", "globex"]
    for tenant, own in (("acme", acme), ("globex", globex)):
        art = store.load(tenant, "als")
        assert art.manifest["data_window"] == expected_window(own)
        assert set(art.user_ids.tolist()) == {e.user_id for e in own}


# -- 3. the models commands ----------------------------------------------------------------------
ROW = re.compile(r"tenant=(\S+)\s+algorithm=(\S+)\s+version=(\d+)\s+state=(\S+)\s+default=(\S+)")


def models_list(config: Path) -> dict[int, tuple[str, bool]]:
    """``models list`` of acme/als as {version: (state, default)}."""
    done = cli("models", "--config", str(config), "list")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [ROW.match(line) for line in done.stdout.splitlines()]
    assert rows and all(rows), done.stdout
    assert all(m[1] == "acme" and m[2] == "als" for m in rows)
    return {int(m[3]): (m[4], m[5] == "True") for m in rows}


def test_models_list_and_rollback_commands(cfg, tmp_path):
    events_file = write_jsonl(tmp_path / "events.jsonl", acme_events())
    config = write_toml(cfg, tmp_path / "config.toml")
    store = ModelStore(cfg.model_store)
    pointer = store.root / "acme" / "als" / "CURRENT"
    with Announcements(cfg) as announced:
        for _ in range(3):
            run_trainer(cfg, once=True, events_file=str(events_file), tenant="acme")
        (rejected,) = run_trainer(cfg.replace(trainer=REJECT_ALL), once=True,
                                  events_file=str(events_file), tenant="acme")
        assert rejected["version"] == 4 and rejected["rejected"]
        announced.wait_for([1, 2, 3])

        assert models_list(config) == {1: ("kept", False), 2: ("kept", False),
                                       3: ("current", True), 4: ("rejected", False)}

        def rollback_cli(*version: str) -> subprocess.CompletedProcess:
            return cli("models", "--config", str(config), "rollback", "acme", *version)

        done = rollback_cli()  # no VERSION: the previous good one
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip() == "acme: now serving version 2"
        assert pointer.read_text().strip() == "2"
        assert models_list(config) == {1: ("kept", False), 2: ("current", True),
                                       3: ("kept", False), 4: ("rejected", False)}

        done = rollback_cli("1")  # an explicit VERSION
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip() == "acme: now serving version 1"
        assert pointer.read_text().strip() == "1"

        done = rollback_cli()  # nothing before v1
        assert done.returncode != 0 and "acme/als: no version before 1" in done.stderr
        assert pointer.read_text().strip() == "1"

        done = rollback_cli("3")  # an explicit VERSION may be newer than CURRENT
        assert done.returncode == 0, done.stderr[-3000:]
        assert pointer.read_text().strip() == "3"

        done = cli("models", "--config", str(config), "rollback", "acmee")  # a typo
        assert done.returncode != 0 and "acmee: no models in" in done.stderr
        assert "acmee" not in store.tenants()  # the lock did not leave a directory behind

        for bad in ("4", "99"):  # rejected, missing
            done = rollback_cli(bad)
            assert done.returncode != 0 and done.stdout == ""
            assert f"acme/als: version {bad} is missing or rejected" in done.stderr
            assert pointer.read_text().strip() == "3"

        # a version damaged on disk fails its verification before CURRENT moves
        f = store.version_dir("acme", "als", 2) / "item_factors.npy"
        f.write_bytes(f.read_bytes()[:-4] + b"\0\0\0\0")
        done = rollback_cli("2")
        assert done.returncode != 0
        assert "item_factors.npy does not match its sha256" in done.stderr
        assert "Traceback" not in done.stderr and "CURRENT is unchanged" in done.stderr
        assert pointer.read_text().strip() == "3"
        # without VERSION the damaged v2 is skipped for the newest earlier one that verifies
        done = rollback_cli()
        assert done.returncode == 0 and done.stdout.strip() == "acme: now serving version 1"
        assert "v2 skipped" in done.stderr

        # each successful rollback was announced, the failed ones were not
        announced.wait_for([1, 2, 3, 2, 1, 3, 1])
    assert models_list(config)[1] == ("current", True)
