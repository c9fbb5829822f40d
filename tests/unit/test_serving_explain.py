"""Explanations: the exact decomposition of an ALS fold-in score, equal to ``implicit``'s
``explain`` for the same inputs, summing to the score; absent where no decomposition exists."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from recsys_stream.contracts.pb import profiles_pb2
from recsys_stream.contracts.pb import recommender_pb2 as pb
from recsys_stream.serving.explain import because, contributions, decomposition
from recsys_stream.serving.recommend import recommend
from tests.unit.test_serving_filters import N_ITEMS, snaps  # noqa: F401 (fixture)

ROWS = np.array([3, 8, 40, 77, 150])
CONF = np.array([3.0, 2.0, 5.0, 1.5, 7.0])


def test_contributions_sum_to_the_score_and_equal_implicits_explain(snaps):  # noqa: F811
    snap = snaps["acme"]
    x = snap.solver.solve_one(ROWS, CONF)
    Y = snap.index.item_factors
    model = AlternatingLeastSquares(factors=Y.shape[1], regularization=0.5, alpha=1.0,
                                    random_state=0)
    model.item_factors = Y.astype(np.float32)
    user_items = sp.csr_matrix((CONF, (np.zeros(len(ROWS), int), ROWS)), shape=(1, N_ITEMS))
    for i in (0, 5, 99, 300):
        ours = contributions(snap, decomposition(snap, None, x, pb.SESSION, (ROWS, CONF)), Y[i])
        assert ours.sum() == pytest.approx(float(Y[i] @ x), abs=1e-4)
        total, top, _ = model.explain(0, user_items, i, N=len(ROWS))
        assert total == pytest.approx(float(ours.sum()), abs=1e-4)
        theirs = dict(top)
        assert {int(r): pytest.approx(c, abs=1e-4) for r, c in zip(ROWS, ours)} == theirs


def test_a_session_answer_is_explained_by_its_top_three_items(snaps):  # noqa: F811
    snap = snaps["acme"]
    context = [snap.item_id_list[r] for r in ROWS[:4]]
    a = recommend(snap, None, "", 5, set(), frozenset(), (), None, context)
    b = decomposition(snap, None, a.vector, a.source, a.basis)
    assert b is not None
    Y = snap.index.item_factors
    out = because(snap, b, np.stack([Y[snap.item_row[i]] for i, _ in a.items]))
    for (item, score), top in zip(a.items, out):
        full = contributions(snap, b, Y[snap.item_row[item]])
        assert full.sum() == pytest.approx(score, abs=1e-4)
        assert len(top) == 3 and {j for j, _ in top} <= set(context)
        assert [c for _, c in top] == pytest.approx(sorted(full, reverse=True)[:3], abs=1e-6)


def test_only_fold_in_vectors_are_explained(snaps):  # noqa: F811
    snap = snaps["acme"]
    items = [snap.item_id_list[r] for r in ROWS]
    profile = profiles_pb2.UserProfile(tenant="acme", user_id="u", item_ids=items,
                                       confidences=list(CONF))
    solved = snap.solver.solve_one(ROWS, CONF)
    profile.vectors.add(algorithm="als", model_version=1, values=list(solved))
    a = recommend(snap, profile, "u", 5, set(), frozenset())
    assert a.source == pb.NEARLINE
    b = decomposition(snap, profile, a.vector, a.source, a.basis)
    assert b is not None and sorted(b.rows) == sorted(ROWS)
    # a nearline vector that is not the fold-in of its profile's items: no explanation
    stale = profiles_pb2.UserProfile(tenant="acme", user_id="u", item_ids=items[:2],
                                     confidences=list(CONF[:2]))
    stale.vectors.add(algorithm="als", model_version=1, values=list(solved))
    a2 = recommend(snap, stale, "u", 5, set(), frozenset())
    assert decomposition(snap, stale, a2.vector, a2.source, a2.basis) is None
    # a batch vector, and popularity: none
    a3 = recommend(snap, None, "user-1", 5, set(), frozenset())
    assert a3.source == pb.BATCH
    assert decomposition(snap, None, a3.vector, a3.source, a3.basis) is None
    a4 = recommend(snap, None, "stranger", 5, set(), frozenset())
    assert decomposition(snap, None, a4.vector, a4.source, a4.basis) is None
