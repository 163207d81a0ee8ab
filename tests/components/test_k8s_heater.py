"""k8s-heater under Pulumi mocks: Deployment, Service, code ConfigMap and optional HPA."""

from __future__ import annotations

import json

import pytest

from infragym.apps.workload import HEATER_DB_DSN_ENV, HEATER_WORK_ENV, CpuWork
from infragym.backends.mockrun import LayerRun, RecordedResource, run_layer
from infragym.errors import ConfigError
from infragym.knobs import get_path
from tests.components.k8s_layers import (
    APP_UPSTREAM,
    CLUSTER_UPSTREAM,
    CONFIG_MAP,
    DEPLOYMENT,
    SERVICE,
    assert_children_use_k8s_provider,
)

TOKEN = "infragym:k8s:Heater"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
SECRET = "kubernetes:core/v1:Secret"
UPSTREAM = {**APP_UPSTREAM, "workers_pool_name": "dev-workers"}
DSN = "postgresql://infragym:s3cret-pa55word@postgresql.infragym.svc.cluster.local:5432/infragym"
DB_SETTINGS = {"database": True, "work": {"db_query": "SELECT 1"}}
DB_ENV = {
    "name": HEATER_DB_DSN_ENV,
    "valueFrom": {"secretKeyRef": {"name": "heater-db", "key": "dsn"}},
}


def container(dep: RecordedResource, i: int = 0) -> dict:
    return dep.inputs["spec"]["template"]["spec"]["containers"][i]


def env(c: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c["env"]}


@pytest.fixture(scope="module")
def default_run() -> LayerRun:
    return run_layer("k8s-heater", {}, UPSTREAM)


def test_graph(default_run: LayerRun) -> None:
    custom = sorted((r.type, r.name) for r in default_run.resources if r.custom)
    assert custom == [
        (DEPLOYMENT, "heater"),
        (CONFIG_MAP, "heater-code"),
        (SERVICE, "heater"),
        ("pulumi:providers:kubernetes", "k8s"),
    ]
    assert_children_use_k8s_provider(default_run, TOKEN)


