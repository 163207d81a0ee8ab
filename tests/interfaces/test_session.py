"""AgentSession, the core of the MCP server and the text interface, in-process."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

from infragym.errors import ActionError, ConfigError
from infragym.interfaces.session import AgentSession, check_backend, json_value
from infragym.interfaces.text import make_text_env
from tests.interfaces.helpers import rule_policy

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def session() -> AgentSession:
    s = AgentSession.make()
    yield s
    s.env.close()


def _same(a: dict, b: dict) -> bool:
    return json_value(a) == json_value(b)


def test_no_episode_yet_is_a_clear_error() -> None:
    s = AgentSession.make()
    try:
        for call in (s.observe, s.describe_layers, s.episode_summary, lambda: s.wait(1)):
            with pytest.raises(ActionError, match="call reset"):
                call()
        with pytest.raises(ActionError, match="call reset"):
            s.set_knobs({"heater_replicas": 3})
        assert [k["name"] for k in s.list_knobs()] == [k.name for k in s.u.knobs]
    finally:
        s.env.close()


def test_bad_knobs_change_nothing(session: AgentSession) -> None:
    session.reset(scenario="constant", seed=1)
    session.set_knobs({"heater_replicas": 9})
    before = dict(session.staged)
    info = session.info
    bad = [
        ({"heater_replica": 3}, "did you mean heater_replicas"),
        ({"heater_replicas": 31}, "outside its domain"),
        ({"heater_replicas": 0}, "outside its domain"),
        ({"heater_replicas": 2.5}, "takes an integer"),
        ({"heater_replicas": True}, "takes an integer"),
        ({"heater_replicas": "6"}, "takes an integer"),
        ({"node_size": "s-3vcpu-6gb"}, "one of s-1vcpu-2gb"),
        ({"heater_cpu_limit": 1}, "one of 500m"),
        ({"heater_cpu_limit": ["1000m"]}, "one of 500m"),
        ({"node_count": 4, "heater_cpu_limit": "250m"}, "one of 500m"),  # first entry valid
        ([("heater_replicas", 3)], "must be an object"),
    ]
    for knobs, message in bad:
        with pytest.raises(ActionError, match=message):
            session.set_knobs(knobs)
        assert session.staged == before
        assert session.info is info and session.steps == 0
    out = session.set_knobs({"heater_replicas": 7.0, "node_size": "s-2vcpu-4gb"})
    assert out["staged"]["heater_replicas"] == 7 and isinstance(
        out["staged"]["heater_replicas"], int
    )
    assert out["changed"] == {"heater_replicas": 7, "node_size": "s-2vcpu-4gb"}


def test_wait_bounds(session: AgentSession) -> None:
    session.reset(scenario="constant", seed=1)
    for steps in (0, -1, 121, 1.0, "2", True):
        with pytest.raises(ActionError, match="steps must be an integer"):
            session.wait(steps)
    assert session.steps == 0


def test_set_knobs_then_wait_is_env_step_with_encode(session: AgentSession) -> None:
    """wait(n) after set_knobs: n env.steps of codec.encode(targets, requested)."""
    env = gym.make("SimpleK8sWebApp-v1", action_mode="absolute")
    try:
        _, info = env.reset(seed=5, options={"scenario": "diurnal"})
        session.reset(scenario="diurnal", seed=5)
        assert _same(session.info["metrics"], info["metrics"])
        plan = [({"heater_replicas": 10, "node_count": 3}, 3), ({"node_size": "s-8vcpu-16gb"}, 4)]
        plan += [({}, 2), ({"heater_cpu_limit": "500m", "heater_replicas": 4}, 1)]
        for targets, n in plan:
            session.set_knobs(targets)
            out = session.wait(n)
            for k in range(n):
                action = env.unwrapped.codec.encode(targets, info["knobs"])
                _, reward, _, _, info = env.step(action)
                assert out["rewards"][k] == reward
                assert _same(out["metrics"][k], info["metrics"])
            assert session.info["knobs"] == info["knobs"]
            assert session.info["knobs_running"] == info["knobs_running"]
            assert _same(session.info["updates"], info["updates"])
    finally:
        env.close()


def test_bad_reset_keeps_the_episode(session: AgentSession) -> None:
    session.reset(scenario="spikes", seed=2)
    session.set_knobs({"heater_replicas": 8})
    session.wait(2)
    text = session.observe()
    for kwargs, message in [
        ({"scenario": "nope"}, "unknown scenario"),
        ({"split": "dev"}, "unknown split"),
        ({"seed": -1}, "seed must be"),
        ({"seed": "1"}, "seed must be"),
    ]:
        with pytest.raises(ConfigError, match=message):
            session.reset(**kwargs)
        assert session.observe() == text
    rewards = session.wait(3)["rewards"]
    control = AgentSession.make()
    try:
        control.reset(scenario="spikes", seed=2)
        control.set_knobs({"heater_replicas": 8})
        control.wait(2)
        assert control.wait(3)["rewards"] == rewards
    finally:
        control.env.close()


def test_views(session: AgentSession) -> None:
    text = session.reset(scenario="ramp", seed=0, split="validation")
    assert text.isascii()
    assert "scenario ramp (validation)" in text and "step 0 of 120" in text
    for name in ("latency_p95", "cost_hourly", "nodes_booting", "heater_replicas", "node_size"):
        assert name in text
    session.set_knobs({"node_count": 4, "heater_replicas": 12})
    session.wait(1)
    text = session.observe()
    assert "Updates in flight:\n  do-managed-k8s: node_count=4" in text
    assert "(not yet running)" in text  # node_count 4 requested, 2 running
    assert "Last step: reward" in text
    data = session.observation()
    assert data["knobs"]["node_count"] == 4 and data["knobs_running"]["node_count"] == 2
    knobs = {k["name"]: k for k in session.list_knobs()}
    assert knobs["heater_replicas"]["min"] == 1 and knobs["heater_replicas"]["max"] == 30
    assert knobs["node_size"]["sizes"]["s-4vcpu-8gb"]["vcpus"] == 4
    assert knobs["node_count"]["requested"] == 4 and knobs["node_count"]["running"] == 2
    layers = {layer["layer"]: layer for layer in session.layers()}
    assert layers["do-managed-k8s"]["update_in_flight"]
    pool = next(r for r in layers["do-managed-k8s"]["resources"] if r["name"] == "workers")
    assert set(pool["knobs"]) == {"node_count", "node_size"}
    assert "knob heater_replicas: spec.replicas = 12 requested" in session.describe_layers()
    description = session.task_description()
    assert "250 ms" in description and "set_knobs" in description and len(description) < 4000


def test_whole_episode_summary(session: AgentSession) -> None:
    session.reset(scenario="trace-conv", seed=4)
    while not session.done:
        obs = session.observation()
        session.set_knobs(rule_policy(session.steps, obs["metrics"], obs["knobs"]))
        session.wait(1)
    s = session.episode_summary()
    assert s["steps"] == 120 and s["done"]
    assert math.isclose(s["return"], sum(session.rewards))
    assert 0.0 <= s["slo_attainment"] <= 1.0
    assert s["slo_attainment"] == np.mean([session.slo.met(m) for m in session.step_metrics])
    assert s["cost_usd"] == session.info["cost_usd"] > 0
    with pytest.raises(ActionError, match="episode is over"):
        session.wait(1)
    with pytest.raises(ActionError, match="episode is over"):
        session.set_knobs({"heater_replicas": 2})
    assert "EPISODE OVER" in session.observe()
    assert "120 of 120 steps (finished)" in session.summary_text()


def test_pulumi_guard() -> None:
    with pytest.raises(ConfigError, match="--allow-spend"):
        check_backend("pulumi", allow_spend=False)
    check_backend("pulumi", allow_spend=True)
    check_backend("sim", allow_spend=False)
    with pytest.raises(ConfigError, match="spends money"):
        AgentSession.make(backend="pulumi")
    with pytest.raises(ConfigError, match="spends money"):
        make_text_env(backend="pulumi")


def test_bad_make_arguments() -> None:
    with pytest.raises(ConfigError, match="action_mode is fixed"):
        AgentSession.make(action_mode="delta")
    with pytest.raises(ConfigError, match="unknown environment id"):
        AgentSession.make("CartPole-v1")
    env = gym.make("SimpleK8sWebApp-v1")  # delta mode
    try:
        with pytest.raises(ConfigError, match="action_mode='absolute'"):
            AgentSession(env)
    finally:
        env.close()
