"""The index build's progress bar: items added in chunks under tqdm build the same index."""

from __future__ import annotations

import numpy as np
import pytest
from tqdm import tqdm

from recsys_stream.contracts import ann_index
from recsys_stream.contracts.ann_index import ItemIndex, build_index

CHUNK = 97  # not a divisor of the catalogue sizes below: the last chunk is a short one


def _factors(kind: str, n: int):
    rng = np.random.default_rng(5)
    if kind == "low-rank":
        # ALS-like factors with uneven norms: ``ip`` misses a high floor at a cheap ef, so the
        # build tries the augmented space too and both graphs are built in chunks
        basis = rng.normal(size=(4, 16))
        Y = (rng.normal(size=(n, 4)) @ basis) * rng.gamma(2.0, 0.5, size=(n, 1))
        return Y, rng.normal(size=(200, 4)) @ basis, 0.999
    Y = rng.normal(size=(n, 16)) * rng.lognormal(0.0, 0.7, size=(n, 1))
    return Y, rng.normal(size=(200, 16)), 0.95


@pytest.fixture
def bar_updates(monkeypatch):
    """(description, update sizes) of every bar the build opens, in order."""
    bars: list[tuple[str, list[int]]] = []

    class Recording(tqdm):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            bars.append((self.desc, []))

        def update(self, n=1):
            bars[-1][1].append(n)
            return super().update(n)

    monkeypatch.setattr(ann_index, "tqdm", Recording)
    monkeypatch.setattr(ann_index, "ADD_CHUNK", CHUNK)
    return bars


@pytest.mark.parametrize("kind,n", [("spread", 1000), ("low-rank", 3000)])
def test_chunked_build_with_a_bar_equals_the_single_add(kind, n, tmp_path, bar_updates, capsys):
    Y, X, floor = _factors(kind, n)
    plain = build_index(Y, tmp_path / "plain.bin", X, recall_floor=floor)
    assert not bar_updates and capsys.readouterr().err == ""  # no bar unless asked

    chunked = build_index(Y, tmp_path / "chunked.bin", X, recall_floor=floor, progress=True)
    # one bar per space built, each moving chunk by chunk over every item
    spaces = list(chunked.get("spaces_tried", {}))
    if kind == "low-rank":
        assert spaces == ["ip", "l2-mips-augmented"]
    expected = [CHUNK] * (n // CHUNK) + [n % CHUNK]
    assert bar_updates == [(f"index ({s})", expected) for s in spaces] + [
        ("similar-items index (cosine)", expected)]  # then SimilarItems' cosine graph
    assert f"{n}/{n}" in capsys.readouterr().err  # the bar went to stderr

    # the same recall figures, chosen space and ef, and byte for byte the same graph
    assert chunked == plain
    assert (tmp_path / "chunked.bin").read_bytes() == (tmp_path / "plain.bin").read_bytes()
    a = ItemIndex.load(tmp_path / "plain.bin", Y, plain)
    b = ItemIndex.load(tmp_path / "chunked.bin", Y, chunked)
    for x in X[:20]:
        np.testing.assert_array_equal(a.query(x, 10)[0], b.query(x, 10)[0])


def test_without_a_sample_the_augmented_build_is_chunked_too(tmp_path, bar_updates, capsys):
    Y, _, _ = _factors("spread", 500)
    plain = build_index(Y, tmp_path / "plain.bin")
    chunked = build_index(Y, tmp_path / "chunked.bin", progress=True)
    assert bar_updates == [("index (l2-mips-augmented)", [CHUNK] * 5 + [15]),
                           ("similar-items index (cosine)", [CHUNK] * 5 + [15])]
    assert chunked == plain
    assert (tmp_path / "chunked.bin").read_bytes() == (tmp_path / "plain.bin").read_bytes()


def test_a_catalogue_of_one_chunk_shows_no_bar(tmp_path, bar_updates, capsys):
    Y, X, floor = _factors("spread", CHUNK)
    build_index(Y, tmp_path / "i.bin", X, recall_floor=floor, progress=True)
    assert bar_updates == [] and capsys.readouterr().err == ""