def test_deployment(default_run: LayerRun) -> None:
    dep = default_run.one(DEPLOYMENT, "heater")
    meta = dep.inputs["metadata"]
    assert meta["name"] == "heater"
    assert meta["namespace"] == "infragym"
    assert meta["labels"] == {
        "app.kubernetes.io/name": "heater",
        "app.kubernetes.io/part-of": "infragym",
    }
    spec = dep.inputs["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"] == meta["labels"]
    assert spec["template"]["metadata"]["labels"] == meta["labels"]
    assert spec["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }


def test_container(default_run: LayerRun) -> None:
    dep = default_run.one(DEPLOYMENT, "heater")
    c = container(dep)
    assert c["name"] == "heater"
    assert c["image"] == "python:3.11-slim"
    assert c["command"] == ["python", "-m", "infragym.apps.heater", "--port", "8080"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    # Knob paths address these in camelCase.
    path = "spec.template.spec.containers[0].resources"
    assert get_path(dep.inputs, f"{path}.requests.cpu") == "250m"
    assert get_path(dep.inputs, f"{path}.limits.cpu") == "500m"
    assert get_path(dep.inputs, f"{path}.requests.memory") == "128Mi"
    assert get_path(dep.inputs, f"{path}.limits.memory") == "256Mi"
    e = env(c)
    assert CpuWork.model_validate_json(e[HEATER_WORK_ENV]) == CpuWork()
    assert e["PYTHONPATH"] == "/app:/deps"


def test_work_setting_round_trips() -> None:
    work = {"mean_ms": 35.0, "distribution": "lognormal", "cv": 0.5, "workers": 2}
    run = run_layer("k8s-heater", {"work": work}, UPSTREAM)
    c = container(run.one(DEPLOYMENT, "heater"))
    assert CpuWork.model_validate_json(env(c)[HEATER_WORK_ENV]) == CpuWork(**work)


def test_code_from_config_map(default_run: LayerRun) -> None:
    cm = default_run.one(CONFIG_MAP, "heater-code").inputs
    assert cm["immutable"] is True
    data = cm["data"]
    assert data["infragym.__init__.py"] == "" == data["infragym.apps.__init__.py"]
    assert "def main" in data["infragym.apps.heater.py"]
    assert "class CpuWork" in data["infragym.apps.workload.py"]
    assert "def add_probe_routes" in data["infragym.apps._serving.py"]
    pod = default_run.one(DEPLOYMENT).inputs["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    code = volumes["code"]["configMap"]
    assert code["name"] == cm["metadata"]["name"]
    assert cm["metadata"]["name"].startswith("heater-code-")
    assert {i["key"]: i["path"] for i in code["items"]} == {
        "infragym.__init__.py": "infragym/__init__.py",
        "infragym.apps.__init__.py": "infragym/apps/__init__.py",
        "infragym.apps.heater.py": "infragym/apps/heater.py",
        "infragym.apps._serving.py": "infragym/apps/_serving.py",
        "infragym.apps.workload.py": "infragym/apps/workload.py",
    }
    assert "emptyDir" in volumes["deps"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts == {"code": "/app", "deps": "/deps"}
    (init,) = pod["initContainers"]
    assert init["image"] == "python:3.11-slim"
    assert init["command"][:2] == ["pip", "install"]
    assert init["command"][init["command"].index("--target") + 1] == "/deps"
    installed = " ".join(init["command"])
    for dep in ("aiohttp", "prometheus-client", "pydantic"):
        assert dep in installed
    # The init container does not raise the pod's effective requests.
    assert init["resources"] == pod["containers"][0]["resources"]


def test_mounted_package_imports(default_run: LayerRun, tmp_path) -> None:
    """The files as mounted form an importable package: the app and what it imports."""
    import subprocess
    import sys

    cm = default_run.one(CONFIG_MAP, "heater-code").inputs
    code = default_run.one(DEPLOYMENT).inputs["spec"]["template"]["spec"]["volumes"][0]
    for item in code["configMap"]["items"]:
        target = tmp_path / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(cm["data"][item["key"]])
    modules = ("infragym.apps.workload", "infragym.apps._serving", "infragym.apps.heater")
    script = "import importlib\n"
    script += "".join(f"print(importlib.import_module({m!r}).__file__)\n" for m in modules)
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    files = out.stdout.split()
    assert len(files) == len(modules)
    assert all(f.startswith(str(tmp_path)) for f in files), files


def test_node_selector_only_with_pool(default_run: LayerRun) -> None:
    pod = default_run.one(DEPLOYMENT).inputs["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"doks.digitalocean.com/node-pool": "dev-workers"}
    upstream = {k: v for k, v in UPSTREAM.items() if k != "workers_pool_name"}
    run = run_layer("k8s-heater", {}, upstream)
    assert "nodeSelector" not in run.one(DEPLOYMENT).inputs["spec"]["template"]["spec"]


def test_service(default_run: LayerRun) -> None:
    svc = default_run.one(SERVICE, "heater").inputs
    assert svc["metadata"]["name"] == "heater"
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
    ]
    assert svc["spec"]["selector"] == default_run.one(DEPLOYMENT).inputs["metadata"]["labels"]
    run = run_layer("k8s-heater", {"service_type": "LoadBalancer"}, UPSTREAM)
    assert run.one(SERVICE).inputs["spec"]["type"] == "LoadBalancer"


def test_outputs(default_run: LayerRun) -> None:
    assert default_run.outputs == {
        "heater_url": "http://heater.infragym.svc.cluster.local",
        "namespace": "infragym",
    }
    assert default_run.secret_outputs == frozenset()


def test_no_hpa_by_default(default_run: LayerRun) -> None:
    assert default_run.by_type(HPA) == []


def test_hpa() -> None:
    hpa_settings = {"min_replicas": 2, "max_replicas": 8, "target_cpu_utilization": 60}
    run = run_layer("k8s-heater", {"hpa": hpa_settings, "replicas": 3}, UPSTREAM)
    assert_children_use_k8s_provider(run, TOKEN)
    hpa = run.one(HPA, "heater").inputs
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "heater",
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 8)
    assert spec["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 60},
            },
        }
    ]
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert run.one(DEPLOYMENT).inputs["spec"]["replicas"] == 3


def test_hpa_default_target() -> None:
    run = run_layer("k8s-heater", {"hpa": {"max_replicas": 5}}, UPSTREAM)
    metric = run.one(HPA).inputs["spec"]["metrics"][0]
    assert metric["resource"]["target"]["averageUtilization"] == 70


def test_needs_namespace() -> None:
    with pytest.raises(ConfigError, match="namespace"):
        run_layer("k8s-heater", {}, CLUSTER_UPSTREAM)


def test_missing_app_module_is_a_clear_error(monkeypatch) -> None:
    from components.k8s import _common
    from infragym.errors import InfraGymError

    monkeypatch.setattr(_common, "_modules", lambda app: ("no_such_app", "workload"))
    with pytest.raises(InfraGymError, match=r"infragym/apps/no_such_app\.py"):
        _common.app_sources("heater")


def test_graph_is_json_plain(default_run: LayerRun) -> None:
    """The twin stores the inputs; they must be plain JSON."""
    for r in default_run.resources:
        json.dumps(r.inputs)


def test_layer_entry() -> None:
    from stacks.registry import get_layer

    layer = get_layer("k8s-heater")
    assert layer.upstream == ("cluster", "k8s-core")
    assert layer.optional_upstream == ("k8s-postgresql",)
    assert set(layer.outputs) == {"heater_url", "namespace"}
    assert {DEPLOYMENT, SERVICE, CONFIG_MAP, HPA, SECRET, TOKEN} <= set(layer.resources)


# -- database ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def db_run() -> LayerRun:
    """The heater with ``database: true``; the DSN arrives plain, as mock runs pass it."""
    return run_layer("k8s-heater", DB_SETTINGS, {**UPSTREAM, "postgresql_dsn": DSN})


def test_database_secret_holds_the_dsn_as_a_secret(db_run: LayerRun) -> None:
    assert_children_use_k8s_provider(db_run, TOKEN)
    secret = db_run.one(SECRET, "heater-db")
    assert secret.inputs["metadata"]["name"] == "heater-db"
    assert secret.inputs["metadata"]["namespace"] == "infragym"
    assert secret.inputs["stringData"] == {"dsn": DSN}
    assert "stringData" in secret.secret_inputs


def test_database_dsn_reaches_the_container_only_by_reference(db_run: LayerRun) -> None:
    pod = db_run.one(DEPLOYMENT, "heater").inputs["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert DB_ENV in c["env"]
    assert all(DSN not in e.get("value", "") for e in c["env"])
    assert DSN not in json.dumps(pod)
    for r in db_run.resources:
        plain = {k: v for k, v in r.inputs.items() if k not in r.secret_inputs}
        assert DSN not in json.dumps(plain), (r.type, r.name)
    # The heater needs psycopg for work.db_query.
    assert any(arg.startswith("psycopg[binary]") for arg in pod["initContainers"][0]["command"])
    assert db_run.secret_outputs == frozenset()


def test_no_database_no_secret(default_run: LayerRun) -> None:
    assert default_run.by_type(SECRET) == []
    c = container(default_run.one(DEPLOYMENT))
    assert all(e["name"] != HEATER_DB_DSN_ENV for e in c["env"])
    init = default_run.one(DEPLOYMENT).inputs["spec"]["template"]["spec"]["initContainers"][0]
    assert all(not a.startswith("psycopg") for a in init["command"])


def test_present_database_unused_without_the_setting() -> None:
    """k8s-postgresql in the deployment is not enough: the heater uses it on request."""
    run = run_layer("k8s-heater", {}, {**UPSTREAM, "postgresql_dsn": DSN})
    assert run.by_type(SECRET) == []
    assert DSN not in json.dumps([r.inputs for r in run.resources])


def test_database_without_the_postgresql_layer_names_the_missing_output() -> None:
    with pytest.raises(ConfigError, match=r"needs the upstream output 'postgresql_dsn'"):
        run_layer("k8s-heater", DB_SETTINGS, UPSTREAM)


def test_twin_reads_the_deployment() -> None:
    """The digital twin's reading of the graph agrees with the settings."""
    from infragym.twin.builder import autoscaler_from_hpa, workload_from_deployment

    settings = {"replicas": 3, "cpu_request": "300m", "hpa": {"max_replicas": 6}}
    run = run_layer("k8s-heater", settings, UPSTREAM)
    dep = run.one(DEPLOYMENT)
    w = workload_from_deployment((DEPLOYMENT, dep.name), dep.inputs)
    assert (w.name, w.role, w.replicas) == ("heater", "heater", 3)
    assert w.cpu_request == pytest.approx(0.3)
    assert w.cpu_limit == pytest.approx(0.5)
    assert w.work == CpuWork()
    assert w.node_selector == {"doks.digitalocean.com/node-pool": "dev-workers"}
    hpa = run.one(HPA)
    a = autoscaler_from_hpa((HPA, hpa.name), hpa.inputs, {"heater": w}, default_window_s=0.0)
    assert a is not None
    assert (a.min_replicas, a.max_replicas) == (1, 6)
    assert a.target_utilisation == pytest.approx(0.7)
    assert a.scale_down_window_s == 300
