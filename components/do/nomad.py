"""do/nomad: Nomad servers and clients on droplets, joined through Consul from do/support.

The hand-off: every Nomad droplet also runs a Consul *client* agent that
``retry_join``\\s the do-support Consul servers (their private IPs, the gossip key and
the agent/DNS tokens are do-support outputs). Nomad then finds its peers through Consul
instead of through addresses baked into ``user_data``: with ``consul.server_auto_join``
the servers discover each other and ``client_auto_join`` lets clients find the servers,
all through the ``nomad`` and ``nomad-client`` services each agent registers with the
``nomad`` Consul token (HashiCorp's documented Nomad agent policy). So every server gets
the same ``user_data``, and so does every client: scaling clients only adds droplets.

Nomad's own secrets come from the layer's secret seed: the server gossip key
(``server.encrypt``) and the ACL bootstrap token. Nomad ACLs are on; once the servers
elect a leader, each runs ``nomad acl bootstrap <file>`` with the derived token unless it
already works, so the ``nomad_token`` output is valid without anyone reading it off a
server. Clients run the Docker driver (``docker.io``).

Changing ``server_count`` changes ``bootstrap_expect`` and so replaces the servers;
changing ``client_count`` or a size does not.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from components.do import _cloudinit, _pki
from components.do._nodes import (
    SSH,
    DropletSpec,
    Network,
    add_to_project,
    droplet,
    role_firewall,
    secret_user_data,
)
from components.do.support import CONSUL_CLIENT_PORTS, consul_agent_config

TYPE_TOKEN = "infragym:do:Nomad"
NOMAD_HTTP_PORT = 4646
DATACENTER = "dc1"
"""Nomad's default datacenter name, so jobs need not name one."""

NOMAD_SERVER_PORTS: tuple[tuple[str, str], ...] = (
    ("tcp", "4646"),  # HTTP API
    ("tcp", "4647"),  # RPC
    ("tcp", "4648"),  # Serf (server gossip)
    ("udp", "4648"),
    *CONSUL_CLIENT_PORTS,
    SSH,
)
"""Nomad's documented server ports, the local Consul agent's gossip, and SSH."""

NOMAD_CLIENT_PORTS: tuple[tuple[str, str], ...] = (
    ("tcp", "4646"),  # HTTP API
    ("tcp", "4647"),  # RPC
    ("tcp", "20000-32000"),  # Nomad's default dynamic port range for tasks
    ("udp", "20000-32000"),
    *CONSUL_CLIENT_PORTS,
    SSH,
)
"""Nomad's documented client ports, the task port range, Consul gossip, and SSH."""

NOMAD_BODY = (
    _cloudinit.HASHICORP
    + r"""
has_leader() {
  local leader
  leader=$(curl -fsS "http://127.0.0.1:4646/v1/status/leader") \
    && [ -n "$leader" ] && [ "$leader" != '""' ]
}

hashicorp_repo
apt_install "$(pinned consul "$CONSUL_VERSION")" "$(pinned nomad "$NOMAD_VERSION")"
if [ "$NOMAD_ROLE" = client ]; then
  apt_install docker.io
  systemctl enable --now docker
fi
consul_agent client

printf 'data_dir = "/opt/nomad/data"\n' >/etc/nomad.d/nomad.hcl
install -m 0600 /etc/infragym/nomad.json /etc/nomad.d/infragym.json
printf '{"advertise": {"http": "%s", "rpc": "%s", "serf": "%s"}}\n' \
  "$PRIVATE_IP" "$PRIVATE_IP" "$PRIVATE_IP" >/etc/nomad.d/network.json
systemctl enable nomad
systemctl restart nomad

if [ "$NOMAD_ROLE" = server ]; then
  retry 180 10 has_leader
  token=/etc/infragym/nomad-bootstrap.token
  if ! NOMAD_TOKEN=$(cat "$token") nomad acl token self >/dev/null 2>&1; then
    # Another server may have won the race; the token check above then passes next time.
    nomad acl bootstrap "$token" >/dev/null || log "nomad acl bootstrap: already done"
  fi
fi
"""
)


@dataclass(frozen=True)
class NomadSecrets:
    """Nomad's secrets, derived from the layer's seed.

    Attributes:
        gossip_key: ``server.encrypt``.
        bootstrap_token: The management token ``nomad acl bootstrap`` installs.
    """

    gossip_key: str
    bootstrap_token: str


def nomad_secrets(seed: str) -> NomadSecrets:
    """Derive the Nomad secrets from ``seed`` (same seed, same values)."""
    return NomadSecrets(
        gossip_key=_pki.derive_gossip_key(seed, "nomad/gossip"),
        bootstrap_token=_pki.derive_uuid(seed, "nomad/bootstrap"),
    )


@dataclass
class ConsulAccess:
    """What a Nomad node needs to join the do-support Consul cluster.

    Attributes:
        servers: Private IPs of the Consul servers.
        datacenter: Consul datacenter name.
        gossip_key: Consul gossip key (secret).
        agent_token: Token of the local Consul agent (secret).
        dns_token: Default (DNS) token (secret).
        nomad_token: Token Nomad uses with Consul (secret).
        version: Consul package version; empty: the latest.
    """

    servers: pulumi.Input[Sequence[str]]
    datacenter: pulumi.Input[str]
    gossip_key: pulumi.Input[str]
    agent_token: pulumi.Input[str]
    dns_token: pulumi.Input[str]
    nomad_token: pulumi.Input[str]
    version: pulumi.Input[str] = ""


