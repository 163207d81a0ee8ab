"""Layer ``do-k8s-minions``: worker droplets joined to the ``do-k8s-control-plane``
cluster (component :mod:`components.do.k8s_minions`).

``count`` and ``size`` are the knobs an agent sizes the cluster with: a new count adds or
removes droplets, a new size resizes them in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from stacks.layers._do_droplets import (
    DROPLET_LAYER_RESOURCES,
    DropletCount,
    DropletLayerSettings,
    network,
)
from stacks.registry import Layer, LayerContext, register
from stacks.validators import DropletSize


class DoK8sMinionsSettings(DropletLayerSettings):
    """Settings of the ``do-k8s-minions`` layer."""

    count: DropletCount = Field(2, description="Number of worker droplets (>= 1).")
    size: DropletSize = Field("s-2vcpu-4gb", description="Worker droplet size slug.")


def program(ctx: LayerContext) -> Mapping[str, Any]:
    """Build the minions and return their ids."""
    import pulumi

    from components.do.k8s_minions import K8sMinions, K8sMinionsArgs

    s: DoK8sMinionsSettings = ctx.settings
    minions = K8sMinions(
        "k8s-minions",
        K8sMinionsArgs(
            network=network(ctx),
            droplet=s.droplet(s.size),
            count=s.count,
            api_private_endpoint=ctx.need("api_private_endpoint"),
            join_token=pulumi.Output.secret(ctx.need("join_token")),
            discovery_hash=ctx.need("discovery_hash"),
            kubernetes_minor=ctx.need("kubernetes_minor"),
        ),
    )
    return {"droplet_ids": minions.droplet_ids, "private_ips": minions.private_ips}


LAYER = register(
    Layer(
        name="do-k8s-minions",
        description="Kubernetes worker droplets (count, size) that kubeadm-join the "
        "do-k8s-control-plane cluster with its derived token; firewall.",
        settings=DoK8sMinionsSettings,
        program=program,
        upstream=("do-core", "do-k8s-control-plane"),
        outputs=("droplet_ids", "private_ips"),
        resources=("infragym:do:K8sMinions", *DROPLET_LAYER_RESOURCES),
    )
)
