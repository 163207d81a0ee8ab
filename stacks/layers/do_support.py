"""Layer ``do-support``: a bastion (the only SSH ingress) and a Consul cluster
(component :mod:`components.do.support`).

Its outputs hand ``do-nomad`` and the swarm layers what they need to use Consul: the
servers' private IPs, the datacenter, the gossip key and one ACL token per consumer
(all secrets), and the Swarm KV prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from stacks.layers._do_droplets import (
    DROPLET_LAYER_RESOURCES,
    SeededDropletLayerSettings,
    ServerCount,
    network,
    secret_seed,
)
from stacks.registry import Layer, LayerContext, register
from stacks.validators import Cidr, DnsLabel, DropletSize

VERSION_PATTERN = r"^(\d+\.\d+\.\d+)?$"


class DoSupportSettings(SeededDropletLayerSettings):
    """Settings of the ``do-support`` layer."""

    bastion_size: DropletSize = Field("s-1vcpu-1gb", description="Bastion droplet size.")
    ssh_cidrs: list[Cidr] = Field(
        default_factory=list,
        description="Sources allowed to SSH to the bastion. Empty (the default) opens "
        "SSH to nobody.",
    )
    consul_count: ServerCount = Field(3, description="Consul servers (odd: 1, 3, 5 or 7).")
    consul_size: DropletSize = Field("s-1vcpu-2gb", description="Consul server size.")
    consul_version: str = Field(
        "", pattern=VERSION_PATTERN, description="Consul package version; empty: latest."
    )
    datacenter: DnsLabel | None = Field(
        None, description="Consul datacenter name; default: the region slug."
    )


def program(ctx: LayerContext) -> Mapping[str, Any]:
    """Build the bastion and Consul; return addresses and (secret) Consul credentials."""
    import pulumi

    from components.do.support import Support, SupportArgs

    s: DoSupportSettings = ctx.settings
    seed, seed_output = secret_seed(ctx, s.secret_seed)
    support = Support(
        "support",
        SupportArgs(
            network=network(ctx),
            bastion=s.droplet(s.bastion_size),
            consul=s.droplet(s.consul_size),
            secret_seed=seed,
            ssh_cidrs=tuple(s.ssh_cidrs),
            consul_count=s.consul_count,
            consul_version=s.consul_version,
            datacenter=s.datacenter,
        ),
    )
    secrets = support.secrets
    tokens = secrets.tokens
    return {
        "bastion_ip": support.bastion_ip,
        "consul_servers": support.consul_servers,
        "consul_http_addr": support.consul_http_addr,
        "consul_datacenter": support.consul_datacenter,
        "consul_version": s.consul_version,
        "consul_gossip_key": pulumi.Output.secret(secrets.gossip_key),
        "consul_management_token": pulumi.Output.secret(secrets.management_token),
        "consul_agent_token": pulumi.Output.secret(tokens["agent"].secret),
        "consul_dns_token": pulumi.Output.secret(tokens["dns"].secret),
        "consul_nomad_token": pulumi.Output.secret(tokens["nomad"].secret),
        "consul_swarm_manager_token": pulumi.Output.secret(tokens["swarm-manager"].secret),
        "consul_swarm_worker_token": pulumi.Output.secret(tokens["swarm-worker"].secret),
        "consul_swarm_prefix": secrets.kv_prefix,
        "support_droplet_ids": support.droplet_ids,
        "secret_seed": seed_output,
    }


LAYER = register(
    Layer(
        name="do-support",
        description="Bastion droplet (the only SSH ingress, from configured CIDRs) and a "
        "Consul server cluster with gossip encryption and ACL tokens derived from a seed.",
        settings=DoSupportSettings,
        program=program,
        upstream=("do-core",),
        outputs=(
            "bastion_ip",
            "consul_servers",
            "consul_http_addr",
            "consul_datacenter",
            "consul_version",
            "consul_gossip_key",
            "consul_management_token",
            "consul_agent_token",
            "consul_dns_token",
            "consul_nomad_token",
            "consul_swarm_manager_token",
            "consul_swarm_worker_token",
            "consul_swarm_prefix",
            "support_droplet_ids",
            "secret_seed",
        ),
        resources=("infragym:do:Support", *DROPLET_LAYER_RESOURCES),
    )
)
