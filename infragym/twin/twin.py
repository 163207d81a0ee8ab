"""The digital twin: a DOKS cluster running the heater under siege, built from a resource graph.

``Twin(records)`` builds node pools, nodes, workloads and autoscalers from the resource
graph that the layer programs produce under Pulumi's mock runtime. The starting state is
the deployed one: nodes Ready and pods running. Then:

- :meth:`Twin.set_property` applies a knob: it writes the twin's copy of a resource's
  inputs and re-reads the resource, so a changed node count boots or removes nodes, a
  changed size replaces the pool's nodes (new ones first, as DOKS does), a changed
  replica count adds or removes pods, and a changed pod template rolls the pods. Pool
  changes of one instant are reconciled together, as one ``pulumi up`` applies them.
- :meth:`Twin.advance` moves time on. Inside a step it cuts the time at every event
  (a node Ready, a pod Ready, a node removed) and treats each piece analytically: every
  Ready heater pod is an M/G/c queue (``c`` = its worker processes) fed an equal share of
  the siege-engine's arrivals, as kube-proxy's iptables mode picks a backend at random.
  Overloaded pods answer at capacity and shed the rest (503), requests queued beyond the
  heater's timeout fail, and a CPU limit or a crowded node slows service.
- :meth:`Twin.metrics` gives every named metric of :mod:`infragym.metrics` for the step.

Deterministic for a given seed: the only randomness is the optional arrival noise.
"""

from __future__ import annotations

import copy
import heapq
import math
import random
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from infragym.apps.workload import CpuWork
from infragym.catalog import Size
from infragym.errors import ConfigError
from infragym.graph import Change, ResourceRecord
from infragym.knobs import get_path, parse_path
from infragym.twin import builder
from infragym.twin.cost import (
    CLUSTER,
    HELM_RELEASE,
    NODE_POOL,
    hourly_cost,
    resource_hourly_cost,
)
from infragym.twin.model import (
    Autoscaler,
    Database,
    Node,
    NodePool,
    PodBatch,
    PodView,
    TwinParams,
    Workload,
)
from infragym.twin.queueing import Queue, finite_source_response, where_falls_to
from infragym.updates import LayerQueue, Update

_NAN = float("nan")
_MISSING = object()
_EXP_QUANTILES = tuple(-math.log(1.0 - q) for q in (0.5, 0.95, 0.99))
"""The p50, p95 and p99 of an exponential distribution of rate 1."""
_QUANTILES: dict[tuple, tuple[float, float, float, float]] = {}
"""Pod latency memo shared by all twins: (c, mu, lam, scv, timeout) → (p50, p95, p99, fail)."""
_INF = float("inf")
_DB_RESPONSES: dict[tuple, float] = {}
"""Database response memo shared by all twins: (workers, servers, query s, rate) → R (inf:
overloaded, when R depends on the pods too)."""

CPU_LIMIT_PATH = "spec.template.spec.containers[0].resources.limits.cpu"
"""The Deployment property of a CPU-limit knob (it has a fast path in :meth:`Twin.set_property`)."""


