"""Layer ``k8s-siege-engine``: load on the heater (component :mod:`components.k8s.siege_engine`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from infragym.apps.workload import Schedule, constant
from stacks.layers._k8s import ContainerSettings, component_args, component_opts
from stacks.registry import Layer, LayerContext, register
from stacks.validators import Quantity


class K8sSiegeEngineSettings(ContainerSettings):
    """Settings of ``k8s-siege-engine``.

    Attributes:
        schedule: The arrival schedule (default: a constant 50 requests/s).
        replicas: Replicas; each runs the whole schedule, so the offered rate scales
            with it.
        cpu_request: CPU request (one core generates about a thousand requests/s).
        cpu_limit: CPU limit.
        memory_request: Memory request.
        memory_limit: Memory limit.
    """

    schedule: Schedule = Field(default_factory=lambda: constant(50.0))
    replicas: int = Field(1, ge=0)
    cpu_request: Quantity = "250m"
    cpu_limit: Quantity = "1"
    memory_request: Quantity = "128Mi"
    memory_limit: Quantity = "256Mi"


def program(ctx: LayerContext) -> Mapping[str, Any]:
    """Build the siege-engine aimed at the upstream heater; return its metrics URL."""
    from components.k8s.siege_engine import SiegeEngine, SiegeEngineArgs

    s: K8sSiegeEngineSettings = ctx.settings
    engine = SiegeEngine(
        "siege-engine",
        component_args(
            SiegeEngineArgs, s, namespace=ctx.need("namespace"), target=ctx.need("heater_url")
        ),
        opts=component_opts(ctx),
    )
    return {"siege_metrics_url": engine.metrics_url}


LAYER = register(
    Layer(
        name="k8s-siege-engine",
        description="Open-loop load on the heater following a rate schedule",
        settings=K8sSiegeEngineSettings,
        program=program,
        upstream=("cluster", "k8s-core", "k8s-heater"),
        outputs=("siege_metrics_url",),
        resources=(
            "infragym:k8s:SiegeEngine",
            "kubernetes:core/v1:ConfigMap",
            "kubernetes:apps/v1:Deployment",
            "kubernetes:core/v1:Service",
        ),
    )
)
