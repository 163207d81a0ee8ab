"""Handlers that turn resources of the graph (type token + camelCase inputs) into twin objects.

One handler per modelled type token. A handler reads the whole input dict each time, so
a knob change is applied by writing the twin's copy of the inputs and running the
handler again: there is one reading of every property, not two.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from infragym import catalog
from infragym.apps.workload import (
    HEATER_DB_DSN_ENV,
    HEATER_WORK_ENV,
    SIEGE_SCHEDULE_ENV,
    CpuWork,
    Schedule,
)
from infragym.errors import ConfigError
from infragym.graph import ResourceRecord
from infragym.twin.cost import CLUSTER, HELM_RELEASE, NODE_POOL
from infragym.twin.model import Autoscaler, Database, NodePool, Workload
from infragym.twin.units import cpu_cores, memory_gib

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"

MODELLED_TYPES = frozenset({CLUSTER, NODE_POOL, DEPLOYMENT, HPA})
"""Type tokens the twin turns into behaviour; others are kept, priced, and listed (a Helm
release is modelled when it is PostgreSQL: see :func:`database_from_release`)."""

# Requests Kubernetes assumes for containers that declare none are zero; the twin uses a
# small floor so that such pods still take a scheduling slot.
_MIN_CPU_REQUEST = 0.01
_MIN_MEMORY_REQUEST = 0.01


Key = tuple[str, str]
"""A resource's (type token, logical name)."""


@dataclass(eq=False)
class World:
    """What the twin simulates, read from the graph: pools, workloads, the database and
    the HPAs, in the graph's order (the core keeps that order: which pool, which workload
    first)."""

    pools: dict[Key, NodePool] = field(default_factory=dict)
    workloads: dict[Key, Workload] = field(default_factory=dict)
    database: Database | None = None
    autoscalers: dict[Key, Autoscaler] = field(default_factory=dict)


def world(records: Mapping[Key, ResourceRecord], hpa_window_s: float) -> World:
    """The world of a resource graph: every node pool, then every Deployment, then the
    first PostgreSQL release's primary pod, and the HPAs on those workloads.

    Raises:
        ConfigError: Something the twin cannot model (a node size not in the catalogue).
    """
    out = World()
    for key, r in records.items():
        if r.type == CLUSTER:
            pool = pool_from_cluster(key, r.inputs)
        elif r.type == NODE_POOL:
            pool = pool_from_node_pool(key, r.inputs)
        else:
            continue
        if pool is not None:
            out.pools[key] = pool
    for key, r in records.items():
        if r.type == DEPLOYMENT:
            out.workloads[key] = workload_from_deployment(key, r.inputs)
    for key, r in records.items():
        if r.type == HELM_RELEASE and out.database is None:
            found = database_from_release(key, r.inputs)
            if found is not None:
                out.database, out.workloads[key] = found
    out.autoscalers = autoscalers(records, out.workloads, hpa_window_s)
    return out


def autoscalers(
    records: Mapping[Key, ResourceRecord], workloads: Mapping[Key, Workload], window_s: float
) -> dict[Key, Autoscaler]:
    """The graph's HPAs whose target is a modelled workload (by name), in graph order."""
    by_name = {w.name: w for w in workloads.values()}
    out = {}
    for key, r in records.items():
        if r.type == HPA:
            hpa = autoscaler_from_hpa(key, r.inputs, by_name, window_s)
            if hpa is not None:
                out[key] = hpa
    return out


def node_size(slug: str) -> catalog.Size:
    """The catalogue entry of a node size slug, or a ConfigError naming close matches."""
    try:
        return catalog.size(slug)
    except ConfigError as exc:
        raise ConfigError(f"the twin cannot model node size: {exc}") from None


def pool_from_cluster(key: tuple[str, str], inputs: Mapping[str, Any]) -> NodePool | None:
    """The default node pool declared inside a KubernetesCluster."""
    pool = inputs.get("nodePool") or {}
    if not pool.get("size"):
        return None
    return _pool(key, pool)


