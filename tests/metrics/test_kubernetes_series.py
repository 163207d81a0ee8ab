"""Kubernetes metrics from real kube-state-metrics and cAdvisor series, through real Prometheus.

A static exporter on loopback serves a small cluster in the exposition format, with the
metric and label names that kube-state-metrics (``docs/metrics/workload/pod-metrics.md``,
``deployment-metrics.md``, ``docs/metrics/cluster/node-metrics.md``) and the kubelet's
``/metrics/cadvisor`` endpoint publish:

- 3 nodes, 2 of them Ready (the third's Ready condition is ``unknown``);
- Deployment ``heater`` with spec 4 / ready 3, and ``siege-engine`` 1 / 1;
- heater pods ``aaaa``, ``bbbb``, ``cccc`` Running and Ready, ``dddd`` Pending (no room),
  plus a Pending pod of another namespace: 2 Pending pods;
- heater containers request 0.25 CPU and are limited to 0.5; their CPU counters grow at
  0.10, 0.15 and 0.20 core (0.45 in all). The pod-level cgroup series
  (``container=""``) and the pause container (``container="POD"``) are exposed too, as
  the kubelet does, and must not be counted; nor must the siege-engine's container.

kube-state-metrics is scraped by two jobs (as with two replicas), so duplicate series
must not be double counted either.

Expected: CPU / requests of Ready pods = 0.45 / (3 x 0.25) = 0.6; CPU / limits =
0.45 / (3 x 0.5) = 0.3. Counters are exact functions of the clock, so the only error is
the few-millisecond gap between a scrape's timestamp and the moment the page is built:
a 3 % tolerance covers 90 ms of that in the 3 s window.
"""

from __future__ import annotations

import time
import zlib

import pytest

from infragym.prometheus import PrometheusSource

pytestmark = pytest.mark.prometheus

NS = "default"
HEATER_PODS = {  # pod -> (phase, ready, node, cpu cores used by the heater container)
    "heater-7d4b9c6f5-aaaa": ("Running", True, "pool-a-1", 0.10),
    "heater-7d4b9c6f5-bbbb": ("Running", True, "pool-a-2", 0.15),
    "heater-7d4b9c6f5-cccc": ("Running", True, "pool-a-2", 0.20),
    "heater-7d4b9c6f5-dddd": ("Pending", False, None, 0.0),
}
CPU_REQUEST, CPU_LIMIT = 0.25, 0.5
SIEGE_POD = "siege-engine-5c8f7b-xk2p"
OTHER_PENDING = ("batch", "report-28734150-q9v7z")
PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
TOLERANCE = 0.03


def _uid(pod: str) -> str:
    return f"{zlib.crc32(pod.encode()):08x}-1111-4aaa-8bbb-{pod[-4:]:0>12}"


def _kube_state_metrics() -> str:
    """Samples as kube-state-metrics v2 serves them (label names from its docs)."""
    lines = [
        "# HELP kube_node_status_condition The condition of a cluster node.",
        "# TYPE kube_node_status_condition gauge",
    ]
    for node, ready in (("pool-a-1", "true"), ("pool-a-2", "true"), ("pool-a-3", "unknown")):
        for status in ("true", "false", "unknown"):
            lines.append(
                f'kube_node_status_condition{{node="{node}",condition="Ready",status="{status}"}} '
                f"{int(status == ready)}"
            )
            lines.append(
                f'kube_node_status_condition{{node="{node}",condition="MemoryPressure",'
                f'status="{status}"}} {int(status == "false")}'
            )
    for metric, values in (
        ("kube_deployment_spec_replicas", {"heater": 4, "siege-engine": 1}),
        ("kube_deployment_status_replicas_ready", {"heater": 3, "siege-engine": 1}),
        # status.replicas: the pods the Deployment has (Ready or not), one per HEATER_PODS.
        ("kube_deployment_status_replicas", {"heater": len(HEATER_PODS), "siege-engine": 1}),
    ):
        lines.append(f"# TYPE {metric} gauge")
        for deployment, v in values.items():
            lines.append(f'{metric}{{namespace="{NS}",deployment="{deployment}"}} {v}')

    pods = [(NS, pod, phase, ready) for pod, (phase, ready, _, _) in HEATER_PODS.items()]
    pods += [(NS, SIEGE_POD, "Running", True), (*OTHER_PENDING, "Pending", False)]
    lines.append("# TYPE kube_pod_status_phase gauge")
    for ns, pod, phase, _ in pods:
        for p in PHASES:
            lines.append(
                f'kube_pod_status_phase{{namespace="{ns}",pod="{pod}",uid="{_uid(pod)}",'
                f'phase="{p}"}} {int(p == phase)}'
            )
    lines.append("# TYPE kube_pod_status_ready gauge")
    for ns, pod, _, ready in pods:
        for cond in ("true", "false", "unknown"):
            lines.append(
                f'kube_pod_status_ready{{namespace="{ns}",pod="{pod}",uid="{_uid(pod)}",'
                f'condition="{cond}"}} {int(cond == ("true" if ready else "false"))}'
            )

    containers = [(NS, pod, "heater", node) for pod, (_, _, node, _) in HEATER_PODS.items()]
    containers.append((NS, SIEGE_POD, "siege-engine", "pool-a-1"))
    for kind, cpu, memory in (
        ("requests", CPU_REQUEST, 268435456),
        ("limits", CPU_LIMIT, 536870912),
    ):
        metric = f"kube_pod_container_resource_{kind}"
        lines.append(f"# TYPE {metric} gauge")
        for ns, pod, container, node in containers:
            node_label = f'node="{node}",' if node else ""  # empty labels are not exposed
            base = f'namespace="{ns}",pod="{pod}",uid="{_uid(pod)}",container="{container}",'
            c = cpu if container == "heater" else 0.1
            lines.append(f'{metric}{{{base}{node_label}resource="cpu",unit="core"}} {c}')
            lines.append(f'{metric}{{{base}{node_label}resource="memory",unit="byte"}} {memory}')
    return "\n".join(lines) + "\n"


