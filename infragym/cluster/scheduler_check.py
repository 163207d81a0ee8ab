"""The twin's scheduling against the real kube-scheduler, on random configurations.

Each :class:`SchedConfig` is a small cluster and two Deployments:

- a ``workers`` pool (DOKS size, node count) and, in some configurations, a second
  ``extra`` pool of another size;
- ``other``: pods from another workload, ``other_per_node`` per worker node, pinned to
  the workers pool, created first (what already runs there);
- ``app``: ``replicas`` pods with CPU and memory requests, pinned to the workers pool or,
  in some configurations, free to land on either pool.

:func:`run_real` deploys a batch of configurations to the local cluster at once (one
``NodePool`` and one namespace each, so they never share a node), waits until the
scheduler has placed or given up on every pod, and reads back where each pod landed.
:func:`run_twin` builds the same resource graph for :class:`infragym.twin.twin.Twin`.
Both give a :class:`Placement`: how many ``app`` pods are Pending, and the ``app`` pods
per node, compared per pool as a sorted list (nodes of one pool are interchangeable, and
their names differ between the two).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from infragym.cluster.api import ApiClient
from infragym.cluster.node_pools import API_VERSION, KIND, POOL_LABEL, _pools_path
from infragym.errors import ClusterError

SIZES = ("s-1vcpu-2gb", "s-2vcpu-2gb", "s-2vcpu-4gb", "s-4vcpu-8gb", "c-2", "g-2vcpu-8gb")
"""Node sizes drawn from (DOKS sizes of different CPU:memory shapes)."""
CPU_REQUESTS = ("100m", "250m", "500m", "750m", "1000m", "1500m")
MEMORY_REQUESTS = ("64Mi", "128Mi", "256Mi", "512Mi", "1Gi", "2Gi")

_NODE_POOL = "digitalocean:index/kubernetesNodePool:KubernetesNodePool"
_DEPLOYMENT = "kubernetes:apps/v1:Deployment"


@dataclass(frozen=True)
class SchedConfig:
    """One configuration (see the module docstring)."""

    index: int
    node_size: str
    node_count: int
    extra_size: str | None
    other_per_node: int
    other_cpu: str
    other_memory: str
    replicas: int
    cpu: str
    memory: str
    pinned: bool

    @property
    def pool(self) -> str:
        """The workers pool's name."""
        return f"sched-{self.index}-workers"

    @property
    def extra_pool(self) -> str:
        """The extra pool's name."""
        return f"sched-{self.index}-extra"

    @property
    def namespace(self) -> str:
        """The configuration's namespace."""
        return f"sched-{self.index}"


@dataclass
class Placement:
    """Where the ``app`` pods went.

    Attributes:
        pending: ``app`` pods not bound to a node.
        per_pool: Pool name suffix (``workers``/``extra``) → sorted ``app`` pods per node
            (nodes with none included).
    """

    pending: int
    per_pool: dict[str, list[int]] = field(default_factory=dict)


