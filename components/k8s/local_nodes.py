"""k8s/local_nodes: the node pools of a local cluster (``infragym cluster up``).

DOKS turns a node pool into droplets that register as Nodes; on the local cluster a
``NodePool`` custom resource (``infragym.dev/v1``, see
:mod:`infragym.cluster.node_pools`) plays that part: its controller keeps ``nodeCount``
Node objects of the pool's DOKS size, which KWOK makes Ready after ``readyAfterSeconds``.
Like ``do-managed-k8s``, there is a small ``system`` pool and a resizable ``workers``
pool, whose nodes carry the label ``doks.digitalocean.com/node-pool: <pool name>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.k8s._common import PART_OF, child_opts

NODE_POOL_API_VERSION = "infragym.dev/v1"
NODE_POOL_KIND = "NodePool"
NODE_POOL_TYPE = f"kubernetes:{NODE_POOL_API_VERSION}:{NODE_POOL_KIND}"
"""The Pulumi type token of a local node pool (a CustomResource)."""


@dataclass
class LocalNodePoolsArgs:
    """Arguments of :class:`LocalNodePools`.

    Attributes:
        deployment: Names the pools ``<deployment>-system`` and ``<deployment>-workers``.
        node_size: DOKS size slug of the workers pool.
        node_count: Nodes in the workers pool.
        system_node_size: Size of the system pool.
        system_node_count: Nodes in the system pool (0: none).
        ready_after_s: Seconds from a node's creation to Ready (the twin's
            ``node_boot_s`` is DigitalOcean's figure).
    """

    deployment: str
    node_size: str = "s-2vcpu-4gb"
    node_count: int = 2
    system_node_size: str = "s-2vcpu-4gb"
    system_node_count: int = 1
    ready_after_s: float = 5.0


class LocalNodePools(pulumi.ComponentResource):
    """A ``system`` and a ``workers`` NodePool (logical names ``system`` and ``workers``).

    Attributes:
        workers_pool_name: The workers pool's name (its nodes' pool label).
    """

    workers_pool_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: LocalNodePoolsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("infragym:k8s:LocalNodePools", name, None, opts)

        def pool(logical: str, size: str, count: int) -> k8s.apiextensions.CustomResource:
            return k8s.apiextensions.CustomResource(
                logical,
                api_version=NODE_POOL_API_VERSION,
                kind=NODE_POOL_KIND,
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=f"{args.deployment}-{logical}",
                    labels={"app.kubernetes.io/part-of": PART_OF},
                ),
                spec={
                    "size": size,
                    "nodeCount": count,
                    "readyAfterSeconds": args.ready_after_s,
                },
                opts=child_opts(self),
            )

        if args.system_node_count > 0:
            pool("system", args.system_node_size, args.system_node_count)
        workers = pool("workers", args.node_size, args.node_count)
        workers_name = f"{args.deployment}-workers"
        self.workers_pool_name = workers.id.apply(lambda _: workers_name)
        self.register_outputs({"workers_pool_name": self.workers_pool_name})
