"""The Spark export's task, without Spark: the shards its tasks write equal the local export's
(the payloads carry each shard's users, factors, seen rows and profiles; the package the item
side), in exact and index mode, with a user unknown to the model and a nearline vector."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_stream.contracts.pb import profiles_pb2
from recsys_stream.serving import export as ex
from recsys_stream.serving import export_spark as exs
from recsys_stream.serving.snapshots import TenantSnapshot
from tests.export_world import write_model


@pytest.mark.parametrize("mode,fmt", [("exact", "jsonl"), ("index", "parquet")])
def test_tasks_write_the_local_exports_shards(tmp_path, mode, fmt):
    art = write_model(tmp_path / "m", 2000, 250, 16, seed=0).load("acme", "als", 1)
    snap = TenantSnapshot.from_artifacts(art)
    n_users, n_items = len(snap.user_row), len(snap.item_ids)
    seen = sp.random(n_users, n_items, density=0.01, format="csr", random_state=1).astype(bool)
    profiles = {"u3": profiles_pb2.UserProfile(item_ids=["i9"], suppressed_item_ids=["i10"]),
                "new": profiles_pb2.UserProfile(item_ids=["i4", "i8"], confidences=[1.0, 2.0])}
    profiles["u3"].vectors.add(algorithm="als", model_version=1, values=[0.5] * 16)
    sup = ex.Suppression(seen=seen, banned=frozenset({"i5", "i7", "i11"}), profiles=profiles,
                         erased={"u4"})
    users = [f"u{i}" for i in range(n_users)] + ["new", "nobody"]
    local = ex.export(snap, tmp_path / "local", 20, users, sup, fmt, mode, shard_users=70)

    out = ex.start(tmp_path / "spark", 20, fmt, mode)
    todo, n_asked = ex.users_to_export(snap, users, sup)
    pkg = exs.item_package(art, mode, ex.banned_item_rows(snap, sup))
    results = [exs.score_shard(pkg, p, 20, fmt, mode, str(out), "2026-12-04T00:00:00.000Z", 32)
               for p in exs.shard_payloads(snap, todo, sup, 70)]
    ex.write_manifest(out, snap, 20, fmt, mode, "t", todo, n_asked, sup, {}, 0.0,
                      [r["shard"] for r in results])
    assert ex.verify(out) == []
    assert [r["shard"]["file"] for r in results] == [s["file"] for s in local["shards"]]
    got = {r["user_id"]: r for r in ex.iter_records(out)}
    want = {r["user_id"]: r for r in ex.iter_records(tmp_path / "local")}
    assert list(got) == list(want) and "u4" not in got and len(got) == n_users + 1
    for u, r in want.items():
        assert r["source"] == got[u]["source"], u
        assert [i["item_id"] for i in got[u]["items"]] == [i["item_id"] for i in r["items"]], u
        np.testing.assert_allclose([i["score"] for i in got[u]["items"]],
                                   [i["score"] for i in r["items"]], rtol=1e-5)
    assert got["u3"]["source"] == "NEARLINE" and got["new"]["source"] == "PROFILE_FOLD_IN"
    assert got["nobody"]["source"] == "POPULARITY"
    for u in range(n_users):
        hidden = {f"i{j}" for j in seen[u].indices} | sup.banned
        assert not {i["item_id"] for i in got.get(f"u{u}", {"items": []})["items"]} & hidden
    assert not {i["item_id"] for i in got["u3"]["items"]} & {"i9", "i10"}
