"""The ``local-k8s`` layer under Pulumi's mocks (no cluster needed): its node pools, its
outputs in the ``cluster`` role, and its knobs through the backend's transformation."""

from __future__ import annotations

import pytest

from infragym.backends.mockrun import FAKE_KUBECONFIG, run_layer
from infragym.errors import ClusterError, ConfigError
from stacks.registry import get_layer, upstream_layers

NODE_POOL = "kubernetes:infragym.dev/v1:NodePool"


def test_pools_and_outputs() -> None:
    run = run_layer(
        "local-k8s",
        {"kubeconfig": FAKE_KUBECONFIG, "node_size": "s-4vcpu-8gb", "node_count": 3},
        deployment="dev",
    )
    workers = run.one(NODE_POOL, "workers")
    assert workers.inputs["apiVersion"] == "infragym.dev/v1"
    assert workers.inputs["metadata"]["name"] == "dev-workers"
    assert workers.inputs["spec"] == {
        "size": "s-4vcpu-8gb",
        "nodeCount": 3,
        "readyAfterSeconds": 2,
    }
    system = run.one(NODE_POOL, "system")
    assert system.inputs["spec"]["nodeCount"] == 1
    assert run.outputs["workers_pool_name"] == "dev-workers"
    assert "kubeconfig" in run.secret_outputs
    provider = run.one("pulumi:providers:kubernetes", "k8s")
    assert provider.secret_inputs == {"kubeconfig"}


def test_fills_the_cluster_role() -> None:
    heater = get_layer("k8s-heater")
    assert upstream_layers(heater, ["local-k8s", "k8s-core"]) == ["local-k8s", "k8s-core"]


def test_settings_are_checked() -> None:
    layer = get_layer("local-k8s")
    with pytest.raises(ConfigError, match="node_size"):
        layer.parse_settings({"node_size": "s-99vcpu"})
    with pytest.raises(ConfigError, match="ready_after_s"):
        layer.parse_settings({"ready_after_s": -1})


def test_no_cluster_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ClusterError, match="infragym cluster up"):
        run_layer("local-k8s", {"cluster_dir": str(tmp_path / "none")})