class Twin:
    """A simulated deployment built from a resource graph.

    Args:
        records: The resource graph (custom resources with camelCase inputs).
        seed: Seed of the arrival noise.
        params: Timing and behaviour assumptions.

    Attributes:
        fast_paths: Apply the common knobs (replicas, a container's CPU limit, a fixed
            pool's node count) directly rather than by re-reading the resource. Same
            result either way; the switch is there so that tests can check that.
    """

    fast_paths: bool = True

    def __init__(
        self,
        records: Sequence[ResourceRecord],
        seed: int | None = None,
        params: TwinParams | None = None,
    ) -> None:
        self.params = params or TwinParams()
        self.rng = random.Random(seed)
        self.t = 0.0
        self.cost_usd = 0.0
        self.records: dict[tuple[str, str], ResourceRecord] = {}
        self.pools: dict[tuple[str, str], NodePool] = {}
        self.workloads: dict[tuple[str, str], Workload] = {}
        self.autoscalers: dict[tuple[str, str], Autoscaler] = {}
        self._next_event = _INF
        self._first_removal = _INF  # earliest removed_at among the nodes
        # Caches kept by _refresh_nodes: the Ready nodes (pool order), what they cost with
        # the static graph, and the next node boot. Invalid when _nodes_dirty is set.
        self._ready: list[Node] = []
        self._hourly = 0.0
        self._next_node_ready = _INF
        self._nodes_dirty = True
        # Whether anything that could let a Pending pod bind changed since _schedule ran.
        self._sched_dirty = True
        self._autoscaling = False
        self._planned_at = -_INF  # when _plan last ran
        self._quantile_cache = _QUANTILES
        # Records are shared with the backend's graph cache: copy one before writing it.
        self._own_ids: set[int] = set()  # ids of the input containers the twin has copied
        self._changed_pools: list[NodePool] = []  # reconciled at the next plan
        self._slots: dict[tuple[str, str, str], tuple] = {}  # see _property_slot
        self.queue = LayerQueue()
        # Layer → (its update in flight, the pools and workloads it changed, its deadline).
        self._updates: dict[str, tuple[Update, list[NodePool], list[tuple[str, str]], float]] = {}
        self._booting = 0  # nodes booting (kept by _refresh_nodes)
        self.update_timeouts = 0  # Deployment updates that hit the await timeout
        for r in records:
            self.records[(r.type, r.name)] = r
        for key, r in self.records.items():
            if r.type == CLUSTER:
                pool = builder.pool_from_cluster(key, r.inputs)
            elif r.type == NODE_POOL:
                pool = builder.pool_from_node_pool(key, r.inputs)
            else:
                continue
            if pool is not None:
                self.pools[key] = pool
                self._add_nodes(pool, pool.count, ready_at=0.0)
        for key, r in self.records.items():
            if r.type == builder.DEPLOYMENT:
                w = builder.workload_from_deployment(key, r.inputs)
                self.workloads[key] = w
                self._add_pods(w, w.replicas)
        self.database: Database | None = None
        for key, r in self.records.items():
            if r.type == HELM_RELEASE and self.database is None:
                found = builder.database_from_release(key, r.inputs)
                if found is not None:
                    self.database, w = found
                    self.workloads[key] = w
                    self._add_pods(w, w.replicas)
        self._rebuild_autoscalers()
        self._static_hourly = self._static_cost()
        self._refresh_nodes(0.0)
        self._schedule(0.0, startup=0.0)
        self._current = self._serving_plan(0.0)
        self._last: dict[str, float] = {}
        self._unmodelled = tuple(
            sorted(
                f"{r.type} {r.name}"
                for key, r in self.records.items()
                if r.type not in builder.MODELLED_TYPES
                and (self.database is None or key != self.database.key)
            )
        )

    def __getstate__(self) -> dict[str, Any]:
        """For copy and pickle: everything but the latency memo shared by all twins."""
        state = self.__dict__.copy()
        del state["_quantile_cache"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A copy shares the module's latency memo again (a pure function's values)."""
        self.__dict__.update(state)
        self._quantile_cache = _QUANTILES

    # ----------------------------------------------------------------- inspection

    @property
    def unmodelled(self) -> tuple[str, ...]:
        """Resources kept (and priced, when priced) but not simulated."""
        return self._unmodelled

    @property
    def last_metrics(self) -> dict[str, float]:
        """The metrics of the last step (not a copy)."""
        return self._last

    def inputs(self, type_token: str, name: str) -> dict[str, Any]:
        """A resource's current inputs, knob values applied (read-only: parts of them are
        shared with other twins built from the same cached graph; change them with
        :meth:`set_property`)."""
        return self._record(type_token, name).inputs  # type: ignore[return-value]

    def nodes(self) -> list[Node]:
        """Live nodes (booting or Ready), all pools, with pool changes applied."""
        if self._changed_pools:
            self._reconcile_pools()
        return [n for p in self.pools.values() for n in p.live()]

    def all_nodes(self) -> list[Node]:
        """Every pool's nodes: booting, Ready, or removed and not dropped yet (draining)."""
        if self._changed_pools:
            self._reconcile_pools()
        return [n for p in self.pools.values() for n in p.nodes]

    def pods(self) -> list[PodView]:
        """All pods, all workloads, one by one (for inspection; the twin uses batches)."""
        return [
            PodView(w, b.node, b.ready_at)
            for w in self.workloads.values()
            for b in w.batches
            for _ in range(b.count)
        ]

    def hourly_cost(self) -> float:
        """USD per hour now: Ready nodes plus everything else in the graph."""
        if self._nodes_dirty or self._next_node_ready <= self.t:
            self._refresh_nodes(self.t)
        return self._hourly

    def _record(self, type_token: str, name: str) -> ResourceRecord:
        try:
            return self.records[(type_token, name)]
        except KeyError:
            have = sorted(f"{t} {n}" for t, n in self.records)
            raise ConfigError(
                f"no resource {type_token} named {name!r} in the graph; it has: {have}"
            ) from None

    def _static_cost(self) -> float:
        return hourly_cost(self.records.values(), include_nodes=False)

    # ----------------------------------------------------------------- knobs

    def set_property(self, type_token: str, name: str, path: str, value: Any) -> None:
        """Set a property of a resource and apply what that changes in the world.

        A Deployment change acts at once (its controllers react within a second). A node
        pool change is reconciled at the next plan, together with the pool's other
        changes of the same instant, as one ``pulumi up`` applies them: changing a pool's
        size and node count in one step replaces the pool once, with the new count.

        Raises:
            ConfigError: No such resource or property path, or a value the twin cannot
                model (a node size not in the catalogue); the resource is left as it was.
        """
        slot = self._slots.get((type_token, name, path))
        if slot is None:
            slot = self._slots[(type_token, name, path)] = self._property_slot(
                type_token, name, path
            )
        parent, leaf, apply = slot
        try:
            previous = parent[leaf]
        except (KeyError, IndexError):
            previous = _MISSING
        parent[leaf] = value
        try:
            apply(value)
        except Exception:  # a ConfigError, or FastTwin's ReferenceNeeded
            if previous is _MISSING:
                del parent[leaf]
            else:
                parent[leaf] = previous
            raise
        self._next_event = self.t  # re-plan from now

    # ----------------------------------------------------------------- layer updates

    def request(self, changes: Sequence[Change]) -> tuple[list[str], list[str]]:
        """Set knob values as desired state, reconciled one update per layer at a time.

        What a real engine does (DESIGN, "The flow of one step"): a layer with no update
        in flight starts one now; a change to a layer whose update is in flight waits in
        the layer's queue (:class:`~infragym.updates.LayerQueue`), coalesced, and
        starts the moment that update completes. An update completes when what it changed
        has converged: a node pool when all its nodes are Ready at the new size and count
        and the old ones are gone (the DigitalOcean provider waits for the pool to be
        running); a Deployment when its rollout is done and every replica is Ready, or
        after :attr:`TwinParams.deployment_await_s` (the Kubernetes provider's await
        timeout; the change stays made and :attr:`update_timeouts` counts it). Nothing
        started is cancelled.

        Returns:
            The layers whose update started now, and those whose changes wait.

        Raises:
            ConfigError: A change the twin cannot model: that update's changes are undone
                and the queue's requests are as they were. An update of another layer
                that started earlier in the same request stays started (separate stacks'
                updates would too); the envs never meet this, since their knob values
                are checked against the knobs' domains first.
        """
        queued = [c.knob.layer for c in changes if c.knob.layer in self._updates]
        saved = (dict(self.queue.requested), {k: dict(v) for k, v in self.queue.queued.items()})
        started = self.queue.request(changes, self.t)
        for i, update in enumerate(started):
            try:
                self._start_update(update)
            except Exception:
                for undone in started[i:]:
                    del self.queue.in_flight[undone.layer]
                self.queue.requested, self.queue.queued = saved
                raise
        return [u.layer for u in started], list(dict.fromkeys(queued))

    def _start_update(self, update: Update) -> None:
        """Apply an update's changes to the world and watch it until it completes."""
        pools: list[NodePool] = []
        workloads: list[tuple[str, str]] = []
        made: list[tuple[Change, Any]] = []
        try:
            for change in update.changes:
                knob = change.knob
                key = (knob.type, knob.resource)
                try:
                    before = get_path(self._record(*key).inputs, knob.path)
                except ConfigError:  # not set yet
                    before = _MISSING
                self.set_property(knob.type, knob.resource, knob.path, change.value)
                made.append((change, before))
                if key in self.pools and self.pools[key] not in pools:
                    pools.append(self.pools[key])
                elif key in self.workloads and key not in workloads:
                    workloads.append(key)
        except Exception:
            for change, before in reversed(made):  # all or nothing, as one `up` would be
                if before is not _MISSING:
                    knob = change.knob
                    self.set_property(knob.type, knob.resource, knob.path, before)
            raise
        deadline = self.t + self.params.deployment_await_s if workloads else _INF
        self._updates[update.layer] = (update, pools, workloads, deadline)

    def _settle_updates(self, t: float) -> bool:
        """Complete the updates that are done at ``t``; start what waited for them.

        Returns:
            Whether a queued update started (the world changed: plan again).
        """
        started = False
        for layer, (_, pools, workloads, deadline) in list(self._updates.items()):
            converged = all(self._pool_converged(p, t) for p in pools) and all(
                self._rollout_done(self.workloads[k], t) for k in workloads
            )
            if not converged and t < deadline:
                continue
            if not converged:
                self.update_timeouts += 1
            del self._updates[layer]
            nxt = self.queue.complete(layer, t)
            if nxt is not None:
                self._start_update(nxt)
                started = True
        return started

    @staticmethod
    def _pool_converged(pool: NodePool, t: float) -> bool:
        slug = pool.size.slug
        nodes = pool.nodes
        return len(nodes) == pool.count and all(
            n.removed_at is None and n.ready_at <= t and n.size.slug == slug for n in nodes
        )

    @staticmethod
    def _rollout_done(w: Workload, t: float) -> bool:
        return (
            w.rollout_done_at <= t and w.pod_count == w.replicas and w.ready_count(t) == w.replicas
        )

    def updates_in_flight(self) -> dict[str, float]:
        """Layer → seconds its update has been in flight."""
        return {layer: self.t - u.started_at for layer, (u, *_) in self._updates.items()}

    def _property_slot(
        self, type_token: str, name: str, path: str
    ) -> tuple[Any, str | int, Callable[[Any], None]]:
        """Where a property lives in the twin's own inputs, and what applies a new value.

        Knobs set the same few properties every step, so :meth:`set_property` keeps these
        per (type, name, path): (the container holding the property, its key, the handler).
        """
        key = (type_token, name)
        record = self._owned_record(key)
        parts = parse_path(path)
        parent = self._own_containers(record, parts[:-1], path)
        # Fast paths for the knobs agents turn most: each does what _apply_property does
        # for that property, without re-reading the whole resource.
        if self.fast_paths:
            if type_token == builder.DEPLOYMENT:
                if path == "spec.replicas":
                    return parent, parts[-1], partial(self._set_replicas, key)
                if path == CPU_LIMIT_PATH:
                    return parent, parts[-1], partial(self._set_pod_cpu_limit, key, record)
            elif type_token == NODE_POOL and path in ("nodeCount", "size"):
                return parent, parts[-1], partial(self._set_pool_property, key, record, path)
        return parent, parts[-1], partial(self._apply_property, key, record, path)

    def _owned_record(self, key: tuple[str, str]) -> ResourceRecord:
        """The twin's own record of a resource: a copy of the top level of its inputs.

        Records are shared with the backend's graph cache, so the twin writes only into
        containers it has copied (see :meth:`_own_containers`).
        """
        record = self._record(*key)
        if id(record.inputs) not in self._own_ids:
            record = ResourceRecord(record.layer, record.type, record.name, dict(record.inputs))
            self.records[key] = record
            self._own_ids.add(id(record.inputs))
        return record

    def _own_containers(self, record: ResourceRecord, parts: Sequence[str | int], path: str) -> Any:
        """The container at ``parts`` in an owned record, copying those on the way that are shared.

        Copying the containers along one property path, rather than all the inputs, keeps
        the first change of a resource cheap (a Deployment's inputs run to hundreds of
        objects). A copied container replaces the shared one in its parent and is never
        replaced again, so the containers :meth:`set_property` keeps stay in the record.

        Raises:
            ConfigError: The path leads nowhere, or through something that is not a dict
                or a list.
        """
        parent: Any = record.inputs
        for part in parts:
            try:
                child = parent[part]
            except (KeyError, IndexError, TypeError):
                raise ConfigError(
                    f"{record.type} {record.name!r} has no property {path!r} (at {part!r})"
                ) from None
            if id(child) not in self._own_ids:
                if not isinstance(child, dict | list):
                    raise ConfigError(
                        f"{record.type} {record.name!r}: property {path!r} is not settable "
                        f"({part!r} holds {type(child).__name__})"
                    )
                child = parent[part] = copy.copy(child)
                self._own_ids.add(id(child))
            parent = child
        return parent

    def _set_replicas(self, key: tuple[str, str], value: Any) -> None:
        w = self.workloads[key]
        w.replicas = int(value)
        self._scale(w, w.replicas)

    def _set_pod_cpu_limit(self, key: tuple[str, str], record: ResourceRecord, _: Any) -> None:
        self._set_cpu_limit(self.workloads[key], builder.deployment_cpu_limit(record.inputs))

    def _set_pool_property(
        self, key: tuple[str, str], record: ResourceRecord, path: str, value: Any
    ) -> None:
        pool = self.pools[key]
        if pool.auto_scale:  # the autoscaler owns the count: take the general path
            self._apply_property(key, record, path, value)
        elif path == "nodeCount":
            self._change_pool(pool, count=int(value))
        else:
            self._change_pool(pool, size=builder.node_size(str(value)))

    def _apply_property(
        self, key: tuple[str, str], record: ResourceRecord, path: str, value: Any
    ) -> None:
        """Re-read a changed resource and bring the world to it (the general path)."""
        type_token = key[0]
        if type_token in (CLUSTER, NODE_POOL):
            build = (
                builder.pool_from_cluster if type_token == CLUSTER else builder.pool_from_node_pool
            )
            new = build(key, record.inputs)
            if new is not None:
                pool = self.pools[key]
                pool.auto_scale, pool.min_nodes, pool.max_nodes = (
                    new.auto_scale,
                    new.min_nodes,
                    new.max_nodes,
                )
                self._refresh_autoscaling()
                self._change_pool(pool, new.count, new.size)
        elif type_token == builder.DEPLOYMENT:
            self._update_workload(
                self.workloads[key], builder.workload_from_deployment(key, record.inputs)
            )
        elif type_token == builder.HPA:
            self._rebuild_autoscalers()
        elif self.database is not None and key == self.database.key:
            found = builder.database_from_release(key, record.inputs)
            if found is not None:
                self.database, pod = found
                self._update_workload(self.workloads[key], pod)
        if (
            type_token != NODE_POOL
            and resource_hourly_cost(record, include_nodes=False) is not None
        ):
            self._static_hourly = self._static_cost()
            self._nodes_dirty = True

    def _set_cpu_limit(self, w: Workload, limit: float | None) -> None:
        """What :meth:`_update_workload` does when only the pod CPU limit changes."""
        if limit == w.cpu_limit:
            return
        prev_cores = w.cores_per_pod
        w.cpu_limit = limit
        w.rollout_done_at = self.t + self.params.pod_startup_s
        w.prev_cores = prev_cores

    def _change_pool(
        self, pool: NodePool, count: int | None = None, size: Size | None = None
    ) -> None:
        """Record a pool's new node count or size; :meth:`_reconcile_pools` acts on it."""
        if count is not None:
            pool.count = count
        if size is not None:
            pool.size = size
        if pool not in self._changed_pools:
            self._changed_pools.append(pool)

    def _reconcile_pools(self) -> None:
        """Bring the changed pools' nodes to their size and count."""
        for pool in self._changed_pools:
            live = pool.live()
            slug = pool.size.slug
            if any(n.size.slug != slug for n in live):
                self._replace_pool_nodes(pool)
            elif len(live) != pool.count:
                self._resize_pool(pool, pool.count)
        self._changed_pools.clear()

    def _replace_pool_nodes(self, pool: NodePool) -> None:
        """Nodes cannot be resized: a new pool comes up, then the old nodes go.

        Nodes still booting (an earlier replacement not yet Ready) are replaced at once,
        as Pulumi replaces that pool, and never billed (DOKS bills from Ready); the Ready
        ones keep serving until the newest pool is Ready.
        """
        t = self.t
        ready_at = t + self.params.node_boot_s
        kept = []
        for node in pool.nodes:
            if node.ready_at <= t:  # Ready, or removed and not dropped yet: _evict's job
                if node.removed_at is None or node.removed_at > t:
                    node.removed_at = ready_at
                kept.append(node)
            # else booting: cancelled now; it holds no pods, so nothing to evict
        pool.nodes = kept
        self._nodes_dirty = True
        self._first_removal = t  # _evict recomputes the earliest removal
        self._evict(t)
        self._add_nodes(pool, pool.count, ready_at)
        self._first_removal = min(self._first_removal, ready_at)

    def _resize_pool(self, pool: NodePool, count: int) -> None:
        """Boot or remove nodes so that the pool has ``count`` live nodes."""
        live = pool.live()
        if count > len(live):
            self._add_nodes(pool, count - len(live), self.t + self.params.node_boot_s)
        elif count < len(live):
            self._remove_nodes(pool, len(live) - count)
        pool.count = count

    def _update_workload(self, old: Workload, new: Workload) -> None:
        new.batches = old.batches
        self.workloads[new.key] = new  # before the recount, which reads the new requests
        if new.template != old.template:
            # A rolling update: pods keep serving as they were until the new ones are up.
            new.rollout_done_at = self.t + self.params.pod_startup_s
            new.prev_cores = old.cores_per_pod
            self._recount_requests()
        else:
            new.rollout_done_at, new.prev_cores = old.rollout_done_at, old.prev_cores
        self._sched_dirty = True  # the selector or requests may have changed
        self._scale(new, new.replicas)
        for hpa in self.autoscalers.values():
            if hpa.target is old:
                hpa.target = new

    def _rebuild_autoscalers(self) -> None:
        by_name = {w.name: w for w in self.workloads.values()}
        old = self.autoscalers
        self.autoscalers = {}
        for key, r in self.records.items():
            if r.type == builder.HPA:
                hpa = builder.autoscaler_from_hpa(
                    key, r.inputs, by_name, self.params.hpa_scale_down_window_s
                )
                if hpa is not None:
                    hpa.history = old[key].history if key in old else []
                    self.autoscalers[key] = hpa
        self._refresh_autoscaling()

    def _refresh_autoscaling(self) -> None:
        self._autoscaling = bool(self.autoscalers) or any(p.auto_scale for p in self.pools.values())

    # ----------------------------------------------------------------- nodes and pods

    def _add_nodes(self, pool: NodePool, count: int, ready_at: float) -> None:
        size = pool.size
        cpu, memory = size.allocatable_cpu, size.allocatable_memory_gib
        t = self.t
        for _ in range(count):
            pool.serial += 1
            pool.nodes.append(
                Node(f"{pool.name}-{pool.serial}", pool, size, t, ready_at, cpu, memory)
            )
        if count > 0 and ready_at > t:
            self._booting += count
        if count > 0 and ready_at < self._next_node_ready:
            self._next_node_ready = ready_at

    def _refresh_nodes(self, t: float) -> None:
        """Recompute the Ready nodes (pool order), the hourly cost and the next node boot."""
        ready: list[Node] = []
        hourly = self._static_hourly
        boot = _INF
        booting = 0
        for pool in self.pools.values():
            for n in pool.nodes:
                ra = n.ready_at
                if ra <= t:
                    if n.removed_at is None or n.removed_at > t:
                        ready.append(n)
                        hourly += n.size.price_hourly_usd
                else:
                    booting += 1
                    if ra < boot:
                        boot = ra
        self._ready = ready
        self._booting = booting
        self._hourly = hourly
        self._next_node_ready = boot
        self._nodes_dirty = False
        self._sched_dirty = True

    def _remove_nodes(self, pool: NodePool, count: int) -> None:
        """Remove ``count`` nodes: booting ones first, then the least requested, newest first."""
        t = self.t
        live = pool.live()
        live.sort(key=lambda n: (n.ready(t), n.cpu_requested, -n.created_at))
        for node in live[:count]:
            node.removed_at = t
        self._first_removal = t
        self._evict(t)

    def _evict(self, t: float) -> None:
        """Drop nodes removed by ``t``; their pods go back to Pending."""
        if self._first_removal > t:
            return
        gone: set[Node] = set()
        first = _INF
        for pool in self.pools.values():
            dropped = False
            for n in pool.nodes:
                r = n.removed_at
                if r is not None:
                    if r <= t:
                        gone.add(n)
                        dropped = True
                    elif r < first:
                        first = r
            if dropped:
                pool.nodes = [n for n in pool.nodes if n not in gone]
        if gone:  # their pods go Pending; the other nodes' requests are unchanged
            for w in self.workloads.values():
                for batch in w.batches:
                    if batch.node in gone:
                        batch.node, batch.ready_at = None, _INF
            self._sched_dirty = True
        self._first_removal = first
        self._nodes_dirty = True

    def _add_pods(self, w: Workload, count: int) -> None:
        if count > 0:
            w.batches.append(PodBatch(count=count, created_at=self.t))
            self._sched_dirty = True

    def _scale(self, w: Workload, replicas: int) -> None:
        extra = w.pod_count - replicas
        if extra < 0:
            self._add_pods(w, -extra)
        elif extra > 0:
            # A ReplicaSet deletes unscheduled pods first, then not-ready, then the newest.
            t = self.t
            for batch in sorted(
                w.batches, key=lambda b: (b.node is not None, b.ready(t), -b.created_at)
            ):
                take = min(extra, batch.count)
                batch.count -= take
                node = batch.node
                if node is not None:  # its requests leave the node, which may fit others
                    node.cpu_requested -= w.cpu_request * take
                    node.memory_requested -= w.memory_request * take
                    self._sched_dirty = True
                extra -= take
                if not extra:
                    break
            w.batches = [b for b in w.batches if b.count]

    def _recount_requests(self) -> None:
        for pool in self.pools.values():
            for n in pool.nodes:
                n.cpu_requested = n.memory_requested = 0.0
        for w in self.workloads.values():
            cpu, memory = w.cpu_request, w.memory_request
            for b in w.batches:
                node = b.node
                if node is not None:
                    node.cpu_requested += cpu * b.count
                    node.memory_requested += memory * b.count
        self._sched_dirty = True

    def _schedule(self, t: float, startup: float | None = None) -> None:
        """Bind Pending pods to Ready nodes with room, one by one, least-allocated first.

        Pods of one workload are identical, so once one fits nowhere the rest of that
        workload's Pending pods stay Pending too. A heap ordered by (free share, node
        order) makes the same choices as a scan of the nodes for every pod.
        """
        self._sched_dirty = False
        startup = self.params.pod_startup_s if startup is None else startup
        ready_nodes = self._ready
        for w in self.workloads.values():
            pending = [b for b in w.batches if b.node is None]
            if not pending:
                continue
            selector = w.node_selector.items()
            cpu_req, mem_req = w.cpu_request, w.memory_request
            heap: list[tuple[float, int, Node]] = []
            for i, n in enumerate(ready_nodes):
                if selector and not all(n.pool.labels.get(k) == v for k, v in selector):
                    continue
                if n.fits(w):
                    free = 1.0 - n.cpu_requested / n.cpu
                    if free > -1.0:
                        heap.append((-free, i, n))
            if not heap:
                continue
            heapq.heapify(heap)
            placed: dict[Node, PodBatch] = {}
            ready_at = t + startup
            for batch in pending:
                while batch.count:
                    best = heap[0][2]
                    best.cpu_requested += cpu_req
                    best.memory_requested += mem_req
                    batch.count -= 1
                    bound = placed.get(best)
                    if bound is None:
                        bound = placed[best] = PodBatch(0, batch.created_at, best, ready_at)
                    bound.count += 1
                    free = 1.0 - best.cpu_requested / best.cpu
                    if best.fits(w) and free > -1.0:
                        heapq.heapreplace(heap, (-free, heap[0][1], best))
                    else:
                        heapq.heappop(heap)
                        if not heap:
                            break
                if not heap:
                    break
            w.batches = [b for b in w.batches if b.count] + list(placed.values())

    def _plan(self, t: float) -> float:
        """Apply what is due at ``t`` and return the time of the next event."""
        if self._changed_pools:
            self._reconcile_pools()
        if self._first_removal <= t:
            self._evict(t)
        if self._nodes_dirty or self._next_node_ready <= t:
            self._refresh_nodes(t)
        if self._sched_dirty:
            self._schedule(t)
        self._current = plan = self._serving_plan(t)
        self._planned_at = t
        if self._updates and self._settle_updates(t):
            return self._plan(t)  # a queued update started: plan with its changes
        nxt = plan.next_pod_event
        if t < self._first_removal < nxt:
            nxt = self._first_removal
        for _, _, _, deadline in self._updates.values():
            if t < deadline < nxt:
                nxt = deadline
        return self._next_node_ready if self._next_node_ready < nxt else nxt

    @staticmethod
    def _merge_ready(w: Workload, t: float) -> None:
        """Fold the Ready batches on each node into one (keeps batch lists short).

        The Ready batches go last, one per node, in the order of their nodes' first.
        """
        merged: dict[Node, PodBatch] = {}
        rest = []
        for b in w.batches:
            node = b.node
            if node is not None and b.ready_at <= t:
                m = merged.get(node)
                if m is None:
                    merged[node] = b
                else:
                    m.count += b.count
                    if b.created_at > m.created_at:
                        m.created_at = b.created_at
            else:
                rest.append(b)
        rest += merged.values()
        w.batches = rest

    def _serving_plan(self, t: float) -> _Plan:
        """Everything about serving that holds until the next event.

        Uses the node caches of :meth:`_refresh_nodes`, which must be current. Other pods
        hold their CPU requests on a node; its Ready heater pods share what is left
        (:meth:`_serve`), so a node's free CPU is its allocatable CPU minus what all its
        pods request, plus what its Ready heater pods request.

        The same pass over the pods ends rollouts that are due, folds batches that just
        became Ready (:meth:`_merge_ready`) and finds the next pod event.
        """
        plan = _Plan()
        pending = desired = ready_total = starting = 0
        requested = limit = 0.0
        next_event = _INF
        since = self._planned_at
        heater_ready: list[tuple[tuple, Node, int]] = []
        on_node: dict[Node, int] = {}
        heater_requests: dict[Node, float] = {}
        has_database = self.database is not None
        for w in self.workloads.values():
            done_at = w.rollout_done_at
            if done_at <= t:
                w.prev_cores = None
            elif done_at < next_event:
                next_event = done_at
            batches = w.batches
            if len(batches) > 1:
                for b in batches:
                    if b.node is not None and since < b.ready_at <= t:
                        self._merge_ready(w, t)
                        batches = w.batches
                        break
            heater = w.role == "heater" and w.work is not None
            cpu_req = w.cpu_request
            head = _pod_head(w, w.uses_database and has_database) if heater else ()
            ready = 0
            for b in batches:
                node = b.node
                if node is None:
                    pending += b.count
                elif b.ready_at <= t:
                    count = b.count
                    ready += count
                    if heater:
                        on_node[node] = on_node.get(node, 0) + count
                        heater_requests[node] = heater_requests.get(node, 0.0) + cpu_req * count
                        heater_ready.append((head, node, count))
                elif b.ready_at < next_event:
                    next_event = b.ready_at
            if heater:
                desired += w.replicas
                ready_total += ready
                starting += w.pod_count - ready
                requested += cpu_req * ready
                limit += (w.cpu_limit if w.cpu_limit is not None else _NAN) * ready
            elif ready and w.role == "siege" and w.schedule is not None:
                plan.schedules.append(w.schedule)
            elif w.role == "database":
                plan.database_ready = ready > 0
        groups: dict[tuple, list[int]] = {}
        for head, node, count in heater_ready:
            free = node.cpu - node.cpu_requested + heater_requests[node]
            key = (*head, free if free > 0.0 else 0.0, on_node[node])
            g = groups.get(key)
            if g is None:
                groups[key] = [count]
            else:
                g[0] += count
        plan.groups = [(n[0], *key) for key, n in groups.items() if not key[5]]
        if has_database:
            plan.database_groups = [(n[0], *key) for key, n in groups.items() if key[5]]
        plan.heater_pods = ready_total
        plan.pods_pending = pending
        plan.replicas_desired = desired
        plan.replicas_ready = ready_total
        plan.replicas_starting = starting
        plan.requested_cpu = requested
        plan.limit_cpu = limit
        plan.nodes_ready = len(self._ready)
        plan.hourly = self._hourly
        plan.next_pod_event = next_event
        return plan

    # ----------------------------------------------------------------- time

    def advance(self, seconds: float) -> dict[str, float]:
        """Simulate ``seconds`` and return the step's metrics."""
        if seconds <= 0:
            raise ConfigError(f"advance needs a positive duration, got {seconds}")
        t0, t1 = self.t, self.t + seconds
        acc = _Accumulator()
        a = t0
        while a < t1:
            if self._next_event <= a:
                self._next_event = self._plan(a)
            b = min(self._next_event, t1)
            self._serve(a, b, acc)
            self.cost_usd += self._current.hourly * (b - a) / 3600.0
            self.t = a = b
        if self._next_event <= t1:
            self._next_event = self._plan(t1)
        if self.params.noise and acc.sent > 0.0:
            acc.scale(self._poisson(acc.sent) / acc.sent)
        self._last = self._metrics(acc, seconds)
        if self._autoscaling:
            self._autoscale(acc, seconds)
        return self._last

    def metrics(self) -> dict[str, float]:
        """The metrics of the last step (empty before the first)."""
        return dict(self._last)

    def _serve(self, a: float, b: float, acc: _Accumulator) -> None:
        plan = self._current
        dt = b - a
        lam = 0.0
        for schedule in plan.schedules:
            lam += schedule.mean_rate(a, b)
        acc.sent += lam * dt
        acc.requested_cpu += plan.requested_cpu * dt
        acc.limit_cpu += plan.limit_cpu * dt
        if not plan.heater_pods:
            acc.failed += lam * dt  # no endpoints: connections are refused
            return
        # Rounded to 0.001 req/s so that recurring loads hit the latency memo.
        lam_pod = round(lam / plan.heater_pods, 3)
        if lam_pod <= 0.0:
            return
        cache = self._quantile_cache
        answered, failed, total_served = acc.answered, acc.failed, acc.served
        busy, s50, s95, s99 = acc.busy_cpu, acc.p50, acc.p95, acc.p99
        for count, c, cores, scv, timeout, cpu_s, _, free, on_node in plan.groups:
            # CFS: only when the node's heater pods use more CPU than it has free do they
            # slow each other, and then they share it equally.
            if on_node * min(lam_pod * cpu_s, cores) > free:
                cores = min(cores, free / on_node)
            mu = min(1.0, cores / c) / cpu_s
            if mu <= 0.0:
                answered += lam_pod * dt * count
                failed += lam_pod * dt * count
                continue
            hit = cache.get((c, mu, lam_pod, scv, timeout))
            p50, p95, p99, fail = hit or self._pod_latency(c, mu, lam_pod, scv, timeout)
            n = lam_pod * dt * count
            served = n * (1.0 - fail)
            answered += n
            failed += n - served
            total_served += served
            busy += served * cpu_s
            s50 += p50 * served
            s95 += p95 * served
            s99 += p99 * served
        acc.answered, acc.failed, acc.served = answered, failed, total_served
        acc.busy_cpu, acc.p50, acc.p95, acc.p99 = busy, s50, s95, s99
        if plan.database_groups:
            self._serve_with_database(plan.database_groups, lam_pod, dt, acc)

    def _serve_with_database(
        self, groups: list[tuple], lam_pod: float, dt: float, acc: _Accumulator
    ) -> None:
        """Serve the heater pods whose requests each run one query on the database.

        A worker waits for its query, so a request holds it for its CPU time plus the
        database's response time ``R``: the pod is an M/G/c queue with that service time
        (the two parts independent, ``R`` taken as exponential). The database is a queue
        with ``k`` servers (its cores, rounded up) whose sources are the pods' worker
        processes, each with at most one query out (:func:`finite_source_response`).
        When the queries would overload it, the pods hold them until its throughput and
        theirs agree: ``R`` grows until the pods pass what the database does, and the
        pods shed the rest (503). While the database's pod is not Ready (Pending, or
        starting), every query fails, and so does its request.
        """
        db = self.database
        assert db is not None
        if not self._current.database_ready:  # no server to connect to: the requests fail
            n = lam_pod * dt * sum(g[0] for g in groups)
            acc.answered += n
            acc.failed += n
            return
        servers = max(1, math.ceil(db.cores))
        query_s = self.params.db_query_ms / 1000.0 * servers / db.cores  # CPU shared
        parts = []  # (count, c, CPU seconds a request holds a worker, scv, timeout, cpu_s)
        for count, c, cores, scv, timeout, cpu_s, _, free, on_node in groups:
            if on_node * min(lam_pod * cpu_s, cores) > free:
                cores = min(cores, free / on_node)
            speed = min(1.0, cores / c)
            if speed <= 0.0:
                acc.answered += lam_pod * dt * count
                acc.failed += lam_pod * dt * count
                continue
            parts.append((count, c, cpu_s / speed, scv, timeout, cpu_s))
        if not parts:
            return

        def pods_capacity(response: float) -> float:
            return sum(count * c / (hold + response) for count, c, hold, *_ in parts)

        workers = sum(count * c for count, c, *_ in parts)
        queries = round(min(lam_pod * sum(p[0] for p in parts), pods_capacity(query_s)), 3)
        key = (workers, servers, query_s, queries)
        response = _DB_RESPONSES.get(key)
        if response is None:
            try:
                response = finite_source_response(workers, servers, query_s, queries)
            except ValueError:
                response = _INF  # overloaded
            if len(_DB_RESPONSES) > 16384:
                _DB_RESPONSES.clear()
            _DB_RESPONSES[key] = response
        if response == _INF:  # the database is the bottleneck: the pods pass what it does
            most = servers / query_s * 0.999
            response = where_falls_to(pods_capacity, most, query_s, 1.0)
        for count, c, hold, scv, timeout, cpu_s in parts:
            service = hold + response
            mu = 1.0 / service
            scv_total = (scv * hold * hold + response * response) / (service * service)
            p50, p95, p99, fail = self._pod_latency(c, mu, lam_pod, scv_total, timeout)
            n = lam_pod * dt * count
            served = n * (1.0 - fail)
            acc.answered += n
            acc.failed += n - served
            acc.served += served
            acc.busy_cpu += served * cpu_s
            acc.p50 += p50 * served
            acc.p95 += p95 * served
            acc.p99 += p99 * served

    def _poisson(self, mean: float) -> float:
        """A Poisson draw (normal approximation above 50, exact below)."""
        if mean > 50.0:
            return max(0.0, round(self.rng.gauss(mean, math.sqrt(mean))))
        limit, k, p = math.exp(-mean), 0, self.rng.random()
        while p > limit:
            k += 1
            p *= self.rng.random()
        return float(k)

    def _pod_latency(
        self, c: int, mu: float, lam: float, scv: float, timeout: float
    ) -> tuple[float, float, float, float]:
        """(p50, p95, p99, failed share) of one pod; memoised for steady steps."""
        key = (c, mu, lam, scv, timeout)
        hit = self._quantile_cache.get(key)
        if hit is not None:
            return hit
        cap = c * mu
        if lam >= cap * 0.999:
            # Saturated: the queue stays full to the timeout; the excess is shed (503).
            full = timeout + 1.0 / mu
            out = (full, full, full, 1.0 - cap * 0.999 / lam)
        elif c == 1 and scv == 1.0:
            # M/M/1, the usual heater pod: the response time is Exp(mu - lam), and an
            # arrival waits with probability rho (what Queue gives, without building one).
            rate = mu - lam
            ceiling = timeout + 1.0 / mu
            out = (
                min(_EXP_QUANTILES[0] / rate, ceiling),
                min(_EXP_QUANTILES[1] / rate, ceiling),
                min(_EXP_QUANTILES[2] / rate, ceiling),
                lam / mu * math.exp(-rate * timeout),
            )
        else:
            q = Queue(c, mu, lam, scv)
            fail = q.wait_p * math.exp(-q.theta * timeout)
            ceiling = timeout + 1.0 / mu
            out = (
                min(q.quantile(0.5), ceiling),
                min(q.quantile(0.95), ceiling),
                min(q.quantile(0.99), ceiling),
                fail,
            )
        if len(self._quantile_cache) > 16384:
            self._quantile_cache.clear()
        self._quantile_cache[key] = out
        return out

    def _metrics(self, acc: _Accumulator, seconds: float) -> dict[str, float]:
        plan = self._current
        served = acc.served
        busy = acc.busy_cpu
        return {
            "request_rate": acc.answered / seconds,
            "offered_rate": acc.sent / seconds,
            "latency_p50": acc.p50 / served if served > 0 else _NAN,
            "latency_p95": acc.p95 / served if served > 0 else _NAN,
            "latency_p99": acc.p99 / served if served > 0 else _NAN,
            "error_ratio": acc.failed / acc.sent if acc.sent > 0 else _NAN,
            "cpu_utilisation_requests": busy / acc.requested_cpu if acc.requested_cpu > 0 else _NAN,
            "cpu_utilisation_limits": busy / acc.limit_cpu if acc.limit_cpu > 0 else _NAN,
            "replicas_desired": float(plan.replicas_desired),
            "replicas_ready": float(plan.replicas_ready),
            "nodes_ready": float(plan.nodes_ready),
            "pods_pending": float(plan.pods_pending),
            "cost_hourly": plan.hourly,
            "replicas_starting": float(plan.replicas_starting),
            "nodes_booting": float(self._booting),
            "next_node_ready_s": (
                self._next_node_ready - self.t if self._next_node_ready < _INF else 0.0
            ),
        }

    # ----------------------------------------------------------------- autoscalers

    def _autoscale(self, acc: _Accumulator, seconds: float) -> None:
        t = self.t
        params = self.params
        for hpa in self.autoscalers.values():
            w = hpa.target
            ready = w.ready_count(t)
            if ready == 0:
                continue
            current = w.replicas
            proposal = hpa_proposal(
                acc.busy_cpu / seconds, w.cpu_request, ready, current,
                hpa.target_utilisation, params.hpa_tolerance,
            )  # fmt: skip
            hpa.history = [(s, r) for s, r in hpa.history if t - s < hpa.scale_down_window_s]
            hpa.history.append((t, proposal))
            desired = proposal if proposal >= current else max(r for _, r in hpa.history)
            desired = min(max(desired, hpa.min_replicas), hpa.max_replicas)
            if desired != current:
                self.set_property(builder.DEPLOYMENT, w.key[1], "spec.replicas", desired)
        for pool in self.pools.values():
            if pool.auto_scale:
                self._cluster_autoscale(pool, t)

    def _cluster_autoscale(self, pool: NodePool, t: float) -> None:
        """Add nodes for Pending pods; remove one node unneeded for 10 minutes."""
        params = self.params
        live = pool.live()
        # CPU requested by the Pending pods a node of this pool could take. (Loops, not
        # sum(), here and below: Python 3.12's sum() of floats is compensated, and the
        # compiled core must add the same way on every version.)
        pending = 0.0
        for w in self.workloads.values():
            if (
                all(pool.labels.get(k) == v for k, v in w.node_selector.items())
                and w.cpu_request <= pool.size.allocatable_cpu
            ):
                pending += w.cpu_request * w.pending_count()
        booting = [n for n in live if not n.ready(t)]
        if pending and not booting and len(live) < pool.max_nodes:
            need = math.ceil(pending / pool.size.allocatable_cpu)
            add = min(max(need, 1), pool.max_nodes - len(live))
            self._add_nodes(pool, add, t + params.node_boot_s)
            pool.count = len(pool.live())
            self._next_event = t
            return
        if pending or len(live) <= pool.min_nodes:
            return
        for node in live:
            if node.ready(t) and node.cpu_requested / node.cpu < params.ca_scale_down_utilisation:
                node.unneeded_since = node.unneeded_since if node.unneeded_since is not None else t
            else:
                node.unneeded_since = None

        def others_free(node: Node) -> float:
            free = 0.0
            for o in live:
                if o is not node and o.ready(t):
                    free += o.cpu - o.cpu_requested
            return free

        for node in live:
            if (
                node.unneeded_since is not None
                and t - node.unneeded_since >= params.ca_scale_down_unneeded_s
                and node.cpu_requested <= others_free(node)
            ):
                node.removed_at = t
                pool.count = len(live) - 1
                self._first_removal = t
                self._evict(t)
                self._next_event = t
                return


