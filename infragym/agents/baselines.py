"""Baseline agents: random, static, the Kubernetes HPA rule and a cluster-autoscaler rule."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from infragym import catalog
from infragym.agents.base import CompositeAgent, KnobAgent
from infragym.errors import ConfigError
from infragym.twin.hpa import hpa_proposal


class RandomAgent:
    """Uniformly random actions from the action space (seeded)."""

    name = "random"

    def reset(self, env: Any, seed: int | None = None) -> None:
        self.space = env.action_space
        self.space.seed(seed)

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        return self.space.sample()


class StaticAgent(KnobAgent):
    """Holds the knobs at fixed values: the deployed ones, or ``values`` if given."""

    name = "static"

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self.values = dict(values or {})

    def targets(self, info: Mapping[str, Any]) -> dict[str, Any]:
        return self.values


class HPAAgent(KnobAgent):
    """The Kubernetes HorizontalPodAutoscaler rule on CPU utilisation of requests.

    ``desired = ceil(current × utilisation / target)``, no change while the ratio is
    within ``tolerance`` of 1, and scale-down stabilisation: a scale-down goes only as
    low as the highest recommendation of the last ``scale_down_window_s`` seconds (all
    three are the Kubernetes defaults, from the HPA documentation).

    Args:
        target_utilisation: Target CPU utilisation of requests (0.7 = 70 %).
        knob: Name of the replicas knob.
        min_replicas: Lower bound of recommendations.
        max_replicas: Upper bound (also clipped to the knob's domain).
        cpu_request: CPU request of one pod, in cores (utilisation is relative to it).
    """

    name = "hpa"

    def __init__(
        self,
        target_utilisation: float = 0.7,
        knob: str = "heater_replicas",
        min_replicas: int = 1,
        max_replicas: int = 30,
        tolerance: float = 0.1,
        scale_down_window_s: float = 300.0,
        cpu_request: float = 0.25,
    ) -> None:
        self.target = target_utilisation
        self.cpu_request = cpu_request
        self.knob = knob
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.tolerance = tolerance
        self.window = scale_down_window_s
        self.history: list[tuple[float, int]] = []

    def reset(self, env: Any, seed: int | None = None) -> None:
        super().reset(env, seed)
        self.history = []

    def targets(self, info: Mapping[str, Any]) -> dict[str, Any]:
        m = info["metrics"]
        current = int(info["knobs"][self.knob])
        utilisation = m["cpu_utilisation_requests"]
        if math.isnan(utilisation) or m["replicas_ready"] < 1:
            return {}
        ready = int(m["replicas_ready"])
        busy = utilisation * ready * self.cpu_request
        proposal = hpa_proposal(busy, self.cpu_request, ready, current, self.target, self.tolerance)
        self.history = [(t, r) for t, r in self.history if self.time_s - t < self.window]
        self.history.append((self.time_s, proposal))
        desired = proposal if proposal >= current else max(r for _, r in self.history)
        return {self.knob: min(max(desired, self.min_replicas), self.max_replicas)}


class ClusterAutoscalerAgent(KnobAgent):
    """A cluster-autoscaler-like node rule.

    Adds a node while pods are Pending and the node it added last has become Ready;
    removes one node when the heater's CPU requests would fit on one node fewer at under
    ``scale_down_utilisation`` of allocatable CPU for ``scale_down_delay_s`` (the
    autoscaler's defaults: 0.5 and 10 minutes).

    Args:
        count_knob: Name of the node-count knob.
        size_knob: Name of the node-size knob (to know a node's allocatable CPU).
        cpu_request: CPU request of one heater pod, in cores.
    """

    name = "cluster-autoscaler"

    def __init__(
        self,
        count_knob: str = "node_count",
        size_knob: str = "node_size",
        replicas_knob: str = "heater_replicas",
        cpu_request: float = 0.25,
        scale_down_utilisation: float = 0.5,
        scale_down_delay_s: float = 600.0,
    ) -> None:
        self.count_knob, self.size_knob, self.replicas_knob = count_knob, size_knob, replicas_knob
        self.cpu_request = cpu_request
        self.threshold = scale_down_utilisation
        self.delay = scale_down_delay_s
        self.unneeded_since: float | None = None

    def reset(self, env: Any, seed: int | None = None) -> None:
        super().reset(env, seed)
        self.unneeded_since = None
        self.awaiting_ready = 0.0  # nodes Ready we wait for after adding one (it boots)
        if self.count_knob not in {k.name for k in self.env.knobs}:
            raise ConfigError(f"{self.name}: the env has no knob {self.count_knob!r}")

    def targets(self, info: Mapping[str, Any]) -> dict[str, Any]:
        m, knobs = info["metrics"], info["knobs"]
        nodes = int(knobs[self.count_knob])
        booting = m["nodes_ready"] < self.awaiting_ready
        if m["pods_pending"] > 0:
            self.unneeded_since = None
            if booting:
                return {}
            self.awaiting_ready = m["nodes_ready"] + 1
            return {self.count_knob: nodes + 1}
        size = catalog.size(knobs[self.size_knob]) if self.size_knob in knobs else None
        if size is None or nodes <= 1:
            return {}
        requested = int(knobs.get(self.replicas_knob, 0)) * self.cpu_request
        if requested <= self.threshold * (nodes - 1) * size.allocatable_cpu:
            if self.unneeded_since is None:
                self.unneeded_since = self.time_s
            if self.time_s - self.unneeded_since >= self.delay:
                self.unneeded_since = None
                return {self.count_knob: nodes - 1}
        else:
            self.unneeded_since = None
        return {}


AGENTS = {
    "random": RandomAgent,
    "static": StaticAgent,
    "hpa": lambda: CompositeAgent("hpa", HPAAgent(), ClusterAutoscalerAgent()),
    "hpa-only": HPAAgent,
    "cluster-autoscaler": ClusterAutoscalerAgent,
}
"""Baseline agents by name. ``hpa`` is what an autoscaled cluster runs: the HPA on the
heater's replicas and the cluster autoscaler on the node pool."""


def make_agent(name: str):
    """A baseline agent by name, with a clear error listing the valid ones."""
    try:
        return AGENTS[name]()
    except KeyError:
        raise ConfigError(catalog.unknown_choice("agent", name, AGENTS)) from None
