"""do/support: a bastion droplet (the only SSH ingress) and a Consul server cluster.

**Bastion.** One small droplet whose firewall admits SSH (22/tcp) only from the
configured CIDRs (default: none, so nothing is open until a user asks). Every other
droplet of the deployment admits SSH from the VPC range only, so the way in is
``ssh -J root@<bastion_ip> root@<private IP>``. Password logins are disabled.

**Consul.** ``consul_count`` servers (odd; Raft) from HashiCorp's apt repository,
with gossip encryption and ACLs on (``default_policy = deny``). Their secrets are
derived from the layer's secret seed (:mod:`components.do._pki`):

- the gossip key and the ACL *initial management* token go into the servers' config, so
  the ACL system bootstraps itself, with no ``consul acl bootstrap`` call to capture;
- every server's bootstrap waits for a Raft leader and then creates (if missing) the
  policies and tokens below, with accessor and secret ids fixed by the seed, so that
  the downstream layers can be handed the tokens before Consul even exists:

  ============== ============================================================
  token          what it may do
  ============== ============================================================
  agent          register nodes (every agent's ``acl.tokens.agent``)
  dns            read nodes and services (``acl.tokens.default``: DNS lookups)
  nomad          what Nomad agents need (HashiCorp's documented Nomad policy)
  swarm-manager  write the Swarm KV prefix (``infragym/<deployment>/swarm/``)
  swarm-worker   read only the worker join token and the manager list
  ============== ============================================================

How Consul servers find each other: server *i* ``retry_join``\\s servers ``0..i-1``
(their private IPs are known to Pulumi once created); ``bootstrap_expect`` makes them
wait for all of them. Agents elsewhere (``do-nomad``) ``retry_join`` every server. Since a
server's ``user_data`` names the earlier servers and ``bootstrap_expect``, changing
``consul_count`` or replacing ``consul-0`` rebuilds the cluster: size it once.

Consul's HTTP API (8500) and DNS (8600) listen on the servers' VPC address (and
loopback), plain HTTP: traffic stays inside the VPC and the ACL tokens guard it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_digitalocean as do

from components.do import _cloudinit, _pki
from components.do._nodes import (
    SSH,
    DropletSpec,
    Network,
    add_to_project,
    droplet,
    firewall,
    role_firewall,
    role_tag,
    secret_user_data,
)

TYPE_TOKEN = "infragym:do:Support"
CONSUL_HTTP_PORT = 8500

CONSUL_SERVER_PORTS: tuple[tuple[str, str], ...] = (
    ("tcp", "8300"),  # server RPC
    ("tcp", "8301"),  # LAN gossip
    ("udp", "8301"),
    ("tcp", "8302"),  # WAN gossip
    ("udp", "8302"),
    ("tcp", str(CONSUL_HTTP_PORT)),  # HTTP API
    ("tcp", "8600"),  # DNS
    ("udp", "8600"),
    SSH,
)
"""Consul's documented server ports ("Required Ports"), plus SSH from the VPC."""

CONSUL_CLIENT_PORTS: tuple[tuple[str, str], ...] = (("tcp", "8301"), ("udp", "8301"))
"""What a Consul client agent must accept: LAN gossip (used by :mod:`components.do.nomad`)."""

ACL_NAMES = ("agent", "dns", "nomad", "swarm-manager", "swarm-worker")


def swarm_kv_prefix(deployment: str) -> str:
    """The Consul KV prefix of the deployment's Swarm join hand-off."""
    return f"infragym/{deployment}/swarm/"


def acl_rules(name: str, kv_prefix: str) -> str:
    """The Consul ACL rules (HCL) of one of :data:`ACL_NAMES`."""
    rules = {
        "agent": 'node_prefix "" { policy = "write" }\nservice_prefix "" { policy = "read" }',
        "dns": 'node_prefix "" { policy = "read" }\nservice_prefix "" { policy = "read" }\n'
        'query_prefix "" { policy = "read" }',
        "nomad": 'agent_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }\n'
        'service_prefix "" { policy = "write" }',
        "swarm-manager": f'key_prefix "{kv_prefix}" {{ policy = "write" }}',
        "swarm-worker": f'key "{kv_prefix}worker-token" {{ policy = "read" }}\n'
        f'key_prefix "{kv_prefix}managers/" {{ policy = "read" }}',
    }
    return rules[name] + "\n"


@dataclass(frozen=True)
class ConsulToken:
    """An ACL token whose ids are fixed in advance.

    Attributes:
        name: Policy (and token) name.
        accessor: Public accessor id.
        secret: The secret id that clients send.
    """

    name: str
    accessor: str
    secret: str


