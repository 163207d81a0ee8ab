"""A DigitalOcean managed Kubernetes (DOKS) cluster with a system pool and a workers pool.

The cluster's built-in ``node_pool`` is a small, fixed *system* pool; the workloads'
capacity lives in a separate ``KubernetesNodePool`` named ``workers``. The split exists
because DOKS nodes cannot be resized in place, and a change to the built-in pool's size
replaces the whole cluster, control plane included. A change to the separate pool's size
replaces only that pool, and Pulumi's default replacement order (create the new pool,
then delete the old) is what DigitalOcean itself advises for resizing.

The logical names ``cluster`` and ``workers`` and their camelCase input paths (``size``,
``nodeCount``, ``autoScale``, ``minNodes``, ``maxNodes``, ``name``) are a contract:
environment knobs and the digital twin address them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_digitalocean as do

from infragym.catalog import DEFAULT_DOKS_VERSION

TYPE_TOKEN = "infragym:do:ManagedK8s"


@dataclass
class ManagedK8sArgs:
    """Inputs of :class:`ManagedK8sComponent`.

    Attributes:
        deployment: Deployment name; the cluster is named ``infragym-<deployment>`` and its
            pools ``<deployment>-system`` and ``<deployment>-workers``.
        region: Region slug (from the core layer's VPC: a cluster must be in its VPC's
            region).
        vpc_id: The VPC the nodes join.
        tag: The deployment tag; nodes carry it, so the core firewall applies to them.
        project_id: DigitalOcean project the cluster is added to; ``None`` leaves it in the
            account's default project.
        version: DOKS version slug (``1.34.1-do.0``).
        system_node_size: Size slug of the built-in system pool.
        system_node_count: Nodes in the system pool.
        node_size: Size slug of the workers pool.
        node_count: Nodes in the workers pool (not sent when ``auto_scale``: DigitalOcean
            would reset the autoscaler's count to it on every update).
        auto_scale: Let the DOKS cluster autoscaler size the workers pool.
        min_nodes: Autoscaler lower bound (used only with ``auto_scale``).
        max_nodes: Autoscaler upper bound (used only with ``auto_scale``).
        ha: Highly available control plane (billed; cannot be turned off once on).
        extra_tags: More tags for the cluster and both pools.
        destroy_associated_resources: Delete the load balancers and volumes that the
            cluster created for Services and PVCs when the cluster is destroyed, so a
            closed environment leaks nothing billable.
    """

    deployment: str
    region: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    tag: pulumi.Input[str]
    project_id: pulumi.Input[str] | None = None
    version: str = DEFAULT_DOKS_VERSION
    system_node_size: str = "s-2vcpu-4gb"
    system_node_count: int = 1
    node_size: str = "s-2vcpu-4gb"
    node_count: int = 2
    auto_scale: bool = False
    min_nodes: int = 1
    max_nodes: int = 4
    ha: bool = False
    extra_tags: Sequence[str] = field(default_factory=tuple)
    destroy_associated_resources: bool = True


class ManagedK8sComponent(pulumi.ComponentResource):
    """A DOKS cluster (system pool built in) plus a separate, resizable workers pool.

    Attributes:
        kubeconfig: Admin kubeconfig of the cluster (secret).
        endpoint: URL of the Kubernetes API.
        cluster_id: DigitalOcean cluster id.
        cluster_urn: DigitalOcean URN of the cluster (``do:kubernetes:<id>``).
        node_pool_id: Id of the workers pool.
        workers_pool_name: DigitalOcean name of the workers pool; DOKS labels its nodes
            ``doks.digitalocean.com/node-pool=<name>``, which workloads can select.
        region: Region slug of the cluster.
    """

    kubeconfig: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    cluster_id: pulumi.Output[str]
    cluster_urn: pulumi.Output[str]
    node_pool_id: pulumi.Output[str]
    workers_pool_name: pulumi.Output[str]
    region: pulumi.Output[str]

    def __init__(
        self, name: str, args: ManagedK8sArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        tags: list[pulumi.Input[str]] = [args.tag, *args.extra_tags]

        cluster = do.KubernetesCluster(
            "cluster",
            name=f"infragym-{args.deployment}",
            region=args.region,
            version=args.version,
            vpc_uuid=args.vpc_id,
            ha=args.ha,
            # Upgrades happen when the settings say so, not in the middle of an episode.
            auto_upgrade=False,
            surge_upgrade=True,
            tags=tags,
            destroy_all_associated_resources=args.destroy_associated_resources,
            node_pool=do.KubernetesClusterNodePoolArgs(
                name=f"{args.deployment}-system",
                size=args.system_node_size,
                node_count=args.system_node_count,
                tags=tags,
            ),
            opts=self.child_opts(),
        )
        workers = do.KubernetesNodePool(
            "workers",
            cluster_id=cluster.id,
            name=f"{args.deployment}-workers",
            size=args.node_size,
            auto_scale=args.auto_scale,
            node_count=None if args.auto_scale else args.node_count,
            min_nodes=args.min_nodes if args.auto_scale else None,
            max_nodes=args.max_nodes if args.auto_scale else None,
            tags=tags,
            opts=self.child_opts(),
        )
        # The provider reports the URN; DigitalOcean's URN scheme is do:kubernetes:<id>,
        # which stands in where it does not (under Pulumi's mocks).
        cluster_urn = pulumi.Output.all(cluster.cluster_urn, cluster.id).apply(
            lambda v: v[0] or f"do:kubernetes:{v[1]}"
        )
        if args.project_id is not None:
            do.ProjectResources(
                "project-resources",
                project=args.project_id,
                resources=[cluster_urn],
                opts=self.child_opts(),
            )

        self.kubeconfig = pulumi.Output.secret(cluster.kube_configs[0].raw_config)
        self.endpoint = cluster.endpoint
        self.cluster_id = cluster.id
        self.cluster_urn = cluster_urn
        self.node_pool_id = workers.id
        self.workers_pool_name = workers.name
        self.region = cluster.region
        self.register_outputs(
            {
                "kubeconfig": self.kubeconfig,
                "endpoint": self.endpoint,
                "cluster_id": self.cluster_id,
                "cluster_urn": self.cluster_urn,
                "node_pool_id": self.node_pool_id,
                "workers_pool_name": self.workers_pool_name,
                "region": self.region,
            }
        )

    def child_opts(self) -> pulumi.ResourceOptions:
        """Options for a child resource: parented to this component."""
        return pulumi.ResourceOptions(parent=self)
