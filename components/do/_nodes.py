"""What the droplet-based components share: network inputs, droplets, tags, firewalls.

Every droplet joins the ``do-core`` VPC and carries two tags: the deployment tag from
``do-core`` (its firewall and cost grouping) and a *role tag* created by the layer. Each
layer's own firewall is applied by its role tag, so a node added by scaling up is covered
the moment it boots, and lists exactly the ports its system documents as required, open
only to the VPC range. DigitalOcean cloud firewalls filter the VPC interface as well as
the public one, and are additive: a droplet's allowed traffic is the union of the rules
of every firewall that applies to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_digitalocean as do

ALL_PORTS = "1-65535"
WORLD = ("0.0.0.0/0", "::/0")
DEFAULT_IMAGE = "ubuntu-24-04-x64"
"""Ubuntu 24.04 LTS: the bootstrap scripts use its packages (containerd, docker.io)."""

SSH = ("tcp", "22")
"""SSH, opened from the VPC range only: the bastion (``do-support``) is the only SSH
ingress from outside."""


@dataclass
class Network:
    """Where the droplets go: the upstream ``do-core`` outputs.

    Attributes:
        deployment: Deployment name; droplets are named ``infragym-<deployment>-...``.
        region: Region slug of the VPC.
        vpc_id: VPC id (the droplets' ``vpc_uuid``).
        vpc_ip_range: CIDR of the VPC; the only source the layer firewalls admit.
        tag: The deployment tag every droplet carries.
        project_id: DigitalOcean project the droplets are added to (``None``: none).
    """

    deployment: str
    region: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    vpc_ip_range: pulumi.Input[str]
    tag: pulumi.Input[str]
    project_id: pulumi.Input[str] | None = None


@dataclass
class DropletSpec:
    """Size and access of a group of droplets.

    Attributes:
        size: Droplet size slug.
        image: Image slug.
        ssh_keys: DigitalOcean SSH key ids or fingerprints installed for root.
        monitoring: Install the DigitalOcean metrics agent (free; droplet graphs).
    """

    size: str
    image: str = DEFAULT_IMAGE
    ssh_keys: Sequence[str] = field(default_factory=tuple)
    monitoring: bool = True


def base_name(deployment: str) -> str:
    """``infragym-<deployment>``, the prefix of every cloud resource name (as do-core)."""
    return f"infragym-{deployment}"


def role_tag(parent: pulumi.Resource, net: Network, role: str) -> do.Tag:
    """The tag of one role (``infragym-dev-k8s-minion``), logical name ``<role>-tag``."""
    return do.Tag(f"{role}-tag", name=f"{base_name(net.deployment)}-{role}", opts=child(parent))


def droplet(
    parent: pulumi.Resource,
    logical_name: str,
    net: Network,
    spec: DropletSpec,
    tags: Sequence[pulumi.Input[str]],
    user_data: pulumi.Input[str],
) -> do.Droplet:
    """One droplet in the VPC, named ``infragym-<deployment>-<logical_name>``.

    ``user_data`` is passed as given: callers wrap it in ``pulumi.Output.secret`` when it
    holds keys or tokens. Changing it replaces the droplet (DigitalOcean applies
    ``user_data`` only at creation), which is why every secret in it is derived
    deterministically (see :mod:`components.do._pki`).
    """
    return do.Droplet(
        logical_name,
        name=f"{base_name(net.deployment)}-{logical_name}",
        image=spec.image,
        size=spec.size,
        region=net.region,
        vpc_uuid=net.vpc_id,
        tags=[net.tag, *tags],
        ssh_keys=list(spec.ssh_keys) or None,
        user_data=user_data,
        monitoring=spec.monitoring,
        opts=child(parent),
    )


def droplet_urn(d: do.Droplet) -> pulumi.Output[str]:
    """The droplet's URN; DigitalOcean's scheme ``do:droplet:<id>`` stands in where the
    provider does not report one (under Pulumi's mocks)."""
    return pulumi.Output.all(d.droplet_urn, d.id).apply(lambda v: v[0] or f"do:droplet:{v[1]}")


def add_to_project(
    parent: pulumi.Resource, net: Network, droplets: Sequence[do.Droplet], logical_name: str
) -> do.ProjectResources | None:
    """Put the droplets into the deployment's DigitalOcean project (if there is one)."""
    if net.project_id is None or not droplets:
        return None
    return do.ProjectResources(
        logical_name,
        project=net.project_id,
        resources=[droplet_urn(d) for d in droplets],
        opts=child(parent),
    )


def vpc_rules(
    vpc_ip_range: pulumi.Input[str], ports: Sequence[tuple[str, str]]
) -> list[do.FirewallInboundRuleArgs]:
    """Inbound rules admitting each ``(protocol, port range)`` from the VPC range only."""
    return [
        do.FirewallInboundRuleArgs(protocol=proto, port_range=rng, source_addresses=[vpc_ip_range])
        for proto, rng in ports
    ]


def egress_rules() -> list[do.FirewallOutboundRuleArgs]:
    """Open egress: nodes fetch packages, images and manifests from mirrors and registries
    whose addresses are neither known in advance nor stable (as do-core)."""
    return [
        do.FirewallOutboundRuleArgs(
            protocol=proto, port_range=ALL_PORTS, destination_addresses=list(WORLD)
        )
        for proto in ("tcp", "udp")
    ] + [do.FirewallOutboundRuleArgs(protocol="icmp", destination_addresses=list(WORLD))]


def firewall(
    parent: pulumi.Resource,
    logical_name: str,
    net: Network,
    tag: do.Tag,
    inbound: Sequence[do.FirewallInboundRuleArgs],
) -> do.Firewall:
    """A firewall applied by ``tag``: ``inbound`` plus open egress."""
    return do.Firewall(
        logical_name,
        name=f"{base_name(net.deployment)}-{logical_name}",
        tags=[tag.name],
        inbound_rules=list(inbound),
        outbound_rules=egress_rules(),
        opts=child(parent),
    )


def role_firewall(
    parent: pulumi.Resource, net: Network, role: str, ports: Sequence[tuple[str, str]]
) -> do.Tag:
    """A role's tag and its firewall ``<role>-firewall``, admitting ``ports`` from the VPC.

    Args:
        parent: The component.
        net: The do-core network.
        role: The role (``k8s-minion``, ``nomad-server``, ...).
        ports: ``(protocol, port range)`` pairs, each admitted from the VPC range only.

    Returns:
        The role tag, for the role's droplets to carry.
    """
    tag = role_tag(parent, net, role)
    firewall(parent, f"{role}-firewall", net, tag, vpc_rules(net.vpc_ip_range, ports))
    return tag


def child(parent: pulumi.Resource, **kwargs: object) -> pulumi.ResourceOptions:
    """Options for a component's child: ``parent=parent``."""
    return pulumi.ResourceOptions(parent=parent, **kwargs)  # type: ignore[arg-type]


def secret_user_data(render: Callable[..., str], *inputs: object) -> pulumi.Output[str]:
    """``render(*resolved inputs)`` as a secret Output: user_data that holds secrets."""
    return pulumi.Output.secret(pulumi.Output.all(*inputs).apply(lambda v: render(*v)))