def hpa_proposal(
    busy_cores: float,
    cpu_request: float,
    ready: int,
    current: int,
    target: float,
    tolerance: float,
) -> int:
    """The HPA's replica recommendation (Kubernetes' algorithm, CPU resource metric).

    ``ceil(current × utilisation / target)``, unchanged within the tolerance. As the HPA
    documentation prescribes, pods that are not Ready yet count as 0 % busy when the
    ratio points up (so Pending pods do not make it scale without bound), while a
    scale-down looks at the Ready pods only.
    """
    ready_ratio = busy_cores / (ready * cpu_request) / target
    if ready_ratio > 1.0:
        ratio = busy_cores / (max(current, ready) * cpu_request) / target
        if ratio <= 1.0:
            return current
    else:
        ratio = ready_ratio
    if abs(ratio - 1.0) <= tolerance:
        return current
    return math.ceil(current * ratio)


_HEADS: dict[tuple[int, int, float, bool], tuple[tuple, CpuWork]] = {}


def _pod_head(w: Workload, queries: bool) -> tuple:
    """What every Ready heater pod of ``w`` shares.

    (workers, cores, scv, timeout, CPU s, whether it queries the database). Memoised by
    (work spec identity, workers, cores, queries), since every serving plan needs it and
    reading a work spec's fields costs more than the lookup. The entry holds the spec so
    that its id is not reused while the entry lives.
    """
    work = w.work
    assert work is not None
    cores = w.prev_cores if w.prev_cores is not None else w.cores_per_pod
    key = (id(work), w.workers, cores, queries)
    hit = _HEADS.get(key)
    if hit is None:
        if len(_HEADS) > 1024:
            _HEADS.clear()
        head = (w.workers, cores, work.scv, work.timeout_s, work.mean_ms / 1000.0, queries)
        hit = _HEADS[key] = (head, work)
    return hit[0]


