"""The DigitalOcean foundation of a deployment: VPC, tag, cloud firewall and project.

Every other DigitalOcean layer builds on this one: droplets and Kubernetes nodes join
its VPC and carry its tag, so the firewall (applied *by tag*) covers them without
listing droplet ids, and new nodes are covered the moment they boot.

DigitalOcean cloud firewalls deny every inbound packet that no rule allows, on the
public and on the VPC interface alike. The rules below therefore open only what the
layers need:

- NodePorts (30000-32767/tcp) from the VPC range only: a DigitalOcean load balancer in
  the VPC reaches Kubernetes nodes over it, so NodePorts need not face the internet;
- HTTP/HTTPS (80, 443/tcp) only from ``ingress_cidrs`` (default none: no world-open rule);
- the Kubernetes API (6443/tcp) only from ``api_cidrs`` (default none; a managed DOKS
  control plane is not a droplet and is outside this firewall anyway);
- ICMP from within the VPC (path-MTU discovery and ping between nodes).

Firewalls on DigitalOcean are additive: DOKS manages a firewall of its own for its
worker nodes, which this one cannot narrow. For the same reason there is no blanket
"anything between our droplets" rule here: the self-managed layers (kubeadm, Nomad,
Consul, Swarm) each open only the ports their system documents, in their own firewall.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_digitalocean as do

TYPE_TOKEN = "infragym:do:Core"

NODEPORT_RANGE = "30000-32767"
"""The Kubernetes default NodePort range (``--service-node-port-range``)."""

ALL_PORTS = "1-65535"
WORLD = ("0.0.0.0/0", "::/0")


@dataclass
class CoreArgs:
    """Inputs of :class:`CoreComponent`.

    Attributes:
        deployment: Deployment name; DigitalOcean resources are named
            ``infragym-<deployment>`` so two deployments never collide.
        region: Datacenter region slug of the VPC (``nyc3``).
        vpc_ip_range: Private (RFC 1918) CIDR block of the VPC.
        ingress_cidrs: Sources allowed to reach 80/443 on tagged droplets; empty means
            no HTTP(S) rule (traffic then arrives only through a load balancer).
        api_cidrs: Sources allowed to reach a self-managed Kubernetes API on 6443.
        project_name: DigitalOcean project name; ``None`` gives ``infragym-<deployment>``.
        environment: Project environment: ``Development``, ``Staging`` or ``Production``.
    """

    deployment: str
    region: str
    vpc_ip_range: str
    ingress_cidrs: Sequence[str] = field(default_factory=tuple)
    api_cidrs: Sequence[str] = field(default_factory=tuple)
    project_name: str | None = None
    environment: str = "Development"


def firewall_rules(
    vpc_ip_range: pulumi.Input[str],
    tag: pulumi.Input[str],
    ingress_cidrs: Sequence[str],
    api_cidrs: Sequence[str],
) -> tuple[list[do.FirewallInboundRuleArgs], list[do.FirewallOutboundRuleArgs]]:
    """The inbound and outbound rules of the deployment's firewall (see the module doc).

    Returns:
        ``(inbound, outbound)`` rule lists.
    """
    inbound = [
        do.FirewallInboundRuleArgs(
            protocol="tcp", port_range=NODEPORT_RANGE, source_addresses=[vpc_ip_range]
        ),
        do.FirewallInboundRuleArgs(protocol="icmp", source_addresses=[vpc_ip_range]),
    ]
    if ingress_cidrs:
        inbound += [
            do.FirewallInboundRuleArgs(
                protocol="tcp", port_range=port, source_addresses=list(ingress_cidrs)
            )
            for port in ("80", "443")
        ]
    if api_cidrs:
        inbound.append(
            do.FirewallInboundRuleArgs(
                protocol="tcp", port_range="6443", source_addresses=list(api_cidrs)
            )
        )
    # Outbound is open: nodes pull container images and OS packages from registries and
    # mirrors whose addresses are neither known in advance nor stable.
    outbound = [
        do.FirewallOutboundRuleArgs(
            protocol=proto, port_range=ALL_PORTS, destination_addresses=list(WORLD)
        )
        for proto in ("tcp", "udp")
    ] + [do.FirewallOutboundRuleArgs(protocol="icmp", destination_addresses=list(WORLD))]
    return inbound, outbound


class CoreComponent(pulumi.ComponentResource):
    """A deployment's VPC, tag, tag-applied firewall and DigitalOcean project.

    Attributes:
        region: Region slug of the VPC.
        vpc_id: VPC id, for ``vpc_uuid`` of clusters and droplets.
        vpc_ip_range: The VPC's CIDR block.
        tag: Tag name that droplets and node pools must carry to be firewalled.
        project_id: Project id, for ``ProjectResources`` in downstream layers.
        firewall_id: Firewall id.
    """

    region: pulumi.Output[str]
    vpc_id: pulumi.Output[str]
    vpc_ip_range: pulumi.Output[str]
    tag: pulumi.Output[str]
    project_id: pulumi.Output[str]
    firewall_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: CoreArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        base = f"infragym-{args.deployment}"

        vpc = do.Vpc(
            "vpc",
            name=base,
            region=args.region,
            ip_range=args.vpc_ip_range,
            description=f"infragym deployment {args.deployment}",
            opts=self.child_opts(),
        )
        tag = do.Tag("tag", name=base, opts=self.child_opts())
        inbound, outbound = firewall_rules(
            vpc.ip_range, tag.name, args.ingress_cidrs, args.api_cidrs
        )
        firewall = do.Firewall(
            "firewall",
            name=base,
            tags=[tag.name],
            inbound_rules=inbound,
            outbound_rules=outbound,
            opts=self.child_opts(),
        )
        # VPCs, tags and firewalls cannot be project members; the project is created here
        # so that downstream layers (clusters, droplets, load balancers) can join it.
        project = do.Project(
            "project",
            name=args.project_name or base,
            environment=args.environment,
            description=f"infragym deployment {args.deployment}",
            opts=self.child_opts(),
        )

        self.region = vpc.region
        self.vpc_id = vpc.id
        self.vpc_ip_range = vpc.ip_range
        self.tag = tag.name
        self.project_id = project.id
        self.firewall_id = firewall.id
        self.register_outputs(
            {
                "region": self.region,
                "vpc_id": self.vpc_id,
                "vpc_ip_range": self.vpc_ip_range,
                "tag": self.tag,
                "project_id": self.project_id,
                "firewall_id": self.firewall_id,
            }
        )

    def child_opts(self) -> pulumi.ResourceOptions:
        """Options for a child resource: parented to this component."""
        return pulumi.ResourceOptions(parent=self)