def pool_from_node_pool(key: tuple[str, str], inputs: Mapping[str, Any]) -> NodePool:
    """A separate KubernetesNodePool."""
    return _pool(key, inputs)


def _pool(key: tuple[str, str], spec: Mapping[str, Any]) -> NodePool:
    count = int(spec.get("nodeCount") or spec.get("minNodes") or 1)
    auto = bool(spec.get("autoScale"))
    size = node_size(str(spec["size"]))
    if auto and size.allocatable_cpu <= 0:
        raise ConfigError(
            f"node pool {key[1]!r}: size {size.slug} has no allocatable CPU, so the "
            "cluster autoscaler cannot size the pool by the CPU its Pending pods request"
        )
    return NodePool(
        key=key,
        name=str(spec.get("name") or key[1]),
        size=size,
        count=count,
        auto_scale=auto,
        min_nodes=int(spec.get("minNodes") or count) if auto else count,
        max_nodes=int(spec.get("maxNodes") or count) if auto else count,
    )


def _env(container: Mapping[str, Any]) -> dict[str, str]:
    """A container's environment: name → value ("" for one taken from a Secret or elsewhere)."""
    return {e["name"]: e.get("value", "") for e in container.get("env") or [] if "name" in e}


_DEFAULT_DB_CORES = 1.0
"""CPU of a PostgreSQL release that sets neither a limit nor a request (an assumption)."""


def database_from_release(
    key: tuple[str, str], inputs: Mapping[str, Any]
) -> tuple[Database, Workload] | None:
    """A PostgreSQL Helm release (chart ``postgresql``), else ``None``.

    Returns:
        The database (its primary's CPU: the limit, else the request) and the workload of
        its primary pod (one replica, with the chart's requests, limit and nodeSelector),
        which the twin schedules on the nodes like any pod.
    """
    if inputs.get("chart") != "postgresql":
        return None
    primary = (inputs.get("values") or {}).get("primary") or {}
    resources = primary.get("resources") or {}
    container = [{"resources": resources}]  # the chart's one PostgreSQL container
    cpu_request, memory_request = _pod_requests(container)
    limit = _cpu_limit(container)
    pod = Workload(
        key=key,
        name=str(inputs.get("name") or key[1]),
        replicas=1,
        cpu_request=cpu_request,
        memory_request=memory_request,
        cpu_limit=limit,
        node_selector=dict(primary.get("nodeSelector") or {}),
        role="database",
    )
    cores = limit or cpu_cores((resources.get("requests") or {}).get("cpu")) or _DEFAULT_DB_CORES
    return Database(key=key, cores=cores), pod


def workload_from_deployment(key: tuple[str, str], inputs: Mapping[str, Any]) -> Workload:
    """A Deployment: replicas, the first container's requests/limits, and its role."""
    spec = inputs.get("spec") or {}
    pod_spec = (spec.get("template") or {}).get("spec") or {}
    containers = pod_spec.get("containers") or [{}]
    requests_cpu, requests_mem = _pod_requests(containers)
    limit_cpu = _cpu_limit(containers)
    env = _env(containers[0])
    role, work, schedule, workers, uses_database = "other", None, None, 1, False
    if HEATER_WORK_ENV in env:
        role, work = "heater", _work(env[HEATER_WORK_ENV] or "{}")
        workers = work.workers
        uses_database = bool(work.db_query) and HEATER_DB_DSN_ENV in env
    elif SIEGE_SCHEDULE_ENV in env:
        role, schedule = "siege", _schedule(env[SIEGE_SCHEDULE_ENV])
    metadata = inputs.get("metadata") or {}
    return Workload(
        key=key,
        name=str(metadata.get("name") or key[1]),
        replicas=int(spec.get("replicas", 1)),
        cpu_request=requests_cpu,
        memory_request=requests_mem,
        cpu_limit=limit_cpu,
        node_selector=dict(pod_spec.get("nodeSelector") or {}),
        role=role,
        work=work,
        schedule=schedule,
        workers=workers,
        uses_database=uses_database,
    )


