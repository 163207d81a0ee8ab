"""Layer ``do-core``: the deployment's VPC, tag, firewall and DigitalOcean project."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from stacks.registry import Layer, LayerContext, LayerSettings, register
from stacks.validators import Cidr, DropletRegion

# RFC 1918 private ranges: DigitalOcean VPC ranges must lie inside one of them.
_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
# DigitalOcean accepts VPC ranges from /16 (largest) to /28 (smallest); older API docs
# said /24.
_VPC_PREFIXES = range(16, 29)


class DoCoreSettings(LayerSettings):
    """Settings of the ``do-core`` layer."""

    region: DropletRegion = Field(
        "nyc3", description="Datacenter region slug; every DigitalOcean layer uses it."
    )
    vpc_ip_range: Cidr = Field(
        "10.10.0.0/16",
        description="Private (RFC 1918) range of the VPC, /16 to /28; it must not overlap "
        "another VPC of the account.",
    )
    ingress_cidrs: list[Cidr] = Field(
        default_factory=list,
        description="Sources allowed to reach 80/443 on the deployment's droplets and "
        "nodes. Empty (the default) opens no HTTP(S) port to anyone.",
    )
    api_cidrs: list[Cidr] = Field(
        default_factory=list,
        description="Sources allowed to reach a self-managed Kubernetes API on 6443/tcp. "
        "The managed DOKS API is not behind this firewall.",
    )
    project_name: str | None = Field(
        None,
        min_length=1,
        max_length=175,
        description="DigitalOcean project name; default infragym-<deployment>.",
    )
    environment: Literal["Development", "Staging", "Production"] = Field(
        "Development", description="The DigitalOcean project's environment."
    )

    @field_validator("vpc_ip_range")
    @classmethod
    def _private_vpc_range(cls, value: str) -> str:
        net = ipaddress.ip_network(value, strict=False)
        if net.version != 4 or not any(net.subnet_of(p) for p in _RFC1918):
            raise ValueError(
                f"{value!r} is not a private IPv4 range; DigitalOcean VPCs use RFC 1918 "
                "ranges inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16"
            )
        if net.prefixlen not in _VPC_PREFIXES:
            raise ValueError(f"{value!r} is /{net.prefixlen}; a VPC range must be /16 to /28")
        return str(net)


def program(ctx: LayerContext) -> Mapping[str, Any]:
    """Build the core component and return its outputs."""
    from components.do.core import CoreArgs, CoreComponent

    s: DoCoreSettings = ctx.settings
    core = CoreComponent(
        "core",
        CoreArgs(
            deployment=ctx.deployment,
            region=s.region,
            vpc_ip_range=s.vpc_ip_range,
            ingress_cidrs=tuple(s.ingress_cidrs),
            api_cidrs=tuple(s.api_cidrs),
            project_name=s.project_name,
            environment=s.environment,
        ),
    )
    return {
        "region": core.region,
        "vpc_id": core.vpc_id,
        "vpc_ip_range": core.vpc_ip_range,
        "tag": core.tag,
        "project_id": core.project_id,
        "firewall_id": core.firewall_id,
    }


LAYER = register(
    Layer(
        name="do-core",
        description="DigitalOcean VPC, deployment tag, tag-applied firewall and project.",
        settings=DoCoreSettings,
        program=program,
        outputs=("region", "vpc_id", "vpc_ip_range", "tag", "project_id", "firewall_id"),
        resources=(
            "infragym:do:Core",
            "digitalocean:index/vpc:Vpc",
            "digitalocean:index/tag:Tag",
            "digitalocean:index/firewall:Firewall",
            "digitalocean:index/project:Project",
        ),
    )
)
