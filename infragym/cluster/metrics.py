"""The named metrics of a deployment on the local cluster (a metrics source for the pulumi
backend).

The local cluster runs no container: KWOK marks pods Running and Ready, so there is no
request traffic, and nothing to measure latency, errors, request rates or CPU use. Those
metrics are reported as NaN (``missing``), never as zero, so an agent and its reward can
tell "not measured" from "no requests". What the cluster itself knows is measured:

- ``replicas_desired``, ``replicas_ready``, ``replicas_starting``, ``nodes_ready`` and
  ``pods_pending``: with a Prometheus that scrapes the cluster's kube-state-metrics (see
  ``infragym cluster status``), by their PromQL from :mod:`infragym.metrics`; otherwise
  read from the API server with the same meaning (every namespace's Deployments named
  like the app, every node, every pod);
- ``nodes_booting`` and ``next_node_ready_s`` (no PromQL: on DigitalOcean they come from
  the backend's view of its pools): from the API server, the nodes of the deployment's
  ``NodePool``\\ s that are not Ready yet, and the time left until the first of them is,
  from its creation time and its ready-after delay.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from infragym.cluster import stages
from infragym.cluster.api import ApiClient
from infragym.cluster.control_plane import node_ready
from infragym.cluster.node_pools import KIND, POOL_LABEL
from infragym.errors import ConfigError

NOT_MODELLED = (
    "request_rate",
    "offered_rate",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "error_ratio",
    "cpu_utilisation_requests",
    "cpu_utilisation_limits",
)
"""Metrics of request traffic and CPU use: NaN on the local cluster (no container runs)."""

FROM_KUBE_STATE_METRICS = (
    "replicas_desired",
    "replicas_ready",
    "replicas_starting",
    "nodes_ready",
    "pods_pending",
)
"""Metrics a Prometheus scraping kube-state-metrics answers with their PromQL."""

FROM_API_SERVER = ("nodes_booting", "next_node_ready_s")
"""Metrics always read from the API server."""


class LocalClusterMetrics:
    """A metrics source (``instant(names) -> (values, missing)``) for the local cluster.

    Args:
        client: An API client of the cluster.
        app: The heater's Deployment name (as in the PromQL templates).
        prometheus: A :class:`~infragym.prometheus.PrometheusSource` on a Prometheus that
            scrapes the cluster's kube-state-metrics; ``None`` reads those metrics from
            the API server.
        pools: The deployment's ``NodePool`` names, whose nodes ``nodes_booting`` counts
            (``None``: every pool's, as ``nodes_ready`` counts every node).
    """

    def __init__(
        self,
        client: ApiClient,
        app: str = "heater",
        prometheus: Any = None,
        pools: Iterable[str] | None = None,
    ) -> None:
        self.client = client
        self.app = app
        self.prometheus = prometheus
        self.pools = None if pools is None else frozenset(pools)

    def instant(self, names: Iterable[str]) -> tuple[dict[str, float], list[str]]:
        """The named metrics now; NaN (and listed in ``missing``) for request metrics.

        Raises:
            ConfigError: A metric this source does not know.
            ClusterError: The API server is unreachable.
            MetricsError: Prometheus failed (when one is used).
        """
        names = list(names)
        known = (*NOT_MODELLED, *FROM_KUBE_STATE_METRICS, *FROM_API_SERVER)
        unknown = [n for n in names if n not in known]
        if unknown:
            from infragym.catalog import unknown_choice

            raise ConfigError(unknown_choice("local-cluster metric", unknown[0], known))
        values: dict[str, float] = {}
        cluster = [n for n in names if n in FROM_KUBE_STATE_METRICS]
        if cluster and self.prometheus is not None:
            values.update(self.prometheus.instant(cluster)[0])
        elif cluster:
            values.update(self._from_api_server(cluster))
        if any(n in FROM_API_SERVER for n in names):
            values.update(self._booting())
        out = {n: values.get(n, math.nan) for n in names}
        return out, [n for n in names if math.isnan(out[n])]

    def _from_api_server(self, names: list[str]) -> dict[str, float]:
        """The kube-state-metrics metrics, with their PromQL's meaning, from the API server."""
        out: dict[str, float] = {}
        if {"replicas_desired", "replicas_ready", "replicas_starting"} & set(names):
            mine = [d for d in self.client.list("deployments") if d["metadata"]["name"] == self.app]
            status = [d.get("status") or {} for d in mine]
            ready = sum(float(s.get("readyReplicas") or 0) for s in status)
            replicas = sum(float(s.get("replicas") or 0) for s in status)
            out["replicas_desired"] = sum(float(d["spec"].get("replicas") or 0) for d in mine)
            out["replicas_ready"] = ready
            out["replicas_starting"] = max(replicas - ready, 0.0)
        if "nodes_ready" in names:
            out["nodes_ready"] = float(sum(map(node_ready, self.client.list("nodes"))))
        if "pods_pending" in names:
            pods = self.client.list("pods")
            out["pods_pending"] = float(
                sum((p.get("status") or {}).get("phase") == "Pending" for p in pods)
            )
        return out

    def _booting(self) -> dict[str, float]:
        """``nodes_booting`` and ``next_node_ready_s`` from the node pools' nodes."""
        now = time.time()
        left: list[float] = []
        for node in self.client.list("nodes"):
            meta = node["metadata"]
            owners = meta.get("ownerReferences") or []
            if not any(o.get("kind") == KIND for o in owners) or node_ready(node):
                continue
            pool = (meta.get("labels") or {}).get(POOL_LABEL)
            if self.pools is not None and pool not in self.pools:
                continue
            created = datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00"))
            delay = _seconds((meta.get("annotations") or {}).get(stages.READY_AFTER, "0ms"))
            left.append(max(created.timestamp() + delay - now, 0.0))
        return {"nodes_booting": float(len(left)), "next_node_ready_s": min(left, default=0.0)}


def _seconds(duration: str) -> float:
    """Seconds of a ready-after annotation (``1500ms``, ``30s``); 0 when unreadable."""
    try:
        if duration.endswith("ms"):
            return float(duration[:-2]) / 1000
        if duration.endswith("s"):
            return float(duration[:-1])
    except ValueError:
        pass
    return 0.0
