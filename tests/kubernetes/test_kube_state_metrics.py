"""The cluster metrics' PromQL (``infragym/metrics.py``) against real series: the real
kube-state-metrics (built by ``scripts/install-kubernetes.sh``) watching the local API
server, scraped by the Debian Prometheus, queried through
:class:`~infragym.prometheus.PrometheusSource`; each value is checked against what the
API server itself says.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from infragym.cluster import LocalCluster, node_ready
from infragym.cluster.api import ApiClient, wait_for
from infragym.cluster.node_pools import POOL_LABEL, _pools_path
from infragym.prometheus import PrometheusSource
from tests.metrics.conftest import prometheus_launcher

pytestmark = [pytest.mark.kubernetes, pytest.mark.prometheus]

NAMES = ("replicas_desired", "replicas_ready", "nodes_ready", "pods_pending")
NS = "ksm-test"


def _pool(name: str, size: str, count: int, ready_after: float) -> dict:
    return {
        "apiVersion": "infragym.dev/v1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {"size": size, "nodeCount": count, "readyAfterSeconds": ready_after},
    }


def _heater(replicas: int, pool: str) -> dict:
    labels = {"app": "heater"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "heater", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {POOL_LABEL: pool},
                    "containers": [
                        {
                            "name": "heater",
                            "image": "registry.invalid/none:0",
                            "resources": {"requests": {"cpu": "400m", "memory": "64Mi"}},
                        }
                    ],
                },
            },
        },
    }


def test_cluster_metrics_from_kube_state_metrics(
    local_cluster: LocalCluster, k8s: ApiClient, tmp_path: Path
) -> None:
    st = local_cluster.status()
    if st.kube_state_metrics_url is None:
        pytest.skip("kube-state-metrics is not built (scripts/install-kubernetes.sh)")
    # One s-1vcpu-2gb worker (940m allocatable: two 400m pods fit, the third is Pending)
    # and one node that stays booting for the whole test.
    k8s.request("POST", _pools_path(), _pool("ksm-workers", "s-1vcpu-2gb", 1, 0))
    k8s.request("POST", _pools_path(), _pool("ksm-booting", "s-1vcpu-2gb", 1, 3600))
    k8s.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    try:
        with prometheus_launcher(tmp_path) as start:
            prom = start({"kube-state-metrics": st.kube_state_metrics_url})
            wait_for("service account", lambda: k8s.get("serviceaccounts", "default", NS), 30)
            k8s.create("deployments", _heater(3, "ksm-workers"), NS)
            prom.wait_targets_up(1, timeout=30)

            def truth() -> dict[str, float]:
                d = k8s.request("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/heater")
                nodes = k8s.list("nodes")
                pods = k8s.list("pods")
                return {
                    "replicas_desired": float(d["spec"]["replicas"]),
                    "replicas_ready": float(d["status"].get("readyReplicas", 0)),
                    "nodes_ready": float(sum(node_ready(n) for n in nodes)),
                    "pods_pending": float(sum(p["status"].get("phase") == "Pending" for p in pods)),
                }

            wait_for(
                "the heater at 2 Ready, 1 Pending",
                lambda: truth()["replicas_ready"] == 2 and truth()["pods_pending"] >= 1,
                60,
            )
            source = PrometheusSource(prom.url, window_seconds=10)
            deadline = time.monotonic() + 30
            while True:
                values, missing = source.instant(NAMES)
                want = truth()
                if not missing and values == want:
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"PromQL gave {values} (missing {missing}); the API says {want}")
                time.sleep(1)
            assert values["replicas_desired"] == 3
            assert values["replicas_ready"] == 2
            assert values["pods_pending"] >= 1
            # The booting node is not counted as Ready.
            booting = k8s.list("nodes", selector=f"{POOL_LABEL}=ksm-booting")
            assert booting and not node_ready(booting[0])
    finally:
        k8s.delete("namespaces", NS)
        k8s.request("DELETE", _pools_path("ksm-workers"))
        k8s.request("DELETE", _pools_path("ksm-booting"))
