"""Named metrics: what an agent observes, with the PromQL that measures it on real infrastructure.

Each :class:`Metric` has a name, a unit, a meaning and a PromQL template. The pulumi
backend runs the PromQL against the deployment's Prometheus (through
:class:`infragym.prometheus.PrometheusSource`); the digital twin computes the same
quantity directly. ``{window}`` in a template is replaced by the step length, formatted
by :func:`format_window` (for example ``30s``), so every rate and quantile covers exactly
one environment step ending at the time of the query; ``{app}`` is the heater's
Deployment and container name.

Series each metric reads, and who exports them (metric and label names as those
projects publish them):

- heater app (prometheus_client): ``heater_requests_total{code}``.
  It also exports ``heater_request_duration_seconds`` (server-side histogram),
  ``heater_requests_in_flight`` and ``heater_cpu_seconds_total``, which no named metric
  reads (they are for dashboards and debugging).
- siege-engine: ``siege_requests_sent_total``, ``siege_requests_completed_total``
  (answered with a status below 400), ``siege_requests_failed_total{reason}``,
  ``siege_request_duration_seconds_bucket{le}`` (client latency of completed
  requests). ``siege_target_rate`` (the scheduled rate) is not read.
- kube-state-metrics (``docs/metrics/workload/*.md``, ``docs/metrics/cluster/node-metrics.md``):
  ``kube_deployment_spec_replicas{namespace,deployment}``,
  ``kube_deployment_status_replicas_ready{namespace,deployment}``,
  ``kube_node_status_condition{node,condition,status}`` (one series per status, value
  0 or 1), ``kube_pod_status_phase{namespace,pod,uid,phase}`` (one series per phase,
  value 0 or 1), ``kube_pod_status_ready{namespace,pod,uid,condition}``,
  ``kube_pod_container_resource_requests`` and ``kube_pod_container_resource_limits``
  ``{namespace,pod,uid,container,node,resource,unit}`` (CPU in ``unit="core"``).
- kubelet's cAdvisor endpoint (``/metrics/cadvisor``):
  ``container_cpu_usage_seconds_total{namespace,pod,container,cpu,id,image,name}``.

The k8s/prometheus layer scrapes all of them; kube-state-metrics must be scraped with
``honor_labels: true`` so its ``namespace``/``pod`` labels are not renamed to
``exported_*`` by the target's own labels.

Details the expressions take care of:

- **Absence means zero for rates and counts.** A counter or gauge with no series (the
  app has not been scraped yet, no Deployment, no Pending pod) reads as 0: those
  expressions end in ``or vector(0)``.
- **Undefined stays undefined.** Quantiles with no completed request in the window come
  out NaN (``histogram_quantile`` of empty buckets), and ratios whose denominator is
  zero come out empty (the denominator is filtered with ``> 0``). The metrics source
  reports both as NaN and lists the name as missing; see :mod:`infragym.prometheus`.
- **Error ratio over outcomes.** ``error_ratio`` divides failures by requests that
  *finished* in the window (completed + failed), both counted when the outcome is known.
  Dividing by requests *sent* mixes event times (a request sent at the end of one step
  fails by timeout in the next), so it can exceed 1 after a drop in load; in steady
  state both are the same share, which is what the twin computes.
- **No double counting in cAdvisor.** The kubelet also exposes a pod-level cgroup series
  (``container=""``) and, with dockershim, the pause container (``container="POD"``);
  both would count the heater's CPU twice. Selecting ``container="{app}"`` excludes them.
- **Utilisation over Ready pods.** Requests and limits are summed over heater pods whose
  ``kube_pod_status_ready{condition="true"}`` is 1: a Pending pod requests CPU but uses
  none, and counting it would make the pods look idle exactly when the cluster has no
  room. This is also what the twin divides by.
- **Duplicate kube-state-metrics series** (two replicas, or two scrape jobs) are folded
  with ``max by`` the object's identity before summing.
"""

from __future__ import annotations

import math
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


