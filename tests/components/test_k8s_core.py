"""k8s-core under Pulumi mocks: the namespace, metrics-server and the k8s provider."""

from __future__ import annotations

import pytest

from infragym.backends.mockrun import LayerRun, run_layer
from infragym.errors import ConfigError
from tests.components.k8s_layers import (
    CLUSTER_UPSTREAM,
    RELEASE,
    assert_children_use_k8s_provider,
)

TOKEN = "infragym:k8s:Core"
NAMESPACE = "kubernetes:core/v1:Namespace"


@pytest.fixture(scope="module")
def default_run() -> LayerRun:
    return run_layer("k8s-core", {}, CLUSTER_UPSTREAM)


def test_graph(default_run: LayerRun) -> None:
    run = default_run
    assert sorted((r.type, r.name) for r in run.resources if r.custom) == [
        ("kubernetes:core/v1:Namespace", "apps"),
        ("kubernetes:helm.sh/v3:Release", "metrics-server"),
        ("pulumi:providers:kubernetes", "k8s"),
    ]
    assert_children_use_k8s_provider(run, TOKEN)


def test_namespace(default_run: LayerRun) -> None:
    ns = default_run.one(NAMESPACE, "apps")
    assert ns.inputs["metadata"]["name"] == "infragym"
    assert default_run.outputs == {"namespace": "infragym"}


def test_namespace_setting() -> None:
    run = run_layer("k8s-core", {"namespace": "team-a"}, CLUSTER_UPSTREAM)
    assert run.one(NAMESPACE).inputs["metadata"]["name"] == "team-a"
    assert run.outputs["namespace"] == "team-a"


def test_metrics_server_release(default_run: LayerRun) -> None:
    rel = default_run.one(RELEASE, "metrics-server").inputs
    assert rel["chart"] == "metrics-server"
    assert rel["repositoryOpts"]["repo"] == "https://kubernetes-sigs.github.io/metrics-server/"
    assert rel["name"] == "metrics-server"
    assert rel["namespace"] == "kube-system"
    assert rel["version"]
    assert "--kubelet-insecure-tls" not in rel["values"]["args"]


def test_metrics_server_insecure_tls() -> None:
    run = run_layer("k8s-core", {"kubelet_insecure_tls": True}, CLUSTER_UPSTREAM)
    assert run.one(RELEASE).inputs["values"]["args"] == ["--kubelet-insecure-tls"]


def test_metrics_server_off() -> None:
    run = run_layer("k8s-core", {"metrics_server": False}, CLUSTER_UPSTREAM)
    assert run.by_type(RELEASE) == []
    run.one(NAMESPACE, "apps")


def test_needs_kubeconfig() -> None:
    with pytest.raises(ConfigError, match="kubeconfig"):
        run_layer("k8s-core", {}, {})


def test_layer_entry() -> None:
    from stacks.registry import get_layer

    layer = get_layer("k8s-core")
    assert layer.upstream == ("cluster",)
    assert layer.outputs == ("namespace",)
    assert {NAMESPACE, RELEASE, TOKEN} <= set(layer.resources)
