"""SimpleK8sWebApp-v1 on the sim backend: asynchronous actuation, the observation, the reward.

References outside the code under test: DigitalOcean's price table (``catalog``), the
twin's own node and pod lists read independently of the observation, and the
documented timings (node boot, pulumi-kubernetes' 10-minute await timeout).
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

from infragym import catalog
from infragym.errors import ConfigError
from infragym.twin.model import TwinParams

STEP = 30.0
BOOT = TwinParams().node_boot_s
SMALL, BIG = "s-4vcpu-8gb", "s-8vcpu-16gb"


def make(**kwargs):
    kwargs.setdefault("action_mode", "absolute")
    return gym.make("SimpleK8sWebApp-v1", **kwargs)


def action(env, **targets):
    u = env.unwrapped
    return u.codec.encode(targets, u.knob_values)


def worker_nodes(env):
    """The workers pool's nodes, booting, Ready or draining."""
    twin = env.unwrapped.backend.twin
    return [n for n in twin.all_nodes() if n.pool.name.endswith("workers")]


def test_alternating_node_sizes_get_the_pool_replaced_and_pay_for_what_ran():
    """v0's exploit: flipping the size every step kept the old pool and paid for nothing new."""
    env = make()
    obs, info = env.reset(seed=0, options={"scenario": "constant"})
    reference = info["cost_reference"]
    start_workers = 2
    static = reference - start_workers * catalog.hourly_price(SMALL)  # the rest of the graph
    cost, hourly = info["cost_usd"], info["metrics"]["cost_hourly"]
    sizes_run, ready_counts = set(), []
    u = env.unwrapped
    for i in range(40):
        size = SMALL if i % 2 else BIG
        obs, _, _, _, info = env.step(
            action(env, heater_replicas=30, heater_cpu_limit="1000m", node_count=10, node_size=size)
        )
        m, running = info["metrics"], info["knobs_running"]
        workers_ready = m["nodes_ready"] - 1  # one node in the system pool
        # Billed: the Ready workers at the running size, at list price, plus the rest.
        ready = [n for n in worker_nodes(env) if n.ready(u.backend.twin.t)]
        assert {n.size.slug for n in ready} == {running["node_size"]}
        expected_hourly = static + workers_ready * catalog.hourly_price(running["node_size"])
        assert m["cost_hourly"] == pytest.approx(expected_hourly, rel=1e-9)
        # Nodes change at step boundaries only (boot = 8 steps, a replacement drains the old
        # pool when the new one is Ready), so a step costs what ran at its start.
        cost += hourly * STEP / 3600.0
        hourly = m["cost_hourly"]
        assert info["cost_usd"] == pytest.approx(cost, rel=1e-9)
        # The knob part of the observation shows what runs beside what was asked for.
        for j, knob in enumerate(u.knobs):
            n = len(knob.values) - 1
            assert obs[18 + j] == pytest.approx(knob.index_of(info["knobs"][knob.name]) / n)
            assert obs[22 + j] == pytest.approx(knob.index_of(running[knob.name]) / n)
        sizes_run.add(running["node_size"])
        ready_counts.append(workers_ready)
    assert sizes_run == {SMALL, BIG}  # replaced, then replaced again: nothing cancelled
    assert max(ready_counts) == 10
    assert info["metrics"]["pods_pending"] == 0
    env.close()


