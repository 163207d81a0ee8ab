"""The HorizontalPodAutoscaler's replica recommendation (Kubernetes' algorithm, CPU).

The compiled core runs the same rule for the HPAs a graph declares; the HPA baseline
agent (:mod:`infragym.agents.baselines`) runs it through the env's knobs.
"""

from __future__ import annotations

import math


def hpa_proposal(
    busy_cores: float,
    cpu_request: float,
    ready: int,
    current: int,
    target: float,
    tolerance: float,
) -> int:
    """The HPA's replica recommendation (Kubernetes' algorithm, CPU resource metric).

    ``ceil(current × utilisation / target)``, unchanged within the tolerance. As the HPA
    documentation prescribes, pods that are not Ready yet count as 0 % busy when the
    ratio points up (so Pending pods do not make it scale without bound), while a
    scale-down looks at the Ready pods only.

    Args:
        busy_cores: CPU cores the Ready pods use.
        cpu_request: CPU request of one pod (cores); utilisation is relative to it.
        ready: Ready pods.
        current: The replica count now.
        target: Target utilisation of requests (0.7 = 70 %).
        tolerance: No change while the ratio is within this of 1.
    """
    ready_ratio = busy_cores / (ready * cpu_request) / target
    if ready_ratio > 1.0:
        ratio = busy_cores / (max(current, ready) * cpu_request) / target
        if ratio <= 1.0:
            return current
    else:
        ratio = ready_ratio
    if abs(ratio - 1.0) <= tolerance:
        return current
    return math.ceil(current * ratio)
