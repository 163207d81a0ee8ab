"""Layer ``do-nomad``: Nomad servers and clients on droplets, joined through do-support's
Consul (component :mod:`components.do.nomad`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from stacks.layers._do_droplets import (
    DROPLET_LAYER_RESOURCES,
    DropletCount,
    SeededDropletLayerSettings,
    ServerCount,
    network,
    secret_seed,
)
from stacks.layers.do_support import VERSION_PATTERN
from stacks.registry import Layer, LayerContext, register
from stacks.validators import DropletSize


class DoNomadSettings(SeededDropletLayerSettings):
    """Settings of the ``do-nomad`` layer."""

    server_count: ServerCount = Field(1, description="Nomad servers (odd: 1, 3, 5 or 7).")
    server_size: DropletSize = Field("s-1vcpu-2gb", description="Nomad server size.")
    client_count: DropletCount = Field(2, description="Nomad clients (>= 1).")
    client_size: DropletSize = Field("s-2vcpu-4gb", description="Nomad client size.")
    nomad_version: str = Field(
        "", pattern=VERSION_PATTERN, description="Nomad package version; empty: latest."
    )


def program(ctx: LayerContext) -> Mapping[str, Any]:
    """Build the Nomad cluster; return its address, token and droplet ids."""
    import pulumi

    from components.do.nomad import ConsulAccess, Nomad, NomadArgs

    s: DoNomadSettings = ctx.settings
    seed, seed_output = secret_seed(ctx, s.secret_seed)
    nomad = Nomad(
        "nomad",
        NomadArgs(
            network=network(ctx),
            server=s.droplet(s.server_size),
            client=s.droplet(s.client_size),
            consul=ConsulAccess(
                servers=ctx.need("consul_servers"),
                datacenter=ctx.need("consul_datacenter"),
                gossip_key=pulumi.Output.secret(ctx.need("consul_gossip_key")),
                agent_token=pulumi.Output.secret(ctx.need("consul_agent_token")),
                dns_token=pulumi.Output.secret(ctx.need("consul_dns_token")),
                nomad_token=pulumi.Output.secret(ctx.need("consul_nomad_token")),
                version=ctx.upstream.get("consul_version") or "",
            ),
            secret_seed=seed,
            server_count=s.server_count,
            client_count=s.client_count,
            nomad_version=s.nomad_version,
        ),
    )
    return {
        "nomad_addr": nomad.nomad_addr,
        "nomad_token": nomad.nomad_token,
        "nomad_server_ips": nomad.server_ips,
        "server_droplet_ids": nomad.server_droplet_ids,
        "client_droplet_ids": nomad.client_droplet_ids,
        "secret_seed": seed_output,
    }


LAYER = register(
    Layer(
        name="do-nomad",
        description="Nomad servers and Docker clients on droplets, joined through the "
        "do-support Consul (server/client auto-join), ACLs bootstrapped with a derived token.",
        settings=DoNomadSettings,
        program=program,
        upstream=("do-core", "do-support"),
        outputs=(
            "nomad_addr",
            "nomad_token",
            "nomad_server_ips",
            "server_droplet_ids",
            "client_droplet_ids",
            "secret_seed",
        ),
        resources=("infragym:do:Nomad", *DROPLET_LAYER_RESOURCES),
    )
)
