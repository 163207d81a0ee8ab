"""Helpers for the mocks tests of the Kubernetes layers: resource types, the upstream
outputs the layers read, and the check every k8s layer's graph passes."""

from __future__ import annotations

from typing import Any

from infragym.backends.mockrun import FAKE_KUBECONFIG, LayerRun

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
RELEASE = "kubernetes:helm.sh/v3:Release"

CLUSTER_UPSTREAM: dict[str, Any] = {"kubeconfig": FAKE_KUBECONFIG}
"""The output of the ``cluster`` role that every k8s layer needs."""

APP_UPSTREAM: dict[str, Any] = {**CLUSTER_UPSTREAM, "namespace": "infragym"}
"""What an app layer also reads from ``k8s-core``: the namespace."""


def assert_children_use_k8s_provider(run: LayerRun, token: str) -> None:
    """Every custom resource but the provider is a child of the component and uses ``k8s``,
    the layer's own provider (a child of the stack, with the kubeconfig kept secret)."""
    provider = run.one("pulumi:providers:kubernetes", "k8s")
    assert provider.parent_type == "pulumi:pulumi:Stack"
    assert provider.secret_inputs == {"kubeconfig"}
    assert not run.one(token).custom
    children = [r for r in run.resources if r.custom and r is not provider]
    assert children
    for r in children:
        assert r.parent_type == token, (r.type, r.name)
        assert r.provider.startswith(provider.urn + "::"), (r.type, r.name, r.provider)
