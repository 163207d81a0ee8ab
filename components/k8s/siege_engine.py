"""k8s/siege-engine: the open-loop load generator (:mod:`infragym.apps.siege_engine`) as a
Deployment, with a ClusterIP Service for its metrics.

The app runs from the stock ``python:3.11-slim`` image with its code mounted from the
``siege-engine-code`` ConfigMap (see :mod:`components.k8s._common`). Its schedule is the
JSON of a :class:`~infragym.apps.workload.Schedule` in ``SIEGE_SCHEDULE``, which the
digital twin reads back from the Deployment's inputs; the target URL is in
``SIEGE_TARGET``. Every replica runs the whole schedule, so the offered rate is
``replicas`` times the schedule's rate. When a schedule with a ``duration`` ends, the
process keeps serving ``/metrics`` (``--linger inf``) instead of exiting and being
restarted by the Deployment, which would replay the schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.k8s._common import (
    PYTHON_IMAGE,
    PythonAppPod,
    app_service,
    labels,
    prometheus_annotations,
    python_app_deployment,
    resource_requirements,
    service_url,
)
from infragym.apps.workload import (
    SIEGE_METRICS_PORT,
    SIEGE_SCHEDULE_ENV,
    SIEGE_TARGET_ENV,
    Schedule,
    constant,
)


@dataclass
class SiegeEngineArgs:
    """Arguments of :class:`SiegeEngine`.

    Attributes:
        namespace: Namespace to deploy into.
        target: URL the requests go to (the heater Service's in-cluster URL).
        schedule: The arrival schedule, passed as JSON in ``SIEGE_SCHEDULE``.
        replicas: Replicas; each runs the whole schedule.
        cpu_request: CPU request (one core generates about a thousand requests/s).
        cpu_limit: CPU limit.
        memory_request: Memory request.
        memory_limit: Memory limit.
        image: The stock Python image.
    """

    namespace: pulumi.Input[str]
    target: pulumi.Input[str]
    schedule: Schedule = field(default_factory=lambda: constant(50.0))
    replicas: int = 1
    cpu_request: str = "250m"
    cpu_limit: str = "1"
    memory_request: str = "128Mi"
    memory_limit: str = "256Mi"
    image: str = PYTHON_IMAGE


class SiegeEngine(pulumi.ComponentResource):
    """ConfigMap ``siege-engine-code``, Deployment and Service ``siege-engine``.

    Attributes:
        metrics_url: In-cluster URL of its ``/metrics``.
        deployment: The Deployment.
        service: The metrics Service.
    """

    metrics_url: pulumi.Output[str]

    def __init__(
        self, name: str, args: SiegeEngineArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("infragym:k8s:SiegeEngine", name, None, opts)
        app, module = "siege-engine", "siege_engine"
        app_labels = labels(app)
        pod = PythonAppPod(
            app=module,
            container=app,
            port=SIEGE_METRICS_PORT,
            args=["--metrics-port", str(SIEGE_METRICS_PORT), "--linger", "inf"],
            env={
                SIEGE_SCHEDULE_ENV: args.schedule.model_dump_json(),
                SIEGE_TARGET_ENV: args.target,
            },
            resources=resource_requirements(
                args.cpu_request, args.cpu_limit, args.memory_request, args.memory_limit
            ),
            labels=app_labels,
            annotations=prometheus_annotations(SIEGE_METRICS_PORT),
            readiness_path="/healthz",
            image=args.image,
        )
        self.deployment = python_app_deployment(self, app, args.namespace, args.replicas, pod)
        self.service = app_service(
            self,
            app,
            args.namespace,
            app_labels,
            k8s.core.v1.ServicePortArgs(
                name="metrics",
                port=SIEGE_METRICS_PORT,
                target_port=SIEGE_METRICS_PORT,
                protocol="TCP",
            ),
        )
        self.metrics_url = service_url(app, args.namespace, f":{SIEGE_METRICS_PORT}/metrics")
        self.register_outputs({"metrics_url": self.metrics_url})
