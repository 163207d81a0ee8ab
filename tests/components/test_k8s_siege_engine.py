"""k8s-siege-engine under Pulumi mocks: Deployment, metrics Service, code ConfigMap."""

from __future__ import annotations

import pytest

from infragym.apps.workload import SIEGE_SCHEDULE_ENV, SIEGE_TARGET_ENV, Schedule, constant
from infragym.backends.mockrun import LayerRun, run_layer
from infragym.errors import ConfigError
from tests.components.k8s_layers import (
    APP_UPSTREAM,
    CONFIG_MAP,
    DEPLOYMENT,
    SERVICE,
    assert_children_use_k8s_provider,
)

TOKEN = "infragym:k8s:SiegeEngine"
HEATER_URL = "http://heater.infragym.svc.cluster.local"
UPSTREAM = {**APP_UPSTREAM, "heater_url": HEATER_URL, "workers_pool_name": "dev-workers"}


@pytest.fixture(scope="module")
def default_run() -> LayerRun:
    return run_layer("k8s-siege-engine", {}, UPSTREAM)


def pod_spec(run: LayerRun) -> dict:
    return run.one(DEPLOYMENT, "siege-engine").inputs["spec"]["template"]["spec"]


def env(run: LayerRun) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod_spec(run)["containers"][0]["env"]}


def test_graph(default_run: LayerRun) -> None:
    custom = sorted((r.type, r.name) for r in default_run.resources if r.custom)
    assert custom == [
        (DEPLOYMENT, "siege-engine"),
        (CONFIG_MAP, "siege-engine-code"),
        (SERVICE, "siege-engine"),
        ("pulumi:providers:kubernetes", "k8s"),
    ]
    assert_children_use_k8s_provider(default_run, TOKEN)


def test_deployment(default_run: LayerRun) -> None:
    dep = default_run.one(DEPLOYMENT, "siege-engine").inputs
    assert dep["metadata"]["name"] == "siege-engine"
    assert dep["metadata"]["namespace"] == "infragym"
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8089",
        "prometheus.io/path": "/metrics",
    }
    c = pod_spec(default_run)["containers"][0]
    assert c["name"] == "siege-engine"
    assert c["command"][:3] == ["python", "-m", "infragym.apps.siege_engine"]
    assert c["command"][c["command"].index("--metrics-port") + 1] == "8089"
    assert c["ports"] == [{"name": "http", "containerPort": 8089}]
    assert c["resources"]["requests"]["cpu"] == "250m"
    # Load goes wherever it fits; only the heater is pinned to the workers pool.
    assert "nodeSelector" not in pod_spec(default_run)


def test_env(default_run: LayerRun) -> None:
    e = env(default_run)
    assert Schedule.model_validate_json(e[SIEGE_SCHEDULE_ENV]) == constant(50.0)
    assert e[SIEGE_TARGET_ENV] == HEATER_URL
    assert e["PYTHONPATH"] == "/app:/deps"


def test_schedule_setting_round_trips() -> None:
    schedule = {
        "shape": {"kind": "step", "rates": [10, 80, 20], "step_seconds": 60},
        "duration": 180,
        "arrivals": "uniform",
    }
    run = run_layer("k8s-siege-engine", {"schedule": schedule, "replicas": 2}, UPSTREAM)
    assert Schedule.model_validate_json(env(run)[SIEGE_SCHEDULE_ENV]) == Schedule(**schedule)
    assert run.one(DEPLOYMENT).inputs["spec"]["replicas"] == 2


def test_code_config_map(default_run: LayerRun) -> None:
    cm = default_run.one(CONFIG_MAP, "siege-engine-code").inputs
    assert "infragym.apps.siege_engine.py" in cm["data"]
    assert "infragym.apps.workload.py" in cm["data"]
    assert "infragym.apps._serving.py" in cm["data"]
    volume = next(v for v in pod_spec(default_run)["volumes"] if v["name"] == "code")
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    paths = {i["path"] for i in volume["configMap"]["items"]}
    assert {"infragym/apps/siege_engine.py", "infragym/apps/_serving.py"} <= paths


def test_service_and_output(default_run: LayerRun) -> None:
    svc = default_run.one(SERVICE, "siege-engine").inputs
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 8089, "targetPort": 8089, "protocol": "TCP"}
    ]
    assert default_run.outputs == {
        "siege_metrics_url": "http://siege-engine.infragym.svc.cluster.local:8089/metrics"
    }


def test_needs_heater_url() -> None:
    upstream = {k: v for k, v in UPSTREAM.items() if k != "heater_url"}
    with pytest.raises(ConfigError, match="heater_url"):
        run_layer("k8s-siege-engine", {}, upstream)


def test_twin_reads_the_schedule(default_run: LayerRun) -> None:
    from infragym.twin.builder import workload_from_deployment

    dep = default_run.one(DEPLOYMENT)
    w = workload_from_deployment((DEPLOYMENT, dep.name), dep.inputs)
    assert w.role == "siege"
    assert w.schedule == constant(50.0)


def test_layer_entry() -> None:
    from stacks.registry import get_layer

    layer = get_layer("k8s-siege-engine")
    assert layer.upstream == ("cluster", "k8s-core", "k8s-heater")
    assert layer.outputs == ("siege_metrics_url",)
    assert {DEPLOYMENT, SERVICE, CONFIG_MAP, TOKEN} <= set(layer.resources)
