"""Layer ``do-k8s-control-plane``: a kubeadm control plane on a droplet
(component :mod:`components.do.k8s_control_plane`).

Provides the ``cluster`` role: its ``kubeconfig`` output (secret) is built in Python from
a CA derived from ``secret_seed``, so the k8s layers can use the cluster without anyone
logging in to the droplet. ``do-k8s-minions`` joins with the ``join_token`` (secret),
``discovery_hash`` and ``api_private_endpoint`` outputs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator

from infragym.catalog import unknown_choice
from infragym.errors import ConfigError
from stacks.layers._do_droplets import (
    DROPLET_LAYER_RESOURCES,
    SeededDropletLayerSettings,
    network,
    secret_seed,
)
from stacks.registry import Layer, LayerContext, register
from stacks.validators import Cidr, DropletSize

KUBERNETES_MINORS = ("1.31", "1.32", "1.33", "1.34")
"""Minors with a pkgs.k8s.io repository that read the kubeadm v1beta4 config API."""


def _minor(value: str) -> str:
    if value not in KUBERNETES_MINORS:
        raise ValueError(unknown_choice("Kubernetes minor version", value, KUBERNETES_MINORS))
    return value


KubernetesMinor = Annotated[str, AfterValidator(_minor)]
"""A Kubernetes minor version (``1.33``) this layer can install."""

MIN_CONTROL_PLANE_MEMORY_MIB = 2048
"""kubeadm's preflight check refuses a control plane with less than 2 vCPUs or 2 GB."""


class DoK8sControlPlaneSettings(SeededDropletLayerSettings):
    """Settings of the ``do-k8s-control-plane`` layer."""

    size: DropletSize = Field(
        "s-2vcpu-4gb",
        description="Control-plane droplet size; kubeadm needs >= 2 vCPUs and 2 GiB.",
    )
    kubernetes_minor: KubernetesMinor = Field(
        "1.33", description="Kubernetes minor version (kubeadm's latest patch of it)."
    )
    pod_cidr: Cidr = Field("10.244.0.0/16", description="Pod network (flannel).")
    service_cidr: Cidr = Field("10.96.0.0/12", description="Service network.")
    flannel_version: str = Field(
        "v0.27.4", pattern=r"^v\d+\.\d+\.\d+$", description="Flannel release to apply."
    )
    schedule_workloads: bool = Field(
        False, description="Let pods run on the control plane (drops its taint)."
    )

    @field_validator("size")
    @classmethod
    def _big_enough(cls, value: str) -> str:
        from infragym import catalog

        size = catalog.size(value)
        if size.vcpus < 2 or size.memory_mib < MIN_CONTROL_PLANE_MEMORY_MIB:
            raise ValueError(
                f"{value!r} has {size.vcpus} vCPU and {size.memory_mib} MiB; kubeadm needs "
                "at least 2 vCPUs and 2 GiB on a control plane (e.g. s-2vcpu-2gb, s-2vcpu-4gb)"
            )
        return value

    @field_validator("pod_cidr", "service_cidr")
    @classmethod
    def _ipv4_private(cls, value: str) -> str:
        net = ipaddress.ip_network(value, strict=False)
        if net.version != 4 or not net.is_private:
            raise ValueError(f"{value!r} is not a private IPv4 range")
        return str(net)


def program(ctx: LayerContext) -> Mapping[str, Any]:
    """Build the control plane and return its outputs."""
    from components.do.k8s_control_plane import (
        K8sControlPlane,
        K8sControlPlaneArgs,
        check_cluster_cidrs,
    )

    s: DoK8sControlPlaneSettings = ctx.settings
    vpc_ip_range = ctx.need("vpc_ip_range")
    if isinstance(vpc_ip_range, str):  # known now (sim, tests); else checked at apply time
        try:
            check_cluster_cidrs(vpc_ip_range, s.pod_cidr, s.service_cidr)
        except ValueError as exc:
            raise ConfigError(f"invalid settings for layer 'do-k8s-control-plane': {exc}") from None
    seed, seed_output = secret_seed(ctx, s.secret_seed)
    cp = K8sControlPlane(
        "k8s-control-plane",
        K8sControlPlaneArgs(
            network=network(ctx),
            droplet=s.droplet(s.size),
            secret_seed=seed,
            kubernetes_minor=s.kubernetes_minor,
            pod_cidr=s.pod_cidr,
            service_cidr=s.service_cidr,
            flannel_version=s.flannel_version,
            schedule_workloads=s.schedule_workloads,
        ),
    )
    return {
        "kubeconfig": cp.kubeconfig,
        "api_endpoint": cp.api_endpoint,
        "api_private_endpoint": cp.api_private_endpoint,
        "droplet_ids": cp.droplet_ids,
        "join_token": cp.join_token,
        "discovery_hash": cp.discovery_hash,
        "ca_cert": cp.ca_cert,
        "cluster_name": cp.cluster_name,
        "kubernetes_minor": s.kubernetes_minor,
        "secret_seed": seed_output,
    }


LAYER = register(
    Layer(
        name="do-k8s-control-plane",
        description="kubeadm Kubernetes control plane on a droplet (CA and token derived "
        "in Python, kubeconfig built without SSH), flannel CNI, firewall.",
        settings=DoK8sControlPlaneSettings,
        program=program,
        upstream=("do-core",),
        provides=("cluster",),
        outputs=(
            "kubeconfig",
            "api_endpoint",
            "api_private_endpoint",
            "droplet_ids",
            "join_token",
            "discovery_hash",
            "ca_cert",
            "cluster_name",
            "kubernetes_minor",
            "secret_seed",
        ),
        resources=("infragym:do:K8sControlPlane", *DROPLET_LAYER_RESOURCES),
    )
)
