"""Layer ``k8s-core``: the apps' namespace and metrics-server (component
:mod:`components.k8s.core`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from stacks.layers._k8s import component_args, component_opts
from stacks.registry import Layer, LayerContext, LayerSettings, register
from stacks.validators import DnsLabel


class K8sCoreSettings(LayerSettings):
    """Settings of ``k8s-core``.

    Attributes:
        namespace: Namespace the app layers deploy into.
        metrics_server: Install metrics-server with Helm 3 (an HPA needs it); turn off on
            clusters that already run one.
        metrics_server_version: Version of the metrics-server Helm chart.
        kubelet_insecure_tls: Let metrics-server accept the kubelets' self-signed serving
            certificates (kubeadm clusters built from droplets; not DOKS).
    """

    namespace: DnsLabel = "infragym"
    metrics_server: bool = True
    metrics_server_version: str = Field("3.12.2", pattern=r"^\d+\.\d+\.\d+$")
    kubelet_insecure_tls: bool = False


def program(ctx: LayerContext) -> Mapping[str, Any]:
    """Build the namespace and metrics-server; return the namespace name."""
    from components.k8s.core import Core, CoreArgs

    s: K8sCoreSettings = ctx.settings
    core = Core("core", component_args(CoreArgs, s), opts=component_opts(ctx))
    return {"namespace": core.namespace}


LAYER = register(
    Layer(
        name="k8s-core",
        description="Namespace for the apps, and metrics-server (Helm 3) for the HPA",
        settings=K8sCoreSettings,
        program=program,
        upstream=("cluster",),
        outputs=("namespace",),
        resources=(
            "infragym:k8s:Core",
            "kubernetes:core/v1:Namespace",
            "kubernetes:helm.sh/v3:Release",
        ),
    )
)
