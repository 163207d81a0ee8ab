"""Layer ``k8s-siege-engine``: load on the heater (component :mod:`components.k8s.siege_engine`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, model_validator

from infragym.apps.workload import Schedule, constant
from stacks.layers._k8s import check_request_within_limit, component_opts
from stacks.registry import Layer, LayerContext, LayerSettings, register
from stacks.validators import Quantity


class K8sSiegeEngineSettings(LayerSettings):
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

    @model_validator(mode="after")
    def _requests_within_limits(self) -> K8sSiegeEngineSettings:
        check_request_within_limit("cpu", self.cpu_request, self.cpu_limit)
        check_request_within_limit("memory", self.memory_request, self.memory_limit)
        return self


def program(ctx: LayerContext) -> Mapping[str, Any]:
    """Build the siege-engine aimed at the upstream heater; return its metrics URL."""
    from components.k8s.siege_engine import SiegeEngine, SiegeEngineArgs

    s: K8sSiegeEngineSettings = ctx.settings
    engine = SiegeEngine(
        "siege-engine",
        SiegeEngineArgs(
            namespace=ctx.need("namespace"),
            target=ctx.need("heater_url"),
            schedule=s.schedule,
            replicas=s.replicas,
            cpu_request=s.cpu_request,
            cpu_limit=s.cpu_limit,
            memory_request=s.memory_request,
            memory_limit=s.memory_limit,
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
