"""k8s-prometheus under Pulumi mocks: RBAC, config, Prometheus and kube-state-metrics.

The generated ``prometheus.yml`` is also checked by the real Prometheus when it is
installed: ``promtool check config`` on the whole file (with discovery replaced, since
Debian builds leave Kubernetes discovery out), and a server on loopback that runs the
pod and kube-state-metrics jobs' relabelling on file-discovered targets carrying the
``__meta_kubernetes_*`` labels Kubernetes discovery would set.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from components.k8s.prometheus import KSM_RESOURCES
from infragym.backends.mockrun import LayerRun, run_layer
from infragym.metrics import METRICS
from tests.components.k8s_layers import (
    APP_UPSTREAM,
    CONFIG_MAP,
    DEPLOYMENT,
    SERVICE,
    assert_children_use_k8s_provider,
)

TOKEN = "infragym:k8s:Prometheus"
SA = "kubernetes:core/v1:ServiceAccount"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole"
BINDING = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"


@pytest.fixture(scope="module")
def default_run() -> LayerRun:
    return run_layer("k8s-prometheus", {}, APP_UPSTREAM)


@pytest.fixture(scope="module")
def config(default_run: LayerRun) -> dict:
    cm = default_run.one(CONFIG_MAP, "prometheus-config").inputs
    return yaml.safe_load(cm["data"]["prometheus.yml"])


def job(config: dict, name: str) -> dict:
    return next(j for j in config["scrape_configs"] if j["job_name"] == name)


def series(prefix: str) -> set[str]:
    """Series with ``prefix`` that the named metrics' PromQL reads."""
    return {
        s for m in METRICS.values() if m.promql for s in re.findall(rf"\b({prefix}\w+)", m.promql)
    }


def test_graph(default_run: LayerRun) -> None:
    custom = sorted((r.type, r.name) for r in default_run.resources if r.custom)
    assert custom == sorted(
        [
            (SA, "prometheus"),
            (ROLE, "prometheus"),
            (BINDING, "prometheus"),
            (CONFIG_MAP, "prometheus-config"),
            (DEPLOYMENT, "prometheus"),
            (SERVICE, "prometheus"),
            (SA, "kube-state-metrics"),
            (ROLE, "kube-state-metrics"),
            (BINDING, "kube-state-metrics"),
            (DEPLOYMENT, "kube-state-metrics"),
            (SERVICE, "kube-state-metrics"),
            ("pulumi:providers:kubernetes", "k8s"),
        ]
    )
    assert_children_use_k8s_provider(default_run, TOKEN)


def test_prometheus_rbac(default_run: LayerRun) -> None:
    rules = default_run.one(ROLE, "prometheus").inputs["rules"]
    core = next(r for r in rules if r.get("apiGroups") == [""])
    assert set(core["resources"]) >= {
        "nodes", "nodes/metrics", "nodes/proxy", "services", "endpoints", "pods",
    }  # fmt: skip
    assert set(core["verbs"]) == {"get", "list", "watch"}
    assert any(r.get("resources") == ["endpointslices"] for r in rules)
    for r in rules:
        assert "secrets" not in r.get("resources", [])
        assert set(r["verbs"]) <= {"get", "list", "watch"}
    binding = default_run.one(BINDING, "prometheus").inputs
    role = default_run.one(ROLE, "prometheus").inputs
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "prometheus", "namespace": "infragym"}
    ]
    # Cluster-scoped names carry the namespace, so two deployments never collide.
    assert role["metadata"]["name"] == "infragym-prometheus"


