"""The do-core layer's resource graph under Pulumi mocks: VPC, tag, firewall, project."""

from __future__ import annotations

import pytest

from infragym.backends.mockrun import LayerRun, run_layer
from stacks.registry import get_layer

CORE = "infragym:do:Core"
VPC = "digitalocean:index/vpc:Vpc"
TAG = "digitalocean:index/tag:Tag"
FIREWALL = "digitalocean:index/firewall:Firewall"
PROJECT = "digitalocean:index/project:Project"
WORLD = {"0.0.0.0/0", "::/0"}


def _inbound(run: LayerRun) -> list[dict]:
    return run.one(FIREWALL, "firewall").inputs["inboundRules"]


def _rules_for_port(run: LayerRun, port: str) -> list[dict]:
    return [r for r in _inbound(run) if r.get("portRange") == port]


@pytest.fixture(scope="module")
def default_run() -> LayerRun:
    return run_layer("do-core", {}, deployment="dev")


def test_declares_the_resources_it_creates(default_run: LayerRun) -> None:
    assert {r.type for r in default_run.resources} == set(get_layer("do-core").resources)


def test_children_are_parented_to_the_component(default_run: LayerRun) -> None:
    component = default_run.one(CORE, "core")
    assert not component.custom
    children = [r for r in default_run.resources if r.type != CORE]
    assert len(children) == 4
    assert all(r.parent_type == CORE and r.custom for r in children)


def test_vpc_region_and_range(default_run: LayerRun) -> None:
    vpc = default_run.one(VPC, "vpc").inputs
    assert vpc["region"] == "nyc3"
    assert vpc["ipRange"] == "10.10.0.0/16"
    assert vpc["name"] == "infragym-dev"


def test_firewall_is_applied_by_the_deployment_tag(default_run: LayerRun) -> None:
    tag = default_run.one(TAG, "tag").inputs["name"]
    assert tag == "infragym-dev"
    firewall = default_run.one(FIREWALL, "firewall").inputs
    assert firewall["tags"] == [tag]
    assert "dropletIds" not in firewall


def test_no_inbound_rule_is_open_to_the_world_by_default(default_run: LayerRun) -> None:
    for rule in _inbound(default_run):
        assert not WORLD & set(rule.get("sourceAddresses") or []), rule
    assert _rules_for_port(default_run, "80") == []
    assert _rules_for_port(default_run, "443") == []
    assert _rules_for_port(default_run, "6443") == []


def test_nodeports_only_from_the_vpc(default_run: LayerRun) -> None:
    (rule,) = _rules_for_port(default_run, "30000-32767")
    assert rule["protocol"] == "tcp"
    assert rule["sourceAddresses"] == ["10.10.0.0/16"]
    assert not rule.get("sourceTags")


def test_icmp_only_within_the_vpc_and_no_blanket_internal_rule(
    default_run: LayerRun,
) -> None:
    (icmp,) = [r for r in _inbound(default_run) if r["protocol"] == "icmp"]
    assert icmp["sourceAddresses"] == ["10.10.0.0/16"]
    # Firewalls add up on DigitalOcean: an any-port rule here would undo the narrow
    # port lists of the self-managed layers.
    assert not [r for r in _inbound(default_run) if r.get("sourceTags")]
    assert all(r.get("portRange") != "1-65535" for r in _inbound(default_run))


def test_outbound_is_open(default_run: LayerRun) -> None:
    outbound = default_run.one(FIREWALL, "firewall").inputs["outboundRules"]
    assert {r["protocol"] for r in outbound} == {"tcp", "udp", "icmp"}
    for rule in outbound:
        assert set(rule["destinationAddresses"]) == WORLD
        if rule["protocol"] != "icmp":
            assert rule["portRange"] == "1-65535"


def test_project(default_run: LayerRun) -> None:
    project = default_run.one(PROJECT, "project").inputs
    assert project["name"] == "infragym-dev"
    assert project["environment"] == "Development"


def test_outputs(default_run: LayerRun) -> None:
    out = default_run.outputs
    assert set(out) == set(get_layer("do-core").outputs)
    assert out["region"] == "nyc3"
    assert out["vpc_ip_range"] == "10.10.0.0/16"
    assert out["tag"] == "infragym-dev"
    assert out["vpc_id"] and out["project_id"] and out["firewall_id"]
    assert default_run.secret_outputs == frozenset()


def test_ingress_and_api_rules_only_when_configured() -> None:
    run = run_layer(
        "do-core",
        {
            "region": "fra1",
            "vpc_ip_range": "172.16.0.0/20",
            "ingress_cidrs": ["203.0.113.0/24", "0.0.0.0/0"],
            "api_cidrs": ["198.51.100.7/32"],
            "project_name": "gym",
            "environment": "Staging",
        },
        deployment="exp1",
    )
    for port in ("80", "443"):
        (rule,) = _rules_for_port(run, port)
        assert rule["protocol"] == "tcp"
        assert rule["sourceAddresses"] == ["203.0.113.0/24", "0.0.0.0/0"]
    (api,) = _rules_for_port(run, "6443")
    assert api["sourceAddresses"] == ["198.51.100.7/32"]
    # The NodePort and ICMP rules follow the configured VPC range.
    (nodeport,) = _rules_for_port(run, "30000-32767")
    assert nodeport["sourceAddresses"] == ["172.16.0.0/20"]
    assert run.one(VPC, "vpc").inputs["region"] == "fra1"
    project = run.one(PROJECT, "project").inputs
    assert (project["name"], project["environment"]) == ("gym", "Staging")
    assert run.one(TAG, "tag").inputs["name"] == "infragym-exp1"
