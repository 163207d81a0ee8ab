"""The twin's objects: what the graph declares (node pools, workloads, HPAs, the
database), views of the nodes and pods the compiled core holds, and the assumptions.

Every number that is not computed comes from :class:`TwinParams`, with its source.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from infragym.apps.workload import CpuWork, Schedule
from infragym.catalog import Size

POOL_LABEL = "doks.digitalocean.com/node-pool"
"""The node label DOKS puts on every node with its pool's name."""


@dataclass(frozen=True)
class TwinParams:
    """Timing and behaviour assumptions of the twin.

    Attributes:
        node_boot_s: Seconds from asking for a node to it being Ready. DigitalOcean
            publishes no figure; an API trace shows a pool node running about 4 minutes
            after creation (do-facts §5, ansible community.digitalocean PR #158).
        pod_startup_s: Seconds from a pod being scheduled to Ready (image pull, the
            apps' init container installing their packages, the readiness probe). An
            assumption for a warm node; tune it for your cluster.
        hpa_tolerance: The HPA's default tolerance (Kubernetes docs: 0.1).
        hpa_scale_down_window_s: The HPA's default scale-down stabilisation (300 s).
        ca_scale_down_unneeded_s: The cluster autoscaler's default
            ``scale-down-unneeded-time`` (10 minutes).
        ca_scale_down_utilisation: The cluster autoscaler's default
            ``scale-down-utilization-threshold`` (0.5).
        noise: Draw each step's request count from a Poisson distribution around the
            schedule (what a real step of finite length measures); the queueing itself
            runs at the scheduled rate. Off for checks against queueing theory.
        deployment_await_s: How long an update of a layer waits for its Deployments to
            roll out before it gives up: pulumi-kubernetes' default await timeout for a
            Deployment (10 minutes). Only with asynchronous actuation (layer updates).
        db_query_ms: CPU milliseconds the database spends on one heater query. An
            assumption: PostgreSQL answers a primary-key lookup in well under a
            millisecond of CPU, a small join or aggregate in a few; set it for your query.
    """

    node_boot_s: float = 240.0
    pod_startup_s: float = 20.0
    hpa_tolerance: float = 0.1
    hpa_scale_down_window_s: float = 300.0
    ca_scale_down_unneeded_s: float = 600.0
    ca_scale_down_utilisation: float = 0.5
    noise: bool = True
    db_query_ms: float = 2.0
    deployment_await_s: float = 600.0


@dataclass(eq=False, slots=True)
class Node:
    """One worker node (a DOKS droplet): a copy of the core's, for inspection."""

    name: str
    pool: NodePool
    size: Size
    created_at: float
    ready_at: float
    cpu: float
    memory: float
    cpu_requested: float = 0.0
    memory_requested: float = 0.0
    removed_at: float | None = None

    def ready(self, t: float) -> bool:
        return self.ready_at <= t and (self.removed_at is None or self.removed_at > t)

    def fits(self, w: Workload) -> bool:
        """Whether one more pod of ``w`` fits the node's allocatable CPU and memory."""
        return (
            self.cpu_requested + w.cpu_request <= self.cpu + 1e-9
            and self.memory_requested + w.memory_request <= self.memory + 1e-9
        )


@dataclass(eq=False, slots=True)
class NodePool:
    """A DOKS node pool (the cluster's default pool or a separate KubernetesNodePool), as
    declared: its size and node count are the desired ones (the core has the nodes)."""

    key: tuple[str, str]
    name: str
    size: Size
    count: int
    auto_scale: bool = False
    min_nodes: int = 1
    max_nodes: int = 1
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = {POOL_LABEL: self.name, **self.labels}


@dataclass(frozen=True)
class PodView:
    """One pod, for inspection and rendering (the twin itself works on batches)."""

    workload: Workload
    node: Node | None
    ready_at: float

    def ready(self, t: float) -> bool:
        return self.node is not None and self.ready_at <= t


@dataclass(eq=False, slots=True)
class Workload:
    """A Deployment: replicas of one pod template, as declared (the core has the pods,
    kept in batches of identical pods, and the rollouts).

    ``role`` is ``heater`` when the container carries a heater work spec, ``siege`` when
    it carries a siege-engine schedule, else ``other`` (scheduled and priced, not served).
    ``uses_database``: a heater whose work has a ``db_query`` and whose container is given
    a database DSN, so every request it serves also runs one query.
    """

    key: tuple[str, str]
    name: str
    replicas: int
    cpu_request: float
    memory_request: float
    cpu_limit: float | None
    node_selector: dict[str, str]
    role: str = "other"
    work: CpuWork | None = None
    schedule: Schedule | None = None
    workers: int = 1
    uses_database: bool = False

    @property
    def template(self) -> tuple:
        """What a pod of this workload is, as far as the twin is concerned."""
        return (
            self.cpu_request, self.memory_request, self.cpu_limit,
            tuple(sorted(self.node_selector.items())), self.work, self.schedule,
        )  # fmt: skip

    @property
    def cores_per_pod(self) -> float:
        """CPU a busy pod can use: its limit, and at most one core per worker process."""
        cap = float(self.workers)
        return cap if self.cpu_limit is None else min(cap, self.cpu_limit)


@dataclass(eq=False, slots=True)
class Autoscaler:
    """A HorizontalPodAutoscaler (autoscaling/v2) on CPU utilisation of requests."""

    key: tuple[str, str]
    target: Workload
    min_replicas: int
    max_replicas: int
    target_utilisation: float
    scale_down_window_s: float


@dataclass(eq=False, slots=True)
class Database:
    """A PostgreSQL server (the ``k8s-postgresql`` layer's Helm release).

    A queue of its own: every query costs it :attr:`TwinParams.db_query_ms` of CPU, and
    it has ``cores`` of CPU (its container's limit, else its request).
    """

    key: tuple[str, str]
    cores: float
