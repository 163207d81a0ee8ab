"""The agent contract: baselines act through an environment's knobs, by name.

An agent sees the observation and ``info`` (``info["metrics"]`` has the raw metrics and
``info["knobs"]`` the current knob values) and returns an action. The rule-based
baselines compute *target* knob values and let the env's :class:`~infragym.knobs.ActionCodec`
turn them into an action, so they work in ``delta`` and ``absolute`` mode alike and on
any environment whose knobs have the names they look for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np


class Agent(Protocol):
    """What ``infragym evaluate`` drives."""

    name: str

    def reset(self, env: Any, seed: int | None = None) -> None:
        """Start an episode on ``env`` (the unwrapped env is ``env.unwrapped``)."""

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        """The action for this step."""


class KnobAgent:
    """Base for rule agents: subclasses return target knob values from :meth:`targets`."""

    name = "knob-agent"

    def reset(self, env: Any, seed: int | None = None) -> None:
        self.env = env.unwrapped
        self.codec = self.env.codec
        self.time_s = 0.0

    def targets(self, info: Mapping[str, Any]) -> dict[str, Any]:
        """Target knob values by knob name (knobs left out keep their value)."""
        return {}

    def act(self, observation: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
        self.time_s += self.env.step_seconds
        current = info["knobs"]
        wanted = {k: v for k, v in self.targets(info).items() if k in current}
        return self.codec.encode(wanted, current)


class CompositeAgent(KnobAgent):
    """Several rule agents, each owning different knobs (for example HPA + autoscaler)."""

    def __init__(self, name: str, *parts: KnobAgent) -> None:
        self.name = name
        self.parts = parts

    def reset(self, env: Any, seed: int | None = None) -> None:
        super().reset(env, seed)
        for part in self.parts:
            part.reset(env, seed)

    def targets(self, info: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for part in self.parts:
            part.time_s = self.time_s
            out.update(part.targets(info))
        return out
