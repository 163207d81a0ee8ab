"""k8s/heater: the heater web app (:mod:`infragym.apps.heater`) as a Deployment and Service,
with an optional HorizontalPodAutoscaler.

The app runs from the stock ``python:3.11-slim`` image with its code mounted from the
``heater-code`` ConfigMap (see :mod:`components.k8s._common`). The names below are a
contract: knobs and the digital twin address the Deployment ``heater``, its first
container (``heater``) and camelCase paths such as ``spec.replicas`` and
``spec.template.spec.containers[0].resources.limits.cpu``; the twin reads the work per
request back from the container's ``HEATER_WORK`` variable.

With a database DSN the component also creates the Secret ``heater-db`` (key ``dsn``),
which the container reads as ``HEATER_DB_DSN``; the DSN is never a plain env value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.k8s._common import (
    PYTHON_IMAGE,
    PythonAppPod,
    app_metadata,
    app_service,
    child_opts,
    labels,
    prometheus_annotations,
    python_app_deployment,
    resource_requirements,
    service_url,
)
from infragym.apps.workload import HEATER_DB_DSN_ENV, HEATER_PORT, HEATER_WORK_ENV, CpuWork

NODE_POOL_LABEL = "doks.digitalocean.com/node-pool"
"""Node label DOKS puts on every node with its pool's name."""

SCALE_DOWN_STABILIZATION_S = 300
"""The HPA's scale-down stabilisation window: the Kubernetes default, stated explicitly so
that the twin reads the same value the cluster uses."""

DB_SECRET = "heater-db"
"""Name of the Secret holding the database DSN (logical and Kubernetes name)."""

DB_SECRET_KEY = "dsn"
"""Key of the DSN in :data:`DB_SECRET`."""

DB_DEPENDENCY = "psycopg[binary]>=3.1,<4"
"""What the heater needs for ``work.db_query``, installed only with a DSN."""


@dataclass
class HpaArgs:
    """A CPU-utilisation HorizontalPodAutoscaler on the heater Deployment.

    Attributes:
        min_replicas: Fewest replicas.
        max_replicas: Most replicas.
        target_cpu_utilization: Target mean CPU use, percent of the pods' CPU request.
    """

    min_replicas: int = 1
    max_replicas: int = 10
    target_cpu_utilization: int = 70


@dataclass
class HeaterArgs:
    """Arguments of :class:`Heater`.

    Attributes:
        namespace: Namespace to deploy into.
        replicas: Initial replicas (an HPA, when set, takes over afterwards).
        cpu_request: CPU request of the heater container (``250m``).
        cpu_limit: CPU limit.
        memory_request: Memory request (``128Mi``).
        memory_limit: Memory limit.
        work: CPU work per request, passed as JSON in ``HEATER_WORK``.
        service_type: ``ClusterIP`` or ``LoadBalancer`` (a DO load balancer, billed).
        hpa: The autoscaler, or ``None`` for a fixed replica count.
        node_selector: Node labels the pods must run on (``None``: anywhere).
        image: The stock Python image.
        db_dsn: PostgreSQL DSN for ``work.db_query``, kept in the Secret ``heater-db``
            and passed as ``HEATER_DB_DSN`` (``None``: no database).
    """

    namespace: pulumi.Input[str]
    replicas: int = 2
    cpu_request: str = "250m"
    cpu_limit: str = "500m"
    memory_request: str = "128Mi"
    memory_limit: str = "256Mi"
    work: CpuWork = field(default_factory=CpuWork)
    service_type: str = "ClusterIP"
    hpa: HpaArgs | None = None
    node_selector: Mapping[str, pulumi.Input[str]] | None = None
    image: str = PYTHON_IMAGE
    db_dsn: pulumi.Input[str] | None = None


