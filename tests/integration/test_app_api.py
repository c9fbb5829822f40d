"""The app-facing options over a real port and broker: catalog categories and filters
(``recsys-stream catalog load``), validation, EMPTY answers with a reason."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from recsys_stream.contracts.keys import make_key
from recsys_stream.contracts.pb import events_pb2
from recsys_stream.contracts.pb import recommender_pb2 as pb
from recsys_stream.kafka import producer
from recsys_stream.stack import wait_until
from tests.integration.test_server import _running, server, write_model  # noqa: F401
from tests.integration.test_trainer_ops import write_toml

pytestmark = pytest.mark.integration


def _catalog(cfg, items):
    prod = producer(cfg)
    for item, cats in items.items():
        prod.produce(cfg.topics.catalog, key=make_key("acme", item),
                     value=events_pb2.CatalogItem(tenant="acme", item_id=item,
                                                  state=events_pb2.AVAILABLE,
                                                  categories=cats).SerializeToString())
    assert prod.flush(10) == 0


def test_filters_over_grpc_with_a_catalog_loaded_by_the_cli(cfg, tmp_path):
    write_model(cfg, n_items=400)  # items acme-0-0 .. acme-0-399
    # the CLI puts a CSV catalogue on the topic: 2 items (0.5 %) in "rare", 100 in "common"
    f = tmp_path / "catalog.csv"
    f.write_text("item_id,categories,lang\n" + "".join(
        f"acme-0-{i},{'rare' if i in (17, 230) else 'common|x' if i % 4 == 0 else 'x'},"
        f"{'de' if i % 2 else 'en'}\n" for i in range(400)))
    toml = write_toml(cfg, tmp_path / "c.toml")
    out = subprocess.run([sys.executable, "-m", "recsys_stream.cli", "catalog", "load", str(f),
                          "--tenant", "acme", "--config", str(toml)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "loaded 400 items of acme" in out.stdout
    with _running(cfg) as (c, address, client):
        def rare():
            return client.recommend("batch-1", k=2, filter=pb.Filter(include_categories=["rare"]))
        # the catalog tail and the index rebuild are asynchronous: wait for the categories
        a = wait_until(lambda: (lambda r: r if len(r.items) == 2 else None)(rare()), 30,
                       what="the catalog's categories at the server")
        assert {i.item_id for i in a.items} == {"acme-0-17", "acme-0-230"}
        assert a.source == pb.BATCH
        b = client.recommend("batch-2", k=30, filter=pb.Filter(
            include_categories=["common"], attributes={"lang": "en"}, exclude_categories=["rare"]))
        assert len(b.items) == 30
        assert all(int(i.item_id.rsplit("-", 1)[1]) % 4 == 0 for i in b.items)
        # a stranger (popularity) and SimilarItems obey the filter too
        s = client.recommend("stranger", k=5, filter=pb.Filter(include_categories=["rare"]))
        assert s.source == pb.POPULARITY and len(s.items) == 2
        sim = client.similar_items("acme-0-3", k=2, filter=pb.Filter(include_categories=["rare"]))
        assert {i.item_id for i in sim.items} == {"acme-0-17", "acme-0-230"}
        # no item satisfies: EMPTY with a reason, not an error
        e = client.recommend("batch-1", k=5, filter=pb.Filter(include_categories=["none"]))
        assert e.source == pb.EMPTY and not e.items and "filter" in e.reason
        with pytest.raises(grpc.RpcError) as err:
            client.recommend("batch-1", k=5, filter=pb.Filter(created_after_ms=-1))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("filter.created_after_ms")
        # a catalog record replaces the previous one: acme-0-17 leaves "rare"
        _catalog(c, {"acme-0-17": ["x"]})
        wait_until(lambda: len(rare().items) == 1, 30, what="the replaced record")
        assert rare().items[0].item_id == "acme-0-230"


def test_sessions_and_rank_items_over_grpc(server):  # noqa: F811 (the imported fixture)
    # the server fixture: p1 has a nearline vector, acme-0-4 is banned
    _, _, client, _ = server
    context = ["acme-0-5", "acme-0-6", "acme-0-7"]
    a = client.recommend("", k=10, context_item_ids=context)
    assert a.source == pb.SESSION and len(a.items) == 10
    assert not {i.item_id for i in a.items} & set(context)
    # p1 (nearline vector) with a session: the profile's items and the context, this
    # request only; the next plain request is NEARLINE again
    s = client.recommend("p1", k=10, context_item_ids=["acme-0-9"])
    assert s.source == pb.SESSION
    assert not {i.item_id for i in s.items} & {"acme-0-1", "acme-0-2", "acme-0-3",
                                              "acme-0-4", "acme-0-9"}
    assert client.recommend("p1", k=10).source == pb.NEARLINE
    ids = ["zzz-unknown", "acme-0-10", "acme-0-4", "acme-0-11", "acme-0-12"]
    r = client.rank_items(ids, user_id="batch-1")
    got = [i.item_id for i in r.items]
    # acme-0-4 is banned (the fixture's catalog): never answered
    assert sorted(got) == sorted(set(ids) - {"acme-0-4"}) and got[-1] == "zzz-unknown"
    assert list(r.unknown_item_ids) == ["zzz-unknown"] and r.source == pb.BATCH
    scores = [i.score for i in r.items[:-1]]
    assert scores == sorted(scores, reverse=True)
    anon = client.rank_items(ids[1:], context_item_ids=context)
    assert anon.source == pb.SESSION and len(anon.items) == 3
    with pytest.raises(grpc.RpcError) as err:
        client.rank_items(["a", "a"], user_id="batch-1")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("item_ids")


def test_reasons_and_explanations_over_grpc(server):  # noqa: F811 (the imported fixture)
    _, _, client, _ = server
    context = ["acme-0-5", "acme-0-6", "acme-0-7", "acme-0-8"]
    a = client.recommend("", k=5, context_item_ids=context, explain=True)
    assert a.source == pb.SESSION
    for it in a.items:
        assert it.reason == pb.ScoredItem.PERSONALIZED
        assert len(it.because) == 3 and {b.item_id for b in it.because} <= set(context)
        assert [b.contribution for b in it.because] == sorted(
            (b.contribution for b in it.because), reverse=True)
    # p1's nearline vector is not the fold-in of its profile's items: nothing is invented
    p = client.recommend("p1", k=5, explain=True)
    assert p.source == pb.NEARLINE and all(not it.because for it in p.items)
    assert all(not it.because for it in client.recommend("batch-1", k=3, explain=True).items)
    s = client.recommend("stranger", k=3, explain=True)
    assert all(it.reason == pb.ScoredItem.POPULAR and not it.because for it in s.items)
    sim = client.similar_items("acme-0-3", k=2)
    assert all(it.reason == pb.ScoredItem.SIMILAR for it in sim.items)
