"""The do-k8s-control-plane layer's graph under Pulumi mocks, its cloud-init, its derived
PKI, and its settings validation."""

from __future__ import annotations

import base64
import hashlib

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from components.do import _pki
from infragym.backends.mockrun import LayerRun
from infragym.errors import ConfigError
from stacks.registry import get_layer
from tests.components.do_droplets import (
    SEED,
    VPC_RANGE,
    assert_declares_its_resources_all_parented,
    assert_droplets_in_vpc,
    assert_firewall_by_role_tag,
    assert_firewalls_within_vpc,
    assert_in_project,
    assert_invalid_settings,
    droplets,
    env,
    files,
    inbound,
    ports,
    run,
)

LAYER = "do-k8s-control-plane"
COMPONENT = "infragym:do:K8sControlPlane"


def test_declares_the_resources_it_creates_all_parented(cp: LayerRun) -> None:
    assert_declares_its_resources_all_parented(cp, LAYER, COMPONENT)
    assert "cluster" in get_layer(LAYER).provides


def test_one_droplet_in_the_vpc_tagged(cp: LayerRun) -> None:
    (node,) = droplets(cp)
    assert node.name == "k8s-cp-0"
    assert_droplets_in_vpc([node], "s-2vcpu-4gb", "k8s-control-plane")
    assert node.inputs["monitoring"] is True
    assert_in_project(cp, "k8s-control-plane-project", [node])
    assert cp.outputs["droplet_ids"] == ["k8s-cp-0-id"]


def test_firewall_opens_kubeadms_ports_and_flannel_within_the_vpc(cp: LayerRun) -> None:
    assert_firewall_by_role_tag(cp, "k8s-control-plane-firewall", "k8s-control-plane")
    assert ports(inbound(cp, "k8s-control-plane-firewall")) == {
        ("tcp", "6443"),
        ("tcp", "2379-2380"),
        ("tcp", "10250"),
        ("tcp", "10257"),
        ("tcp", "10259"),
        ("udp", "8472"),
        ("tcp", "22"),
    }
    assert_firewalls_within_vpc(cp)


def test_secrets_are_secret(cp: LayerRun) -> None:
    (node,) = droplets(cp)
    assert "userData" in node.secret_inputs
    assert {"kubeconfig", "join_token", "secret_seed"} <= cp.secret_outputs
    assert "api_endpoint" not in cp.secret_outputs
    assert "discovery_hash" not in cp.secret_outputs


def test_cloud_init_carries_the_ca_and_the_token(cp: LayerRun) -> None:
    (node,) = droplets(cp)
    written = files(node)
    assert written["/etc/kubernetes/pki/ca.key"]["permissions"] == "0600"
    pki = _pki.cluster_pki(SEED)
    assert written["/etc/kubernetes/pki/ca.crt"]["content"] == pki.ca_cert_pem
    assert written["/etc/kubernetes/pki/ca.key"]["content"] == pki.ca_key_pem
    init, cluster = yaml.safe_load_all(written["/etc/infragym/kubeadm-init.yaml.in"]["content"])
    assert init["kind"] == "InitConfiguration"
    (token,) = init["bootstrapTokens"]
    assert token["token"] == cp.outputs["join_token"] == pki.token
    assert token["ttl"] == "0s"
    assert cluster["kind"] == "ClusterConfiguration"
    assert cluster["networking"] == {"podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12"}
    assert "__PUBLIC_IP__" in cluster["apiServer"]["certSANs"]
    assert env(node, "k8s-control-plane")["K8S_MINOR"] == "1.33"


def test_kubeconfig_output_verifies_against_the_ca_in_cloud_init(cp: LayerRun) -> None:
    (node,) = droplets(cp)
    ca = x509.load_pem_x509_certificate(
        files(node)["/etc/kubernetes/pki/ca.crt"]["content"].encode()
    )
    config = yaml.safe_load(cp.outputs["kubeconfig"])
    assert config["clusters"][0]["cluster"]["server"] == cp.outputs["api_endpoint"]
    assert cp.outputs["api_endpoint"] == "https://203.0.113.10:6443"
    assert cp.outputs["api_private_endpoint"] == "10.10.0.10:6443"
    cert = x509.load_pem_x509_certificate(
        base64.b64decode(config["users"][0]["user"]["client-certificate-data"])
    )
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(
        cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
    )
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert cp.outputs["discovery_hash"] == "sha256:" + hashlib.sha256(spki).hexdigest()


def test_reruns_with_the_seed_do_not_change_user_data(cp: LayerRun) -> None:
    again = run(LAYER, {"secret_seed": SEED})
    assert droplets(again)[0].inputs["userData"] == droplets(cp)[0].inputs["userData"]
    assert again.outputs["kubeconfig"] == cp.outputs["kubeconfig"]
    other = run(LAYER, {"secret_seed": "c3" * 32})
    assert droplets(other)[0].inputs["userData"] != droplets(cp)[0].inputs["userData"]


def test_without_a_seed_one_is_generated_and_exported_secret() -> None:
    r = run(LAYER, {})
    seed = r.outputs["secret_seed"]
    assert "secret_seed" in r.secret_outputs
    assert _pki.cluster_pki(seed).token == r.outputs["join_token"]


def test_schedule_workloads_reaches_the_script() -> None:
    r = run(LAYER, {"secret_seed": SEED, "schedule_workloads": True, "size": "s-4vcpu-8gb"})
    assert env(droplets(r)[0], "k8s-control-plane")["SCHEDULE_WORKLOADS"] == "1"
    assert droplets(r)[0].inputs["size"] == "s-4vcpu-8gb"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"size": "s-2vcpu-4g"}, "unknown size slug 's-2vcpu-4g'; did you mean"),
        ({"size": "s-1vcpu-1gb"}, "kubeadm needs at least 2 vCPUs"),
        ({"kubernetes_minor": "1.20"}, "unknown Kubernetes minor version '1.20'"),
        ({"pod_cidr": "10.244.0.0/33"}, "is not a CIDR block"),
        ({"pod_cidr": "8.8.0.0/16"}, "not a private IPv4 range"),
        ({"secret_seed": "short"}, "at least 32 characters"),
        ({"ssh_keys": ["my key"]}, "ssh_keys.0"),
        ({"flannel_version": "latest"}, "flannel_version"),
        ({"nodes": 3}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_settings_fail_before_any_cloud_call(settings: dict, message: str) -> None:
    assert_invalid_settings(LAYER, settings, message)


def test_pod_network_overlapping_the_vpc_is_refused() -> None:
    with pytest.raises(ConfigError, match="overlaps"):
        run(LAYER, {"secret_seed": SEED, "pod_cidr": VPC_RANGE})
