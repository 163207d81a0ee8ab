"""do/swarm-manager and do/swarm-worker: Docker Swarm on droplets, joined through Consul KV.

**The join-token hand-off: Consul KV from do/support** (not a Spaces object). Why:

- Docker creates the join tokens inside the first manager, after boot; they must travel
  from that droplet to the others without SSH, so they need a store every node can
  reach. do-support's Consul is already there, inside the VPC: tokens never leave the
  private network, and nothing new is billed. A Spaces bucket would add the $5/month
  subscription (do-facts §8), put the tokens behind an internet endpoint, and need a
  Spaces access key on every droplet as well as the bucket itself as one more resource.
- Consul ACLs make the hand-off least-privilege: the managers' token (policy
  ``swarm-manager``) may write the prefix ``infragym/<deployment>/swarm/``; the workers'
  token (``swarm-worker``) may read only ``worker-token`` and the ``managers/`` list,
  so a worker can never read the *manager* join token.

The protocol, under that prefix:

1. ``swarm-manager-0`` finds no ``worker-token`` and runs ``docker swarm init`` on its
   VPC address (if tokens are there, from an earlier swarm, it tries to join first);
2. each manager, once part of the swarm, writes ``worker-token``, ``manager-token`` and
   ``managers/<its private IP>``;
3. other managers and all workers poll until the token they need and at least one
   manager are listed, then ``docker swarm join --token ... <manager>:2377``, trying each
   listed manager.

Tokens pass to curl through files (``-H @file``, ``--data-binary @file``), not the
command line; ``docker swarm join`` has no such option, so the token is on its command
line for the seconds the join takes. Encrypted overlay networks are not supported: they
use IPsec ESP (IP protocol 50), which DigitalOcean firewalls cannot admit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi

from components.do import _cloudinit
from components.do._nodes import (
    SSH,
    DropletSpec,
    Network,
    add_to_project,
    droplet,
    role_firewall,
    secret_user_data,
)

MANAGER_TYPE_TOKEN = "infragym:do:SwarmManager"
WORKER_TYPE_TOKEN = "infragym:do:SwarmWorker"

SWARM_NODE_PORTS: tuple[tuple[str, str], ...] = (
    ("tcp", "7946"),  # node communication (container network discovery)
    ("udp", "7946"),
    ("udp", "4789"),  # overlay network (VXLAN) data path
    SSH,
)
"""Docker's documented ports for every swarm node, plus SSH from the VPC."""

SWARM_MANAGER_PORTS: tuple[tuple[str, str], ...] = (
    ("tcp", "2377"),  # cluster management (managers only)
    *SWARM_NODE_PORTS,
)

SWARM_BODY = r"""
hdr=/etc/infragym/consul-token.header

# kv PATH [CURL ARGS...]: a Consul KV request under the prefix, to the first server
# that answers.
kv() {
  local path=$1 addr
  shift
  for addr in $CONSUL_SERVERS; do
    if curl -fsS -H "@$hdr" "$@" "http://${addr}:8500/v1/kv/${CONSUL_PREFIX}${path}"; then
      return 0
    fi
  done
  return 1
}

# kv_put KEY VALUE: store VALUE (passed to curl through a private file).
kv_put() {
  local tmp rc=0
  tmp=$(mktemp)
  printf '%s' "$2" >"$tmp"
  kv "$1" -X PUT --data-binary "@$tmp" >/dev/null || rc=$?
  rm -f "$tmp"
  return "$rc"
}

swarm_state() { docker info --format '{{.Swarm.LocalNodeState}}'; }

# join_swarm TOKEN_KEY: join through any listed manager with the token stored at TOKEN_KEY.
join_swarm() {
  local token key
  token=$(kv "${1}?raw") || return 1
  [ -n "$token" ] || return 1
  for key in $(kv "managers/?keys" | jq -r '.[]'); do
    if docker swarm join --token "$token" --advertise-addr "$PRIVATE_IP" "${key##*/}:2377"; then
      return 0
    fi
  done
  return 1
}

publish() {
  kv_put worker-token "$(docker swarm join-token -q worker)"
  kv_put manager-token "$(docker swarm join-token -q manager)"
  kv_put "managers/${PRIVATE_IP}" "${PRIVATE_IP}:2377"
}

apt_install docker.io jq
systemctl enable --now docker
if [ "$(swarm_state)" != active ]; then
  if [ "$SWARM_ROLE" = worker ]; then
    retry 180 10 join_swarm worker-token
  elif [ "$SWARM_INDEX" = 0 ]; then
    if ! { kv "worker-token?raw" >/dev/null 2>&1 && retry 3 10 join_swarm manager-token; }; then
      docker swarm init --advertise-addr "$PRIVATE_IP" --listen-addr "${PRIVATE_IP}:2377"
    fi
  else
    retry 180 10 join_swarm manager-token
  fi
fi
if [ "$SWARM_ROLE" = manager ]; then
  retry 30 10 publish
fi
"""


