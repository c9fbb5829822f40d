"""What an experiment arm changes for one request (DESIGN.md, "Online evaluation and
experiments"): the served algorithm, the tenant's exploration share and the slate's diversity.

The unit is the user, or the anonymous session; the first of the tenant's experiments that puts
the unit in an arm decides (``contracts.experiments``: a stable hash, so every server agrees).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from recsys_stream.config import TenantConfig
from recsys_stream.contracts.experiments import Arm, Experiment
from recsys_stream.serving.diversity import DiversitySpec


@dataclass(frozen=True)
class Assignment:
    experiment: str = ""
    arm: str = ""
    spec: Arm | None = None


NONE = Assignment()


def assign(tc: TenantConfig, unit: str) -> Assignment:
    """The unit's experiment and arm (``NONE`` without a unit or an experiment that takes it)."""
    if not unit:
        return NONE
    for exp in tc.experiments:
        arm = exp.assign(unit)
        if arm is not None:
            return Assignment(exp.name, arm.name, arm)
    return NONE


def algorithm(a: Assignment, requested: str) -> str:
    """The request's algorithm wins; else the arm's ("" = the tenant's default)."""
    return requested or (a.spec.algorithm if a.spec is not None else "")


def tenant_settings(a: Assignment, tc: TenantConfig) -> TenantConfig:
    """``tc`` with the arm's exploration share."""
    if a.spec is None or a.spec.exploration_share is None:
        return tc
    return dataclasses.replace(tc, exploration_share=a.spec.exploration_share)


def diversity(a: Assignment, requested: DiversitySpec | None) -> DiversitySpec | None:
    """The request's diversity wins; else the arm's (None: off)."""
    if requested is not None or a.spec is None:
        return requested
    cap, mmr = a.spec.max_per_category or 0, a.spec.mmr_lambda or 0.0
    return DiversitySpec(int(cap), float(mmr)) if cap or mmr else None


__all__ = ["Assignment", "Experiment", "NONE", "algorithm", "assign", "diversity",
           "tenant_settings"]
