"""Named metrics: what an agent observes, with the PromQL that measures it on real infrastructure.

Each :class:`Metric` has a name, a unit, a meaning and a PromQL template. The pulumi
backend runs the PromQL against the deployment's Prometheus; the digital twin computes
the same quantity directly. ``{window}`` in a template is replaced by the step length
(for example ``30s``), so every rate and quantile covers exactly one environment step.

Series each metric needs, and who exports them:

- ``heater_requests_total{code}``, ``heater_request_duration_seconds_bucket``,
  ``heater_requests_in_flight``: the heater app (prometheus_client).
- ``siege_requests_sent_total``, ``siege_requests_failed_total{reason}``,
  ``siege_request_duration_seconds_bucket``, ``siege_target_rate``: the siege-engine.
- ``kube_deployment_spec_replicas``, ``kube_deployment_status_replicas_ready``,
  ``kube_node_status_condition``, ``kube_pod_status_phase``,
  ``kube_pod_container_resource_requests``, ``kube_pod_container_resource_limits``:
  kube-state-metrics.
- ``container_cpu_usage_seconds_total``: the kubelet's cAdvisor endpoint.

The k8s/prometheus layer scrapes all of them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One named observation.

    Attributes:
        name: Identifier used in observations, rewards and ``info["metrics"]``.
        unit: Unit of the value (``req/s``, ``s``, ``ratio``, ``count``, ``USD/h``).
        description: What the value means.
        promql: PromQL template; ``{window}`` is the step length and ``{app}`` the heater
            app label. ``None`` for metrics not measured by Prometheus (cost comes from the
            resource graph).
        scale: A typical upper value, used to normalise observations into ``[0, 1]``-ish.
    """

    name: str
    unit: str
    description: str
    promql: str | None
    scale: float

    def query(self, window: str = "30s", app: str = "heater") -> str:
        """The PromQL for a step of length ``window`` (a Prometheus duration like ``30s``)."""
        if self.promql is None:
            raise ValueError(f"metric {self.name!r} is not measured by Prometheus")
        return self.promql.format(window=window, app=app)


def _quantile(q: float) -> str:
    return (
        f"histogram_quantile({q}, sum by (le) "
        "(rate(siege_request_duration_seconds_bucket[{window}])))"
    )


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "request_rate",
            "req/s",
            "Requests the heater answered per second over the step (any status).",
            "sum(rate(heater_requests_total[{window}]))",
            1000.0,
        ),
        Metric(
            "offered_rate",
            "req/s",
            "Requests the load generator sent per second over the step.",
            "sum(rate(siege_requests_sent_total[{window}]))",
            1000.0,
        ),
        Metric(
            "latency_p50",
            "s",
            "Median latency seen by clients over the step (completed requests).",
            _quantile(0.5),
            1.0,
        ),
        Metric(
            "latency_p95",
            "s",
            "95th-percentile latency seen by clients over the step (completed requests).",
            _quantile(0.95),
            1.0,
        ),
        Metric(
            "latency_p99",
            "s",
            "99th-percentile latency seen by clients over the step (completed requests).",
            _quantile(0.99),
            1.0,
        ),
        Metric(
            "error_ratio",
            "ratio",
            "Share of sent requests that failed (timeouts, connection errors, 5xx).",
            "sum(rate(siege_requests_failed_total[{window}])) "
            "/ sum(rate(siege_requests_sent_total[{window}]))",
            1.0,
        ),
        Metric(
            "cpu_utilisation_requests",
            "ratio",
            "CPU used by the heater pods divided by the CPU they request.",
            'sum(rate(container_cpu_usage_seconds_total{{container="{app}"}}[{window}])) '
            '/ sum(kube_pod_container_resource_requests{{container="{app}",resource="cpu"}})',
            1.5,
        ),
        Metric(
            "cpu_utilisation_limits",
            "ratio",
            "CPU used by the heater pods divided by their CPU limits.",
            'sum(rate(container_cpu_usage_seconds_total{{container="{app}"}}[{window}])) '
            '/ sum(kube_pod_container_resource_limits{{container="{app}",resource="cpu"}})',
            1.0,
        ),
        Metric(
            "replicas_desired",
            "count",
            "Replicas the heater Deployment asks for (spec.replicas).",
            'sum(kube_deployment_spec_replicas{{deployment="{app}"}})',
            20.0,
        ),
        Metric(
            "replicas_ready",
            "count",
            "Heater replicas that are Ready.",
            'sum(kube_deployment_status_replicas_ready{{deployment="{app}"}})',
            20.0,
        ),
        Metric(
            "nodes_ready",
            "count",
            "Cluster nodes whose Ready condition is true.",
            'sum(kube_node_status_condition{{condition="Ready",status="true"}})',
            10.0,
        ),
        Metric(
            "pods_pending",
            "count",
            "Pods in phase Pending (for example, waiting for room on a node).",
            'sum(kube_pod_status_phase{{phase="Pending"}})',
            20.0,
        ),
        Metric(
            "cost_hourly",
            "USD/h",
            "What the deployment's resources cost per hour at DigitalOcean's list prices.",
            None,
            1.0,
        ),
    )
}
"""Every named metric, by name."""


def get(name: str) -> Metric:
    """Look up a metric by name, with a clear error listing the known names."""
    from infragym.catalog import unknown_choice
    from infragym.errors import ConfigError

    try:
        return METRICS[name]
    except KeyError:
        raise ConfigError(unknown_choice("metric", name, METRICS)) from None
