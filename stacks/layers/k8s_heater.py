"""Layer ``k8s-heater``: the heater web app (component :mod:`components.k8s.heater`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from infragym.apps.workload import CpuWork
from stacks.layers._k8s import ContainerSettings, component_args, component_opts
from stacks.registry import Layer, LayerContext, LayerSettings, register
from stacks.validators import Quantity


class HpaSettings(LayerSettings):
    """A CPU-utilisation HorizontalPodAutoscaler on the heater.

    Attributes:
        min_replicas: Fewest replicas.
        max_replicas: Most replicas.
        target_cpu_utilization: Target mean CPU use, percent of the CPU request.
    """

    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(10, ge=1)
    target_cpu_utilization: int = Field(70, ge=1, le=1000)

    @model_validator(mode="after")
    def _range(self) -> HpaSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}"
            )
        return self


class K8sHeaterSettings(ContainerSettings):
    """Settings of ``k8s-heater``.

    Attributes:
        replicas: Replicas of the Deployment (initial ones when an HPA is set).
        cpu_request: CPU request of the heater container.
        cpu_limit: CPU limit (at most the request's worth of CPU is guaranteed).
        memory_request: Memory request.
        memory_limit: Memory limit.
        work: CPU work per request.
        hpa: A HorizontalPodAutoscaler, or none for a fixed replica count.
        service_type: ``ClusterIP``, or ``LoadBalancer`` for a public DO load balancer
            (billed per month).
        database: Use the ``k8s-postgresql`` layer's database: run ``work.db_query`` on
            it per request. Needs that layer in the deployment and ``work.db_query``.
    """

    replicas: int = Field(2, ge=0)
    cpu_request: Quantity = "250m"
    cpu_limit: Quantity = "500m"
    memory_request: Quantity = "128Mi"
    memory_limit: Quantity = "256Mi"
    work: CpuWork = CpuWork()
    hpa: HpaSettings | None = None
    service_type: Literal["ClusterIP", "LoadBalancer"] = "ClusterIP"
    database: bool = False

    @model_validator(mode="after")
    def _database_needs_a_query(self) -> K8sHeaterSettings:
        if self.database and not self.work.db_query:
            raise ValueError("database: true needs a query: set work.db_query (e.g. SELECT 1)")
        return self


def program(ctx: LayerContext) -> Mapping[str, Any]:
    """Build the heater; return its in-cluster URL and the namespace.

    Raises:
        ConfigError: An upstream output is missing (``postgresql_dsn`` with ``database``
            but no ``k8s-postgresql`` layer).
    """
    from components.k8s.heater import NODE_POOL_LABEL, Heater, HeaterArgs, HpaArgs

    s: K8sHeaterSettings = ctx.settings
    namespace = ctx.need("namespace")
    pool = ctx.upstream.get("workers_pool_name")
    dsn = ctx.need("postgresql_dsn") if s.database else None
    heater = Heater(
        "heater",
        component_args(
            HeaterArgs,
            s,
            namespace=namespace,
            hpa=HpaArgs(**s.hpa.model_dump()) if s.hpa else None,
            node_selector={NODE_POOL_LABEL: pool} if pool else None,
            db_dsn=dsn,
        ),
        opts=component_opts(ctx),
    )
    return {"heater_url": heater.url, "namespace": namespace}


LAYER = register(
    Layer(
        name="k8s-heater",
        description="The heater web app: Deployment, Service, optional CPU HPA",
        settings=K8sHeaterSettings,
        program=program,
        upstream=("cluster", "k8s-core"),
        optional_upstream=("k8s-postgresql",),
        outputs=("heater_url", "namespace"),
        resources=(
            "infragym:k8s:Heater",
            "kubernetes:core/v1:ConfigMap",
            "kubernetes:apps/v1:Deployment",
            "kubernetes:core/v1:Service",
            "kubernetes:core/v1:Secret",
            "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
        ),
    )
)
