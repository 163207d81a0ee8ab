"""k8s/prometheus: a Prometheus server and kube-state-metrics, as plain manifests.

Why plain manifests rather than the kube-prometheus-stack Helm chart:

- the resource graph stays transparent: every Deployment, Service and RBAC object is a
  resource that the mocks tests and the digital twin see with its inputs, where a Helm
  release is one opaque resource whose content only Helm knows;
- the scrape configuration is generated here from what :mod:`infragym.metrics` needs (the
  annotated app pods, kube-state-metrics, the kubelets' cAdvisor) and tested, instead of
  being assembled by an operator from ServiceMonitor objects;
- there are no CRDs and no operator to install, upgrade or wait for: a small Prometheus
  and one exporter, fit for a training cluster.

What is scraped (``prometheus.yml`` in the ConfigMap ``prometheus-config``):

- ``kubernetes-pods``: pods in the apps' namespace annotated ``prometheus.io/scrape:
  "true"`` (the heater and the siege-engine), at their ``prometheus.io/port`` and
  ``prometheus.io/path``;
- ``kubernetes-service-endpoints``: Services in the namespace annotated the same way (for
  example the PostgreSQL exporter of the k8s/postgresql layer);
- ``kube-state-metrics``: the exporter's Service endpoints, with ``honor_labels`` so its
  ``namespace``/``pod`` labels describe the objects, not the exporter;
- ``kubernetes-cadvisor``: every node's cAdvisor through the API server proxy
  (``/api/v1/nodes/<node>/proxy/metrics/cadvisor``) over HTTPS with the service account
  token, keeping only the ``container_*`` series infragym reads;
- ``prometheus``: itself.

Prometheus keeps its data in an ``emptyDir`` (a training cluster needs hours, not
durable history): a pod restart starts an empty TSDB. ``expose`` adds a LoadBalancer
Service ``prometheus-public``: that is a DigitalOcean load balancer, billed monthly, and
it publishes an unauthenticated Prometheus (with the lifecycle API on) to the internet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.k8s._common import child_opts, content_name, labels, resource_requirements

PROMETHEUS_IMAGE = "prom/prometheus:v3.5.0"
"""Prometheus 3.5, the long-term-support line."""

KSM_IMAGE = "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.15.0"

PROMETHEUS_PORT = 9090
KSM_PORT = 8080
KSM_TELEMETRY_PORT = 8081

KSM_RESOURCES = (
    "daemonsets", "deployments", "horizontalpodautoscalers", "namespaces", "nodes",
    "persistentvolumeclaims", "pods", "replicasets", "services", "statefulsets",
)  # fmt: skip
"""The objects kube-state-metrics watches (``--resources``); its RBAC grants exactly these."""

PROMETHEUS_RESOURCES = ("nodes", "nodes/metrics", "nodes/proxy", "services", "endpoints", "pods")
"""Core objects Prometheus reads (discovery, and the kubelets through the API server proxy)."""

CADVISOR_EXTRA_SERIES = (
    "container_memory_working_set_bytes",
    "container_cpu_cfs_periods_total",
    "container_cpu_cfs_throttled_periods_total",
)
"""cAdvisor series kept beyond those :mod:`infragym.metrics` reads (memory, CPU throttling)."""

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def cadvisor_series() -> tuple[str, ...]:
    """The cAdvisor (``container_*``) series to keep: those the named metrics' PromQL uses,
    plus :data:`CADVISOR_EXTRA_SERIES`."""
    from infragym.metrics import METRICS

    used = {
        name
        for m in METRICS.values()
        if m.promql
        for name in re.findall(r"\b(container_[a-z_]+)", m.promql)
    }
    return tuple(sorted(used | set(CADVISOR_EXTRA_SERIES)))


def prometheus_config(namespace: str, scrape_interval: str = "15s") -> dict[str, Any]:
    """The content of ``prometheus.yml`` for apps in ``namespace``."""

    def in_namespace() -> dict[str, list[str]]:  # a fresh dict each time: no YAML anchors
        return {"names": [namespace]}

    def annotated(kind: str) -> list[dict[str, Any]]:
        """Keep ``kind`` (pod or service) targets annotated ``prometheus.io/scrape``, at
        their annotated port and path."""
        meta = f"__meta_kubernetes_{kind}_annotation_prometheus_io_"
        return [
            {"source_labels": [f"{meta}scrape"], "regex": "true", "action": "keep"},
            {"source_labels": [f"{meta}path"], "regex": "(.+)", "target_label": "__metrics_path__"},
            {
                "source_labels": ["__address__", f"{meta}port"],
                "regex": r"([^:]+)(?::\d+)?;(\d+)",
                "replacement": "$1:$2",
                "target_label": "__address__",
            },
        ]

    pods = {
        "job_name": "kubernetes-pods",
        "kubernetes_sd_configs": [{"role": "pod", "namespaces": in_namespace()}],
        "relabel_configs": [
            # One target per pod: init containers and finished pods are not scraped.
            {
                "source_labels": ["__meta_kubernetes_pod_container_init"],
                "regex": "true",
                "action": "drop",
            },
            {
                "source_labels": ["__meta_kubernetes_pod_phase"],
                "regex": "Pending|Succeeded|Failed",
                "action": "drop",
            },
            *annotated("pod"),
            {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
        ],
    }
    services = {
        "job_name": "kubernetes-service-endpoints",
        "kubernetes_sd_configs": [{"role": "endpointslice", "namespaces": in_namespace()}],
        "relabel_configs": [
            *annotated("service"),
            {"action": "labelmap", "regex": "__meta_kubernetes_service_label_(.+)"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ],
    }
    ksm = {
        "job_name": "kube-state-metrics",
        "honor_labels": True,
        "kubernetes_sd_configs": [{"role": "endpointslice", "namespaces": in_namespace()}],
        "relabel_configs": [
            {
                "source_labels": [
                    "__meta_kubernetes_service_name",
                    "__meta_kubernetes_endpointslice_port_name",
                ],
                "regex": "kube-state-metrics;http-metrics",
                "action": "keep",
            }
        ],
    }
    cadvisor = {
        "job_name": "kubernetes-cadvisor",
        "scheme": "https",
        "tls_config": {"ca_file": f"{SA_DIR}/ca.crt"},
        "authorization": {"credentials_file": f"{SA_DIR}/token"},
        "kubernetes_sd_configs": [{"role": "node"}],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_node_name"], "target_label": "node"},
            {"target_label": "__address__", "replacement": "kubernetes.default.svc:443"},
            {
                "source_labels": ["__meta_kubernetes_node_name"],
                "regex": "(.+)",
                "target_label": "__metrics_path__",
                "replacement": "/api/v1/nodes/${1}/proxy/metrics/cadvisor",
            },
        ],
        "metric_relabel_configs": [
            {
                "source_labels": ["__name__"],
                "regex": "|".join(cadvisor_series()),
                "action": "keep",
            }
        ],
    }
    itself = {
        "job_name": "prometheus",
        "static_configs": [{"targets": [f"localhost:{PROMETHEUS_PORT}"]}],
    }
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [pods, services, ksm, cadvisor, itself],
    }


@dataclass
class PrometheusArgs:
    """Arguments of :class:`Prometheus`.

    Attributes:
        namespace: Namespace to deploy into (also the namespace whose pods are scraped).
        scrape_interval: Prometheus duration between scrapes.
        retention: How long samples are kept (``--storage.tsdb.retention.time``).
        expose: Add the LoadBalancer Service ``prometheus-public`` (a billed DO load
            balancer; the server has no authentication).
        cpu_request: CPU request of the Prometheus container.
        memory_request: Memory request.
        memory_limit: Memory limit (also the CPU limit is left unset: scraping is bursty).
        image: The Prometheus image.
        ksm_image: The kube-state-metrics image.
    """

    namespace: pulumi.Input[str]
    scrape_interval: str = "15s"
    retention: str = "6h"
    expose: bool = False
    cpu_request: str = "200m"
    memory_request: str = "512Mi"
    memory_limit: str = "1Gi"
    image: str = PROMETHEUS_IMAGE
    ksm_image: str = KSM_IMAGE


class Prometheus(pulumi.ComponentResource):
    """Prometheus (config, RBAC, Deployment, Service) and kube-state-metrics.

    Attributes:
        url: In-cluster URL (``http://prometheus.<ns>.svc.cluster.local:9090``).
        service_name: Name of the ClusterIP Service (for ``kubectl port-forward``).
    """

    url: pulumi.Output[str]
    service_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: PrometheusArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("infragym:k8s:Prometheus", name, None, opts)
        ns = pulumi.Output.from_input(args.namespace)
        self._kube_state_metrics(args, ns)
        self._prometheus(args, ns)
        self.url = ns.apply(lambda n: f"http://prometheus.{n}.svc.cluster.local:{PROMETHEUS_PORT}")
        self.register_outputs({"url": self.url, "service_name": self.service_name})

    def _rbac(
        self,
        app: str,
        namespace: pulumi.Output[str],
        rules: list[k8s.rbac.v1.PolicyRuleArgs],
    ) -> k8s.core.v1.ServiceAccount:
        """ServiceAccount, ClusterRole and ClusterRoleBinding named ``app``.

        The cluster-scoped objects are named ``<namespace>-<app>`` so that two
        deployments sharing a cluster do not collide.
        """
        meta = k8s.meta.v1.ObjectMetaArgs(name=app, namespace=namespace, labels=labels(app))
        cluster_meta = k8s.meta.v1.ObjectMetaArgs(
            name=namespace.apply(lambda n: f"{n}-{app}"), labels=labels(app)
        )
        account = k8s.core.v1.ServiceAccount(app, metadata=meta, opts=child_opts(self))
        role = k8s.rbac.v1.ClusterRole(
            app, metadata=cluster_meta, rules=rules, opts=child_opts(self)
        )
        k8s.rbac.v1.ClusterRoleBinding(
            app,
            metadata=cluster_meta,
            role_ref=k8s.rbac.v1.RoleRefArgs(
                api_group="rbac.authorization.k8s.io",
                kind="ClusterRole",
                name=role.metadata.apply(lambda m: m.name),
            ),
            subjects=[
                k8s.rbac.v1.SubjectArgs(kind="ServiceAccount", name=app, namespace=namespace)
            ],
            opts=child_opts(self),
        )
        return account

    def _prometheus(self, args: PrometheusArgs, ns: pulumi.Output[str]) -> None:
        v1 = k8s.core.v1
        app = "prometheus"
        app_labels = labels(app)
        read = ["get", "list", "watch"]
        account = self._rbac(
            app,
            ns,
            [
                k8s.rbac.v1.PolicyRuleArgs(
                    api_groups=[""],
                    resources=list(PROMETHEUS_RESOURCES),
                    verbs=read,
                ),
                k8s.rbac.v1.PolicyRuleArgs(
                    api_groups=["discovery.k8s.io"], resources=["endpointslices"], verbs=read
                ),
                k8s.rbac.v1.PolicyRuleArgs(non_resource_urls=["/metrics"], verbs=["get"]),
            ],
        )
        data = ns.apply(
            lambda n: {
                "prometheus.yml": yaml.safe_dump(
                    prometheus_config(n, args.scrape_interval), sort_keys=False
                )
            }
        )
        config = v1.ConfigMap(
            "prometheus-config",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=data.apply(lambda d: content_name("prometheus-config", d)),
                namespace=ns,
                labels=app_labels,
            ),
            data=data,
            immutable=True,
            opts=child_opts(self),
        )
        container = v1.ContainerArgs(
            name=app,
            image=args.image,
            args=[
                "--config.file=/etc/prometheus/prometheus.yml",
                "--storage.tsdb.path=/prometheus",
                f"--storage.tsdb.retention.time={args.retention}",
                "--web.enable-lifecycle",
            ],
            ports=[v1.ContainerPortArgs(name="web", container_port=PROMETHEUS_PORT)],
            readiness_probe=v1.ProbeArgs(
                http_get=v1.HTTPGetActionArgs(path="/-/ready", port=PROMETHEUS_PORT),
                period_seconds=5,
            ),
            resources=v1.ResourceRequirementsArgs(
                requests={"cpu": args.cpu_request, "memory": args.memory_request},
                limits={"memory": args.memory_limit},
            ),
            volume_mounts=[
                v1.VolumeMountArgs(name="config", mount_path="/etc/prometheus", read_only=True),
                v1.VolumeMountArgs(name="data", mount_path="/prometheus"),
            ],
        )
        k8s.apps.v1.Deployment(
            app,
            metadata=k8s.meta.v1.ObjectMetaArgs(name=app, namespace=ns, labels=app_labels),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=1,
                # One server at a time: no two pods scraping (and double counting).
                strategy=k8s.apps.v1.DeploymentStrategyArgs(type="Recreate"),
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=app_labels),
                template=v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=app_labels),
                    spec=v1.PodSpecArgs(
                        service_account_name=account.metadata.apply(lambda m: m.name),
                        security_context=v1.PodSecurityContextArgs(
                            run_as_non_root=True, run_as_user=65534, fs_group=65534
                        ),
                        containers=[container],
                        volumes=[
                            v1.VolumeArgs(
                                name="config",
                                config_map=v1.ConfigMapVolumeSourceArgs(
                                    name=config.metadata.apply(lambda m: m.name)
                                ),
                            ),
                            v1.VolumeArgs(name="data", empty_dir=v1.EmptyDirVolumeSourceArgs()),
                        ],
                    ),
                ),
            ),
            opts=child_opts(self),
        )
        port = v1.ServicePortArgs(name="web", port=PROMETHEUS_PORT, target_port="web")
        service = v1.Service(
            app,
            metadata=k8s.meta.v1.ObjectMetaArgs(name=app, namespace=ns, labels=app_labels),
            spec=v1.ServiceSpecArgs(type="ClusterIP", selector=app_labels, ports=[port]),
            opts=child_opts(self),
        )
        self.service_name = service.metadata.apply(lambda m: m.name)
        if args.expose:
            v1.Service(
                f"{app}-public",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=f"{app}-public", namespace=ns, labels=app_labels
                ),
                spec=v1.ServiceSpecArgs(type="LoadBalancer", selector=app_labels, ports=[port]),
                opts=child_opts(self),
            )

    def _kube_state_metrics(self, args: PrometheusArgs, ns: pulumi.Output[str]) -> None:
        v1 = k8s.core.v1
        app = "kube-state-metrics"
        app_labels = labels(app)
        read = ["list", "watch"]
        account = self._rbac(
            app,
            ns,
            [
                k8s.rbac.v1.PolicyRuleArgs(
                    api_groups=[""],
                    resources=["namespaces", "nodes", "persistentvolumeclaims", "pods", "services"],
                    verbs=read,
                ),
                k8s.rbac.v1.PolicyRuleArgs(
                    api_groups=["apps"],
                    resources=["daemonsets", "deployments", "replicasets", "statefulsets"],
                    verbs=read,
                ),
                k8s.rbac.v1.PolicyRuleArgs(
                    api_groups=["autoscaling"], resources=["horizontalpodautoscalers"], verbs=read
                ),
            ],
        )
        container = v1.ContainerArgs(
            name=app,
            image=args.ksm_image,
            args=[f"--port={KSM_PORT}", f"--resources={','.join(KSM_RESOURCES)}"],
            ports=[
                v1.ContainerPortArgs(name="http-metrics", container_port=KSM_PORT),
                v1.ContainerPortArgs(name="telemetry", container_port=KSM_TELEMETRY_PORT),
            ],
            liveness_probe=v1.ProbeArgs(
                http_get=v1.HTTPGetActionArgs(path="/livez", port=KSM_PORT),
                initial_delay_seconds=5,
                timeout_seconds=5,
            ),
            readiness_probe=v1.ProbeArgs(
                http_get=v1.HTTPGetActionArgs(path="/readyz", port=KSM_TELEMETRY_PORT),
                initial_delay_seconds=5,
                timeout_seconds=5,
            ),
            resources=resource_requirements("50m", "200m", "64Mi", "256Mi"),
            security_context=v1.SecurityContextArgs(
                allow_privilege_escalation=False,
                read_only_root_filesystem=True,
                run_as_non_root=True,
                run_as_user=65534,
            ),
        )
        k8s.apps.v1.Deployment(
            app,
            metadata=k8s.meta.v1.ObjectMetaArgs(name=app, namespace=ns, labels=app_labels),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=1,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=app_labels),
                template=v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=app_labels),
                    spec=v1.PodSpecArgs(
                        service_account_name=account.metadata.apply(lambda m: m.name),
                        containers=[container],
                    ),
                ),
            ),
            opts=child_opts(self),
        )
        v1.Service(
            app,
            metadata=k8s.meta.v1.ObjectMetaArgs(name=app, namespace=ns, labels=app_labels),
            spec=v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=app_labels,
                ports=[
                    v1.ServicePortArgs(
                        name="http-metrics", port=KSM_PORT, target_port="http-metrics"
                    ),
                    v1.ServicePortArgs(
                        name="telemetry", port=KSM_TELEMETRY_PORT, target_port="telemetry"
                    ),
                ],
            ),
            opts=child_opts(self),
        )