def random_configs(n: int, seed: int = 0) -> list[SchedConfig]:
    """``n`` random configurations, reproducible from ``seed``."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.append(
            SchedConfig(
                index=i,
                node_size=rng.choice(SIZES),
                node_count=rng.randint(1, 5),
                extra_size=rng.choice(SIZES) if rng.random() < 0.3 else None,
                other_per_node=rng.choice((0, 0, 1, 2, 3)),
                other_cpu=rng.choice(CPU_REQUESTS[:4]),
                other_memory=rng.choice(MEMORY_REQUESTS[:5]),
                replicas=rng.randint(1, 24),
                cpu=rng.choice(CPU_REQUESTS),
                memory=rng.choice(MEMORY_REQUESTS),
                pinned=rng.random() < 0.7,
            )
        )
    return out


def _deployment(
    name: str, replicas: int, cpu: str, memory: str, pools: list[str]
) -> dict[str, Any]:
    """A Deployment whose pods may run only on the nodes of ``pools``."""
    labels = {"app": name}
    pod_spec: dict[str, Any] = {
        "containers": [
            {
                "name": name,
                "image": "registry.invalid/none:0",  # KWOK runs no container
                "resources": {"requests": {"cpu": cpu, "memory": memory}},
            }
        ],
        "terminationGracePeriodSeconds": 0,
    }
    if len(pools) == 1:
        pod_spec["nodeSelector"] = {POOL_LABEL: pools[0]}
    else:  # several pools (and none of the other configurations' nodes)
        term = {"matchExpressions": [{"key": POOL_LABEL, "operator": "In", "values": pools}]}
        pod_spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
            }
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


# ---------------------------------------------------------------------- the twin


def twin_records(c: SchedConfig) -> list[Any]:
    """The configuration as a resource graph for the twin (as the mocks record it)."""
    from infragym.backends.base import ResourceRecord

    def deployment(name: str, replicas: int, cpu: str, memory: str, pinned: bool) -> Any:
        container = {"name": name, "resources": {"requests": {"cpu": cpu, "memory": memory}}}
        pod_spec: dict[str, Any] = {"containers": [container]}
        if pinned:
            pod_spec["nodeSelector"] = {POOL_LABEL: c.pool}
        return ResourceRecord(
            "k8s-sched",
            _DEPLOYMENT,
            name,
            {
                "metadata": {"name": name},
                "spec": {"replicas": float(replicas), "template": {"spec": pod_spec}},
            },
        )

    records = [
        ResourceRecord(
            "sched",
            _NODE_POOL,
            "workers",
            {"name": c.pool, "size": c.node_size, "nodeCount": float(c.node_count)},
        )
    ]
    if c.extra_size:
        records.append(
            ResourceRecord(
                "sched",
                _NODE_POOL,
                "extra",
                {"name": c.extra_pool, "size": c.extra_size, "nodeCount": 1.0},
            )
        )
    if c.other_per_node:
        records.append(
            deployment("other", c.other_per_node * c.node_count, c.other_cpu, c.other_memory, True)
        )
    records.append(deployment("app", c.replicas, c.cpu, c.memory, c.pinned))
    return records


def run_twin(c: SchedConfig) -> Placement:
    """Where the twin puts the ``app`` pods (at time 0: every node Ready)."""
    from infragym.twin.twin import Twin

    twin = Twin(twin_records(c), seed=0)
    counts: dict[str, dict[str, int]] = {}
    for node in twin.nodes():
        suffix = "extra" if node.pool.name == c.extra_pool else "workers"
        counts.setdefault(suffix, {})[node.name] = 0
    pending = 0
    for pod in twin.pods():
        if pod.workload.key[1] != "app":
            continue
        if pod.node is None:
            pending += 1
            continue
        suffix = "extra" if pod.node.pool.name == c.extra_pool else "workers"
        counts[suffix][pod.node.name] += 1
    return Placement(pending, {k: sorted(v.values()) for k, v in sorted(counts.items())})


# ---------------------------------------------------------------------- Kubernetes


def _pool(name: str, size: str, count: int) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {"size": size, "nodeCount": count, "readyAfterSeconds": 0},
    }


def _settled(client: ApiClient, namespace: str, app: str, want: int) -> list[dict] | None:
    """The pods of ``app`` once each is bound or marked unschedulable, else ``None``."""
    pods = [
        p
        for p in client.list("pods", namespace, selector=f"app={app}")
        if not p["metadata"].get("deletionTimestamp")
    ]
    if len(pods) < want:
        return None
    for p in pods:
        if (p.get("spec") or {}).get("nodeName"):
            continue
        conds = (p.get("status") or {}).get("conditions") or []
        if not any(
            x.get("type") == "PodScheduled" and x.get("reason") == "Unschedulable" for x in conds
        ):
            return None
    return pods


def _wait_all(what: str, checks: dict[int, Any], timeout: float) -> dict[int, Any]:
    """Poll each check until all return something truthy; their results by key."""
    done: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(checks):
        for k, check in checks.items():
            if k not in done:
                value = check()
                if value:
                    done[k] = value
        if len(done) == len(checks):
            break
        if time.monotonic() > deadline:
            missing = sorted(set(checks) - set(done))
            raise ClusterError(f"timed out after {timeout:g} s waiting for {what} of {missing}")
        time.sleep(0.2)
    return done


def run_real(
    client: ApiClient, configs: Sequence[SchedConfig], timeout: float = 120
) -> list[Placement]:
    """Deploy ``configs`` together to the local cluster; where the real scheduler put them.

    Everything created is deleted again before returning (pools, so their nodes, and
    namespaces).
    """
    pools_path = _pools_path()
    try:
        for c in configs:
            client.request("POST", pools_path, _pool(c.pool, c.node_size, c.node_count))
            if c.extra_size:
                client.request("POST", pools_path, _pool(c.extra_pool, c.extra_size, 1))
            client.create(
                "namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": c.namespace}},
            )

        def nodes_ready(c: SchedConfig) -> Any:
            def check() -> bool:
                want = c.node_count + (1 if c.extra_size else 0)
                nodes = [
                    n
                    for pool in (c.pool, c.extra_pool)
                    for n in client.list("nodes", selector=f"{POOL_LABEL}={pool}")
                ]
                ready = [n for n in nodes if _node_ready(n) and not _tainted(n)]
                sa = client.get("serviceaccounts", "default", c.namespace)
                return len(ready) == want and sa is not None

            return check

        _wait_all("nodes Ready", {c.index: nodes_ready(c) for c in configs}, timeout)
        for c in configs:
            if c.other_per_node:
                n = c.other_per_node * c.node_count
                other = _deployment("other", n, c.other_cpu, c.other_memory, [c.pool])
                client.create("deployments", other, c.namespace)
        _wait_all(
            "the other workload scheduled",
            {
                c.index: (
                    lambda c=c: _settled(
                        client, c.namespace, "other", c.other_per_node * c.node_count
                    )
                )
                for c in configs
                if c.other_per_node
            },
            timeout,
        )
        for c in configs:
            pools = [c.pool] if c.pinned or not c.extra_size else [c.pool, c.extra_pool]
            app = _deployment("app", c.replicas, c.cpu, c.memory, pools)
            client.create("deployments", app, c.namespace)
        placed = _wait_all(
            "the app scheduled",
            {
                c.index: (lambda c=c: _settled(client, c.namespace, "app", c.replicas))
                for c in configs
            },
            timeout,
        )
        out = []
        for c in configs:
            counts: dict[str, dict[str, int]] = {}
            for suffix, pool in (("workers", c.pool), ("extra", c.extra_pool)):
                for n in client.list("nodes", selector=f"{POOL_LABEL}={pool}"):
                    counts.setdefault(suffix, {})[n["metadata"]["name"]] = 0
            pending = 0
            for p in placed[c.index]:
                node = p["spec"].get("nodeName")
                if not node:
                    pending += 1
                    continue
                for per_node in counts.values():
                    if node in per_node:
                        per_node[node] += 1
                        break
                else:
                    raise ClusterError(
                        f"config {c.index}: an app pod landed on foreign node {node}"
                    )
            out.append(
                Placement(pending, {k: sorted(v.values()) for k, v in sorted(counts.items())})
            )
        return out
    finally:
        for c in configs:
            client.delete("namespaces", c.namespace)
            client.request("DELETE", _pools_path(c.pool))
            client.request("DELETE", _pools_path(c.extra_pool))


def _node_ready(node: dict[str, Any]) -> bool:
    for x in (node.get("status") or {}).get("conditions") or []:
        if x.get("type") == "Ready":
            return x.get("status") == "True"
    return False


def _tainted(node: dict[str, Any]) -> bool:
    return bool((node.get("spec") or {}).get("taints"))


def compare(
    client: ApiClient, configs: Sequence[SchedConfig], batch: int = 10
) -> list[tuple[SchedConfig, Placement, Placement]]:
    """(config, twin placement, Kubernetes placement) for every configuration."""
    rows = []
    for i in range(0, len(configs), batch):
        chunk = configs[i : i + batch]
        real = run_real(client, chunk)
        for c, r in zip(chunk, real, strict=True):
            rows.append((c, run_twin(c), r))
    return rows


def describe(c: SchedConfig) -> str:
    """One line describing a configuration."""
    extra = f" +1×{c.extra_size}" if c.extra_size else ""
    other = (
        f" other {c.other_per_node}/node×{c.other_cpu}/{c.other_memory}" if c.other_per_node else ""
    )
    where = "workers" if c.pinned else "any pool"
    return (
        f"{c.node_count}×{c.node_size}{extra}{other}; app {c.replicas}×{c.cpu}/{c.memory} "
        f"on {where}"
    )
