"""Layer ``do-swarm-manager``: Docker Swarm managers on droplets
(component :class:`components.do.swarm.SwarmManagers`).

The join tokens travel through do-support's Consul KV, not SSH or Spaces; see
:mod:`components.do.swarm` for the protocol and why Consul KV was chosen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from stacks.layers._do_droplets import (
    DROPLET_LAYER_RESOURCES,
    DropletLayerSettings,
    ServerCount,
    network,
)
from stacks.registry import Layer, LayerContext, register
from stacks.validators import DropletSize


class DoSwarmManagerSettings(DropletLayerSettings):
    """Settings of the ``do-swarm-manager`` layer."""

    count: ServerCount = Field(1, description="Swarm managers (odd: 1, 3, 5 or 7).")
    size: DropletSize = Field("s-1vcpu-2gb", description="Manager droplet size.")


def program(ctx: LayerContext) -> Mapping[str, Any]:
    """Build the managers; return their ids, IPs and the KV prefix."""
    import pulumi

    from components.do.swarm import SwarmArgs, SwarmManagers

    s: DoSwarmManagerSettings = ctx.settings
    managers = SwarmManagers(
        "swarm-manager",
        SwarmArgs(
            network=network(ctx),
            droplet=s.droplet(s.size),
            count=s.count,
            consul_servers=ctx.need("consul_servers"),
            kv_prefix=ctx.need("consul_swarm_prefix"),
            consul_token=pulumi.Output.secret(ctx.need("consul_swarm_manager_token")),
        ),
    )
    return {
        "manager_droplet_ids": managers.droplet_ids,
        "swarm_manager_ips": managers.manager_ips,
        "swarm_kv_prefix": managers.kv_prefix,
    }


LAYER = register(
    Layer(
        name="do-swarm-manager",
        description="Docker Swarm managers on droplets; manager 0 initialises the swarm "
        "and publishes the join tokens in do-support's Consul KV.",
        settings=DoSwarmManagerSettings,
        program=program,
        upstream=("do-core", "do-support"),
        outputs=("manager_droplet_ids", "swarm_manager_ips", "swarm_kv_prefix"),
        resources=("infragym:do:SwarmManager", *DROPLET_LAYER_RESOURCES),
    )
)
