"""The export's exact and index scoring, shards, Parquet and the manifest check (no broker)."""

from __future__ import annotations

import json

import numpy as np
import scipy.sparse as sp

from recsys_stream.cli import main
from recsys_stream.contracts.pb import profiles_pb2
from recsys_stream.serving import export as ex
from recsys_stream.serving.recommend import recommend
from recsys_stream.serving.snapshots import TenantSnapshot
from tests.export_world import write_model


def test_exact_equals_recommend_scored_exactly_and_index_close(tmp_path):
    snap = TenantSnapshot.from_artifacts(write_model(tmp_path / "m", 2000, 300, 16, seed=0).load("acme", "als"))
    n_users, n_items = len(snap.user_row), len(snap.item_ids)
    seen = sp.random(n_users, n_items, density=0.01, format="csr", random_state=1).astype(bool)
    sup = ex.Suppression(seen=seen, banned=frozenset({"i5", "i7", "i11"}))
    ex.export(snap, tmp_path / "exact", 20, sup=sup, block_users=64, shard_users=100)
    ex.export(snap, tmp_path / "index", 20, sup=sup, mode="index", fmt="parquet")
    assert ex.verify(tmp_path / "exact") == [] and ex.verify(tmp_path / "index") == []
    exact = {r["user_id"]: r for r in ex.iter_records(tmp_path / "exact")}
    index = {r["user_id"]: r for r in ex.iter_records(tmp_path / "index")}
    assert len(exact) == len(index) == n_users
    walk, snap.index.index = snap.index.index, None  # Recommend scoring every item
    recall = []
    for u in range(n_users):
        own = {f"i{j}" for j in seen[u].indices}
        a = recommend(snap, profiles_pb2.UserProfile(item_ids=sorted(own)), f"u{u}", 20,
                      set(), sup.banned)
        got = exact[f"u{u}"]["items"]
        assert [i for i, _ in a.items] == [i["item_id"] for i in got]
        np.testing.assert_allclose([s for _, s in a.items], [i["score"] for i in got],
                                   rtol=1e-5)
        via = {i["item_id"] for i in index[f"u{u}"]["items"]}
        assert len(via) == 20 and not via & (own | sup.banned)
        recall.append(len(via & {i["item_id"] for i in got}) / 20)
    assert walk is not None and np.mean(recall) > 0.9


def test_cli_users_file_parquet_and_a_short_shard(tmp_path, capsys):
    write_model(tmp_path / "m", 2000, 300, 16, seed=0)
    conf = tmp_path / "c.toml"
    conf.write_text(f'model_store = "{tmp_path / "m"}"\n[tenants.acme]\n')
    users = tmp_path / "users.txt"
    users.write_text("u5\nu6\nnobody\n")
    out = tmp_path / "pq"
    assert main(["export", "--config", str(conf), "--tenant", "acme", "--k", "7", "--out",
                 str(out), "--users", str(users), "--format", "parquet", "--no-broker",
                 "--shard-users", "2"]) == 0
    assert main(["export", "--verify", str(out)]) == 0
    recs = list(ex.iter_records(out))
    assert [r["user_id"] for r in recs] == ["u5", "u6", "nobody"]
    assert [r["source"] for r in recs] == ["BATCH", "BATCH", "POPULARITY"]
    assert all(len(r["items"]) == 7 and r["model_version"] == 1 for r in recs)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["users"] for s in manifest["shards"]] == [2, 1]
    shard = out / manifest["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:-40])  # cut short
    assert main(["export", "--verify", str(out)]) == 1
    assert "cut short" in capsys.readouterr().err
    (out / manifest["shards"][1]["file"]).unlink()
    assert any("missing" in p for p in ex.verify(out))