class _Plan:
    """What serving looks like between two events (see :meth:`Twin._serving_plan`)."""

    __slots__ = (
        "database_groups", "database_ready", "groups", "heater_pods", "hourly", "limit_cpu",
        "next_pod_event", "nodes_ready", "pods_pending", "replicas_desired", "replicas_ready",
        "replicas_starting", "requested_cpu", "schedules",
    )  # fmt: skip

    def __init__(self) -> None:
        self.groups: list[tuple] = []  # heater pods alike: (count, *pod head, free, on node)
        self.database_groups: list[tuple] = []  # the same, for pods that query the database
        self.database_ready = False  # the database's pod is Ready
        self.schedules: list = []
        self.heater_pods = self.replicas_desired = self.replicas_ready = 0
        self.replicas_starting = 0
        self.nodes_ready = self.pods_pending = 0
        self.requested_cpu = self.limit_cpu = self.hourly = 0.0
        self.next_pod_event = _INF  # the next pod Ready or rollout done


class _Accumulator:
    """Request-weighted sums over the pieces of one step."""

    __slots__ = (
        "answered", "busy_cpu", "failed", "limit_cpu", "p50", "p95", "p99",
        "requested_cpu", "sent", "served",
    )  # fmt: skip

    def __init__(self) -> None:
        self.sent = self.answered = self.served = self.failed = 0.0
        self.busy_cpu = self.requested_cpu = self.limit_cpu = 0.0
        self.p50 = self.p95 = self.p99 = 0.0

    def scale(self, factor: float) -> None:
        """Scale the request counts (sampling noise), keeping ratios and quantiles."""
        self.sent *= factor
        self.answered *= factor
        self.served *= factor
        self.failed *= factor
        self.busy_cpu *= factor
        self.p50 *= factor
        self.p95 *= factor
        self.p99 *= factor
