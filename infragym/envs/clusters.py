"""Which layer fills SimpleK8sWebApp's ``cluster`` role: DOKS, or the local cluster.

The environment's k8s layers (``k8s-core``, ``k8s-prometheus``, ``k8s-heater``,
``k8s-siege-engine``) run on whatever layer provides the ``cluster`` role
(:mod:`stacks.registry`). Two are supported:

- ``do-managed-k8s`` (the default): a DOKS cluster, with ``do-core`` (VPC, firewall)
  below it; the node knobs act on its ``KubernetesNodePool`` ``workers``.
- ``local-k8s``: the local control plane of ``infragym cluster up`` (KWOK nodes, sized
  from the DOKS catalogue), with the real Kubernetes provider and no cloud account. The
  node knobs act on its ``NodePool`` ``workers`` (``spec.nodeCount``, ``spec.size``).
  It runs on the pulumi backend only (the twin models DOKS itself), without ``do-core``
  (DigitalOcean resources), and with ``k8s-core``'s metrics-server off (a Helm chart,
  which cannot be fetched offline). No container runs there, so the request metrics are
  missing (NaN); the cluster's own metrics come from :mod:`infragym.cluster.metrics`.

:func:`local_cluster_options` checks, before anything is deployed, that the local cluster
answers, and gives the backend its metrics source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infragym.catalog import unknown_choice
from infragym.errors import ClusterError, ConfigError

DOKS = "do-managed-k8s"
LOCAL = "local-k8s"


@dataclass(frozen=True)
class ClusterChoice:
    """One layer that can fill the environment's ``cluster`` role.

    Attributes:
        layer: The layer's registry name (also the value of the env's ``cluster``).
        node_pool_type: Type token of the workers pool the node knobs act on.
        node_count_path: Property path of the pool's node count.
        node_size_path: Property path of the pool's size slug.
        backends: The backends it runs on.
        drops: Layers of the DOKS composition it goes without.
        defaults: Layer settings it needs that differ from the layers' defaults (the
            user's ``settings`` override them).
    """

    layer: str
    node_pool_type: str
    node_count_path: str
    node_size_path: str
    backends: tuple[str, ...]
    drops: tuple[str, ...] = ()
    defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def layers(self, doks_layers: Sequence[str]) -> tuple[str, ...]:
        """The environment's layers with this one in the ``cluster`` role."""
        return tuple(self.layer if n == DOKS else n for n in doks_layers if n not in self.drops)

    def settings_key(self, layer: str) -> str:
        """``layer``, or this cluster layer for settings written for ``do-managed-k8s``."""
        return self.layer if layer == DOKS else layer


CLUSTERS: dict[str, ClusterChoice] = {
    DOKS: ClusterChoice(
        DOKS,
        "digitalocean:index/kubernetesNodePool:KubernetesNodePool",
        "nodeCount",
        "size",
        backends=("sim", "pulumi"),
    ),
    LOCAL: ClusterChoice(
        LOCAL,
        "kubernetes:infragym.dev/v1:NodePool",
        "spec.nodeCount",
        "spec.size",
        backends=("pulumi",),
        drops=("do-core",),
        defaults={"k8s-core": {"metrics_server": False}},
    ),
}
"""The supported ``cluster`` values."""


def get(name: Any, backend: Any) -> ClusterChoice:
    """The cluster choice ``name``, checked against ``backend``.

    Raises:
        ConfigError: An unknown cluster, or one the backend cannot run.
    """
    if not isinstance(name, str) or name not in CLUSTERS:
        shown = name if isinstance(name, str) else f"<{type(name).__name__}>"
        raise ConfigError(unknown_choice("cluster", shown, CLUSTERS))
    from infragym.backends import BACKENDS

    choice = CLUSTERS[name]
    if backend in BACKENDS and backend not in choice.backends:  # (make_backend names others)
        raise ConfigError(
            f"cluster={name!r} runs on the {' or '.join(choice.backends)} backend, not "
            f"{backend!r} (the twin models DOKS itself: use backend='pulumi' with it)"
        )
    return choice


def local_cluster_options(
    settings: Mapping[str, Any], options: dict[str, Any], window_seconds: float
) -> None:
    """Check that the local cluster answers; give the backend its metrics source.

    Unless ``options`` has a ``metrics`` source of its own, sets it to a
    :class:`~infragym.cluster.metrics.LocalClusterMetrics` on the cluster; a
    ``prometheus_url`` option (a Prometheus scraping the cluster's kube-state-metrics)
    becomes that source's Prometheus, and is taken out of ``options``.

    Args:
        settings: The ``local-k8s`` layer's settings (``kubeconfig`` or ``cluster_dir``).
        options: The backend options, changed in place.
        window_seconds: The step length (the PromQL window).

    Raises:
        ClusterError: No cluster was started in the directory, or its API server does
            not answer (the message says how to start it).
        ConfigError: Invalid settings or ``prometheus_url``.
    """
    from infragym.cluster import LocalCluster
    from infragym.cluster.api import client_from_kubeconfig
    from infragym.cluster.metrics import LocalClusterMetrics
    from stacks.registry import get_layer

    s = get_layer(LOCAL).parse_settings(settings)
    if s.kubeconfig is not None:
        kubeconfig = s.kubeconfig.get_secret_value()
    else:
        kubeconfig = LocalCluster(s.cluster_dir).kubeconfig()
    client = client_from_kubeconfig(kubeconfig, timeout=10)
    try:
        ready = client.request("GET", "/readyz") == "ok"
    except ClusterError as exc:
        raise ClusterError(
            f"cluster='local-k8s': {exc}. Start it with `infragym cluster up` (or pass "
            "settings={'local-k8s': {'cluster_dir': ...}})"
        ) from None
    if not ready:
        raise ClusterError(
            f"cluster='local-k8s': the API server at {client.server} is not ready "
            "(`infragym cluster status`)"
        )
    if "metrics" in options:
        return
    prometheus = None
    url = options.pop("prometheus_url", None)
    if url is not None:
        from infragym.backends.options import _http_url
        from infragym.prometheus import PrometheusSource

        prometheus = PrometheusSource(_http_url("pulumi", "prometheus_url", url), window_seconds)
    deployment = options.get("deployment", "dev")  # (the pulumi backend's default)
    pools = (f"{deployment}-system", f"{deployment}-workers")  # as local-k8s names them
    options["metrics"] = LocalClusterMetrics(client, prometheus=prometheus, pools=pools)
