"""The do-k8s-minions layer's graph under Pulumi mocks: droplets, join configuration from
the control plane's outputs, firewall, secrets, and settings validation."""

from __future__ import annotations

import pytest
import yaml

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

LAYER = "do-k8s-minions"
COMPONENT = "infragym:do:K8sMinions"


@pytest.fixture(scope="module")
def minions(cp: LayerRun) -> LayerRun:
    return run(LAYER, {"count": 3, "size": "s-4vcpu-8gb"}, cp.outputs)


def test_declares_the_resources_it_creates_all_parented(minions: LayerRun) -> None:
    assert_declares_its_resources_all_parented(minions, LAYER, COMPONENT)
    assert "do-k8s-control-plane" in get_layer(LAYER).upstream


def test_count_and_size_droplets_in_the_vpc(minions: LayerRun) -> None:
    nodes = droplets(minions)
    assert [d.name for d in nodes] == ["k8s-minion-0", "k8s-minion-1", "k8s-minion-2"]
    assert_droplets_in_vpc(nodes, "s-4vcpu-8gb", "k8s-minion")
    assert_in_project(minions, "k8s-minion-project", nodes)
    assert minions.outputs["droplet_ids"] == [f"k8s-minion-{i}-id" for i in range(3)]


def test_firewall_opens_worker_ports_and_flannel_within_the_vpc(minions: LayerRun) -> None:
    assert_firewall_by_role_tag(minions, "k8s-minion-firewall", "k8s-minion")
    assert ports(inbound(minions, "k8s-minion-firewall")) == {
        ("tcp", "10250"),
        ("tcp", "10256"),
        ("tcp", "30000-32767"),
        ("udp", "8472"),
        ("tcp", "22"),
    }
    assert_firewalls_within_vpc(minions)


def test_user_data_is_secret_and_the_same_for_every_minion(minions: LayerRun) -> None:
    nodes = droplets(minions)
    assert all("userData" in d.secret_inputs for d in nodes)
    assert len({d.inputs["userData"] for d in nodes}) == 1  # scaling only adds droplets


def test_join_configuration_uses_the_control_planes_token_and_ca_hash(
    cp: LayerRun, minions: LayerRun
) -> None:
    node = droplets(minions)[0]
    written = files(node)["/etc/infragym/kubeadm-join.yaml.in"]
    assert written["permissions"] == "0600"
    join = yaml.safe_load(written["content"])
    assert join["kind"] == "JoinConfiguration"
    discovery = join["discovery"]["bootstrapToken"]
    assert discovery == {
        "apiServerEndpoint": cp.outputs["api_private_endpoint"],
        "token": cp.outputs["join_token"],
        "caCertHashes": [cp.outputs["discovery_hash"]],
    }
    values = env(node, "k8s-minion")
    assert values["K8S_MINOR"] == cp.outputs["kubernetes_minor"]
    assert values["API_ENDPOINT"] == cp.outputs["api_private_endpoint"]


def test_default_count_is_two(cp: LayerRun) -> None:
    assert len(droplets(run(LAYER, {}, cp.outputs))) == 2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"count": 0}, "count: Input should be greater than or equal to 1"),
        ({"count": 1000}, "count: Input should be less than or equal to 100"),
        ({"size": "huge"}, "unknown size slug 'huge'"),
        ({"ssh_keys": ["aa:bb"]}, "ssh_keys.0"),
    ],
)
def test_invalid_settings_fail_before_any_cloud_call(settings: dict, message: str) -> None:
    assert_invalid_settings(LAYER, settings, message)


def test_missing_control_plane_outputs_give_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="api_private_endpoint"):
        run(LAYER, {})