@dataclass(frozen=True)
class ConsulSecrets:
    """Everything secret about the Consul cluster, derived from one seed.

    Attributes:
        gossip_key: The ``encrypt`` key (base64, 32 bytes).
        management_token: The ACL initial management token.
        tokens: The tokens of :data:`ACL_NAMES`, by name.
        kv_prefix: The Swarm KV prefix the swarm policies cover.
    """

    gossip_key: str
    management_token: str
    tokens: Mapping[str, ConsulToken]
    kv_prefix: str


def consul_secrets(seed: str, kv_prefix: str) -> ConsulSecrets:
    """Derive the Consul cluster's secrets from ``seed`` (same seed, same values)."""
    return ConsulSecrets(
        gossip_key=_pki.derive_gossip_key(seed, "consul/gossip"),
        management_token=_pki.derive_uuid(seed, "consul/management"),
        tokens={
            n: ConsulToken(
                n,
                _pki.derive_uuid(seed, f"consul/{n}/accessor"),
                _pki.derive_uuid(seed, f"consul/{n}/secret"),
            )
            for n in ACL_NAMES
        },
        kv_prefix=kv_prefix,
    )


def consul_agent_config(
    datacenter: str,
    gossip_key: str,
    agent_token: str,
    default_token: str,
    retry_join: Sequence[str],
    server: Mapping[str, object] | None = None,
) -> str:
    """A Consul agent's JSON config (the script adds the bind/advertise addresses).

    Args:
        datacenter: Consul datacenter name.
        gossip_key: The gossip encryption key.
        agent_token: ``acl.tokens.agent``.
        default_token: ``acl.tokens.default`` (anonymous requests: DNS).
        retry_join: Addresses of servers to join.
        server: Extra top-level settings of a server (``None``: a client agent).
    """
    tokens: dict[str, str] = {"agent": agent_token, "default": default_token}
    config: dict[str, object] = {
        "datacenter": datacenter,
        "data_dir": "/opt/consul",
        "encrypt": gossip_key,
        "retry_join": list(retry_join),
        "acl": {
            "enabled": True,
            "default_policy": "deny",
            "enable_token_persistence": True,
            "tokens": tokens,
        },
    }
    if server is not None:
        mgmt = str(server.get("initial_management", ""))
        tokens["initial_management"] = mgmt
        config.update({k: v for k, v in server.items() if k != "initial_management"})
        config["server"] = True
    return json.dumps(config, indent=2) + "\n"


CONSUL_SERVER_BODY = (
    _cloudinit.HASHICORP
    + r"""
api="http://127.0.0.1:8500/v1"
hdr=/etc/infragym/consul-management.header
acl=/etc/infragym/consul-acl

has_leader() {
  local leader
  leader=$(curl -fsS "$api/status/leader") && [ -n "$leader" ] && [ "$leader" != '""' ]
}

# ensure KIND NAME PATH: create an ACL policy or token from its JSON unless it exists.
ensure() {
  if curl -fsS -o /dev/null -H "@$hdr" "$api/acl/$1/$3"; then
    return 0
  fi
  curl -fsS -o /dev/null -X PUT -H "@$hdr" --data-binary "@$acl/$2.$1.json" "$api/acl/$1"
}

hashicorp_repo
apt_install "$(pinned consul "$CONSUL_VERSION")"
consul_agent server
retry 180 10 has_leader
for pair in $ACL_ACCESSORS; do
  name=${pair%%:*}
  retry 10 6 ensure policy "$name" "name/$name"
done
for pair in $ACL_ACCESSORS; do
  name=${pair%%:*}
  retry 10 6 ensure token "$name" "${pair#*:}"
done
"""
)


def consul_server_user_data(
    secrets: ConsulSecrets,
    datacenter: str,
    bootstrap_expect: int,
    retry_join: Sequence[str],
    consul_version: str,
) -> str:
    """A Consul server's cloud-config (holds the management token: secret)."""
    files = [
        _cloudinit.WriteFile(
            "/etc/infragym/consul.json",
            consul_agent_config(
                datacenter,
                secrets.gossip_key,
                secrets.tokens["agent"].secret,
                secrets.tokens["dns"].secret,
                retry_join,
                server={
                    "bootstrap_expect": bootstrap_expect,
                    "ui_config": {"enabled": True},
                    "initial_management": secrets.management_token,
                },
            ),
            "0600",
        ),
        _cloudinit.WriteFile(
            "/etc/infragym/consul-management.header",
            f"X-Consul-Token: {secrets.management_token}\n",
            "0600",
        ),
    ]
    for name, token in secrets.tokens.items():
        policy = {
            "Name": name,
            "Description": f"infragym {name}",
            "Rules": acl_rules(name, secrets.kv_prefix),
        }
        body = {
            "AccessorID": token.accessor,
            "SecretID": token.secret,
            "Description": f"infragym {name}",
            "Policies": [{"Name": name}],
        }
        files += [
            _cloudinit.WriteFile(
                f"/etc/infragym/consul-acl/{name}.policy.json", json.dumps(policy), "0600"
            ),
            _cloudinit.WriteFile(
                f"/etc/infragym/consul-acl/{name}.token.json", json.dumps(body), "0600"
            ),
        ]
    env = {
        "CONSUL_VERSION": consul_version,
        "ACL_ACCESSORS": [f"{t.name}:{t.accessor}" for t in secrets.tokens.values()],
    }
    return _cloudinit.node_cloud_config("consul-server", env, CONSUL_SERVER_BODY, files)


