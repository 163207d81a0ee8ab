"""The do-nomad layer's graph under Pulumi mocks: servers and clients, Consul hand-off,
firewalls, secrets, and settings validation."""

from __future__ import annotations

import json

import pytest

from infragym.backends.mockrun import LayerRun
from infragym.errors import ConfigError
from stacks.registry import get_layer
from tests.components.do_droplets import (
    SEED,
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

LAYER = "do-nomad"
COMPONENT = "infragym:do:Nomad"


@pytest.fixture(scope="module")
def nomad(support: LayerRun) -> LayerRun:
    settings = {"secret_seed": "d4" * 32, "server_count": 3, "client_count": 2}
    return run(LAYER, settings, support.outputs)


def _role(r: LayerRun, role: str) -> list:
    return [d for d in droplets(r) if d.name.startswith(f"nomad-{role}-")]


def test_declares_the_resources_it_creates_all_parented(nomad: LayerRun) -> None:
    assert_declares_its_resources_all_parented(nomad, LAYER, COMPONENT)
    assert "do-support" in get_layer(LAYER).upstream


def test_servers_and_clients_in_the_vpc(nomad: LayerRun) -> None:
    servers, clients = _role(nomad, "server"), _role(nomad, "client")
    assert len(servers) == 3 and len(clients) == 2
    assert_droplets_in_vpc(servers, "s-1vcpu-2gb", "nomad-server")
    assert_droplets_in_vpc(clients, "s-2vcpu-4gb", "nomad-client")
    assert_in_project(nomad, "nomad-project", droplets(nomad))
    assert nomad.outputs["nomad_addr"] == "http://10.10.0.10:4646"


def test_firewalls_open_nomads_ports_and_consul_gossip_within_the_vpc(nomad: LayerRun) -> None:
    assert_firewall_by_role_tag(nomad, "nomad-server-firewall", "nomad-server")
    assert_firewall_by_role_tag(nomad, "nomad-client-firewall", "nomad-client")
    gossip = {("tcp", "8301"), ("udp", "8301"), ("tcp", "22")}
    assert (
        ports(inbound(nomad, "nomad-server-firewall"))
        == {
            ("tcp", "4646"),
            ("tcp", "4647"),
            ("tcp", "4648"),
            ("udp", "4648"),
        }
        | gossip
    )
    assert (
        ports(inbound(nomad, "nomad-client-firewall"))
        == {
            ("tcp", "4646"),
            ("tcp", "4647"),
            ("tcp", "20000-32000"),
            ("udp", "20000-32000"),
        }
        | gossip
    )
    assert_firewalls_within_vpc(nomad)


def test_secrets_are_secret(nomad: LayerRun) -> None:
    assert all("userData" in d.secret_inputs for d in droplets(nomad))
    assert {"nomad_token", "secret_seed"} <= nomad.secret_outputs


def test_nodes_join_consul_from_do_support(support: LayerRun, nomad: LayerRun) -> None:
    for d in droplets(nomad):
        consul = json.loads(files(d)["/etc/infragym/consul.json"]["content"])
        assert consul["retry_join"] == support.outputs["consul_servers"]
        assert consul["encrypt"] == support.outputs["consul_gossip_key"]
        assert consul["acl"]["tokens"]["agent"] == support.outputs["consul_agent_token"]
        assert "server" not in consul  # a client agent
        config = json.loads(files(d)["/etc/infragym/nomad.json"]["content"])
        assert config["consul"]["token"] == support.outputs["consul_nomad_token"]
        assert config["consul"]["server_auto_join"] and config["consul"]["client_auto_join"]
        assert config["acl"] == {"enabled": True}


def test_servers_expect_each_other_and_bootstrap_acls_with_the_output_token(
    nomad: LayerRun,
) -> None:
    for d in _role(nomad, "server"):
        written = files(d)
        config = json.loads(written["/etc/infragym/nomad.json"]["content"])
        assert config["server"]["bootstrap_expect"] == 3
        assert "client" not in config
        token = written["/etc/infragym/nomad-bootstrap.token"]
        assert token["permissions"] == "0600"
        assert token["content"].strip() == nomad.outputs["nomad_token"]
        assert env(d, "nomad-server")["NOMAD_ROLE"] == "server"
    for d in _role(nomad, "client"):
        assert "/etc/infragym/nomad-bootstrap.token" not in files(d)
        assert json.loads(files(d)["/etc/infragym/nomad.json"]["content"])["client"]["enabled"]


def test_clients_share_user_data_so_scaling_only_adds(nomad: LayerRun) -> None:
    assert len({d.inputs["userData"] for d in _role(nomad, "client")}) == 1


def test_same_seed_same_user_data(support: LayerRun, nomad: LayerRun) -> None:
    def server_user_data(r: LayerRun) -> str:
        return _role(r, "server")[0].inputs["userData"]

    again = run(LAYER, {"secret_seed": "d4" * 32, "server_count": 3}, support.outputs)
    assert server_user_data(again) == server_user_data(nomad)
    other = run(LAYER, {"secret_seed": SEED, "server_count": 3}, support.outputs)
    assert server_user_data(other) != server_user_data(nomad)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"server_count": 2}, "use an odd number"),
        ({"client_count": 0}, "greater than or equal to 1"),
        ({"client_size": "s-99vcpu"}, "unknown size slug"),
        ({"nomad_version": "1.9"}, "nomad_version"),
    ],
)
def test_invalid_settings_fail_before_any_cloud_call(settings: dict, message: str) -> None:
    assert_invalid_settings(LAYER, settings, message)


def test_without_do_support_the_error_names_the_missing_output() -> None:
    with pytest.raises(ConfigError, match="consul_servers"):
        run(LAYER, {"secret_seed": SEED})