def swarm_user_data(
    role: str, index: int, consul_servers: Sequence[str], kv_prefix: str, consul_token: str
) -> str:
    """A swarm node's cloud-config (holds its Consul token: secret).

    Args:
        role: ``manager`` or ``worker``.
        index: The node's index; manager 0 may initialise the swarm.
        consul_servers: Private IPs of the Consul servers.
        kv_prefix: The KV prefix of the hand-off.
        consul_token: The ``swarm-manager`` or ``swarm-worker`` Consul token.
    """
    env = {
        "SWARM_ROLE": role,
        "SWARM_INDEX": index if role == "manager" else 0,
        "CONSUL_SERVERS": list(consul_servers),
        "CONSUL_PREFIX": kv_prefix,
    }
    files = [
        _cloudinit.WriteFile(
            "/etc/infragym/consul-token.header", f"X-Consul-Token: {consul_token}\n", "0600"
        )
    ]
    return _cloudinit.node_cloud_config(f"swarm-{role}", env, SWARM_BODY, files)


@dataclass
class SwarmArgs:
    """Inputs of :class:`SwarmManagers` and :class:`SwarmWorkers`.

    Attributes:
        network: The do-core VPC, tag and project.
        droplet: Size, image and SSH keys of each node.
        count: Number of nodes (managers: odd, for the Raft quorum).
        consul_servers: Private IPs of the do-support Consul servers.
        kv_prefix: Consul KV prefix of the hand-off.
        consul_token: The role's Consul token (secret).
    """

    network: Network
    droplet: DropletSpec
    count: int
    consul_servers: pulumi.Input[Sequence[str]]
    kv_prefix: pulumi.Input[str]
    consul_token: pulumi.Input[str]


def _nodes(
    parent: pulumi.ComponentResource, role: str, args: SwarmArgs, ports: Sequence[tuple[str, str]]
) -> list:
    net = args.network
    tag = role_firewall(parent, net, f"swarm-{role}", ports)
    nodes = []
    for i in range(args.count):
        # Workers all get the same user_data (scaling only adds droplets); managers differ
        # by index, since manager 0 may initialise the swarm.
        index = i if role == "manager" else 0
        user_data = secret_user_data(
            lambda servers, prefix, token, index=index: swarm_user_data(
                role, index, servers, prefix, token
            ),
            args.consul_servers,
            args.kv_prefix,
            args.consul_token,
        )
        nodes.append(droplet(parent, f"swarm-{role}-{i}", net, args.droplet, [tag.name], user_data))
    add_to_project(parent, net, nodes, f"swarm-{role}-project")
    return nodes


class SwarmManagers(pulumi.ComponentResource):
    """Swarm manager droplets (manager 0 initialises the swarm), tag and firewall.

    Attributes:
        droplet_ids: Ids of the manager droplets.
        manager_ips: Their private IPs.
        kv_prefix: The Consul KV prefix the workers read.
    """

    def __init__(
        self, name: str, args: SwarmArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(MANAGER_TYPE_TOKEN, name, None, opts)
        nodes = _nodes(self, "manager", args, SWARM_MANAGER_PORTS)
        self.droplet_ids = pulumi.Output.all(*[n.id for n in nodes])
        self.manager_ips = pulumi.Output.all(*[n.ipv4_address_private for n in nodes])
        self.kv_prefix = pulumi.Output.from_input(args.kv_prefix)
        self.register_outputs(
            {
                "droplet_ids": self.droplet_ids,
                "manager_ips": self.manager_ips,
                "kv_prefix": self.kv_prefix,
            }
        )


class SwarmWorkers(pulumi.ComponentResource):
    """Swarm worker droplets, tag and firewall.

    Attributes:
        droplet_ids: Ids of the worker droplets.
    """

    def __init__(
        self, name: str, args: SwarmArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(WORKER_TYPE_TOKEN, name, None, opts)
        nodes = _nodes(self, "worker", args, SWARM_NODE_PORTS)
        self.droplet_ids = pulumi.Output.all(*[n.id for n in nodes])
        self.register_outputs({"droplet_ids": self.droplet_ids})
