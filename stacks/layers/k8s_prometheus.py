"""Layer ``k8s-prometheus``: Prometheus and kube-state-metrics (component
:mod:`components.k8s.prometheus`, plain manifests; its docstring says why)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stacks.layers._k8s import (
    ContainerSettings,
    PromDuration,
    component_args,
    component_opts,
)
from stacks.registry import Layer, LayerContext, register
from stacks.validators import Quantity


class K8sPrometheusSettings(ContainerSettings):
    """Settings of ``k8s-prometheus``.

    Attributes:
        scrape_interval: Time between scrapes (a Prometheus duration). An environment step
            should span several scrapes, so that rates over one step are meaningful.
        retention: How long samples are kept (``--storage.tsdb.retention.time``).
        expose: Add a LoadBalancer Service ``prometheus-public``. That is a DigitalOcean
            load balancer, billed monthly, and it publishes an unauthenticated Prometheus;
            ``kubectl port-forward svc/prometheus 9090`` is the free alternative.
        cpu_request: CPU request of the Prometheus container.
        memory_request: Memory request.
        memory_limit: Memory limit.
    """

    scrape_interval: PromDuration = "15s"
    retention: PromDuration = "6h"
    expose: bool = False
    cpu_request: Quantity = "200m"
    memory_request: Quantity = "512Mi"
    memory_limit: Quantity = "1Gi"


def program(ctx: LayerContext) -> Mapping[str, Any]:
    """Build Prometheus; return its in-cluster URL and Service name."""
    from components.k8s.prometheus import Prometheus, PrometheusArgs

    s: K8sPrometheusSettings = ctx.settings
    prom = Prometheus(
        "prometheus",
        component_args(PrometheusArgs, s, namespace=ctx.need("namespace")),
        opts=component_opts(ctx),
    )
    return {"prometheus_url": prom.url, "prometheus_service": prom.service_name}


LAYER = register(
    Layer(
        name="k8s-prometheus",
        description="Prometheus scraping the apps, kube-state-metrics and cAdvisor",
        settings=K8sPrometheusSettings,
        program=program,
        upstream=("cluster", "k8s-core"),
        outputs=("prometheus_url", "prometheus_service"),
        resources=(
            "infragym:k8s:Prometheus",
            "kubernetes:core/v1:ServiceAccount",
            "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole",
            "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding",
            "kubernetes:core/v1:ConfigMap",
            "kubernetes:apps/v1:Deployment",
            "kubernetes:core/v1:Service",
        ),
    )
)