def test_prometheus_deployment(default_run: LayerRun) -> None:
    dep = default_run.one(DEPLOYMENT, "prometheus").inputs
    assert dep["metadata"]["namespace"] == "infragym"
    assert dep["spec"]["replicas"] == 1
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "prometheus"
    (c,) = pod["containers"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", c["image"])
    assert "--config.file=/etc/prometheus/prometheus.yml" in c["args"]
    assert "--storage.tsdb.retention.time=6h" in c["args"]
    assert "--web.enable-lifecycle" in c["args"]
    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    cm = default_run.one(CONFIG_MAP, "prometheus-config").inputs
    assert config_volume["configMap"]["name"] == cm["metadata"]["name"]


def test_prometheus_service_and_outputs(default_run: LayerRun) -> None:
    svc = default_run.one(SERVICE, "prometheus").inputs
    assert svc["spec"]["type"] == "ClusterIP"
    assert [p["port"] for p in svc["spec"]["ports"]] == [9090]
    assert default_run.outputs == {
        "prometheus_url": "http://prometheus.infragym.svc.cluster.local:9090",
        "prometheus_service": "prometheus",
    }


def test_expose_adds_a_load_balancer() -> None:
    run = run_layer("k8s-prometheus", {"expose": True, "retention": "2d"}, APP_UPSTREAM)
    public = run.one(SERVICE, "prometheus-public").inputs
    assert public["spec"]["type"] == "LoadBalancer"
    assert [p["port"] for p in public["spec"]["ports"]] == [9090]
    args = run.one(DEPLOYMENT, "prometheus").inputs["spec"]["template"]["spec"]["containers"][0]
    assert "--storage.tsdb.retention.time=2d" in args["args"]


def test_kube_state_metrics(default_run: LayerRun) -> None:
    dep = default_run.one(DEPLOYMENT, "kube-state-metrics").inputs
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(
        r"registry\.k8s\.io/kube-state-metrics/kube-state-metrics:v2\.\d+\.\d+", c["image"]
    )
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "kube-state-metrics"
    svc = default_run.one(SERVICE, "kube-state-metrics").inputs
    assert {"name": "http-metrics", "port": 8080, "targetPort": "http-metrics"} in svc["spec"][
        "ports"
    ]
    # Every kube_* series the metrics read comes from a watched, readable resource.
    rules = default_run.one(ROLE, "kube-state-metrics").inputs["rules"]
    readable = {res for r in rules for res in r["resources"]}
    for name in series("kube_"):
        kind = name.split("_")[1]  # kube_deployment_spec_replicas -> deployment
        assert f"{kind}s" in KSM_RESOURCES, name
        assert f"{kind}s" in readable, name
    assert set(KSM_RESOURCES) == readable


def test_config_scrape_interval(config: dict) -> None:
    assert config["global"]["scrape_interval"] == "15s"
    run = run_layer("k8s-prometheus", {"scrape_interval": "5s"}, APP_UPSTREAM)
    cm = run.one(CONFIG_MAP).inputs
    assert yaml.safe_load(cm["data"]["prometheus.yml"])["global"]["scrape_interval"] == "5s"
    # New content, new (immutable) ConfigMap, and the Deployment follows it.
    assert cm["metadata"]["name"] != "prometheus-config"
    pod = run.one(DEPLOYMENT, "prometheus").inputs["spec"]["template"]["spec"]
    assert pod["volumes"][0]["configMap"]["name"] == cm["metadata"]["name"]


def test_config_pod_job(config: dict) -> None:
    pods = job(config, "kubernetes-pods")
    (sd,) = pods["kubernetes_sd_configs"]
    assert sd == {"role": "pod", "namespaces": {"names": ["infragym"]}}
    rules = pods["relabel_configs"]
    keep = next(r for r in rules if r.get("action") == "keep")
    assert keep["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
    assert keep["regex"] == "true"
    targets = {r.get("target_label"): r for r in rules}
    assert targets["__metrics_path__"]["source_labels"] == [
        "__meta_kubernetes_pod_annotation_prometheus_io_path"
    ]
    assert (
        "__meta_kubernetes_pod_annotation_prometheus_io_port"
        in (targets["__address__"]["source_labels"])
    )


def test_config_kube_state_metrics_job(config: dict) -> None:
    ksm = job(config, "kube-state-metrics")
    assert ksm["honor_labels"] is True
    keep = ksm["relabel_configs"][0]
    assert keep["action"] == "keep"
    assert keep["regex"] == "kube-state-metrics;http-metrics"


def test_config_cadvisor_job(config: dict) -> None:
    cad = job(config, "kubernetes-cadvisor")
    assert cad["scheme"] == "https"
    assert cad["kubernetes_sd_configs"] == [{"role": "node"}]
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    assert cad["tls_config"]["ca_file"] == f"{sa}/ca.crt"
    assert cad["authorization"]["credentials_file"] == f"{sa}/token"
    replacements = {r.get("target_label"): r.get("replacement") for r in cad["relabel_configs"]}
    assert replacements["__address__"] == "kubernetes.default.svc:443"
    assert replacements["__metrics_path__"] == "/api/v1/nodes/${1}/proxy/metrics/cadvisor"
    # Every container_* series the metrics read survives the keep filter.
    (keep,) = cad["metric_relabel_configs"]
    needed = series("container_")
    assert needed
    for name in needed:
        assert re.fullmatch(keep["regex"], name), name
    assert not re.fullmatch(keep["regex"], "container_network_receive_bytes_total")


def test_config_regexes_compile(config: dict) -> None:
    for j in config["scrape_configs"]:
        for rule in j.get("relabel_configs", []) + j.get("metric_relabel_configs", []):
            if "regex" in rule:
                re.compile(rule["regex"])


def _offline_config(config: dict, tmp_path: Path) -> dict:
    """``config`` with Kubernetes discovery swapped for static targets and the service
    account files for local ones (what promtool can check outside a cluster)."""
    config = json.loads(json.dumps(config))
    for name in ("ca.crt", "token"):
        (tmp_path / name).write_text("x")
    for j in config["scrape_configs"]:
        if j.pop("kubernetes_sd_configs", None) is not None:
            j["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
        if "tls_config" in j:
            j["tls_config"]["ca_file"] = str(tmp_path / "ca.crt")
            j["authorization"]["credentials_file"] = str(tmp_path / "token")
    return config


@pytest.mark.prometheus
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_checks_the_config(config: dict, tmp_path: Path) -> None:
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(_offline_config(config, tmp_path)))
    out = subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


KSM_SAMPLE = 'kube_deployment_spec_replicas{namespace="infragym",deployment="heater"} 2\n'


class _Exporter(BaseHTTPRequestHandler):
    """Serves an app's metrics at /app-metrics and kube-state-metrics' at /metrics."""

    def do_GET(self) -> None:
        body = {
            "/app-metrics": 'heater_requests_total{code="200"} 5\n',
            "/metrics": KSM_SAMPLE,
        }.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write((body or "").encode())

    def log_message(self, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _exporter() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Exporter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)["data"]["result"]


@pytest.mark.prometheus
@pytest.mark.timeout(90)
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed")
def test_relabelling_on_a_real_prometheus(config: dict, tmp_path: Path) -> None:
    """The pod and kube-state-metrics jobs, fed the labels Kubernetes discovery sets."""
    meta = "__meta_kubernetes_"
    ann = f"{meta}pod_annotation_prometheus_io_"
    with _exporter() as exporter_port:
        pod = {
            f"{meta}namespace": "infragym",
            f"{meta}pod_name": "heater-abc",
            f"{meta}pod_phase": "Running",
            f"{meta}pod_container_init": "false",
            f"{meta}pod_label_app_kubernetes_io_name": "heater",
            f"{ann}scrape": "true",
            f"{ann}port": str(exporter_port),
            f"{ann}path": "/app-metrics",
        }
        pod_groups = [
            # Discovery reports the container port; the annotation's port wins.
            {"targets": ["127.0.0.1:8080"], "labels": pod},
            # An init container of the same pod, and a pod without the annotation.
            {"targets": ["127.0.0.1:1"], "labels": {**pod, f"{meta}pod_container_init": "true"}},
            {"targets": ["127.0.0.1:2"], "labels": {**pod, f"{ann}scrape": "false"}},
        ]
        ksm_groups = [
            {
                "targets": [f"127.0.0.1:{exporter_port}"],
                "labels": {
                    f"{meta}namespace": "monitoring",
                    f"{meta}service_name": "kube-state-metrics",
                    f"{meta}endpointslice_port_name": "http-metrics",
                },
            },
            {
                "targets": ["127.0.0.1:3"],
                "labels": {
                    f"{meta}service_name": "kube-state-metrics",
                    f"{meta}endpointslice_port_name": "telemetry",
                },
            },
        ]
        jobs = []
        for name, groups in (("kubernetes-pods", pod_groups), ("kube-state-metrics", ksm_groups)):
            sd_file = tmp_path / f"{name}.json"
            sd_file.write_text(json.dumps(groups))
            j = dict(job(config, name))
            del j["kubernetes_sd_configs"]
            j["file_sd_configs"] = [{"files": [str(sd_file)]}]
            j["scrape_interval"] = "1s"
            jobs.append(j)
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(yaml.safe_dump({"global": config["global"], "scrape_configs": jobs}))
        prom_port = _free_port()
        proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={cfg}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 45
            app = ksm = []
            while time.monotonic() < deadline and not (app and ksm):
                time.sleep(1)
                with contextlib.suppress(OSError):
                    app = _query(prom_port, "heater_requests_total")
                    ksm = _query(prom_port, "kube_deployment_spec_replicas")
            assert app and ksm, "Prometheus scraped nothing within 45 s"
            with urllib.request.urlopen(
                f"http://127.0.0.1:{prom_port}/api/v1/targets", timeout=5
            ) as resp:
                targets = json.load(resp)["data"]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    (series_,) = app
    labels = series_["metric"]
    assert labels["job"] == "kubernetes-pods"
    assert labels["instance"] == f"127.0.0.1:{exporter_port}"
    assert (labels["namespace"], labels["pod"]) == ("infragym", "heater-abc")
    assert labels["app_kubernetes_io_name"] == "heater"
    # honor_labels: the series' own namespace, not the exporter's.
    (ksm_series,) = ksm
    assert ksm_series["metric"]["namespace"] == "infragym"
    assert ksm_series["metric"]["deployment"] == "heater"
    assert len(targets["activeTargets"]) == 2
    assert len(targets["droppedTargets"]) == 3
