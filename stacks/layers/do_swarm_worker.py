"""Layer ``do-swarm-worker``: Docker Swarm workers on droplets
(component :class:`components.do.swarm.SwarmWorkers`).

Workers read the worker join token and the manager list from do-support's Consul KV
with a read-only token (see :mod:`components.do.swarm`).
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


class DoSwarmWorkerSettings(DropletLayerSettings):
    """Settings of the ``do-swarm-worker`` layer."""

    count: DropletCount = Field(2, description="Swarm workers (>= 1).")
    size: DropletSize = Field("s-2vcpu-4gb", description="Worker droplet size.")


def program(ctx: LayerContext) -> Mapping[str, Any]:
    """Build the workers; return their ids."""
    import pulumi

    from components.do.swarm import SwarmArgs, SwarmWorkers

    s: DoSwarmWorkerSettings = ctx.settings
    workers = SwarmWorkers(
        "swarm-worker",
        SwarmArgs(
            network=network(ctx),
            droplet=s.droplet(s.size),
            count=s.count,
            consul_servers=ctx.need("consul_servers"),
            kv_prefix=ctx.need("swarm_kv_prefix"),
            consul_token=pulumi.Output.secret(ctx.need("consul_swarm_worker_token")),
        ),
    )
    return {"worker_droplet_ids": workers.droplet_ids}


LAYER = register(
    Layer(
        name="do-swarm-worker",
        description="Docker Swarm workers on droplets, joining with the worker token read "
        "from do-support's Consul KV.",
        settings=DoSwarmWorkerSettings,
        program=program,
        upstream=("do-core", "do-support", "do-swarm-manager"),
        outputs=("worker_droplet_ids",),
        resources=("infragym:do:SwarmWorker", *DROPLET_LAYER_RESOURCES),
    )
)