SSHD_HARDENING = """# infragym bastion: keys only; forwarding stays on (it is a jump host).
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
"""


def bastion_user_data() -> str:
    """The bastion's cloud-config: sshd hardening only (no secrets)."""
    return _cloudinit.cloud_config(
        [_cloudinit.WriteFile("/etc/ssh/sshd_config.d/10-infragym.conf", SSHD_HARDENING)],
        ["systemctl restart ssh"],
    )


@dataclass
class SupportArgs:
    """Inputs of :class:`Support`.

    Attributes:
        network: The do-core VPC, tag and project.
        bastion: Size, image and SSH keys of the bastion.
        consul: Size, image and SSH keys of each Consul server.
        secret_seed: Seed the Consul gossip key and ACL tokens are derived from.
        ssh_cidrs: Sources allowed to SSH to the bastion (empty: nobody).
        consul_count: Number of Consul servers (odd).
        consul_version: Consul package version (``1.21.4``); empty: the latest.
        datacenter: Consul datacenter name (``None``: the region slug).
    """

    network: Network
    bastion: DropletSpec
    consul: DropletSpec
    secret_seed: str
    ssh_cidrs: Sequence[str] = field(default_factory=tuple)
    consul_count: int = 3
    consul_version: str = ""
    datacenter: str | None = None


class Support(pulumi.ComponentResource):
    """The bastion, the Consul servers, their tags and firewalls.

    Attributes:
        bastion_ip: Public IPv4 of the bastion.
        consul_servers: Private IPs of the Consul servers.
        consul_http_addr: ``http://<consul-0 private IP>:8500``.
        consul_datacenter: The Consul datacenter name.
        secrets: The derived Consul secrets (plain Python values; export them wrapped
            in ``pulumi.Output.secret``).
        droplet_ids: Ids of all droplets (bastion first).
    """

    def __init__(
        self, name: str, args: SupportArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        net = args.network
        self.secrets = consul_secrets(args.secret_seed, swarm_kv_prefix(net.deployment))

        bastion_tag = role_tag(self, net, "bastion")
        inbound = []
        if args.ssh_cidrs:
            inbound.append(
                do.FirewallInboundRuleArgs(
                    protocol="tcp", port_range="22", source_addresses=list(args.ssh_cidrs)
                )
            )
        firewall(self, "bastion-firewall", net, bastion_tag, inbound)
        bastion = droplet(
            self, "bastion", net, args.bastion, [bastion_tag.name], bastion_user_data()
        )

        consul_tag = role_firewall(self, net, "consul-server", CONSUL_SERVER_PORTS)
        datacenter = args.datacenter or net.region
        servers = []
        for i in range(args.consul_count):
            earlier = [s.ipv4_address_private for s in servers]
            user_data = secret_user_data(
                lambda dc, *join: consul_server_user_data(
                    self.secrets, dc, args.consul_count, join, args.consul_version
                ),
                datacenter,
                *earlier,
            )
            servers.append(
                droplet(self, f"consul-{i}", net, args.consul, [consul_tag.name], user_data)
            )
        add_to_project(self, net, [bastion, *servers], "support-project")

        self.bastion_ip = bastion.ipv4_address
        self.consul_servers = pulumi.Output.all(*[s.ipv4_address_private for s in servers])
        self.consul_http_addr = servers[0].ipv4_address_private.apply(
            lambda ip: f"http://{ip}:{CONSUL_HTTP_PORT}"
        )
        self.consul_datacenter = pulumi.Output.from_input(datacenter)
        self.droplet_ids = pulumi.Output.all(bastion.id, *[s.id for s in servers])
        self.register_outputs(
            {
                "bastion_ip": self.bastion_ip,
                "consul_servers": self.consul_servers,
                "consul_http_addr": self.consul_http_addr,
                "consul_datacenter": self.consul_datacenter,
                "droplet_ids": self.droplet_ids,
            }
        )
