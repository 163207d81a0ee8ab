"""do/k8s-minions: Kubernetes worker droplets that join a ``do/k8s-control-plane`` cluster.

The hand-off: the control-plane layer derived the bootstrap token and the CA discovery
hash from its secret seed and exported them (the token as a secret) with its private
API endpoint. Each minion's cloud-config carries a kubeadm ``JoinConfiguration`` with
those three values; the bootstrap script installs containerd and kubeadm, waits until
``https://<endpoint>/readyz`` answers (the control plane may still be booting), and runs
``kubeadm join`` (the config-file form of ``kubeadm join <endpoint> --token ...
--discovery-token-ca-cert-hash sha256:...``), retrying after a ``kubeadm reset``.

Every minion gets the same ``user_data``, so changing ``count`` only adds or removes
droplets (``infragym-<deployment>-k8s-minion-<i>``); changing ``size`` resizes them in
place. Removing a minion does not delete its Node object: it goes NotReady and its pods
are rescheduled after the eviction timeout (``kubectl delete node`` tidies up).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import yaml

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
from components.do.k8s_control_plane import (
    CRI_SOCKET,
    FLANNEL_VXLAN,
    K8S_INSTALL,
    KUBEADM_API,
    PRIVATE_IP,
)

TYPE_TOKEN = "infragym:do:K8sMinions"
ROLE = "k8s-minion"

MINION_PORTS: tuple[tuple[str, str], ...] = (
    ("tcp", "10250"),  # kubelet API
    ("tcp", "10256"),  # kube-proxy health
    ("tcp", "30000-32767"),  # NodePort services
    FLANNEL_VXLAN,
    SSH,
)
"""Kubernetes' "Ports and Protocols" list for worker nodes, plus the CNI and SSH."""

MINION_BODY = (
    K8S_INSTALL
    + r"""
kubeadm_join() {
  if kubeadm join --config /etc/infragym/kubeadm-join.yaml; then
    return 0
  fi
  kubeadm reset -f
  return 1
}

install_kubernetes
sed -e "s/__PRIVATE_IP__/${PRIVATE_IP}/g" /etc/infragym/kubeadm-join.yaml.in \
  >/etc/infragym/kubeadm-join.yaml
chmod 0600 /etc/infragym/kubeadm-join.yaml
# The control plane may still be installing: wait up to 30 minutes for its API.
retry 180 10 curl -ksf "https://${API_ENDPOINT}/readyz" >/dev/null
if [ ! -f /etc/kubernetes/kubelet.conf ]; then
  retry 10 30 kubeadm_join
fi
"""
)


@dataclass
class K8sMinionsArgs:
    """Inputs of :class:`K8sMinions`.

    Attributes:
        network: The do-core VPC, tag and project.
        droplet: Size, image and SSH keys of every minion.
        count: Number of minions.
        api_private_endpoint: ``<private IP>:6443`` of the control plane.
        join_token: kubeadm bootstrap token (secret).
        discovery_hash: ``sha256:...`` pin of the cluster CA's public key.
        kubernetes_minor: Minor version to install (the control plane's).
    """

    network: Network
    droplet: DropletSpec
    count: int
    api_private_endpoint: pulumi.Input[str]
    join_token: pulumi.Input[str]
    discovery_hash: pulumi.Input[str]
    kubernetes_minor: pulumi.Input[str]


def kubeadm_join_config(endpoint: str, token: str, discovery_hash: str) -> str:
    """A kubeadm JoinConfiguration (the node IP is a placeholder the script fills in)."""
    return yaml.safe_dump(
        {
            "apiVersion": KUBEADM_API,
            "kind": "JoinConfiguration",
            "discovery": {
                "bootstrapToken": {
                    "apiServerEndpoint": endpoint,
                    "token": token,
                    "caCertHashes": [discovery_hash],
                }
            },
            "nodeRegistration": {
                "criSocket": CRI_SOCKET,
                "kubeletExtraArgs": [{"name": "node-ip", "value": PRIVATE_IP}],
            },
        },
        sort_keys=False,
    )


def minion_user_data(endpoint: str, token: str, discovery_hash: str, k8s_minor: str) -> str:
    """A minion's cloud-config (holds the bootstrap token: secret)."""
    return _cloudinit.node_cloud_config(
        ROLE,
        {"K8S_MINOR": k8s_minor, "API_ENDPOINT": endpoint},
        MINION_BODY,
        [
            _cloudinit.WriteFile(
                "/etc/infragym/kubeadm-join.yaml.in",
                kubeadm_join_config(endpoint, token, discovery_hash),
                "0600",
            )
        ],
    )


class K8sMinions(pulumi.ComponentResource):
    """Worker droplets joined to the cluster, their role tag and firewall.

    Attributes:
        droplet_ids: Ids of the minion droplets, in index order.
        private_ips: Their VPC addresses.
    """

    droplet_ids: pulumi.Output[Sequence[str]]
    private_ips: pulumi.Output[Sequence[str]]

    def __init__(
        self, name: str, args: K8sMinionsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        net = args.network
        tag = role_firewall(self, net, ROLE, MINION_PORTS)
        user_data = secret_user_data(
            minion_user_data,
            args.api_private_endpoint,
            args.join_token,
            args.discovery_hash,
            args.kubernetes_minor,
        )
        nodes = [
            droplet(self, f"k8s-minion-{i}", net, args.droplet, [tag.name], user_data)
            for i in range(args.count)
        ]
        add_to_project(self, net, nodes, "k8s-minion-project")

        self.droplet_ids = pulumi.Output.all(*[n.id for n in nodes])
        self.private_ips = pulumi.Output.all(*[n.ipv4_address_private for n in nodes])
        self.register_outputs({"droplet_ids": self.droplet_ids, "private_ips": self.private_ips})
