"""Baseline agents act through the env's knobs and behave like the rules they copy."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import infragym  # noqa: F401
from infragym.agents.baselines import ClusterAutoscalerAgent, HPAAgent, make_agent
from infragym.errors import ConfigError
from infragym.evaluate import evaluate


def test_hpa_settles_at_the_formula_under_constant_load():
    # Enough nodes for what the formula asks, so that only the HPA rule is at work.
    env = gym.make(
        "SimpleK8sWebApp-v0", action_mode="absolute", settings={"do-managed-k8s": {"node_count": 6}}
    )
    obs, info = env.reset(seed=0, options={"scenario": "constant"})
    agent = HPAAgent(target_utilisation=0.7)
    agent.reset(env)
    replicas = []
    for _ in range(60):
        obs, _, _, _, info = env.step(agent.act(obs, info))
        replicas.append(info["knobs"]["heater_replicas"])
    rate = np.mean([info["metrics"]["offered_rate"]])
    busy_cores = rate * 0.020  # 20 ms of CPU per request (the heater's default work)
    expected = math.ceil(busy_cores / (0.25 * 0.7))
    assert abs(np.median(replicas[-20:]) - expected) <= 1


def test_cluster_autoscaler_adds_nodes_for_pending_pods():
    env = gym.make(
        "SimpleK8sWebApp-v0", action_mode="absolute", node_sizes=("s-1vcpu-2gb", "s-2vcpu-4gb")
    )
    obs, info = env.reset(seed=0, options={"scenario": "constant"})
    ca = ClusterAutoscalerAgent()
    ca.reset(env)
    # 20 replicas do not fit on two nodes: the rule adds nodes until nothing is Pending.
    action = env.unwrapped.codec.encode({"heater_replicas": 20}, info["knobs"])
    obs, _, _, _, info = env.step(action)
    assert info["metrics"]["pods_pending"] > 0
    for _ in range(60):
        obs, _, _, _, info = env.step(ca.act(obs, info))
    assert info["metrics"]["pods_pending"] == 0
    assert info["knobs"]["node_count"] > 2


def test_unknown_agent_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown agent"):
        make_agent("oracle")


def test_evaluate_compares_agents():
    results = evaluate(
        lambda: gym.make("SimpleK8sWebApp-v0", action_mode="absolute"),
        [make_agent("hpa"), make_agent("static"), make_agent("random")],
        episodes=2,
    )
    by = {r.agent: r for r in results}
    assert set(by) == {"hpa", "static", "random"}
    for r in results:
        assert 0.0 <= r.mean("slo_attainment") <= 1.0
        assert r.mean("cost_usd") > 0
    assert by["hpa"].mean("slo_attainment") > by["static"].mean("slo_attainment")
