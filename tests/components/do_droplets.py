"""Helpers for the mocks tests of the droplet-based DigitalOcean layers.

Upstream values stand in for the ``do-core`` outputs; the layers downstream of
``do-support`` or ``do-k8s-control-plane`` get those layers' real (mock-run) outputs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from infragym.backends.mockrun import LayerRun, RecordedResource, run_layer
from infragym.errors import ConfigError

# Registered explicitly, so these tests do not depend on stacks/layers/__init__.py.
from stacks.layers import (  # noqa: F401
    do_k8s_control_plane,
    do_k8s_minions,
    do_nomad,
    do_support,
    do_swarm_manager,
    do_swarm_worker,
)
from stacks.registry import get_layer

DROPLET = "digitalocean:index/droplet:Droplet"
FIREWALL = "digitalocean:index/firewall:Firewall"
TAG = "digitalocean:index/tag:Tag"
PROJECT_RESOURCES = "digitalocean:index/projectResources:ProjectResources"
WORLD = {"0.0.0.0/0", "::/0"}

DEPLOYMENT = "dev"
VPC_RANGE = "10.10.0.0/16"
CORE: dict[str, Any] = {
    "region": "nyc3",
    "vpc_id": "vpc-uuid-1",
    "vpc_ip_range": VPC_RANGE,
    "tag": "infragym-dev",
    "project_id": "project-1",
    "firewall_id": "firewall-1",
}
SEED = "9f" * 32
"""A fixed 64-hex-digit secret seed."""


def run(layer: str, settings: dict[str, Any], upstream: dict[str, Any] | None = None) -> LayerRun:
    """Run one layer under mocks with the do-core outputs (plus ``upstream``)."""
    return run_layer(layer, settings, {**CORE, **(upstream or {})}, deployment=DEPLOYMENT)


def support_run(**settings: Any) -> LayerRun:
    """A do-support run (default: 3 Consul servers, the fixed seed)."""
    return run("do-support", {"secret_seed": SEED, **settings})


def assert_declares_its_resources_all_parented(r: LayerRun, layer: str, component: str) -> None:
    """The layer declares exactly the resource types it creates, all under its component."""
    assert {x.type for x in r.resources} == set(get_layer(layer).resources)
    assert not r.one(component).custom
    assert all(x.parent_type == component for x in r.resources if x.type != component)


def assert_invalid_settings(layer: str, settings: dict[str, Any], message: str) -> None:
    """The settings fail, before any cloud call, with a ConfigError naming the layer."""
    with pytest.raises(ConfigError, match=layer) as err:
        get_layer(layer).parse_settings(settings)
    assert message in str(err.value)


def droplets(r: LayerRun) -> list[RecordedResource]:
    """The layer's droplets by name, index-aware (``x-2`` before ``x-10``).

    Not registration order: a droplet registers when its user_data resolves, and the
    order in which Outputs resolve is not fixed.
    """

    def key(d: RecordedResource) -> tuple[str, int]:
        stem, _, index = d.name.rpartition("-")
        return (stem, int(index)) if index.isdigit() else (d.name, -1)

    return sorted(r.by_type(DROPLET), key=key)


def inbound(r: LayerRun, firewall: str) -> list[dict[str, Any]]:
    """Inbound rules of one firewall."""
    return r.one(FIREWALL, firewall).inputs.get("inboundRules") or []


def ports(rules: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """``(protocol, port range)`` of each rule."""
    return {(rule["protocol"], rule.get("portRange", "")) for rule in rules}


def assert_firewalls_within_vpc(r: LayerRun, allowed: set[str] = frozenset()) -> None:
    """Every inbound rule of every firewall admits only the VPC range (or ``allowed``),
    none is open to the world, and egress is the open egress of the other DO layers."""
    firewalls = r.by_type(FIREWALL)
    assert firewalls
    for fw in firewalls:
        for rule in fw.inputs.get("inboundRules") or []:
            sources = set(rule.get("sourceAddresses") or [])
            assert sources, rule
            assert not sources & WORLD, (fw.name, rule)
            assert sources <= {VPC_RANGE} | set(allowed), (fw.name, rule)
            assert not rule.get("sourceTags") and not rule.get("sourceDropletIds"), rule
        outbound = fw.inputs["outboundRules"]
        assert {o["protocol"] for o in outbound} == {"tcp", "udp", "icmp"}


def assert_firewall_by_role_tag(r: LayerRun, firewall: str, role: str) -> None:
    """The firewall applies to the role's tag, which every droplet of the role carries."""
    tag = f"infragym-{DEPLOYMENT}-{role}"
    assert r.one(TAG, f"{role}-tag").inputs["name"] == tag
    fw = r.one(FIREWALL, firewall).inputs
    assert fw["tags"] == [tag]
    assert "dropletIds" not in fw


def assert_droplets_in_vpc(
    nodes: list[RecordedResource], size: str, role: str, image: str = "ubuntu-24-04-x64"
) -> None:
    """Droplets in the do-core VPC and region, of ``size``, with both tags."""
    assert nodes
    for d in nodes:
        assert d.inputs["vpcUuid"] == CORE["vpc_id"]
        assert d.inputs["region"] == CORE["region"]
        assert d.inputs["size"] == size
        assert d.inputs["image"] == image
        assert d.inputs["tags"] == [CORE["tag"], f"infragym-{DEPLOYMENT}-{role}"]
        assert d.inputs["name"] == f"infragym-{DEPLOYMENT}-{d.name}"


def assert_in_project(r: LayerRun, logical_name: str, nodes: list[RecordedResource]) -> None:
    """The droplets are resources of the do-core project."""
    links = r.one(PROJECT_RESOURCES, logical_name).inputs
    assert links["project"] == CORE["project_id"]
    assert sorted(links["resources"]) == sorted(f"do:droplet:{d.name}-id" for d in nodes)


def cloud_config(d: RecordedResource) -> dict[str, Any]:
    """A droplet's user_data, checked to be ``#cloud-config`` YAML, parsed."""
    text = d.inputs["userData"]
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


def files(d: RecordedResource) -> dict[str, dict[str, Any]]:
    """A droplet's ``write_files`` entries by path."""
    return {f["path"]: f for f in cloud_config(d).get("write_files", [])}


def env(d: RecordedResource, role: str) -> dict[str, str]:
    """The values of a node's ``/etc/infragym/<role>.env``, as bash reads them."""
    text = files(d)[f"/etc/infragym/{role}.env"]["content"]
    out = subprocess.run(
        ["bash", "-c", 'set -a; eval "$1"; env -0', "_", text],
        check=True,
        capture_output=True,
        text=True,
        env={},
    ).stdout
    values = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    return {k: values[k] for k in values if k.isupper() and k not in {"PWD", "SHLVL", "_"}}


def shellcheck_path() -> str:
    """The ``shellcheck`` binary; skip without it, but fail under CI (``CI`` set)."""
    path = shutil.which("shellcheck")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("shellcheck is not installed (apt-get install shellcheck)")
        pytest.skip("shellcheck is not installed")
    return path


def shellcheck(script: str, shell: str = "bash") -> str:
    """Run shellcheck on a script (all severities); return its findings ("" if none)."""
    result = subprocess.run(
        [shellcheck_path(), "--severity=style", f"--shell={shell}", "-"],
        input=script,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout + result.stderr
