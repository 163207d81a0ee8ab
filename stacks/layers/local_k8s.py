"""Layer ``local-k8s``: the local cluster of ``infragym cluster up`` in the ``cluster`` role
(component :mod:`components.k8s.local_nodes`).

The control plane itself runs outside Pulumi (``infragym cluster up``, or the tests'
fixture); this layer reads its kubeconfig and declares its node pools, so the k8s layers
run on it exactly as on DOKS: they get ``kubeconfig`` and ``workers_pool_name`` from it.
The worker nodes are Node objects that KWOK simulates (no containers run), sized from
the DOKS size catalogue; ``spec.nodeCount`` and ``spec.size`` of the
``kubernetes:infragym.dev/v1:NodePool`` resource ``workers`` are its knobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, SecretStr

from stacks.layers._k8s import component_opts
from stacks.registry import Layer, LayerContext, LayerSettings, register
from stacks.validators import DoksNodeSize

PoolCount = Annotated[int, Field(ge=0, le=512)]


class LocalK8sSettings(LayerSettings):
    """Settings of ``local-k8s``.

    Attributes:
        cluster_dir: The directory of ``infragym cluster up`` (its ``kubeconfig`` is read).
        kubeconfig: A kubeconfig to use instead of reading ``cluster_dir``.
        node_size: DOKS size slug of the workers pool (capacity and allocatable).
        node_count: Nodes in the workers pool.
        system_node_size: Size of the system pool.
        system_node_count: Nodes in the system pool (0: none).
        ready_after_s: Seconds from a node's creation to Ready. DigitalOcean takes about
            240 s (the twin's ``node_boot_s``); the default keeps tests quick.
    """

    cluster_dir: str = "~/.infragym/cluster"
    kubeconfig: SecretStr | None = None
    node_size: DoksNodeSize = "s-2vcpu-4gb"
    node_count: PoolCount = 2
    system_node_size: DoksNodeSize = "s-2vcpu-4gb"
    system_node_count: PoolCount = 1
    ready_after_s: float = Field(2.0, ge=0, le=3600)


def program(ctx: LayerContext) -> Mapping[str, Any]:
    """Declare the node pools; return the kubeconfig, endpoint and workers pool name.

    Raises:
        ClusterError: No kubeconfig is given and the cluster directory has none.
    """
    import pulumi
    import yaml

    from components.k8s.local_nodes import LocalNodePools, LocalNodePoolsArgs
    from infragym.cluster import LocalCluster

    s: LocalK8sSettings = ctx.settings
    if s.kubeconfig is not None:
        kubeconfig = s.kubeconfig.get_secret_value()
    else:
        kubeconfig = LocalCluster(s.cluster_dir).kubeconfig()
    doc = yaml.safe_load(kubeconfig) or {}
    endpoint = ((doc.get("clusters") or [{}])[0].get("cluster") or {}).get("server", "")
    ctx = LayerContext(ctx.deployment, ctx.settings, {**ctx.upstream, "kubeconfig": kubeconfig})
    pools = LocalNodePools(
        "local-k8s",
        LocalNodePoolsArgs(
            deployment=ctx.deployment,
            node_size=s.node_size,
            node_count=s.node_count,
            system_node_size=s.system_node_size,
            system_node_count=s.system_node_count,
            ready_after_s=s.ready_after_s,
        ),
        opts=component_opts(ctx),
    )
    return {
        "kubeconfig": pulumi.Output.secret(kubeconfig),
        "endpoint": endpoint,
        "workers_pool_name": pools.workers_pool_name,
    }


LAYER = register(
    Layer(
        name="local-k8s",
        description="A local control plane (`infragym cluster up`) as the cluster: node "
        "pools of KWOK-simulated Nodes sized from the DOKS catalogue",
        settings=LocalK8sSettings,
        program=program,
        provides=("cluster",),
        outputs=("kubeconfig", "endpoint", "workers_pool_name"),
        resources=(
            "infragym:k8s:LocalNodePools",
            "kubernetes:infragym.dev/v1:NodePool",
        ),
    )
)
