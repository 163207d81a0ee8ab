"""The k8s layers deployed for real: the pulumi backend, the real engine, the real
``pulumi-resource-kubernetes`` provider, and the local control plane with KWOK nodes.

One deployment per module (``local-k8s``, ``k8s-core`` without metrics-server, which is a
Helm chart that cannot be fetched here, ``k8s-heater``, ``k8s-siege-engine``,
``k8s-prometheus``); the tests read its objects back from the API server, turn the knobs
through ``apply`` and check what the controllers and the scheduler made of them, and
``close()`` must leave nothing behind.

Pods left Pending by the real scheduler are checked without Pulumi
(``tests/cluster/test_control_plane.py`` and the scheduler agreement): through the
provider, an ``up`` that leaves a Deployment's pods Pending waits for the rollout until
the provider's await timeout (10 minutes), on DOKS as here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infragym import catalog
from infragym.backends.base import Change, LayerSpec
from infragym.cluster import LocalCluster
from infragym.cluster.api import ApiClient, wait_for
from infragym.cluster.node_pools import POOL_LABEL, SIZE_LABEL, _pools_path
from infragym.envs.simple_k8s_web_app import default_knobs
from infragym.knobs import Choice, IntRange, Knob

pytestmark = [pytest.mark.kubernetes, pytest.mark.engine]

DEPLOYMENT = "kt"
NS = "infragym"
NODE_POOL = "kubernetes:infragym.dev/v1:NodePool"
NODE_COUNT = Knob("node_count", "local-k8s", NODE_POOL, "workers", "spec.nodeCount", IntRange(1, 6))
NODE_SIZE = Knob(
    "node_size",
    "local-k8s",
    NODE_POOL,
    "workers",
    "spec.size",
    Choice(("s-2vcpu-4gb", "s-4vcpu-8gb")),
)
HEATER_REPLICAS, HEATER_CPU_LIMIT = default_knobs()[:2]


def layers(cluster: LocalCluster) -> list[LayerSpec]:
    """The deployment: the local cluster and the four k8s layers."""
    return [
        LayerSpec(
            "local-k8s",
            {
                "kubeconfig": cluster.kubeconfig(),
                "node_size": "s-2vcpu-4gb",
                "node_count": 2,
                "ready_after_s": 1,
            },
        ),
        LayerSpec("k8s-core", {"metrics_server": False}),
        LayerSpec("k8s-heater", {}),
        LayerSpec("k8s-siege-engine", {}),
        LayerSpec("k8s-prometheus", {}),
    ]


class Deployed:
    """The module's backend and cluster."""

    def __init__(self, backend, cluster: LocalCluster, k8s: ApiClient, url: str) -> None:
        self.backend, self.cluster, self.k8s, self.url = backend, cluster, k8s, url


@pytest.fixture(scope="module")
def deployed(k8s_engine: Path, local_cluster: LocalCluster, k8s: ApiClient) -> Iterator[Deployed]:
    from infragym.backends.pulumi import PulumiBackend

    url = f"file://{k8s_engine / 'state'}"
    (k8s_engine / "state").mkdir()
    backend = PulumiBackend(DEPLOYMENT, url, step_wait=False, progress=False)
    backend.reset(layers(local_cluster), seed=0)
    try:
        yield Deployed(backend, local_cluster, k8s, url)
    finally:
        backend.close()


def _deployment(k8s: ApiClient, name: str) -> dict:
    d = k8s.request("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/{name}")
    assert d is not None, f"Deployment {name} not found"
    return d


def _pool_nodes(k8s: ApiClient, ready_only: bool = True) -> list[dict]:
    nodes = k8s.list("nodes", selector=f"{POOL_LABEL}={DEPLOYMENT}-workers")
    if not ready_only:
        return nodes
    return [
        n
        for n in nodes
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in n["status"].get("conditions", [])
        )
        and not n["spec"].get("taints")
    ]