def format_window(seconds: float) -> str:
    """Format a step length as a Prometheus duration for ``{window}``.

    Whole seconds give ``"30s"``; anything else is rounded to whole milliseconds
    (``1.5`` gives ``"1500ms"``), the finest unit PromQL durations take.

    Args:
        seconds: Window length in seconds; must be at least 1 ms.

    Raises:
        ValueError: If ``seconds`` is not finite or is below 1 ms.
    """
    if not math.isfinite(seconds) or seconds < 0.001:
        raise ValueError(f"a metrics window must be at least 1 ms, got {seconds!r} s")
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _quantile(q: float) -> str:
    # Client-side latency (siege-engine), so queueing in front of the pods counts.
    # With no completed request in the window every bucket rate is 0 and the result is
    # NaN: the source reports that as missing.
    return (
        f"histogram_quantile({q}, sum by (le) "
        "(rate(siege_request_duration_seconds_bucket[{window}])))"
    )


def _cpu_utilisation(kind: str) -> str:
    # CPU cores the heater containers used over the window, divided by the CPU
    # requests (or limits) of the heater pods that are Ready. Empty when no heater pod is
    # Ready or none sets the resource (denominator filtered by > 0).
    return (
        'sum(rate(container_cpu_usage_seconds_total{{container="{app}"}}[{window}])) / ('
        "sum("
        f"max by (namespace, pod, container) (kube_pod_container_resource_{kind}"
        '{{container="{app}",resource="cpu"}})'
        " * on (namespace, pod) group_left() "
        'max by (namespace, pod) (kube_pod_status_ready{{condition="true"}} == 1)'
        ") > 0)"
    )


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "request_rate",
            "req/s",
            "Requests the heater answered per second over the step (any status).",
            "sum(rate(heater_requests_total[{window}])) or vector(0)",
            1000.0,
        ),
        Metric(
            "offered_rate",
            "req/s",
            "Requests the load generator sent per second over the step.",
            "sum(rate(siege_requests_sent_total[{window}])) or vector(0)",
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
            "Share of requests finishing in the step that failed (timeouts, connection "
            "errors, 5xx, overflow).",
            "(sum(rate(siege_requests_failed_total[{window}])) or vector(0)) / ("
            'sum(rate({{__name__=~"siege_requests_(completed|failed)_total"}}[{window}]))'
            " > 0)",
            1.0,
        ),
        Metric(
            "cpu_utilisation_requests",
            "ratio",
            "CPU used by the heater pods divided by the CPU requested by the Ready ones.",
            _cpu_utilisation("requests"),
            1.5,
        ),
        Metric(
            "cpu_utilisation_limits",
            "ratio",
            "CPU used by the heater pods divided by the CPU limits of the Ready ones.",
            _cpu_utilisation("limits"),
            1.0,
        ),
        Metric(
            "replicas_desired",
            "count",
            "Replicas the heater Deployment asks for (spec.replicas).",
            "sum(max by (namespace, deployment) "
            '(kube_deployment_spec_replicas{{deployment="{app}"}})) or vector(0)',
            20.0,
        ),
        Metric(
            "replicas_ready",
            "count",
            "Heater replicas that are Ready.",
            "sum(max by (namespace, deployment) "
            '(kube_deployment_status_replicas_ready{{deployment="{app}"}})) or vector(0)',
            20.0,
        ),
        Metric(
            "nodes_ready",
            "count",
            "Cluster nodes whose Ready condition is true.",
            "sum(max by (node) "
            '(kube_node_status_condition{{condition="Ready",status="true"}})) or vector(0)',
            10.0,
        ),
        Metric(
            "pods_pending",
            "count",
            "Pods in phase Pending (for example, waiting for room on a node).",
            'sum(max by (namespace, pod) (kube_pod_status_phase{{phase="Pending"}})) or vector(0)',
            20.0,
        ),
        Metric(
            "replicas_starting",
            "count",
            "Heater replicas created but not Ready yet (Pending, or starting on a node).",
            "clamp_min(sum(max by (namespace, deployment) "
            '(kube_deployment_status_replicas{{deployment="{app}"}})) - sum(max by '
            '(namespace, deployment) (kube_deployment_status_replicas_ready{{deployment="{app}"}}'
            ")), 0) or vector(0)",
            20.0,
        ),
        Metric(
            "nodes_booting",
            "count",
            "Nodes asked for and not Ready yet (a droplet booting; the backend's view of its "
            "node pools, since a node is invisible to Kubernetes until it registers).",
            None,
            10.0,
        ),
        Metric(
            "next_node_ready_s",
            "s",
            "Seconds until the next booting node is Ready (0 when none boots; the backend's "
            "estimate from when it asked for the node and the boot time).",
            None,
            300.0,
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
