"""The do-swarm-manager and do-swarm-worker layers' graphs under Pulumi mocks: droplets,
firewalls, the Consul KV hand-off of the join tokens, secrets, settings validation."""

from __future__ import annotations

import pytest

from infragym.backends.mockrun import LayerRun
from infragym.errors import ConfigError
from stacks.registry import get_layer
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
    run,
)

HEADER = "/etc/infragym/consul-token.header"
NODE_PORTS = {("tcp", "7946"), ("udp", "7946"), ("udp", "4789"), ("tcp", "22")}


@pytest.fixture(scope="module")
def managers(support: LayerRun) -> LayerRun:
    return run("do-swarm-manager", {"count": 3}, support.outputs)


@pytest.fixture(scope="module")
def workers(support: LayerRun, managers: LayerRun) -> LayerRun:
    return run(
        "do-swarm-worker", {"count": 4, "size": "c-2"}, {**support.outputs, **managers.outputs}
    )


@pytest.mark.parametrize(
    ("layer", "component"),
    [
        ("do-swarm-manager", "infragym:do:SwarmManager"),
        ("do-swarm-worker", "infragym:do:SwarmWorker"),
    ],
)
def test_declares_the_resources_it_creates_all_parented(
    layer: str, component: str, managers: LayerRun, workers: LayerRun
) -> None:
    r = managers if layer == "do-swarm-manager" else workers
    assert_declares_its_resources_all_parented(r, layer, component)


def test_droplets_in_the_vpc(managers: LayerRun, workers: LayerRun) -> None:
    assert [d.name for d in droplets(managers)] == [f"swarm-manager-{i}" for i in range(3)]
    assert_droplets_in_vpc(droplets(managers), "s-1vcpu-2gb", "swarm-manager")
    assert len(droplets(workers)) == 4
    assert_droplets_in_vpc(droplets(workers), "c-2", "swarm-worker")
    assert_in_project(managers, "swarm-manager-project", droplets(managers))
    assert_in_project(workers, "swarm-worker-project", droplets(workers))


def test_firewalls_open_swarms_ports_within_the_vpc(managers: LayerRun, workers: LayerRun) -> None:
    assert_firewall_by_role_tag(managers, "swarm-manager-firewall", "swarm-manager")
    assert_firewall_by_role_tag(workers, "swarm-worker-firewall", "swarm-worker")
    assert ports(inbound(managers, "swarm-manager-firewall")) == NODE_PORTS | {("tcp", "2377")}
    assert ports(inbound(workers, "swarm-worker-firewall")) == NODE_PORTS
    assert_firewalls_within_vpc(managers)
    assert_firewalls_within_vpc(workers)


def test_user_data_is_secret(managers: LayerRun, workers: LayerRun) -> None:
    assert all("userData" in d.secret_inputs for d in droplets(managers) + droplets(workers))


def test_managers_write_and_workers_read_through_their_own_consul_tokens(
    support: LayerRun, managers: LayerRun, workers: LayerRun
) -> None:
    for d in droplets(managers):
        written = files(d)[HEADER]
        assert written["permissions"] == "0600"
        token = support.outputs["consul_swarm_manager_token"]
        assert written["content"] == f"X-Consul-Token: {token}\n"
    for d in droplets(workers):
        token = support.outputs["consul_swarm_worker_token"]
        assert files(d)[HEADER]["content"] == f"X-Consul-Token: {token}\n"
        assert support.outputs["consul_swarm_manager_token"] not in d.inputs["userData"]


def test_hand_off_prefix_and_consul_servers_reach_the_scripts(
    support: LayerRun, managers: LayerRun, workers: LayerRun
) -> None:
    prefix = support.outputs["consul_swarm_prefix"]
    assert prefix == managers.outputs["swarm_kv_prefix"] == "infragym/dev/swarm/"
    for i, d in enumerate(droplets(managers)):
        values = env(d, "swarm-manager")
        assert values["SWARM_ROLE"] == "manager"
        assert values["SWARM_INDEX"] == str(i)  # only manager 0 may init the swarm
        assert values["CONSUL_PREFIX"] == prefix
        assert values["CONSUL_SERVERS"].split() == support.outputs["consul_servers"]
    for d in droplets(workers):
        assert env(d, "swarm-worker")["SWARM_ROLE"] == "worker"


def test_workers_share_user_data_so_scaling_only_adds(workers: LayerRun) -> None:
    assert len({d.inputs["userData"] for d in droplets(workers)}) == 1


@pytest.mark.parametrize(
    ("layer", "settings", "message"),
    [
        ("do-swarm-manager", {"count": 2}, "use an odd number"),
        ("do-swarm-manager", {"size": "nope"}, "unknown size slug"),
        ("do-swarm-worker", {"count": 0}, "greater than or equal to 1"),
        ("do-swarm-worker", {"image": 5}, "image"),
    ],
)
def test_invalid_settings_fail_before_any_cloud_call(
    layer: str, settings: dict, message: str
) -> None:
    assert_invalid_settings(layer, settings, message)


def test_workers_need_the_manager_layer(support: LayerRun) -> None:
    assert "do-swarm-manager" in get_layer("do-swarm-worker").upstream
    with pytest.raises(ConfigError, match="swarm_kv_prefix"):
        run("do-swarm-worker", {}, support.outputs)