def test_a_change_to_a_busy_layer_waits_coalesced_and_starts_when_the_update_completes():
    env = make()
    _, info = env.reset(seed=1, options={"scenario": "constant"})
    t0 = info["time_s"]
    _, _, _, _, info = env.step(action(env, node_size=BIG))
    assert info["layers_updated"] == ("do-managed-k8s",)
    assert info["updates"]["do-managed-k8s"]["started_at"] == t0
    # Two more changes to the busy layer: they wait, coalesced to the latest values.
    env.step(action(env, node_size=SMALL, node_count=4))
    _, _, _, _, info = env.step(action(env, node_count=3))
    assert info["updates"]["do-managed-k8s"]["queued"] == {"node_size": SMALL, "node_count": 3}
    # A change to another layer starts at once.
    _, _, _, _, info = env.step(action(env, heater_replicas=7))
    assert info["layers_updated"] == ("k8s-heater",)
    assert info["knobs_running"]["node_size"] == SMALL  # the first update has not completed
    first_done = t0 + BOOT
    while info["time_s"] < first_done:
        _, _, _, _, info = env.step(action(env))
    update = info["updates"]["do-managed-k8s"]
    assert update["started_at"] == first_done
    assert update["in_flight"] == {"node_size": SMALL, "node_count": 3}
    assert info["knobs_running"]["node_size"] == BIG
    assert {n.size.slug for n in worker_nodes(env) if n.ready(first_done)} == {BIG}
    while info["time_s"] < first_done + BOOT:
        _, _, _, _, info = env.step(action(env))
    assert "do-managed-k8s" not in info["updates"]
    assert info["knobs_running"]["node_size"] == SMALL
    assert info["knobs_running"]["node_count"] == 3
    assert sorted(n.size.slug for n in worker_nodes(env) if n.ready(info["time_s"])) == [SMALL] * 3
    env.close()


def test_a_change_back_to_the_value_in_flight_is_dropped_from_the_queue():
    env = make()
    env.reset(seed=2, options={"scenario": "constant"})
    env.step(action(env, node_count=4))
    env.step(action(env, node_count=5))
    _, _, _, _, info = env.step(action(env, node_count=4))
    assert info["updates"]["do-managed-k8s"]["queued"] == {}
    env.close()


def test_a_deployment_update_waits_for_its_pods_up_to_the_await_timeout():
    """pulumi-kubernetes waits for a Deployment's rollout, 10 minutes at most."""
    env = make()
    _, info = env.reset(seed=0, options={"scenario": "constant"})
    t0 = info["time_s"]
    # 30 pods at 250m on two 4-vCPU workers: one stays Pending, so the rollout never ends.
    _, _, _, _, info = env.step(action(env, heater_replicas=30))
    assert info["metrics"]["pods_pending"] >= 1
    _, _, _, _, info = env.step(action(env, heater_cpu_limit="750m"))
    assert info["updates"]["k8s-heater"]["queued"] == {"heater_cpu_limit": "750m"}
    deadline = t0 + TwinParams().deployment_await_s
    while info["time_s"] < deadline:
        assert info["knobs_running"]["heater_replicas"] == 6
        _, _, _, _, info = env.step(action(env))
    assert env.unwrapped.backend.twin.update_timeouts == 1
    assert info["updates"]["k8s-heater"]["started_at"] == deadline
    assert info["knobs_running"]["heater_replicas"] == 30
    env.close()


def test_observation_entries_match_the_twins_state():
    env = make(action_mode="delta")
    env.action_space.seed(5)
    obs, info = env.reset(seed=5)
    u = env.unwrapped
    loads = [info["metrics"]["offered_rate"]] * 8
    for step in range(1, 50):
        obs, _, _, _, info = env.step(env.action_space.sample())
        twin = u.backend.twin
        t = twin.t
        nodes = twin.nodes()
        booting = [n for n in nodes if n.ready_at > t]
        heater = [p for p in twin.pods() if p.workload.name == "heater"]
        m = info["metrics"]
        assert m["nodes_booting"] == len(booting)
        expected_wait = min((n.ready_at for n in booting), default=t) - t
        assert m["next_node_ready_s"] == pytest.approx(expected_wait)
        assert m["replicas_starting"] == sum(not p.ready(t) for p in heater)
        assert obs[13] == pytest.approx(min(len([p for p in heater if not p.ready(t)]) / 20, 10))
        assert obs[14] == pytest.approx(len(booting) / 10)
        assert obs[15] == pytest.approx(expected_wait / 300)
        in_flight = info["updates"]
        assert obs[16] == float("do-managed-k8s" in in_flight)
        assert obs[17] == float("k8s-heater" in in_flight)
        assert obs[26] == pytest.approx(step / 120)
        np.testing.assert_allclose(obs[27:35], np.clip(np.array(loads) / 250, 0, 10), rtol=1e-6)
        loads = [m["offered_rate"], *loads[:-1]]
    env.close()


