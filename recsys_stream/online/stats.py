"""The statistics of the online report: CTR intervals, arm-against-control tests, sample sizes.

All from statsmodels (maintained, tested against R): Wilson score intervals for a proportion,
the two-proportion z-test (pooled variance) for an arm against the control, and the users per
arm a two-sided test at ``alpha`` needs to detect the observed difference with ``power``
(Cohen's h effect size, normal approximation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import norm
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_confint, proportion_effectsize, \
    proportions_ztest


def wilson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of ``successes / trials``; (0, 1) when nothing was tried."""
    if trials <= 0:
        return 0.0, 1.0
    lo, hi = proportion_confint(successes, trials, alpha=1 - confidence, method="wilson")
    return float(lo), float(hi)


@dataclass(frozen=True)
class ArmTest:
    """An arm's CTR against the control's.

    Attributes
    ----------
    difference : float
        arm rate - control rate.
    p_value : float
        Two-sided, two-proportion z-test; NaN when either side has no trials or both rates are
        0 or 1 (no variance to test with).
    effect : float
        Cohen's h of the two rates (0 for no difference).
    alpha, power : float
        Of :attr:`users_needed`.
    """

    difference: float
    p_value: float
    effect: float = 0.0
    alpha: float = 0.05
    power: float = 0.8

    @property
    def users_needed(self) -> float:
        """Per arm, to detect ``difference`` two-sided at ``alpha`` with ``power``; inf for none."""
        if self.effect == 0 or math.isnan(self.effect):
            return math.inf
        return float(NormalIndPower().solve_power(effect_size=abs(self.effect), alpha=self.alpha,
                                                  power=self.power, ratio=1.0))


def compare(arm_clicks: int, arm_trials: int, control_clicks: int, control_trials: int,
            alpha: float = 0.05, power: float = 0.8) -> ArmTest:
    """Test an arm's click rate against the control's (see :class:`ArmTest`)."""
    if arm_trials <= 0 or control_trials <= 0:
        return ArmTest(float("nan"), float("nan"))
    p1, p0 = arm_clicks / arm_trials, control_clicks / control_trials
    pooled = (arm_clicks + control_clicks) / (arm_trials + control_trials)
    if pooled in (0.0, 1.0):
        p_value = float("nan")
    else:
        _, p_value = proportions_ztest([arm_clicks, control_clicks], [arm_trials, control_trials])
    return ArmTest(p1 - p0, float(p_value), float(proportion_effectsize(p1, p0)), alpha, power)


@dataclass(frozen=True)
class UserMoments:
    """An arm's per-user sums: users ``n``, and over users the sums of impressions ``i``,
    clicks ``c``, ``i**2``, ``c**2`` and ``i*c`` (the online stage keeps them exactly)."""

    n: int = 0
    i: float = 0.0
    c: float = 0.0
    ii: float = 0.0
    cc: float = 0.0
    ic: float = 0.0

    def ratio_variance(self) -> float:
        """Variance of the arm's CTR ``sum(c) / sum(i)`` by the delta method, the user being
        the independent unit: ``(var_c - 2 R cov_ic + R**2 var_i) / (n mean_i**2)``."""
        n = self.n
        if n < 2 or self.i <= 0:
            return math.nan
        mi, mc = self.i / n, self.c / n
        r = self.c / self.i
        # sample (co)variances of the per-user impressions and clicks
        vi = (self.ii - n * mi * mi) / (n - 1)
        vc = (self.cc - n * mc * mc) / (n - 1)
        cic = (self.ic - n * mi * mc) / (n - 1)
        return max(vc - 2 * r * cic + r * r * vi, 0.0) / (n * mi * mi)


def compare_users(arm: UserMoments, control: UserMoments, alpha: float = 0.05,
                  power: float = 0.8) -> ArmTest:
    """An arm's CTR against the control's with users, not impressions, as the independent
    unit (a user's impressions are correlated: the impression-level z-test found 9 of 100 A/A
    splits significant at 5 %). The difference of the two ratios over the square root of the
    sum of their delta-method variances is normal under the null (Deng et al., "Applying the
    Delta Method in Metric Analytics", 2018); p two-sided. NaN without two users on a side or
    without variance."""
    if arm.i <= 0 or control.i <= 0:
        return ArmTest(math.nan, math.nan)
    p1, p0 = arm.c / arm.i, control.c / control.i
    v = arm.ratio_variance() + control.ratio_variance()
    p_value = float(2 * norm.sf(abs(p1 - p0) / math.sqrt(v))) if v > 0 else math.nan
    effect = float(proportion_effectsize(min(max(p1, 0.0), 1.0), min(max(p0, 0.0), 1.0)))
    return ArmTest(p1 - p0, p_value, effect, alpha, power)
