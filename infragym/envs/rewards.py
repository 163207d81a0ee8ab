"""Rewards as objects computed from named metrics.

A reward is any callable ``(metrics: dict[str, float]) -> float``; the classes here are
the pieces of the default one, which trades SLO attainment against errors and cost.
Compose them with :class:`RewardSum`, or pass your own callable to the environment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class SloAttainment:
    """``reward`` for a step that meets the SLO, else 0.

    The SLO is met when the latency metric is at most ``target_s`` and the error ratio at
    most ``max_error_ratio``. A step with no completed request (latency NaN) meets the
    latency part only if nothing was offered either.
    """

    latency_metric: str = "latency_p95"
    target_s: float = 0.25
    max_error_ratio: float = 0.01
    reward: float = 1.0

    def met(self, m: Mapping[str, float]) -> bool:
        latency = m[self.latency_metric]
        errors = m["error_ratio"]
        if math.isnan(latency):
            return not m.get("offered_rate", 0.0) > 0.0
        return latency <= self.target_s and (math.isnan(errors) or errors <= self.max_error_ratio)

    def __call__(self, m: Mapping[str, float]) -> float:
        return self.reward if self.met(m) else 0.0


@dataclass(frozen=True)
class ErrorPenalty:
    """``-weight × error_ratio`` (0 when nothing was sent)."""

    weight: float = 2.0

    def __call__(self, m: Mapping[str, float]) -> float:
        e = m["error_ratio"]
        return 0.0 if math.isnan(e) else -self.weight * e


@dataclass(frozen=True)
class CostPenalty:
    """``-weight × cost in USD per hour``."""

    weight: float = 1.0

    def __call__(self, m: Mapping[str, float]) -> float:
        return -self.weight * m["cost_hourly"]


class RewardSum:
    """The sum of several reward terms."""

    def __init__(self, *terms) -> None:
        self.terms = terms

    def __call__(self, m: Mapping[str, float]) -> float:
        total = 0.0
        for term in self.terms:
            total += term(m)
        return total

    def __repr__(self) -> str:
        return f"RewardSum{self.terms!r}"


def default_reward(slo_target_s: float = 0.25) -> RewardSum:
    """SLO attainment (+1) minus 2 × error ratio minus the hourly cost in USD."""
    return RewardSum(SloAttainment(target_s=slo_target_s), ErrorPenalty(2.0), CostPenalty(1.0))