def test_objects_read_back_from_the_api_server(deployed: Deployed) -> None:
    k8s = deployed.k8s
    assert k8s.get("namespaces", NS)["status"]["phase"] == "Active"
    heater = _deployment(k8s, "heater")
    spec = heater["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["nodeSelector"] == {POOL_LABEL: f"{DEPLOYMENT}-workers"}
    (container,) = pod["containers"]
    assert container["resources"]["requests"]["cpu"] == "250m"
    assert container["resources"]["limits"]["cpu"] == "500m"
    # The provider awaited the rollout: the replicas are Ready (KWOK's pod stages).
    assert heater["status"]["readyReplicas"] == 2
    for name in ("siege-engine", "prometheus"):
        assert _deployment(k8s, name)["status"].get("readyReplicas", 0) >= 1
    assert k8s.get("services", "heater", NS)["spec"]["ports"][0]["port"] > 0
    # The heater's pods run on the workers pool's nodes.
    workers = {n["metadata"]["name"] for n in _pool_nodes(k8s)}
    assert len(workers) == 2
    pods = k8s.list("pods", NS, selector="app.kubernetes.io/name=heater") or [
        p for p in k8s.list("pods", NS) if p["metadata"]["name"].startswith("heater-")
    ]
    assert pods and {p["spec"]["nodeName"] for p in pods} <= workers
    pool = k8s.request("GET", _pools_path(f"{DEPLOYMENT}-workers"))
    assert pool["spec"] == {"size": "s-2vcpu-4gb", "nodeCount": 2, "readyAfterSeconds": 1}
    # The backend's resource records come from the exported state.
    types = {r.type for r in deployed.backend.resources()}
    assert {NODE_POOL, "kubernetes:apps/v1:Deployment", "kubernetes:core/v1:Namespace"} <= types


def test_replicas_knob(deployed: Deployed) -> None:
    result = deployed.backend.apply([Change(HEATER_REPLICAS, 4)])
    assert result.layers_updated == ("k8s-heater",)
    heater = _deployment(deployed.k8s, "heater")
    assert heater["spec"]["replicas"] == 4
    assert heater["status"]["readyReplicas"] == 4


def test_cpu_limit_knob_rolls_out(deployed: Deployed) -> None:
    k8s = deployed.k8s
    before = _deployment(k8s, "heater")["metadata"]["generation"]
    deployed.backend.apply([Change(HEATER_CPU_LIMIT, "750m")])
    heater = _deployment(k8s, "heater")
    assert heater["metadata"]["generation"] > before
    (c,) = heater["spec"]["template"]["spec"]["containers"]
    assert c["resources"]["limits"]["cpu"] == "750m"
    # A rollout: every Ready pod now has the new limit.
    status = heater["status"]
    assert status["updatedReplicas"] == status["readyReplicas"] == heater["spec"]["replicas"]
    pods = [p for p in k8s.list("pods", NS) if p["metadata"]["name"].startswith("heater-")]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert live and all(
        p["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "750m" for p in live
    )


def test_node_count_and_size_knobs(deployed: Deployed) -> None:
    k8s = deployed.k8s
    deployed.backend.apply([Change(NODE_COUNT, 3)])
    wait_for("3 Ready workers", lambda: len(_pool_nodes(k8s)) == 3, 60)
    deployed.backend.apply([Change(NODE_SIZE, "s-4vcpu-8gb")])

    def replaced() -> bool:
        nodes = _pool_nodes(k8s, ready_only=False)
        return len(nodes) == 3 and all(
            n["metadata"]["labels"][SIZE_LABEL] == "s-4vcpu-8gb" for n in nodes
        )

    wait_for("3 s-4vcpu-8gb workers, the old ones gone", replaced, 90)
    wait_for("3 Ready workers", lambda: len(_pool_nodes(k8s)) == 3, 60)
    node = _pool_nodes(k8s)[0]
    want = round(catalog.size("s-4vcpu-8gb").allocatable_cpu * 1000)
    assert node["status"]["allocatable"]["cpu"] == f"{want}m"  # 4 vCPU less the reserve
    # The heater's pods were recreated on the new nodes by their ReplicaSet.
    names = {n["metadata"]["name"] for n in _pool_nodes(k8s)}

    def heater_on_new_nodes() -> bool:
        pods = [
            p
            for p in k8s.list("pods", NS)
            if p["metadata"]["name"].startswith("heater-")
            and not p["metadata"].get("deletionTimestamp")
        ]
        return bool(pods) and all(p["spec"].get("nodeName") in names for p in pods)

    wait_for("heater pods on the new nodes", heater_on_new_nodes, 120)


def test_close_leaves_nothing_and_stacks_cli(
    deployed: Deployed, k8s_engine: Path, local_cluster: LocalCluster
) -> None:
    from infragym.backends.pulumi import PulumiBackend

    k8s = deployed.k8s
    deployed.backend.close()
    assert k8s.request("GET", _pools_path())["items"] == []
    wait_for("the namespace gone", lambda: k8s.get("namespaces", NS) is None, 120)
    wait_for("the pool's nodes gone", lambda: not _pool_nodes(k8s, ready_only=False), 60)
    for kind in ("clusterroles", "clusterrolebindings"):
        assert not [
            o
            for o in k8s.list(kind)
            if (o["metadata"].get("labels") or {}).get("app.kubernetes.io/part-of") == "infragym"
        ]
    env = {**os.environ}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "infragym.cli", "stacks", *args, "--backend", deployed.url],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=False,
        )

    assert f"{DEPLOYMENT}." not in cli("list").stdout
    # Leftovers of a kept deployment are listed and destroyed by `infragym stacks`.
    kept = PulumiBackend("kept", deployed.url, keep=True, step_wait=False, progress=False)
    kept.reset(layers(local_cluster)[:2], seed=0)
    kept.close()
    assert k8s.request("GET", _pools_path("kept-workers")) is not None
    listed = cli("list")
    assert "kept.local-k8s" in listed.stdout and "kept.k8s-core" in listed.stdout, listed
    destroyed = cli("destroy", "kept", "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert k8s.request("GET", _pools_path("kept-workers")) is None
    assert "kept." not in cli("list").stdout
