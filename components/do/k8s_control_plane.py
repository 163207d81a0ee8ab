"""do/k8s-control-plane: a kubeadm Kubernetes control plane on one droplet.

How the cluster is bootstrapped without SSH:

1. From the layer's secret seed, :func:`components.do._pki.cluster_pki` derives the
   cluster CA (ECDSA P-256), a kubeadm bootstrap token and the CA's discovery hash,
   in Python, while the program runs (deterministically: the same seed gives the same
   bytes, so reruns do not replace the droplet).
2. cloud-init writes the CA to ``/etc/kubernetes/pki/ca.{crt,key}`` (``write_files``,
   mode 0600) and a kubeadm ``InitConfiguration`` carrying the token (TTL 0: it never
   expires, so minions can join whenever they are added). ``kubeadm init`` finds the CA
   on disk and uses it instead of generating one; the script fills in the droplet's own
   private and public IPs (from the metadata service) and the installed kubeadm version.
3. Flannel (VXLAN, 8472/udp) is applied as the pod network, bound to the VPC interface.
4. Pulumi builds the admin kubeconfig itself: an admin client certificate signed by
   the CA, for ``https://<public IP>:6443``. The minions (``do-k8s-minions``) join with
   the token and the discovery hash exported here.

The API server listens on 6443; this layer's firewall admits it from the VPC only.
Reaching it from elsewhere (for ``pulumi up`` of the k8s layers) needs either
``do-core``'s ``api_cidrs`` (for example your workstation's /32) or an SSH tunnel through
the ``do-support`` bastion (the certificate is valid for 127.0.0.1 too).

The CA key, the token and the kubeconfig are Pulumi secrets; so is the whole
``user_data``. The droplet is a single control-plane node: an HA control plane would need
a load balancer in front of 6443 and the other shared keys (etcd CA, front-proxy CA,
service-account key) pre-distributed the same way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import yaml

from components.do import _cloudinit, _pki
from components.do._nodes import (
    SSH,
    DropletSpec,
    Network,
    add_to_project,
    base_name,
    droplet,
    role_firewall,
    secret_user_data,
)

TYPE_TOKEN = "infragym:do:K8sControlPlane"
ROLE = "k8s-control-plane"
KUBEADM_API = "kubeadm.k8s.io/v1beta4"
"""kubeadm's config API (Kubernetes >= 1.31)."""
API_PORT = 6443
CRI_SOCKET = "unix:///var/run/containerd/containerd.sock"
FLANNEL_VXLAN = ("udp", "8472")
"""Flannel's VXLAN backend port (flannel docs, "Firewalls")."""

CONTROL_PLANE_PORTS: tuple[tuple[str, str], ...] = (
    ("tcp", str(API_PORT)),  # kube-apiserver
    ("tcp", "2379-2380"),  # etcd client and peer API
    ("tcp", "10250"),  # kubelet API
    ("tcp", "10257"),  # kube-controller-manager
    ("tcp", "10259"),  # kube-scheduler
    FLANNEL_VXLAN,
    SSH,
)
"""Kubernetes' "Ports and Protocols" list for control-plane nodes, plus the CNI and SSH."""

# The bootstrap script's placeholders for what only the droplet knows.
PRIVATE_IP = "__PRIVATE_IP__"
PUBLIC_IP = "__PUBLIC_IP__"

K8S_INSTALL = r"""
# install_kubernetes: kernel settings, containerd, and kubelet/kubeadm/kubectl
# (pkgs.k8s.io, minor version K8S_MINOR).
install_kubernetes() {
  printf 'overlay\nbr_netfilter\n' >/etc/modules-load.d/infragym-k8s.conf
  modprobe overlay
  modprobe br_netfilter
  printf '%s\n' 'net.bridge.bridge-nf-call-iptables = 1' \
    'net.bridge.bridge-nf-call-ip6tables = 1' 'net.ipv4.ip_forward = 1' \
    >/etc/sysctl.d/90-infragym-k8s.conf
  sysctl --system >/dev/null
  swapoff -a
  apt_install ca-certificates curl gpg containerd
  install -d -m 0755 /etc/containerd
  containerd config default | sed 's/SystemdCgroup = false/SystemdCgroup = true/' \
    >/etc/containerd/config.toml
  systemctl restart containerd
  install -d -m 0755 /etc/apt/keyrings
  local repo="https://pkgs.k8s.io/core:/stable:/v${K8S_MINOR}/deb/"
  curl -fsSL --retry 5 "${repo}Release.key" \
    | gpg --batch --yes --dearmor -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg
  printf 'deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] %s /\n' "$repo" \
    >/etc/apt/sources.list.d/kubernetes.list
  apt_install kubelet kubeadm kubectl
  apt-mark hold kubelet kubeadm kubectl
  systemctl enable kubelet
}
"""
"""Shell shared by control-plane and minion bootstraps."""

