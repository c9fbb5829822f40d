"""Catalogue files to CatalogItem records: MovieLens movies.csv as is, JSONL, bad rows."""

from __future__ import annotations

import pytest

from recsys_stream.catalog_load import iter_catalog_file
from recsys_stream.contracts.pb import events_pb2

MOVIES = "../shared/data/movielens-latest-small-movies.csv"


def test_movielens_movies_load_with_genres_as_categories():
    items = list(iter_catalog_file(MOVIES, "acme"))
    assert len(items) == 9742 and len({i.item_id for i in items}) == 9742
    toy = items[0]
    assert toy.item_id == "1" and toy.tenant == "acme" and toy.state == events_pb2.AVAILABLE
    assert list(toy.categories) == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert toy.attributes["title"] == "Toy Story (1995)"
    assert not [i for i in items if "(no genres listed)" in i.categories]
    assert 900 < sum("Horror" in i.categories for i in items) < 1100


def test_jsonl_and_custom_columns(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"item_id": "a", "categories": ["x", "y"], "attributes": {"lang": "en"}, '
                 '"created_ms": 5, "brand": "z"}\n\n{"item_id": "b", "state": "banned"}\n')
    a, b = iter_catalog_file(f, "t")
    assert (list(a.categories), dict(a.attributes), a.created_ms) == \
        (["x", "y"], {"lang": "en", "brand": "z"}, 5)
    assert b.state == events_pb2.BANNED and not b.categories
    g = tmp_path / "c.csv"
    g.write_text("sku,tags,colour\n1,a;b,red\n")
    (c,) = iter_catalog_file(g, "t", id_column="sku", categories_column="tags", separator=";")
    assert (c.item_id, list(c.categories), dict(c.attributes)) == ("1", ["a", "b"],
                                                                   {"colour": "red"})


@pytest.mark.parametrize("text, message", [
    ("item_id,state\n,AVAILABLE\n", "c.csv:2: no item id"),
    ("item_id,state\na,SOLD\n", "c.csv:2: state"),
    ("item_id,created_ms\na,yesterday\n", "c.csv:2: created_ms"),
])
def test_a_bad_row_names_file_and_line(tmp_path, text, message):
    f = tmp_path / "c.csv"
    f.write_text(text)
    with pytest.raises(ValueError, match=message):
        list(iter_catalog_file(f, "t"))
