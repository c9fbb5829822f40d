"""The worker's item feed: which events it emits, and a user fold-in extended by new items'
vectors that equals a direct solve over every item, with heavy users' cached systems moved onto
each extension."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_stream.contracts.confidence import ConfidenceSettings
from recsys_stream.contracts.foldin import FoldInSolver
from recsys_stream.contracts.pb import items_pb2
from recsys_stream.nearline.item_feed import ItemFeed
from recsys_stream.nearline.item_state import item_state_key
from recsys_stream.nearline.models import FoldInModel
from recsys_stream.nearline.normal_cache import NormalEquationCache

K, LAM = 5, 0.3


class _Follower:
    def __init__(self, model):
        self.model = model

    def models(self, tenant):
        return {"als": self.model} if tenant == "acme" else {}


class _Msg:
    def __init__(self, key, value):
        self._k, self._v = key, value

    def key(self):
        return self._k

    def value(self):
        return self._v


def _feed(offline_cfg, bias=False, young=frozenset()):
    rng = np.random.default_rng(0)
    Y = rng.normal(0, 0.4, (40, K + bias)).astype(np.float32)
    ids = [f"i{j}" for j in range(40)]
    row = {i: j for j, i in enumerate(ids)}
    solver = FoldInSolver(Y, LAM, bias)
    # every user with >= 3 known items is a cached heavy user here
    model = FoldInModel("acme", "als", 1, row, solver, ConfidenceSettings(),
                        NormalEquationCache(solver, row, max_users=8, min_items=3),
                        young=frozenset(young), trained_to_ms=1_000)
    sent = []
    cfg = offline_cfg.replace(items={"worker_refresh_ms": 0})
    feed = ItemFeed(cfg, _Follower(model), lambda t, k, v: sent.append((t, k, v)))
    return feed, Y, sent, rng


def _vector(feed, item, y, version=1, young=False):
    v = items_pb2.ItemVector(tenant="acme", algorithm="als", item_id=item, model_version=version,
                             values=list(y), users=3, young=young)
    feed._on_vector(_Msg(item_state_key("acme", "als", item), v.SerializeToString()))
    feed._rebuild()


def _solve(feed, key, ids, c):
    m = feed.models("acme")["als"]
    solved, X, _ = m.foldin.solve([key], [(ids, np.asarray(c, np.float32))])
    return m, X[0] if solved else None


def _direct(Y, ids_rows, c, bias=False):
    return FoldInSolver(Y, LAM, bias).solve_one(np.array(ids_rows), np.array(c))


@pytest.mark.parametrize("bias", [False, True])
def test_extended_fold_in_equals_a_direct_solve_and_cached_systems_follow(offline_cfg, bias):
    feed, Y, _, rng = _feed(offline_cfg, bias)
    plain = (["i1", "i2", "i3", "i4"], [2.0, 3.0, 1.5, 2.5])           # no new item
    touched = (["i5", "i6", "i7", "new-a"], [2.0, 2.0, 4.0, 3.0])      # the new item among them
    _, x = _solve(feed, b"u1", *plain)                                 # cached against v1
    _, xt = _solve(feed, b"u2", *touched)                              # new-a unknown: left out
    np.testing.assert_allclose(xt, _direct(Y, [5, 6, 7], [2.0, 2.0, 4.0], bias), atol=1e-5)

    ya = rng.normal(0, 0.4, K + bias).astype(np.float32)
    _vector(feed, "new-a", ya)
    m, x1 = _solve(feed, b"u1", *plain)
    assert m.cache.item_row["new-a"] == 40 and m.version == 1 and "new-a" not in m.item_row
    full = np.vstack([Y, ya])
    np.testing.assert_allclose(x1, _direct(full, [1, 2, 3, 4], plain[1], bias), atol=1e-5)
    assert not np.allclose(x1, x)  # the new row changed everyone's Gram
    _, xt1 = _solve(feed, b"u2", *touched)
    # the rows a profile carries are the version's own: the new item is suppressed by id
    assert m.foldin.solve([b"u2"], [(touched[0], np.asarray(touched[1], np.float32))]
                          )[2][0].tolist() == [5, 6, 7]
    np.testing.assert_allclose(xt1, _direct(full, [5, 6, 7, 40], touched[1], bias), atol=1e-5)

    # re-solved with more users: its row keeps its place, a second new item comes after it
    ya2, yb = ya * 1.5, rng.normal(0, 0.4, K + bias).astype(np.float32)
    _vector(feed, "new-a", ya2)
    _vector(feed, "new-b", yb)
    m, x2 = _solve(feed, b"u1", *plain)
    assert (m.cache.item_row["new-a"], m.cache.item_row["new-b"]) == (40, 41)
    full = np.vstack([Y, ya2, yb])
    np.testing.assert_allclose(x2, _direct(full, [1, 2, 3, 4], plain[1], bias), atol=1e-5)
    _, xt2 = _solve(feed, b"u2", *touched)
    np.testing.assert_allclose(xt2, _direct(full, [5, 6, 7, 40], touched[1], bias), atol=1e-5)

    # a vector of another version is never folded in against this one
    _vector(feed, "new-c", yb, version=2)
    assert "new-c" not in feed.models("acme")["als"].cache.item_row


def test_emits_only_the_batchs_items_the_version_does_not_know(offline_cfg):
    feed, Y, sent, _ = _feed(offline_cfg)
    _vector(feed, "new-a", np.ones(K, np.float32))  # has a vector: still unknown to v1
    model = feed.models("acme")["als"]

    class H:
        user_id, last_event_ms = "u1", 77
    hist = {b"k": (["i1", "new-a", "new-b", "i2"], np.array([2.0, 3.0, 4.0, 5.0]))}
    x = np.arange(K, dtype=np.float32)
    feed.emit("acme", "als", model, [b"k"], x[None], hist, {b"k": H()}, {b"k": {"new-a", "i2"}})
    assert len(sent) == 1
    topic, key, value = sent[0]
    rec = items_pb2.ItemInteraction.FromString(value)
    assert topic == offline_cfg.topics.item_interactions and key == b"acme\x1fnew-a"
    assert (rec.user_id, rec.model_version, rec.confidence, rec.event_ms) == ("u1", 1, 3.0, 77)
    np.testing.assert_array_equal(rec.user_vector, x)
    sent.clear()  # a re-solve after a new version: every unknown item of the history
    feed.emit("acme", "als", model, [b"k"], x[None], hist, {b"k": H()}, None)
    assert sorted(k for _, k, _ in sent) == [b"acme\x1fnew-a", b"acme\x1fnew-b"]


def test_young_items_replace_their_rows_in_the_fold_in_and_are_emitted(offline_cfg):
    feed, Y, sent, rng = _feed(offline_cfg, young={"i3", "i9"})
    plain = (["i1", "i2", "i4"], [2.0, 3.0, 1.5])        # no young item: cached, then rebased
    touched = (["i3", "i5", "i6", "i7"], [4.0, 2.0, 2.0, 1.0])
    _solve(feed, b"u1", *plain)
    _solve(feed, b"u2", *touched)
    y3, yn = rng.normal(0, 0.4, K).astype(np.float32), rng.normal(0, 0.4, K).astype(np.float32)
    _vector(feed, "i3", y3, young=True)
    _vector(feed, "new-a", yn)
    m, x1 = _solve(feed, b"u1", *plain)
    assert m.young_replaced == 1 and m.new_items == 1 and m.cache.item_row["i3"] == 3
    full = np.vstack([Y, yn])
    full[3] = y3
    np.testing.assert_allclose(x1, _direct(full, [1, 2, 4], plain[1]), atol=1e-5)
    _, x2 = _solve(feed, b"u2", *touched)  # counted i3's old row: formed again
    np.testing.assert_allclose(x2, _direct(full, [3, 5, 6, 7], touched[1]), atol=1e-5)
    # withdrawn (a newer version knows it): its batch row again
    feed._on_vector(_Msg(item_state_key("acme", "als", "i3"), None))
    feed._rebuild()
    m, x3 = _solve(feed, b"u2", *touched)
    full[3] = Y[3]
    np.testing.assert_allclose(x3, _direct(full, [3, 5, 6, 7], touched[1]), atol=1e-5)

    class H:
        user_id, last_event_ms = "u1", 77
        items = {"i1": [1.0, 500, 500], "i3": [1.0, 2_000, 2_000], "i9": [1.0, 900, 900]}
    hist = {b"k": (["i1", "i3", "i9"], np.array([2.0, 3.0, 4.0]))}
    x = np.arange(K, dtype=np.float32)
    feed.emit("acme", "als", m, [b"k"], x[None], hist, {b"k": H()}, {b"k": {"i1", "i9"}})
    assert [k for _, k, _ in sent] == [b"acme\x1fi9"]  # young: emitted like an unknown item
    sent.clear()  # after a new version: only young items touched after its data window
    feed.emit("acme", "als", m, [b"k"], x[None], hist, {b"k": H()}, None)
    assert [k for _, k, _ in sent] == [b"acme\x1fi3"]


def test_a_user_with_only_unknown_items_is_re_solved_once_one_gets_a_vector(offline_cfg):
    feed, Y, sent, rng = _feed(offline_cfg)
    model = feed.models("acme")["als"]

    class H:
        user_id, last_event_ms = "only-new", 5
    hist = {b"only": (["new-z"], np.array([2.0])), b"known": (["i1"], np.array([2.0]))}
    solved, X, _ = model.foldin.solve(list(hist), list(hist.values()))
    assert solved == [b"known"]  # new-z has no vector yet: no vector for the user
    feed.emit("acme", "als", model, solved, X, hist, {b"only": H(), b"known": H()},
              {b"only": {"new-z"}, b"known": {"i1"}})
    assert feed.take_ready() == set()
    _vector(feed, "new-y", rng.normal(0, 0.4, K).astype(np.float32))  # another item: no
    assert feed.take_ready() == set()
    # no batch follows (the user's only event came before the item's vector): the loop's
    # take_ready alone swaps the extension in, and the waiting user is re-solved
    _vector(feed, "new-z", rng.normal(0, 0.4, K).astype(np.float32))
    assert feed.take_ready() == {b"only"}
    m = feed.models("acme")["als"]
    assert m.foldin.solve([b"only"], [hist[b"only"]])[0] == [b"only"]
    assert feed.take_ready() == set()  # once