CONTROL_PLANE_BODY = (
    K8S_INSTALL
    + r"""
install_kubernetes
PUBLIC_IP=$(metadata interfaces/public/0/ipv4/address)
config=/etc/infragym/kubeadm-init.yaml
sed -e "s/__PRIVATE_IP__/${PRIVATE_IP}/g" -e "s/__PUBLIC_IP__/${PUBLIC_IP}/g" \
  "${config}.in" >"$config"
# ClusterConfiguration is the last document: pin it to the installed kubeadm.
printf 'kubernetesVersion: %s\n' "$(kubeadm version -o short)" >>"$config"
chmod 0600 "$config"
if [ ! -f /etc/kubernetes/admin.conf ]; then
  kubeadm init --config "$config"
fi
export KUBECONFIG=/etc/kubernetes/admin.conf
retry 60 5 kubectl get --raw /readyz >/dev/null

# Pod network: flannel, with the pod CIDR of this cluster, over the VPC interface.
iface=$(ip -o -4 addr show | awk -v ip="$PRIVATE_IP" '$4 ~ ("^" ip "/") {print $2; exit}')
curl -fsSL --retry 5 \
  "https://github.com/flannel-io/flannel/releases/download/${FLANNEL_VERSION}/kube-flannel.yml" \
  | sed "s#10.244.0.0/16#${POD_CIDR}#" >/etc/infragym/kube-flannel.yml
retry 30 10 kubectl apply -f /etc/infragym/kube-flannel.yml
args=$(kubectl -n kube-flannel get ds kube-flannel-ds \
  -o jsonpath='{.spec.template.spec.containers[0].args}')
if [ -n "$iface" ] && [[ "$args" != *--iface=* ]]; then
  patch=$(printf '[{"op": "add", "path": "%s", "value": "--iface=%s"}]' \
    /spec/template/spec/containers/0/args/- "$iface")
  kubectl -n kube-flannel patch ds kube-flannel-ds --type json -p "$patch"
fi
if [ "$SCHEDULE_WORKLOADS" = 1 ]; then
  kubectl taint nodes --all node-role.kubernetes.io/control-plane- || true
fi
"""
)


@dataclass
class K8sControlPlaneArgs:
    """Inputs of :class:`K8sControlPlane`.

    Attributes:
        network: The do-core VPC, tag and project.
        droplet: Size, image and SSH keys of the control-plane droplet.
        secret_seed: Seed the CA, token and admin certificate are derived from (secret;
            see :mod:`components.do._pki`).
        kubernetes_minor: Kubernetes minor version (``1.33``): the pkgs.k8s.io repository
            the packages come from; kubeadm's own patch version is deployed.
        pod_cidr: Pod network (flannel); must not overlap the VPC.
        service_cidr: Service network; must not overlap the VPC.
        flannel_version: Flannel release whose ``kube-flannel.yml`` is applied.
        schedule_workloads: Remove the control-plane taint so pods may run on it (for a
            one-node cluster).
    """

    network: Network
    droplet: DropletSpec
    secret_seed: str
    kubernetes_minor: str = "1.33"
    pod_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    flannel_version: str = "v0.27.4"
    schedule_workloads: bool = False


