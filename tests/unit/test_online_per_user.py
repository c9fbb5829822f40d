"""The report's per-user test: exact moment sums in the stage's state, and a calibrated test."""

from __future__ import annotations

from collections import Counter

import numpy as np

from recsys_stream.online.attribution import UserAttribution
from recsys_stream.online.stats import UserMoments, compare, compare_users


def _dims(exp: str, arm: str, position: int = 0):
    return (0, "t", "als", 1, "NEARLINE", exp, arm, position, "Recommend")


def test_user_moments_equal_the_sums_over_users_of_their_final_counts():
    rng = np.random.default_rng(3)
    users = {u: UserAttribution() for u in range(30)}
    moments, truth = Counter(), {u: [0, 0] for u in users}
    for _ in range(2000):
        u = int(rng.integers(30))
        arm = "a" if u % 2 else "b"
        di = int(rng.integers(-2, 5)) if truth[u][0] > 2 else int(rng.integers(0, 5))
        dc = int(rng.integers(0, 2))
        counts = Counter({(_dims("e", arm, 1), "impressions"): di,
                          (_dims("e", arm, 2), "clicks"): dc,
                          (_dims("", ""), "impressions"): 7})  # in no experiment: not summed
        users[u].user_moments(counts, moments)
        truth[u][0] += di
        truth[u][1] += dc
    for arm, odd in (("a", 1), ("b", 0)):
        tot = np.array([truth[u] for u in users if u % 2 == odd and truth[u] != [0, 0]])
        i, c = tot[:, 0], tot[:, 1]
        got = {m: moments[("t", "e", arm, m)] for m in ("n", "i", "c", "ii", "cc", "ic")}
        assert got == {"n": len(tot), "i": i.sum(), "c": c.sum(), "ii": (i * i).sum(),
                       "cc": (c * c).sum(), "ic": (i * c).sum()}
    # the totals travel in the encoded state
    u = next(iter(users.values()))
    assert UserAttribution.decode(u.encode()).totals == u.totals


def _moments(i: np.ndarray, c: np.ndarray) -> UserMoments:
    return UserMoments(len(i), i.sum(), c.sum(), (i * i).sum(), (c * c).sum(), (i * c).sum())


def test_per_user_test_is_calibrated_where_the_impression_test_is_not():
    """A/A splits of users whose CTRs differ (beta) and who see many impressions each: the
    impression-level z-test rejects far more often than 5 %, the per-user test about 5 %."""
    rng = np.random.default_rng(11)
    n_users, splits = 600, 400
    per_user, naive = 0, 0
    for _ in range(splits):
        imps = rng.integers(10, 200, n_users).astype(float)
        ctr = rng.beta(0.5, 8.0, n_users)
        clicks = rng.binomial(imps.astype(int), ctr).astype(float)
        side = rng.random(n_users) < 0.5
        a, b = _moments(imps[side], clicks[side]), _moments(imps[~side], clicks[~side])
        per_user += compare_users(a, b).p_value < 0.05
        naive += compare(int(a.c), int(a.i), int(b.c), int(b.i)).p_value < 0.05
    assert 0.025 * splits <= per_user <= 0.08 * splits, per_user
    assert naive > 0.2 * splits, naive


def test_per_user_test_detects_a_real_difference_and_handles_empty_arms():
    rng = np.random.default_rng(5)
    imps = rng.integers(10, 50, 400).astype(float)
    a = _moments(imps[:200], rng.binomial(imps[:200].astype(int), 0.10).astype(float))
    b = _moments(imps[200:], rng.binomial(imps[200:].astype(int), 0.05).astype(float))
    t = compare_users(a, b)
    assert t.p_value < 1e-6 and t.difference > 0.03
    assert np.isnan(compare_users(UserMoments(), b).p_value)