def test_the_reward_ranks_a_cheaper_policy_with_equal_slo_higher():
    """Two static deployments meeting the SLO every step; the cheaper one by one worker."""
    returns, attained, costs = [], [], []
    for count in (2, 3):
        env = make()
        _, info = env.reset(seed=0, options={"scenario": "constant"})
        reference = info["cost_reference"]
        total, met, hourly = 0.0, 0, []
        for _ in range(40):
            _, r, _, _, info = env.step(action(env, node_count=count))
            total += r
            met += r > 0.0 - info["metrics"]["cost_hourly"] / reference
            hourly.append(info["metrics"]["cost_hourly"])
        returns.append(total)
        attained.append(met)
        costs.append(hourly)
        env.close()
    assert attained == [40, 40]
    assert returns[0] > returns[1]
    # The gap is the cost gap in units of the reference: a worker at list price per step.
    gap = sum((b - a) / reference for a, b in zip(costs[0], costs[1], strict=True))
    assert returns[0] - returns[1] == pytest.approx(gap, rel=1e-9)
    assert costs[1][-1] - costs[0][-1] == pytest.approx(catalog.hourly_price(SMALL))
    # A 10 % cost difference is worth a visible part of an SLO step.
    assert 0.1 * costs[0][-1] / reference >= 0.05


def test_the_first_step_meets_the_slo_on_every_family_from_the_starting_deployment():
    env = make()
    for scenario in ("constant", "diurnal", "spikes", "ramp"):
        for seed in range(3):
            env.reset(seed=seed, options={"scenario": scenario})
            _, r, _, _, info = env.step(action(env))
            assert r > 0.0 - info["metrics"]["cost_hourly"] / info["cost_reference"], scenario
    env.close()


def test_cpu_limit_domain_has_no_dead_values():
    env = make()
    limits = env.unwrapped.knobs[1].values
    assert limits == ("500m", "750m", "1000m")
    env.reset(seed=0, options={"scenario": "constant"})
    for limit in limits:  # each meets the SLO at a load it can carry (M/M/1 per pod)
        env.step(action(env, heater_cpu_limit=limit, heater_replicas=12))
        for _ in range(3):
            _, _, _, _, info = env.step(action(env))
        assert info["metrics"]["latency_p95"] <= 0.25, limit
    env.close()


def test_split_choice_and_bad_split():
    env = make(split="test")
    _, info = env.reset(seed=0)
    assert info["split"] == "test"
    _, info = env.reset(seed=0, options={"split": "validation"})
    assert info["split"] == "validation"
    with pytest.raises(ConfigError, match="split"):
        env.reset(seed=0, options={"split": "tset"})
    env.reset(seed=0)  # still usable
    env.step(env.action_space.sample())
    with pytest.raises(ConfigError, match="split"):
        make(split="nope")
    env.close()


def test_same_seed_same_episode():
    def rollout(seed):
        env = make(action_mode="delta")
        env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        out = [obs.tolist()]
        for _ in range(30):
            obs, r, *_ = env.step(env.action_space.sample())
            out.append((obs.tolist(), r))
        env.close()
        return out

    assert rollout(4) == rollout(4)
    assert rollout(4) != rollout(5)


def test_cost_weight_scales_the_cost_term():
    rewards = []
    for weight in (0.0, 2.0):
        env = make(cost_weight=weight)
        env.reset(seed=0, options={"scenario": "constant"})
        _, r, _, _, info = env.step(action(env))
        rewards.append(r)
        env.close()
    ratio = info["metrics"]["cost_hourly"] / info["cost_reference"]
    assert rewards[0] - rewards[1] == pytest.approx(2.0 * ratio)
    with pytest.raises(ConfigError, match="cost_weight"):
        make(cost_weight=math.nan)
