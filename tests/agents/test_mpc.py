"""The ``mpc`` planner: plans on copies under its own forecast, never the scenario's
future, and leaves the real env untouched."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest

import infragym  # noqa: F401
from infragym.agents.mpc import MPCAgent, forecast
from infragym.apps.workload import Schedule, Step
from infragym.errors import ConfigError


def test_forecast_follows_a_trend_with_margin() -> None:
    assert forecast([100.0] * 6, 3, margin=0.0) == pytest.approx([100.0] * 3)
    up = forecast([10.0, 20.0, 30.0, 40.0], 2, damping=1.0, margin=0.0)
    assert up == pytest.approx([50.0, 60.0])
    assert forecast([50.0], 1, margin=0.2) == pytest.approx([60.0])
    assert min(forecast([40.0, 20.0, 0.0], 5, damping=1.0, margin=0.0)) == 0.0
    with pytest.raises(ConfigError):
        forecast([float("nan")], 1)


def _siege(env):
    twin = env.unwrapped.backend.twin
    return [w for w in twin.workloads.values() if w.role == "siege"]


def test_the_plan_depends_on_the_past_only() -> None:
    env = gym.make("SimpleK8sWebApp-v1", action_mode="absolute", split="validation")
    obs, info = env.reset(seed=4, options={"scenario": "ramp"})
    agent = MPCAgent(horizon=4)
    agent.reset(env, seed=0)
    for _ in range(6):
        obs, _, _, _, info = env.step(agent.act(obs, info))
    # A twin of this env with the same past and a different future (ten times the load
    # from now on): a planner that read the schedule would act differently on it.
    other = copy.deepcopy(env)
    twin = other.unwrapped.backend.twin
    for w in _siege(other):
        now = round(twin.t / 30)
        twin.set_schedule(
            w.key, Schedule(shape=Step(rates=[0.0] * now + [2500.0], step_seconds=30.0))
        )
    real_schedules = [w.schedule for w in _siege(env)]
    state = copy.deepcopy(agent.__dict__.copy() | {"env": None})

    a1 = agent.act(obs, info)
    agent.__dict__.update(copy.deepcopy(state) | {"env": other.unwrapped})
    a2 = agent.act(obs, info)
    assert np.array_equal(a1, a2)
    # The changed future is real: the two envs serve different loads from now on.
    _, _, _, _, i1 = env.step(a1)
    _, _, _, _, i2 = other.step(a2)
    assert i2["metrics"]["offered_rate"] > 5 * i1["metrics"]["offered_rate"]
    # Planning touched neither env.
    assert [w.schedule for w in _siege(env)] == real_schedules
    assert env.unwrapped.steps == 7 and other.unwrapped.steps == 7


def test_mpc_needs_the_sim_twin() -> None:
    class NoTwin:
        unwrapped = type("U", (), {"backend": object(), "knobs": ()})()

    with pytest.raises(ConfigError, match="sim backend"):
        MPCAgent().reset(NoTwin())
    with pytest.raises(ConfigError, match="horizon"):
        MPCAgent(horizon=0)
