"""The do-managed-k8s layer's resource graph under Pulumi mocks."""

from __future__ import annotations

import pytest

from infragym import catalog
from infragym.backends.base import LayerSpec
from infragym.backends.mockrun import FAKE_KUBECONFIG, LayerRun, run_layer, run_layers
from infragym.errors import ConfigError
from stacks.registry import get_layer

COMPONENT = "infragym:do:ManagedK8s"
CLUSTER = "digitalocean:index/kubernetesCluster:KubernetesCluster"
POOL = "digitalocean:index/kubernetesNodePool:KubernetesNodePool"
PROJECT_RESOURCES = "digitalocean:index/projectResources:ProjectResources"

CORE_OUTPUTS = {
    "region": "ams3",
    "vpc_id": "vpc-1234",
    "vpc_ip_range": "10.10.0.0/16",
    "tag": "infragym-dev",
    "project_id": "project-5678",
    "firewall_id": "fw-1",
}


@pytest.fixture(scope="module")
def default_run() -> LayerRun:
    return run_layer("do-managed-k8s", {}, CORE_OUTPUTS, deployment="dev")


def test_declares_the_resources_it_creates(default_run: LayerRun) -> None:
    assert {r.type for r in default_run.resources} == set(get_layer("do-managed-k8s").resources)


def test_children_are_parented_to_the_component(default_run: LayerRun) -> None:
    assert not default_run.one(COMPONENT).custom
    children = [r for r in default_run.resources if r.type != COMPONENT]
    assert {(r.type, r.name) for r in children} == {
        (CLUSTER, "cluster"),
        (POOL, "workers"),
        (PROJECT_RESOURCES, "project-resources"),
    }
    assert all(r.parent_type == COMPONENT for r in children)


def test_cluster_in_the_core_vpc_with_a_small_system_pool(default_run: LayerRun) -> None:
    cluster = default_run.one(CLUSTER, "cluster").inputs
    assert cluster["version"] == catalog.DEFAULT_DOKS_VERSION
    assert cluster["region"] == "ams3"
    assert cluster["vpcUuid"] == "vpc-1234"
    assert cluster["ha"] is False
    assert cluster["autoUpgrade"] is False
    assert "infragym-dev" in cluster["tags"]
    system = cluster["nodePool"]
    assert system["name"] == "dev-system"
    assert system["size"] == "s-2vcpu-4gb"
    assert system["nodeCount"] == 1
    # Nodes carry the deployment tag, so the core firewall applies to them.
    assert "infragym-dev" in system["tags"]


def test_separate_workers_pool(default_run: LayerRun) -> None:
    pool = default_run.one(POOL, "workers").inputs
    assert pool["name"] == "dev-workers"
    assert pool["clusterId"] == "cluster-id"
    assert pool["size"] == "s-2vcpu-4gb"
    assert pool["nodeCount"] == 2
    assert pool["autoScale"] is False
    assert "minNodes" not in pool and "maxNodes" not in pool
    assert "infragym-dev" in pool["tags"]


def test_cluster_joins_the_core_project(default_run: LayerRun) -> None:
    link = default_run.one(PROJECT_RESOURCES).inputs
    assert link["project"] == "project-5678"
    assert link["resources"] == [default_run.outputs["cluster_urn"]]
    assert default_run.outputs["cluster_urn"].startswith("do:kubernetes:")


def test_outputs_and_secret_kubeconfig(default_run: LayerRun) -> None:
    out = default_run.outputs
    assert set(out) == set(get_layer("do-managed-k8s").outputs)
    assert default_run.secret_outputs == frozenset({"kubeconfig"})
    assert out["kubeconfig"] == FAKE_KUBECONFIG
    assert out["endpoint"].startswith("https://")
    assert out["node_pool_id"] == "workers-id"
    assert out["cluster_id"] == "cluster-id"
    assert out["workers_pool_name"] == "dev-workers"
    assert out["region"] == "ams3"


def test_settings_reach_the_resources() -> None:
    run = run_layer(
        "do-managed-k8s",
        {
            "version": catalog.DOKS_VERSIONS[-1],
            "system_node_size": "s-4vcpu-8gb",
            "system_node_count": 2,
            "node_size": "c-4",
            "auto_scale": True,
            "min_nodes": 2,
            "max_nodes": 7,
            "ha": True,
            "tags": ["team:rl"],
        },
        CORE_OUTPUTS,
        deployment="exp",
    )
    cluster = run.one(CLUSTER, "cluster").inputs
    assert cluster["version"] == catalog.DOKS_VERSIONS[-1]
    assert cluster["ha"] is True
    assert cluster["nodePool"]["size"] == "s-4vcpu-8gb"
    assert cluster["nodePool"]["nodeCount"] == 2
    assert cluster["tags"] == ["infragym-dev", "team:rl"]
    pool = run.one(POOL, "workers").inputs
    assert pool["name"] == "exp-workers"
    assert pool["size"] == "c-4"
    assert pool["autoScale"] is True
    assert (pool["minNodes"], pool["maxNodes"]) == (2, 7)
    # With autoscaling on, a count would reset the autoscaler on every update.
    assert "nodeCount" not in pool


def test_runs_on_the_core_layers_outputs() -> None:
    records, runs = run_layers(
        [LayerSpec("do-managed-k8s", {"node_count": 3}), LayerSpec("do-core", {"region": "lon1"})],
        deployment="dev",
    )
    assert [r.layer for r in records][:1] == ["do-core"]
    core = runs["do-core"].outputs
    cluster = runs["do-managed-k8s"].one(CLUSTER, "cluster").inputs
    assert cluster["region"] == "lon1"
    assert cluster["vpcUuid"] == core["vpc_id"]
    assert runs["do-managed-k8s"].one(PROJECT_RESOURCES).inputs["project"] == core["project_id"]
    pools = [r for r in records if r.type == POOL]
    assert [p.inputs["nodeCount"] for p in pools] == [3]


def test_region_without_doks_is_rejected() -> None:
    assert "syd1" in catalog.DROPLET_REGIONS and "syd1" not in catalog.DOKS_REGIONS
    with pytest.raises(ConfigError, match="DOKS region") as err:
        run_layer("do-managed-k8s", {}, {**CORE_OUTPUTS, "region": "syd1"})
    assert "nyc3" in str(err.value)


def test_missing_upstream_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="vpc_id"):
        run_layer("do-managed-k8s", {}, {"region": "nyc3"})