def _cadvisor(t0: float) -> str:
    """container_cpu_usage_seconds_total as the kubelet's /metrics/cadvisor serves it."""
    dt = time.time() - t0
    lines = [
        "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.",
        "# TYPE container_cpu_usage_seconds_total counter",
    ]

    def sample(pod: str, container: str, image: str, cid: str, rate: float, base: float):
        pod_cg = f"/kubepods/burstable/pod{_uid(pod)}"
        cg = f"{pod_cg}/{cid}" if cid else pod_cg
        lines.append(
            f'container_cpu_usage_seconds_total{{container="{container}",cpu="total",'
            f'id="{cg}",image="{image}",name="{cid}",namespace="{NS}",pod="{pod}"}} '
            f"{base + rate * dt:.6f}"
        )

    for i, (pod, (phase, _, _, rate)) in enumerate(HEATER_PODS.items()):
        if phase != "Running":
            continue
        cid = f"{i:x}" * 64
        sample(pod, "heater", "docker.io/library/python:3.11-slim", cid[:64], rate, 100.0 + i)
        sample(pod, "POD", "registry.k8s.io/pause:3.9", ("p" + cid)[:64], 0.001, 0.5)
        sample(pod, "", "", "", rate + 0.002, 101.0 + i)  # the pod's own cgroup: the sum
    sample(SIEGE_POD, "siege-engine", "docker.io/library/python:3.11-slim", "e" * 64, 0.3, 7.0)
    return "\n".join(lines) + "\n"


def test_kubernetes_metrics(start_prometheus, serve_metrics) -> None:
    t0 = time.time()
    base = serve_metrics(
        {"/metrics": _kube_state_metrics, "/metrics/cadvisor": lambda: _cadvisor(t0)}
    )
    prom = start_prometheus(
        {
            "kube-state-metrics": f"{base}/metrics",
            "kube-state-metrics-replica": f"{base}/metrics",
            "kubelet": f"{base}/metrics/cadvisor",
        }
    )
    prom.wait_targets_up(3)
    # rate() over a window that starts before a series' first sample extrapolates only
    # half an interval back, so let every window below (3 s, the earliest ending 1.5 s
    # ago) be filled with samples first.
    time.sleep(5.0)
    names = [
        "replicas_desired",
        "replicas_ready",
        "nodes_ready",
        "pods_pending",
        "replicas_starting",
        "cpu_utilisation_requests",
        "cpu_utilisation_limits",
    ]
    with PrometheusSource(prom.url, window_seconds=3, retries=1, backoff=0.2) as src:
        values, missing = src.instant(names)
        now = time.time()
        series = src.range(["nodes_ready", "cpu_utilisation_requests"], now - 1, now, 1)

    assert missing == []
    assert values["replicas_desired"] == 4.0
    assert values["replicas_ready"] == 3.0
    assert values["nodes_ready"] == 2.0
    assert values["pods_pending"] == 2.0
    not_ready = sum(1 for _, ready, _, _ in HEATER_PODS.values() if not ready)
    assert values["replicas_starting"] == not_ready  # the heater's Pending pod
    used = sum(r for phase, _, _, r in HEATER_PODS.values() if phase == "Running")
    ready = sum(1 for _, ready, _, _ in HEATER_PODS.values() if ready)
    assert values["cpu_utilisation_requests"] == pytest.approx(
        used / (ready * CPU_REQUEST), rel=TOLERANCE
    )
    assert values["cpu_utilisation_limits"] == pytest.approx(
        used / (ready * CPU_LIMIT), rel=TOLERANCE
    )
    # Prometheus aligns the range to whole seconds: 1 or 2 points.
    assert 1 <= len(series["nodes_ready"]) <= 2
    assert all(v == 2.0 for _, v in series["nodes_ready"])
    assert series["cpu_utilisation_requests"]
    for _, v in series["cpu_utilisation_requests"]:
        assert v == pytest.approx(0.6, rel=TOLERANCE)
    print(f"kubernetes metrics: {values}")
