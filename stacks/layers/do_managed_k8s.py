"""Layer ``do-managed-k8s``: a DOKS cluster (system pool) and a separate workers pool."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, model_validator

from infragym import catalog
from infragym.errors import ConfigError
from stacks.registry import Layer, LayerContext, LayerSettings, register
from stacks.validators import DoksNodeSize, DoksVersion

MAX_NODES_PER_CLUSTER = 512
"""DOKS limit: up to 512 nodes per cluster (do-facts §3, DOC-K8S-LIMITS)."""

NodeCount = Annotated[int, Field(ge=1, le=MAX_NODES_PER_CLUSTER)]
DoTag = Annotated[str, Field(pattern=r"^[A-Za-z0-9:_-]{1,255}$")]
"""A DigitalOcean tag name: letters, digits, colons, dashes and underscores."""


class DoManagedK8sSettings(LayerSettings):
    """Settings of the ``do-managed-k8s`` layer."""

    version: DoksVersion = Field(
        catalog.DEFAULT_DOKS_VERSION, description="DOKS version slug, e.g. 1.34.1-do.0."
    )
    system_node_size: DoksNodeSize = Field(
        "s-2vcpu-4gb",
        description="Size of the cluster's built-in system pool (changing it replaces the "
        "cluster).",
    )
    system_node_count: NodeCount = Field(1, description="Nodes in the system pool.")
    node_size: DoksNodeSize = Field(
        "s-2vcpu-4gb",
        description="Size of the workers pool (changing it replaces only that pool).",
    )
    node_count: NodeCount = Field(
        2, description="Nodes in the workers pool (ignored when auto_scale is on)."
    )
    auto_scale: bool = Field(False, description="Let the DOKS autoscaler size the workers pool.")
    min_nodes: NodeCount = Field(1, description="Autoscaler minimum (with auto_scale).")
    max_nodes: NodeCount = Field(
        4,
        description="Autoscaler maximum (with auto_scale); the account's Droplet limit "
        "(25 by default) bounds it in practice.",
    )
    ha: bool = Field(
        False, description="Highly available control plane ($40/month; cannot be undone)."
    )
    tags: list[DoTag] = Field(
        default_factory=list, description="Extra tags for the cluster and its pools."
    )
    destroy_associated_resources: bool = Field(
        True,
        description="On destroy, also delete the load balancers and volumes the cluster "
        "created, so nothing billable is left behind.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> DoManagedK8sSettings:
        if self.min_nodes > self.max_nodes:
            raise ValueError(
                f"min_nodes ({self.min_nodes}) is greater than max_nodes ({self.max_nodes})"
            )
        workers = self.max_nodes if self.auto_scale else self.node_count
        if self.system_node_count + workers > MAX_NODES_PER_CLUSTER:
            raise ValueError(
                f"system_node_count + {'max_nodes' if self.auto_scale else 'node_count'} = "
                f"{self.system_node_count + workers} nodes; a DOKS cluster has at most "
                f"{MAX_NODES_PER_CLUSTER}"
            )
        return self


def program(ctx: LayerContext) -> Mapping[str, Any]:
    """Build the cluster and workers pool in the core layer's VPC; return their outputs."""
    from components.do.managed_k8s import ManagedK8sArgs, ManagedK8sComponent

    s: DoManagedK8sSettings = ctx.settings
    region = ctx.need("region")
    # Known only as an Output on the CLI path; checked when it is a plain value.
    if isinstance(region, str) and region not in catalog.DOKS_REGIONS:
        raise ConfigError(
            f"layer 'do-managed-k8s': the core layer's region {region!r} does not offer "
            f"DOKS. {catalog.unknown_choice('DOKS region', region, catalog.DOKS_REGIONS)}"
        )
    k8s = ManagedK8sComponent(
        "managed-k8s",
        ManagedK8sArgs(
            deployment=ctx.deployment,
            region=region,
            vpc_id=ctx.need("vpc_id"),
            tag=ctx.need("tag"),
            project_id=ctx.upstream.get("project_id"),
            version=s.version,
            system_node_size=s.system_node_size,
            system_node_count=s.system_node_count,
            node_size=s.node_size,
            node_count=s.node_count,
            auto_scale=s.auto_scale,
            min_nodes=s.min_nodes,
            max_nodes=s.max_nodes,
            ha=s.ha,
            extra_tags=tuple(s.tags),
            destroy_associated_resources=s.destroy_associated_resources,
        ),
    )
    return {
        "kubeconfig": k8s.kubeconfig,
        "endpoint": k8s.endpoint,
        "cluster_id": k8s.cluster_id,
        "cluster_urn": k8s.cluster_urn,
        "node_pool_id": k8s.node_pool_id,
        "workers_pool_name": k8s.workers_pool_name,
        "region": k8s.region,
    }


LAYER = register(
    Layer(
        name="do-managed-k8s",
        description="DigitalOcean managed Kubernetes: a small system pool and a resizable "
        "workers pool.",
        settings=DoManagedK8sSettings,
        program=program,
        upstream=("do-core",),
        provides=("cluster",),
        outputs=(
            "kubeconfig",
            "endpoint",
            "cluster_id",
            "cluster_urn",
            "node_pool_id",
            "workers_pool_name",
            "region",
        ),
        resources=(
            "infragym:do:ManagedK8s",
            "digitalocean:index/kubernetesCluster:KubernetesCluster",
            "digitalocean:index/kubernetesNodePool:KubernetesNodePool",
            "digitalocean:index/projectResources:ProjectResources",
        ),
    )
)