def deployment_cpu_limit(inputs: Mapping[str, Any]) -> float | None:
    """A Deployment's pod CPU limit: the sum of its containers' limits, ``None`` if one has none.

    The same reading as :func:`workload_from_deployment`'s, for the twin's fast path of a
    limit knob.
    """
    spec = inputs.get("spec") or {}
    pod_spec = (spec.get("template") or {}).get("spec") or {}
    return _cpu_limit(pod_spec.get("containers") or [{}])


def _pod_requests(containers: list[Mapping[str, Any]]) -> tuple[float, float]:
    """A pod's CPU (cores) and memory (GiB) requests: its containers' sums, floored."""
    cpu = memory = 0.0
    for c in containers:
        req = (c.get("resources") or {}).get("requests") or {}
        cpu += cpu_cores(req.get("cpu")) or 0.0
        memory += memory_gib(req.get("memory")) or 0.0
    return max(cpu, _MIN_CPU_REQUEST), max(memory, _MIN_MEMORY_REQUEST)


def _cpu_limit(containers: list[Mapping[str, Any]]) -> float | None:
    limit_cpu: float | None = 0.0
    for c in containers:
        lim = (c.get("resources") or {}).get("limits") or {}
        c_lim = cpu_cores(lim.get("cpu"))
        limit_cpu = None if limit_cpu is None or c_lim is None else limit_cpu + c_lim
    return limit_cpu


@functools.lru_cache(maxsize=256)
def _work(text: str) -> CpuWork:
    return CpuWork.model_validate_json(text)


_SCHEDULES: dict[str, Schedule] = {}
"""Schedules by their JSON: those parsed, and those :func:`known_schedule` was told of."""

_SCHEDULES_SIZE = 256
"""Schedules :data:`_SCHEDULES` keeps before it starts over."""


def _schedule(text: str) -> Schedule:
    schedule = _SCHEDULES.get(text)
    if schedule is None:
        schedule = Schedule.model_validate_json(text)
        known_schedule(text, schedule)
    return schedule


def known_schedule(text: str, schedule: Schedule) -> None:
    """Tell the builder that ``text`` is ``schedule.model_dump_json()``, so that a graph
    holding ``text`` (in a siege-engine's ``SIEGE_SCHEDULE``) is read without parsing it.

    The sim backend writes a schedule's JSON into the graph itself, and tells the
    builder here: parsing a trace's JSON (about 2,100 points) costs milliseconds, and
    gives a schedule equal to ``schedule`` (JSON round-trips a schedule exactly).
    """
    if len(_SCHEDULES) >= _SCHEDULES_SIZE:
        _SCHEDULES.clear()
    _SCHEDULES[text] = schedule


def autoscaler_from_hpa(
    key: tuple[str, str],
    inputs: Mapping[str, Any],
    workloads: Mapping[str, Workload],
    default_window_s: float,
) -> Autoscaler | None:
    """An HPA on CPU utilisation; ``None`` when its target is not a modelled Deployment."""
    spec = inputs.get("spec") or {}
    target = workloads.get(str((spec.get("scaleTargetRef") or {}).get("name")))
    if target is None:
        return None
    utilisation = 0.8  # the Kubernetes default when no metric is given
    for metric in spec.get("metrics") or []:
        res = metric.get("resource") or {}
        if res.get("name") == "cpu":
            utilisation = float((res.get("target") or {}).get("averageUtilization", 80)) / 100
    window = default_window_s
    down = ((spec.get("behavior") or {}).get("scaleDown")) or {}
    if down.get("stabilizationWindowSeconds") is not None:
        window = float(down["stabilizationWindowSeconds"])
    return Autoscaler(
        key=key,
        target=target,
        min_replicas=int(spec.get("minReplicas") or 1),
        max_replicas=int(spec.get("maxReplicas") or target.replicas),
        target_utilisation=utilisation,
        scale_down_window_s=window,
    )