def check_cluster_cidrs(vpc_ip_range: str, pod_cidr: str, service_cidr: str) -> None:
    """Raise ValueError when the pod, service and VPC networks overlap (routing breaks)."""
    nets = {
        "VPC range": ipaddress.ip_network(vpc_ip_range, strict=False),
        "pod_cidr": ipaddress.ip_network(pod_cidr, strict=False),
        "service_cidr": ipaddress.ip_network(service_cidr, strict=False),
    }
    names = list(nets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if nets[a].overlaps(nets[b]):
                raise ValueError(
                    f"{a} {nets[a]} overlaps {b} {nets[b]}; choose non-overlapping ranges"
                )


def kubeadm_init_config(
    pki: _pki.ClusterPki, cluster_name: str, pod_cidr: str, service_cidr: str
) -> str:
    """kubeadm Init + Cluster configuration, with the droplet's IPs as placeholders.

    ClusterConfiguration comes last so the script can append ``kubernetesVersion``.
    """
    init = {
        "apiVersion": KUBEADM_API,
        "kind": "InitConfiguration",
        "bootstrapTokens": [
            {
                "token": pki.token,
                "description": "infragym: minions join with this token",
                "ttl": "0s",
                "usages": ["signing", "authentication"],
                "groups": ["system:bootstrappers:kubeadm:default-node-token"],
            }
        ],
        "localAPIEndpoint": {"advertiseAddress": PRIVATE_IP, "bindPort": API_PORT},
        "nodeRegistration": {
            "criSocket": CRI_SOCKET,
            "kubeletExtraArgs": [{"name": "node-ip", "value": PRIVATE_IP}],
        },
    }
    cluster = {
        "apiVersion": KUBEADM_API,
        "kind": "ClusterConfiguration",
        "clusterName": cluster_name,
        "controlPlaneEndpoint": f"{PRIVATE_IP}:{API_PORT}",
        "networking": {"podSubnet": pod_cidr, "serviceSubnet": service_cidr},
        "apiServer": {"certSANs": [PUBLIC_IP, PRIVATE_IP, "127.0.0.1", "localhost"]},
    }
    return (
        yaml.safe_dump(init, sort_keys=False) + "---\n" + yaml.safe_dump(cluster, sort_keys=False)
    )


def control_plane_user_data(
    pki: _pki.ClusterPki, args: K8sControlPlaneArgs, cluster_name: str, vpc_ip_range: str
) -> str:
    """The control-plane droplet's cloud-config (holds the CA key and token: secret)."""
    check_cluster_cidrs(vpc_ip_range, args.pod_cidr, args.service_cidr)
    env = {
        "K8S_MINOR": args.kubernetes_minor,
        "POD_CIDR": args.pod_cidr,
        "FLANNEL_VERSION": args.flannel_version,
        "SCHEDULE_WORKLOADS": args.schedule_workloads,
    }
    files = [
        _cloudinit.WriteFile("/etc/kubernetes/pki/ca.crt", pki.ca_cert_pem, "0644"),
        _cloudinit.WriteFile("/etc/kubernetes/pki/ca.key", pki.ca_key_pem, "0600"),
        _cloudinit.WriteFile(
            "/etc/infragym/kubeadm-init.yaml.in",
            kubeadm_init_config(pki, cluster_name, args.pod_cidr, args.service_cidr),
            "0600",
        ),
    ]
    return _cloudinit.node_cloud_config(ROLE, env, CONTROL_PLANE_BODY, files)


class K8sControlPlane(pulumi.ComponentResource):
    """A kubeadm control-plane droplet, its role tag and firewall.

    Attributes:
        kubeconfig: Admin kubeconfig for the public API endpoint (secret).
        api_endpoint: ``https://<public IP>:6443``.
        api_private_endpoint: ``<private IP>:6443``, what minions join.
        droplet_ids: Ids of the control-plane droplets.
        join_token: The kubeadm bootstrap token (secret).
        discovery_hash: ``sha256:...`` pin of the CA key for ``kubeadm join``.
        ca_cert: The cluster CA certificate (PEM; public).
        cluster_name: The kubeadm cluster name.
    """

    kubeconfig: pulumi.Output[str]
    api_endpoint: pulumi.Output[str]
    api_private_endpoint: pulumi.Output[str]
    droplet_ids: pulumi.Output[Sequence[str]]
    join_token: pulumi.Output[str]
    discovery_hash: pulumi.Output[str]
    ca_cert: pulumi.Output[str]
    cluster_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: K8sControlPlaneArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        net = args.network
        pki = _pki.cluster_pki(args.secret_seed)
        cluster = base_name(net.deployment)

        tag = role_firewall(self, net, ROLE, CONTROL_PLANE_PORTS)
        user_data = secret_user_data(
            lambda vpc: control_plane_user_data(pki, args, cluster, vpc), net.vpc_ip_range
        )
        node = droplet(self, "k8s-cp-0", net, args.droplet, [tag.name], user_data)
        add_to_project(self, net, [node], "k8s-control-plane-project")

        self.api_endpoint = node.ipv4_address.apply(lambda ip: f"https://{ip}:{API_PORT}")
        self.api_private_endpoint = node.ipv4_address_private.apply(lambda ip: f"{ip}:{API_PORT}")
        self.kubeconfig = pulumi.Output.secret(
            self.api_endpoint.apply(lambda url: pki.admin_kubeconfig(url, cluster))
        )
        self.droplet_ids = pulumi.Output.all(node.id)
        self.join_token = pulumi.Output.secret(pki.token)
        self.discovery_hash = pulumi.Output.from_input(pki.discovery_hash)
        self.ca_cert = pulumi.Output.from_input(pki.ca_cert_pem)
        self.cluster_name = pulumi.Output.from_input(cluster)
        self.register_outputs(
            {
                "kubeconfig": self.kubeconfig,
                "api_endpoint": self.api_endpoint,
                "api_private_endpoint": self.api_private_endpoint,
                "droplet_ids": self.droplet_ids,
                "join_token": self.join_token,
                "discovery_hash": self.discovery_hash,
                "ca_cert": self.ca_cert,
                "cluster_name": self.cluster_name,
            }
        )
