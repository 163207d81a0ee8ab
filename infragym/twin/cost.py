"""What a resource graph costs per hour, at DigitalOcean's list prices.

Both backends price the same way, from the resource graph (type tokens and inputs), with
the figures in :mod:`infragym.catalog`. Kubernetes nodes are the exception in the twin,
which prices each node over the time it is Ready (DOKS billing starts when a node is
ready), so :func:`static_hourly_cost` can leave node pools out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from infragym import catalog
from infragym.graph import ResourceRecord
from infragym.twin.units import memory_gib

CLUSTER = "digitalocean:index/kubernetesCluster:KubernetesCluster"
NODE_POOL = "digitalocean:index/kubernetesNodePool:KubernetesNodePool"
LOCAL_NODE_POOL = "kubernetes:infragym.dev/v1:NodePool"
"""The local cluster's node pool (``local-k8s``): priced as the DOKS pool it stands for."""
DROPLET = "digitalocean:index/droplet:Droplet"
LOAD_BALANCER = "digitalocean:index/loadBalancer:LoadBalancer"
VOLUME = "digitalocean:index/volume:Volume"
DATABASE = "digitalocean:index/databaseCluster:DatabaseCluster"
SPACES_BUCKET = "digitalocean:index/spacesBucket:SpacesBucket"
K8S_SERVICE = "kubernetes:core/v1:Service"
K8S_PVC = "kubernetes:core/v1:PersistentVolumeClaim"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"

_POSTGRESQL_CHART_VOLUME = "8Gi"
"""The Bitnami ``postgresql`` chart's default ``primary.persistence.size``."""

PER_HOUR = 1.0 / catalog.HOURS_PER_MONTH


def _n(value: Any, default: float = 0.0) -> float:
    return float(value) if value is not None else default


def _pool_nodes_cost(pool: Mapping[str, Any]) -> float:
    count = pool.get("nodeCount") or pool.get("minNodes")  # autoscaled pools: at least min
    return catalog.hourly_price(pool["size"]) * _n(count, 1.0)


def pool_node_count(record: ResourceRecord) -> int | None:
    """The nodes a DOKS node pool asks for (a cluster's default pool included; at least
    ``minNodes`` for an autoscaled one); ``None`` for any other resource."""
    if record.type == CLUSTER:
        pool = record.inputs.get("nodePool") or {}
    elif record.type == NODE_POOL:
        pool = record.inputs
    else:
        return None
    return int(_n(pool.get("nodeCount") or pool.get("minNodes"), 1.0))


def resource_hourly_cost(record: ResourceRecord, *, include_nodes: bool = True) -> float | None:
    """Hourly USD cost of one resource; ``None`` for resources DigitalOcean does not bill."""
    inputs = record.inputs
    t = record.type
    if t == CLUSTER:
        ha = catalog.DOKS_HA_CONTROL_PLANE_MONTHLY_USD * PER_HOUR if inputs.get("ha") else 0.0
        pool = inputs.get("nodePool") or {}
        return ha + (_pool_nodes_cost(pool) if include_nodes and pool.get("size") else 0.0)
    if t == NODE_POOL:
        return _pool_nodes_cost(inputs) if include_nodes else 0.0
    if t == LOCAL_NODE_POOL:
        spec = inputs.get("spec") or {}
        return _pool_nodes_cost(spec) if include_nodes and spec.get("size") else 0.0
    if t == DROPLET:
        return catalog.hourly_price(inputs["size"])
    if t == LOAD_BALANCER:
        return catalog.LOAD_BALANCER_MONTHLY_USD * PER_HOUR * _n(inputs.get("sizeUnit"), 1.0)
    if t == K8S_SERVICE and (inputs.get("spec") or {}).get("type") == "LoadBalancer":
        # The DigitalOcean cloud controller creates a one-node load balancer for it.
        return catalog.LOAD_BALANCER_MONTHLY_USD * PER_HOUR
    if t == VOLUME:
        return catalog.VOLUME_GIB_MONTHLY_USD * PER_HOUR * _n(inputs.get("size"))
    if t == K8S_PVC:
        # On DOKS the CSI driver backs a claim with a block-storage volume of its size.
        requests = ((inputs.get("spec") or {}).get("resources") or {}).get("requests") or {}
        return _volume_cost(requests.get("storage"))
    if t == HELM_RELEASE and inputs.get("chart") == "postgresql":
        # The chart's primary claims a volume (the release's only billed part).
        persistence = ((inputs.get("values") or {}).get("primary") or {}).get("persistence") or {}
        if persistence.get("enabled", True):
            return _volume_cost(persistence.get("size") or _POSTGRESQL_CHART_VOLUME)
        return None
    if t == DATABASE:
        monthly = catalog.DATABASE_MONTHLY_USD.get(inputs.get("size", ""), 0.0)
        return monthly * PER_HOUR * _n(inputs.get("nodeCount"), 1.0)
    if t == SPACES_BUCKET:
        return catalog.SPACES_MONTHLY_USD * PER_HOUR
    return None


def _volume_cost(size: str | float | None) -> float | None:
    gib = memory_gib(size)
    return None if gib is None else catalog.VOLUME_GIB_MONTHLY_USD * PER_HOUR * gib


def hourly_cost(records: Iterable[ResourceRecord], *, include_nodes: bool = True) -> float:
    """Hourly USD cost of a resource graph."""
    return sum(resource_hourly_cost(r, include_nodes=include_nodes) or 0.0 for r in records)