def nomad_agent_config(
    role: str, secrets: NomadSecrets, consul_token: str, bootstrap_expect: int
) -> str:
    """A Nomad agent's JSON config (the script adds the advertise addresses)."""
    config: dict[str, object] = {
        "datacenter": DATACENTER,
        "data_dir": "/opt/nomad/data",
        "bind_addr": "0.0.0.0",
        "acl": {"enabled": True},
        "consul": {
            "address": "127.0.0.1:8500",
            "token": consul_token,
            "server_auto_join": True,
            "client_auto_join": True,
            "auto_advertise": True,
        },
    }
    if role == "server":
        config["server"] = {
            "enabled": True,
            "bootstrap_expect": bootstrap_expect,
            "encrypt": secrets.gossip_key,
        }
    else:
        config["client"] = {"enabled": True}
    return json.dumps(config, indent=2) + "\n"


def nomad_user_data(
    role: str,
    secrets: NomadSecrets,
    bootstrap_expect: int,
    nomad_version: str,
    consul: Sequence[Any],
) -> str:
    """A Nomad server's or client's cloud-config (holds tokens and keys: secret).

    Args:
        role: ``server`` or ``client``.
        secrets: The Nomad secrets.
        bootstrap_expect: Number of Nomad servers.
        nomad_version: Nomad package version; empty: the latest.
        consul: The resolved :class:`ConsulAccess` values ``(servers, datacenter,
            gossip_key, agent_token, dns_token, nomad_token, version)``.
    """
    servers, datacenter, gossip, agent, dns, nomad_token, consul_version = consul
    files = [
        _cloudinit.WriteFile(
            "/etc/infragym/consul.json",
            consul_agent_config(datacenter, gossip, agent, dns, list(servers)),
            "0600",
        ),
        _cloudinit.WriteFile(
            "/etc/infragym/nomad.json",
            nomad_agent_config(role, secrets, nomad_token, bootstrap_expect),
            "0600",
        ),
    ]
    if role == "server":
        files.append(
            _cloudinit.WriteFile(
                "/etc/infragym/nomad-bootstrap.token", secrets.bootstrap_token + "\n", "0600"
            )
        )
    env = {
        "NOMAD_ROLE": role,
        "NOMAD_VERSION": nomad_version,
        "CONSUL_VERSION": consul_version or "",
    }
    return _cloudinit.node_cloud_config(f"nomad-{role}", env, NOMAD_BODY, files)


@dataclass
class NomadArgs:
    """Inputs of :class:`Nomad`.

    Attributes:
        network: The do-core VPC, tag and project.
        server: Size, image and SSH keys of each server.
        client: Size, image and SSH keys of each client.
        consul: The do-support Consul cluster.
        secret_seed: Seed of the Nomad gossip key and ACL bootstrap token.
        server_count: Number of servers (odd).
        client_count: Number of clients.
        nomad_version: Nomad package version; empty: the latest.
    """

    network: Network
    server: DropletSpec
    client: DropletSpec
    consul: ConsulAccess
    secret_seed: str
    server_count: int = 1
    client_count: int = 2
    nomad_version: str = ""


class Nomad(pulumi.ComponentResource):
    """Nomad server and client droplets, their tags and firewalls.

    Attributes:
        nomad_addr: ``http://<server-0 private IP>:4646``.
        nomad_token: The ACL management token (secret).
        server_ips: Private IPs of the servers.
        server_droplet_ids: Ids of the server droplets.
        client_droplet_ids: Ids of the client droplets.
    """

    def __init__(
        self, name: str, args: NomadArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        net = args.network
        secrets = nomad_secrets(args.secret_seed)
        c = args.consul
        consul_inputs = (
            c.servers,
            c.datacenter,
            c.gossip_key,
            c.agent_token,
            c.dns_token,
            c.nomad_token,
            c.version,
        )

        groups: dict[str, list] = {}
        for role, count, spec, ports in (
            ("server", args.server_count, args.server, NOMAD_SERVER_PORTS),
            ("client", args.client_count, args.client, NOMAD_CLIENT_PORTS),
        ):
            tag = role_firewall(self, net, f"nomad-{role}", ports)
            user_data = secret_user_data(
                lambda *v, role=role: nomad_user_data(
                    role, secrets, args.server_count, args.nomad_version, v
                ),
                *consul_inputs,
            )
            groups[role] = [
                droplet(self, f"nomad-{role}-{i}", net, spec, [tag.name], user_data)
                for i in range(count)
            ]
        servers, clients = groups["server"], groups["client"]
        add_to_project(self, net, servers + clients, "nomad-project")

        self.nomad_addr = servers[0].ipv4_address_private.apply(
            lambda ip: f"http://{ip}:{NOMAD_HTTP_PORT}"
        )
        self.nomad_token = pulumi.Output.secret(secrets.bootstrap_token)
        self.server_ips = pulumi.Output.all(*[s.ipv4_address_private for s in servers])
        self.server_droplet_ids = pulumi.Output.all(*[s.id for s in servers])
        self.client_droplet_ids = pulumi.Output.all(*[s.id for s in clients])
        self.register_outputs(
            {
                "nomad_addr": self.nomad_addr,
                "nomad_token": self.nomad_token,
                "server_ips": self.server_ips,
                "server_droplet_ids": self.server_droplet_ids,
                "client_droplet_ids": self.client_droplet_ids,
            }
        )
