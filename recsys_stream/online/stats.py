"""The statistics of the online report: CTR intervals, arm-against-control tests, sample sizes.

All from statsmodels (maintained, tested against R): Wilson score intervals for a proportion,
the two-proportion z-test (pooled variance) for an arm against the control, and the users per
arm a two-sided test at ``alpha`` needs to detect the observed difference with ``power``
(Cohen's h effect size, normal approximation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
