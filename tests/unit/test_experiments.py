"""Experiment arms by stable hash into buckets, and the online report's statistics."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as sps

from recsys_stream.contracts.experiments import Arm, Experiment, bucket, \
    parse_experiments
from recsys_stream.online.stats import compare, wilson

AB = parse_experiments([{"name": "als-vs-pop", "arms": [
    {"name": "control", "share": 0.5},
    {"name": "popularity", "share": 0.3, "algorithm": "bpr"}]}])[0]


def test_a_user_keeps_their_arm_in_another_process():
    """Python's own hash is salted per process: the bucket must not be."""
    users = [f"user-{n}" for n in range(50)]
    here = [bucket("als-vs-pop", u) for u in users]
    code = ("from recsys_stream.contracts.experiments import bucket; "
            f"print([bucket('als-vs-pop', u) for u in {users!r}])")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "123"}).stdout
    assert eval(there) == here


def test_arms_own_contiguous_bucket_ranges_in_config_order_and_their_shares():
    assert [(a.name, s, e) for a, s, e in AB.ranges()] == [
        ("control", 0, 5000), ("popularity", 5000, 8000)]
    n = 40_000
    got = [AB.assign(f"u{k}") for k in range(n)]
    counts = [sum(a is not None and a.name == name for a in got) for name in
              ("control", "popularity")] + [sum(a is None for a in got)]
    # chi-square against 50 / 30 / 20 %: a biased hash fails at this size
    assert sps.chisquare(counts, [0.5 * n, 0.3 * n, 0.2 * n]).pvalue > 1e-4
    for k in range(200):  # the arm is the range the bucket falls in
        b = bucket(AB.name, f"u{k}")
        assert (got[k] is None) == (b >= 8000)
        assert got[k] is None or got[k].name == ("control" if b < 5000 else "popularity")


def test_two_experiments_split_users_independently():
    other = Experiment("other", (Arm("a", 0.5), Arm("b", 0.5)))
    pairs = np.array([[AB.assign(f"u{k}") is AB.control, other.assign(f"u{k}").name == "a"]
                      for k in range(20_000)])
    table = [[np.sum(pairs[:, 0] & pairs[:, 1]), np.sum(pairs[:, 0] & ~pairs[:, 1])],
             [np.sum(~pairs[:, 0] & pairs[:, 1]), np.sum(~pairs[:, 0] & ~pairs[:, 1])]]
    assert sps.chi2_contingency(table).pvalue > 1e-4


@pytest.mark.parametrize("raw, message", [
    ([{"name": "x", "arms": [{"name": "a", "share": 0.7}, {"name": "b", "share": 0.4}]}],
     "more than 1"),
    ([{"name": "x", "arms": [{"name": "a", "share": 1.0}]}], "at least two arms"),
    ([{"name": "x", "arms": [{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}]}],
     "unique"),
    ([{"name": "x", "arms": [{"name": "a", "share": 0.5}, {"name": "b", "sahre": 0.5}]}],
     "arms[1]"),
    ([{"name": "x", "arms": [{"name": "a", "share": 0}, {"name": "b", "share": 0.5}]}],
     "share must be in (0, 1]"),
    ([{"name": "x", "arms": [{"name": "a", "share": 0.5},
                             {"name": "b", "share": 0.5, "version": 3}]}], "arms[1]"),
    ([{"name": "x", "arms": [{"name": "a", "share": 0.5},
                             {"name": "b", "share": 0.5, "algorithm": "svd"}]}], "algorithm"),
])
def test_bad_experiment_configs_are_errors_naming_the_place(raw, message):
    with pytest.raises(ValueError, match=None) as e:
        parse_experiments(raw, "tenants.acme.experiments")
    assert message in str(e.value) and "tenants.acme.experiments[0]" in str(e.value)


def test_wilson_interval_matches_its_formula():
    k, n, z = 13, 80, sps.norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert wilson(k, n) == pytest.approx((centre - half, centre + half), rel=1e-9)
    assert wilson(0, 0) == (0.0, 1.0)


def test_the_z_test_matches_its_formula_and_sizes_the_test():
    t = compare(60, 1000, 40, 1000)
    pooled = 100 / 2000
    z = (0.06 - 0.04) / math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert t.difference == pytest.approx(0.02)
    assert t.p_value == pytest.approx(2 * sps.norm.sf(z), rel=1e-9)
    # Cohen's h for 6 % vs 4 %: each side's 2 asin(sqrt(p)) has variance 1/n, their
    # difference 2/n, so alpha 0.05 and power 0.8 need n = 2 ((z_.975 + z_.8) / h)^2 a side
    h = 2 * math.asin(math.sqrt(0.06)) - 2 * math.asin(math.sqrt(0.04))
    assert t.users_needed == pytest.approx(
        2 * ((sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) / h) ** 2, rel=1e-3)
    assert math.isnan(compare(0, 100, 0, 100).p_value)
    assert math.isnan(compare(1, 0, 1, 10).difference)


def test_aa_tests_are_significant_at_5_percent_about_5_percent_of_the_time():
    """Calibration: 1,000 A/A experiments of 5,000 users a side at a 4 % CTR."""
    rng = np.random.default_rng(7)
    clicks = rng.binomial(5000, 0.04, size=(1000, 2))
    rate = np.mean([compare(a, 5000, b, 5000).p_value < 0.05 for a, b in clicks])
    # binomial(1000, 0.05): 99.99 % of draws fall in 2.3 %..7.9 %
    assert 0.023 < rate < 0.079, rate
