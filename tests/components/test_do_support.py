"""The do-support layer's graph under Pulumi mocks: the bastion (the only SSH ingress),
the Consul servers, their firewalls and derived ACL tokens, and settings validation."""

from __future__ import annotations

import json

import pytest

from components.do.support import ACL_NAMES, acl_rules
from infragym.backends.mockrun import LayerRun
from tests.components.do_droplets import (
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
    support_run,
)

LAYER = "do-support"
COMPONENT = "infragym:do:Support"
ADMIN = "198.51.100.7/32"


@pytest.fixture(scope="module")
def support() -> LayerRun:
    """Overrides the default run of ``conftest.py``: SSH to the bastion from ``ADMIN``."""
    return support_run(ssh_cidrs=[ADMIN])


def _consul(r: LayerRun) -> list:
    return [d for d in droplets(r) if d.name.startswith("consul-")]


def test_declares_the_resources_it_creates_all_parented(support: LayerRun) -> None:
    assert_declares_its_resources_all_parented(support, LAYER, COMPONENT)


def test_bastion_and_three_consul_servers_in_the_vpc(support: LayerRun) -> None:
    bastion = support.one("digitalocean:index/droplet:Droplet", "bastion")
    assert_droplets_in_vpc([bastion], "s-1vcpu-1gb", "bastion")
    consul = _consul(support)
    assert [d.name for d in consul] == ["consul-0", "consul-1", "consul-2"]
    assert_droplets_in_vpc(consul, "s-1vcpu-2gb", "consul-server")
    assert_in_project(support, "support-project", [bastion, *consul])
    assert support.outputs["bastion_ip"] == "203.0.113.10"


def test_bastion_is_the_only_ssh_ingress_and_only_from_the_configured_cidrs(
    support: LayerRun,
) -> None:
    assert_firewall_by_role_tag(support, "bastion-firewall", "bastion")
    (rule,) = inbound(support, "bastion-firewall")
    assert rule == {"protocol": "tcp", "portRange": "22", "sourceAddresses": [ADMIN]}
    assert_firewalls_within_vpc(support, allowed={ADMIN})
    assert ADMIN not in str(inbound(support, "consul-server-firewall"))


def test_by_default_nothing_is_open_to_anyone() -> None:
    r = support_run()
    assert inbound(r, "bastion-firewall") == []
    assert_firewalls_within_vpc(r)


def test_consul_firewall_opens_consuls_documented_ports(support: LayerRun) -> None:
    assert_firewall_by_role_tag(support, "consul-server-firewall", "consul-server")
    assert ports(inbound(support, "consul-server-firewall")) == {
        ("tcp", "8300"),
        ("tcp", "8301"),
        ("udp", "8301"),
        ("tcp", "8302"),
        ("udp", "8302"),
        ("tcp", "8500"),
        ("tcp", "8600"),
        ("udp", "8600"),
        ("tcp", "22"),
    }


def test_consul_user_data_and_credentials_are_secret(support: LayerRun) -> None:
    assert all("userData" in d.secret_inputs for d in _consul(support))
    secret = {
        "consul_gossip_key",
        "consul_management_token",
        "consul_agent_token",
        "consul_dns_token",
        "consul_nomad_token",
        "consul_swarm_manager_token",
        "consul_swarm_worker_token",
        "secret_seed",
    }
    assert secret <= support.secret_outputs
    assert "consul_servers" not in support.secret_outputs


def test_servers_join_the_earlier_servers_and_expect_all(support: LayerRun) -> None:
    for i, d in enumerate(_consul(support)):
        config = json.loads(files(d)["/etc/infragym/consul.json"]["content"])
        assert config["server"] is True
        assert config["bootstrap_expect"] == 3
        assert config["retry_join"] == ["10.10.0.10"] * i  # mock IPs of servers 0..i-1
        assert config["encrypt"] == support.outputs["consul_gossip_key"]
        acl = config["acl"]
        assert acl["default_policy"] == "deny"
        assert acl["tokens"]["initial_management"] == support.outputs["consul_management_token"]
        assert acl["tokens"]["agent"] == support.outputs["consul_agent_token"]
        assert config["datacenter"] == "nyc3"


def test_the_exported_tokens_are_the_ones_the_servers_create(support: LayerRun) -> None:
    written = files(_consul(support)[0])
    accessors = dict(
        p.split(":") for p in env(_consul(support)[0], "consul-server")["ACL_ACCESSORS"].split()
    )
    assert set(accessors) == set(ACL_NAMES)
    for name in ACL_NAMES:
        token = json.loads(written[f"/etc/infragym/consul-acl/{name}.token.json"]["content"])
        assert token["AccessorID"] == accessors[name]
        assert token["Policies"] == [{"Name": name}]
        output = "consul_" + name.replace("-", "_") + "_token"
        assert token["SecretID"] == support.outputs[output]
        assert written[f"/etc/infragym/consul-acl/{name}.token.json"]["permissions"] == "0600"


def test_swarm_worker_policy_cannot_read_the_manager_token() -> None:
    worker = acl_rules("swarm-worker", "infragym/dev/swarm/")
    assert "manager-token" not in worker
    assert 'key "infragym/dev/swarm/worker-token" { policy = "read" }' in worker
    assert "write" not in worker


def test_bastion_user_data_holds_no_secret(support: LayerRun) -> None:
    bastion = support.one("digitalocean:index/droplet:Droplet", "bastion")
    sshd = files(bastion)["/etc/ssh/sshd_config.d/10-infragym.conf"]["content"]
    assert "PasswordAuthentication no" in sshd


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"consul_count": 2}, "use an odd number"),
        ({"consul_count": 0}, "greater than or equal to 1"),
        ({"ssh_cidrs": ["10.0.0.0/99"]}, "is not a CIDR block"),
        ({"bastion_size": "tiny"}, "unknown size slug 'tiny'"),
        ({"datacenter": "NYC 3"}, "datacenter"),
        ({"consul_version": "latest"}, "consul_version"),
    ],
)
def test_invalid_settings_fail_before_any_cloud_call(settings: dict, message: str) -> None:
    assert_invalid_settings(LAYER, settings, message)