class Heater(pulumi.ComponentResource):
    """The heater: ConfigMap ``heater-code``, Deployment, Service and optional HPA ``heater``,
    and the Secret ``heater-db`` when a DSN is given.

    Attributes:
        url: In-cluster URL of the Service (``http://heater.<ns>.svc.cluster.local``).
        deployment: The Deployment.
        service: The Service.
        hpa: The HorizontalPodAutoscaler, if any.
        db_secret: The Secret holding the DSN, if any.
    """

    url: pulumi.Output[str]

    def __init__(
        self, name: str, args: HeaterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("infragym:k8s:Heater", name, None, opts)
        app = "heater"
        app_labels = labels(app)
        self.db_secret: k8s.core.v1.Secret | None = None
        db_env: list[k8s.core.v1.EnvVarArgs] = []
        if args.db_dsn is not None:
            self.db_secret = _db_secret(self, args.namespace, app_labels, args.db_dsn)
            db_env = [_db_env(self.db_secret)]
        pod = PythonAppPod(
            app=app,
            container=app,
            port=HEATER_PORT,
            args=["--port", str(HEATER_PORT)],
            env={HEATER_WORK_ENV: args.work.model_dump_json()},
            resources=resource_requirements(
                args.cpu_request, args.cpu_limit, args.memory_request, args.memory_limit
            ),
            labels=app_labels,
            annotations=prometheus_annotations(HEATER_PORT),
            readiness_path="/healthz",
            node_selector=args.node_selector,
            image=args.image,
            env_from_secrets=db_env,
            extra_dependencies=[DB_DEPENDENCY] if db_env else [],
        )
        # With an HPA the replica count is the autoscaler's after creation: Pulumi must
        # not reset it on every update of this layer.
        ignore = ["spec.replicas"] if args.hpa is not None else None
        self.deployment = python_app_deployment(
            self, app, args.namespace, args.replicas, pod, ignore_changes=ignore
        )
        self.service = app_service(
            self,
            app,
            args.namespace,
            app_labels,
            k8s.core.v1.ServicePortArgs(
                name="http", port=80, target_port=HEATER_PORT, protocol="TCP"
            ),
            service_type=args.service_type,
        )
        self.hpa: k8s.autoscaling.v2.HorizontalPodAutoscaler | None = None
        if args.hpa is not None:
            self.hpa = _hpa(self, args.namespace, app_labels, args.hpa)
        self.url = service_url(app, args.namespace)
        self.register_outputs({"url": self.url})


def _db_secret(
    parent: Heater, namespace: pulumi.Input[str], app_labels: dict[str, str], dsn: pulumi.Input[str]
) -> k8s.core.v1.Secret:
    """The Secret ``heater-db`` with the DSN under ``dsn``, a secret in Pulumi's state."""
    return k8s.core.v1.Secret(
        DB_SECRET,
        metadata=app_metadata(DB_SECRET, namespace, app_labels),
        type="Opaque",
        string_data={DB_SECRET_KEY: pulumi.Output.secret(dsn)},
        opts=child_opts(parent),
    )


def _db_env(secret: k8s.core.v1.Secret) -> k8s.core.v1.EnvVarArgs:
    """``HEATER_DB_DSN`` from the Secret (its name an output, so the pods wait for it)."""
    v1 = k8s.core.v1
    return v1.EnvVarArgs(
        name=HEATER_DB_DSN_ENV,
        value_from=v1.EnvVarSourceArgs(
            secret_key_ref=v1.SecretKeySelectorArgs(
                name=secret.metadata.apply(lambda m: m.name), key=DB_SECRET_KEY
            )
        ),
    )


def _hpa(
    parent: Heater, namespace: pulumi.Input[str], app_labels: dict[str, str], hpa: HpaArgs
) -> k8s.autoscaling.v2.HorizontalPodAutoscaler:
    v2 = k8s.autoscaling.v2
    return v2.HorizontalPodAutoscaler(
        "heater",
        metadata=app_metadata("heater", namespace, app_labels),
        spec=v2.HorizontalPodAutoscalerSpecArgs(
            scale_target_ref=v2.CrossVersionObjectReferenceArgs(
                api_version="apps/v1",
                kind="Deployment",
                name=parent.deployment.metadata.apply(lambda m: m.name),
            ),
            min_replicas=hpa.min_replicas,
            max_replicas=hpa.max_replicas,
            metrics=[
                v2.MetricSpecArgs(
                    type="Resource",
                    resource=v2.ResourceMetricSourceArgs(
                        name="cpu",
                        target=v2.MetricTargetArgs(
                            type="Utilization", average_utilization=hpa.target_cpu_utilization
                        ),
                    ),
                )
            ],
            behavior=v2.HorizontalPodAutoscalerBehaviorArgs(
                scale_down=v2.HPAScalingRulesArgs(
                    stabilization_window_seconds=SCALE_DOWN_STABILIZATION_S
                )
            ),
        ),
        opts=child_opts(parent),
    )
