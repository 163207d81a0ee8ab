"""SimpleK8sWebApp-v0 on the sim backend: the Gymnasium contract, determinism, bad inputs."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import infragym
from infragym.envs import ENV_IDS
from infragym.envs import scenarios as scenarios_lib
from infragym.errors import ActionError, ConfigError


def make(**kwargs):
    return gym.make("SimpleK8sWebApp-v0", **kwargs)


@pytest.mark.parametrize("env_id", sorted(ENV_IDS))
def test_check_env(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_registered_with_time_limit():
    env = make()
    assert env.spec.max_episode_steps == 120
    env.reset(seed=0)
    steps, done = 0, False
    while not done:
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        steps += 1
        done = term or trunc
    assert steps == 120


def rollout(seed: int, steps: int = 60) -> list:
    env = make()
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    out = [(obs.tolist(), info["scenario"])]
    for _ in range(steps):
        obs, reward, _, _, info = env.step(env.action_space.sample())
        out.append((obs.tolist(), reward, info["knobs"]))
    env.close()
    return out


def test_same_seed_same_rollout():
    assert rollout(3) == rollout(3)
    assert rollout(3) != rollout(4)


def test_graph_order_does_not_depend_on_the_mock_runtime(monkeypatch):
    """The mock runtime's registration order varies between processes; the twin's must not."""
    from infragym.backends import mockrun, sim

    env = make()
    layers = env.unwrapped._layers(scenarios_lib.get("constant")(np.random.default_rng(0), 60.0))
    run_layers = mockrun.run_layers
    graphs = []
    for order in (list, lambda records: list(reversed(records))):

        def shuffled(*args, order=order, **kwargs):
            records, outputs = run_layers(*args, **kwargs)
            return order(records), outputs

        monkeypatch.setattr(mockrun, "run_layers", shuffled)
        sim._GRAPH_CACHE.clear()
        graphs.append([(r.layer, r.type, r.name) for r in sim.resource_graph(layers, "order")])
    assert graphs[0] == graphs[1]
    sim._GRAPH_CACHE.clear()


def test_a_new_load_variant_reuses_the_cached_graph(monkeypatch):
    """The schedule only writes its JSON into the graph: a variant not seen before runs no
    layer program, and gets the graph a mock run with it would give."""
    from infragym.backends import mockrun, sim

    env = make().unwrapped
    rng = np.random.default_rng(0)
    first = env._layers(scenarios_lib.get("constant")(rng, 60.0))
    sim.resource_graph(first, "variants")
    runs = []
    run_layers = mockrun.run_layers

    def counted(*args, **kwargs):
        runs.append(args)
        return run_layers(*args, **kwargs)

    monkeypatch.setattr(mockrun, "run_layers", counted)
    for split in ("train", "test"):
        for name in ("spikes", "trace-code"):
            layers = env._layers(scenarios_lib.get(name)(rng, 60.0, split))
            records = sim.resource_graph(layers, "variants")
            assert sim.resource_graph(layers, "variants") is records
            assert not runs
            direct, _ = run_layers(layers, "variants")
            key = lambda r: (r.layer, r.type, r.name)  # noqa: E731
            assert sorted(map(key, records)) == sorted(map(key, direct))
            assert {key(r): r.inputs for r in records} == {key(r): r.inputs for r in direct}


def test_graph_comes_from_the_layers():
    env = make()
    _, info = env.reset(seed=0)
    types = {(r.layer, r.type) for r in env.unwrapped.backend.resources()}
    assert ("do-managed-k8s", "digitalocean:index/kubernetesNodePool:KubernetesNodePool") in types
    assert ("k8s-heater", "kubernetes:apps/v1:Deployment") in types
    # What the twin does not model is kept and listed, never dropped.
    assert any("digitalocean:index/vpc:Vpc" in u for u in info["unmodelled"])
    assert info["knobs"] == {
        "heater_replicas": 2,
        "heater_cpu_limit": "500m",
        "node_count": 2,
        "node_size": "s-2vcpu-4gb",
    }


def test_delta_action_moves_one_step_and_absolute_sets():
    env = make()
    env.reset(seed=0, options={"scenario": "constant"})
    _, _, _, _, info = env.step(np.array([2, 1, 2, 1]))
    assert info["knobs"]["heater_replicas"] == 3 and info["knobs"]["node_count"] == 3
    assert set(info["layers_updated"]) == {"k8s-heater", "do-managed-k8s"}
    _, _, _, _, info = env.step(np.array([1, 1, 1, 1]))
    assert info["layers_updated"] == ()
    env = make(action_mode="absolute")
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([9, 3, 4, 2]))
    assert info["knobs"] == {
        "heater_replicas": 10,
        "heater_cpu_limit": "1000m",
        "node_count": 5,
        "node_size": "s-4vcpu-8gb",
    }


def test_more_replicas_lower_latency_under_load():
    def p95(replicas_up: int) -> float:
        env = make(action_mode="absolute")
        env.reset(seed=0, options={"scenario": "constant"})
        m = {}
        for _ in range(4):
            _, _, _, _, info = env.step(np.array([replicas_up, 1, 3, 1]))
            m = info["metrics"]
        return m["latency_p95"]

    assert p95(9) < p95(1)


@pytest.mark.parametrize(
    "action",
    [
        np.array([3, 1, 1, 1]),
        np.array([1, 1, 1]),
        np.array([-1, 1, 1, 1]),
        np.array([0.5, 1, 1, 1]),
        "up",
    ],
)
def test_action_outside_space_is_a_clear_error_and_changes_nothing(action):
    env = make()
    env.reset(seed=0)
    before = dict(env.unwrapped.knob_values)
    with pytest.raises(ActionError, match="action space"):
        env.step(action)
    assert env.unwrapped.knob_values == before


def test_unknown_size_in_knob_domain_is_a_clear_error():
    with pytest.raises(ConfigError, match="s-2vcpu-5gb"):
        make(node_sizes=("s-2vcpu-4gb", "s-2vcpu-5gb"))


def test_unknown_scenario_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown scenario 'tsunami'"):
        make(scenarios=["tsunami"])
    env = make()
    with pytest.raises(ConfigError, match="valid choices: constant, diurnal, spikes, ramp"):
        env.reset(seed=0, options={"scenario": "tsunami"})


def test_bad_layer_settings_are_clear_errors_before_anything_runs():
    with pytest.raises(ConfigError, match="unknown layers"):
        make(settings={"k8s-nope": {}})
    with pytest.raises(ConfigError, match="s-2vcpu-5gb"):  # at make, before any deploy
        make(settings={"do-managed-k8s": {"node_size": "s-2vcpu-5gb"}})


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown backend"):
        make(backend="aws")


@pytest.mark.parametrize("scenario", ["constant", "diurnal", "spikes", "ramp"])
def test_scenarios_produce_load(scenario):
    env = make()
    _, info = env.reset(seed=0, options={"scenario": scenario})
    assert info["scenario"] == scenario
    rates = []
    for _ in range(40):
        _, _, _, _, info = env.step(np.array([1, 1, 1, 1]))
        rates.append(info["metrics"]["offered_rate"])
    assert min(rates) > 0
    if scenario != "constant":
        assert max(rates) > 1.3 * min(rates)


def test_render_modes():
    env = make(render_mode="ansi")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    text = env.render()
    assert "heater_replicas" in text and "latency_p95" in text and "k8s-heater" in text
    env = make(render_mode="rgb_array")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8


def test_reward_trades_slo_against_cost():
    env = make()
    _, info = env.reset(seed=0, options={"scenario": "constant"})
    _, reward, _, _, info = env.step(np.array([1, 1, 1, 1]))
    m = info["metrics"]
    slo = 1.0 if (m["latency_p95"] <= 0.25 and m["error_ratio"] <= 0.01) else 0.0
    assert reward == pytest.approx(slo - 2 * m["error_ratio"] - m["cost_hourly"])
    assert not math.isnan(reward)


def test_make_without_import_through_module_prefix():
    import subprocess
    import sys

    code = (
        "import gymnasium as gym; "
        "env = gym.make('infragym:SimpleK8sWebApp-v0'); "
        "assert env.spec.max_episode_steps == 120"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_registers_without_pulumi():
    import subprocess
    import sys

    code = (
        "import sys, infragym, gymnasium as gym; "
        "assert 'SimpleK8sWebApp-v0' in gym.registry; "
        "assert 'pulumi' not in sys.modules and 'boto3' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert infragym.__version__


def test_pulumi_backend_gets_the_step_as_its_metrics_window(tmp_path):
    # Constructing the backend contacts no engine; the PromQL window must be one step.
    env = make(
        backend="pulumi",
        step_seconds=45,
        backend_options={"state_url": f"file://{tmp_path}"},
    )
    assert env.unwrapped.backend._window_seconds == 45
