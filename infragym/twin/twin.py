"""The digital twin: a DOKS cluster running the heater under siege, built from a resource graph.

``Twin(records)`` reads node pools, workloads, the database and the HPAs from the
resource graph that the layer programs produce under Pulumi's mock runtime
(:mod:`infragym.twin.builder`) and hands them to the compiled core, ``infragym._twin_core``
(``native/`` in the repository, built by ``pip install -e .``), which holds the world
from then on and runs its step loop. The starting state is the deployed one: nodes Ready
and pods running. Then:

- :meth:`Twin.set_property` applies a knob: it writes the twin's copy of a resource's
  inputs and tells the core what changed. The common knobs (replicas, a pod's CPU limit,
  a fixed pool's node count or size) are one op each; any other property re-reads its
  resource (a Deployment, a pool, the HPAs, the database) and hands the core the result.
- :meth:`Twin.request` sets knob values as desired state, one update per layer at a time
  (asynchronous actuation, :class:`~infragym.updates.LayerQueue`).
- :meth:`Twin.advance` moves time on: the core cuts the step at every event (a node or
  pod Ready, a rollout done, a node removed, an update complete) and treats each piece
  analytically: every Ready heater pod is an M/G/c queue fed an equal share of the
  siege-engine's arrivals, and the database a closed queue of the pods' workers. It
  returns every named metric of :mod:`infragym.metrics` for the step.

Deterministic for a given seed: the only randomness is the optional arrival noise.
Copies (``copy.deepcopy``) fork the core; pickles replay the twin's history on a new core
(the core's state does not pickle), which brings it to the same state.
"""

from __future__ import annotations

import copy
import importlib
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

from infragym.apps.workload import Schedule, Trace
from infragym.catalog import Size, unknown_choice
from infragym.errors import ConfigError
from infragym.graph import Change, ResourceRecord
from infragym.knobs import get_path, parse_path, set_path
from infragym.twin import builder
from infragym.twin.cost import CLUSTER, NODE_POOL, hourly_cost, resource_hourly_cost
from infragym.twin.hpa import hpa_proposal
from infragym.twin.latency import EXP_QUANTILES, pod_latency
from infragym.twin.model import (
    Autoscaler,
    Database,
    Node,
    NodePool,
    PodView,
    TwinParams,
    Workload,
)
from infragym.updates import LayerQueue, Update

__all__ = ["CPU_LIMIT_PATH", "ENGINES", "Twin", "advance_all", "hpa_proposal", "make_twin"]

CPU_LIMIT_PATH = "spec.template.spec.containers[0].resources.limits.cpu"
"""The Deployment property of a CPU-limit knob (one of the common knobs)."""

ENGINES = ("auto", "native")
"""Accepted values of the sim backend's ``twin_engine`` option: both are the compiled twin
(the Python twin, ``python``, was retired)."""

METRIC_NAMES = (
    "request_rate", "offered_rate", "latency_p50", "latency_p95", "latency_p99",
    "error_ratio", "cpu_utilisation_requests", "cpu_utilisation_limits",
    "replicas_desired", "replicas_ready", "nodes_ready", "pods_pending", "cost_hourly",
    "replicas_starting", "nodes_booting", "next_node_ready_s",
)  # fmt: skip
"""The metrics the core returns, in this order."""

_ROLES = {"other": 0, "heater": 1, "siege": 2, "database": 3}
_MISSING: Any = object()
_INF = float("inf")
_SEEDS_IN_CORE = 2**64
"""Seeds whose absolute value is below this seed the core's noise in Rust (``seed_noise``)."""
_NO_SIZE = (0, 0.0, 0.0, 0.0)
"""The size field of a core op that sets no size."""

Key = tuple[str, str]
LogEntry = tuple[Any, ...] | float
"""What a :class:`Twin` has done since it was built, for replay: the seconds of an
advance, ``("set", key, path, value)``, ``("request", changes)``, ``("deployed", values)``,
``("schedule", key, schedule)`` or ``("reseed", seed)``."""


class UncommonKnob(Exception):
    """Not one of the common knobs (:meth:`Twin._core_op`): the general path makes it."""


def core_module() -> Any | None:
    """The compiled core's module, or ``None`` when ``infragym._twin_core`` is not built."""
    try:
        return importlib.import_module("infragym._twin_core")
    except ImportError:
        return None


def _require_core() -> Any:
    module = core_module()
    if module is None:
        raise ConfigError(
            "the compiled twin core (infragym._twin_core) is not built: reinstall "
            "infragym from its clone with pip install -e . (needs a Rust toolchain, "
            "rustup.rs)"
        )
    return module


class _LoggedQueue(LayerQueue):
    """A layer queue that logs what is recorded as deployed (the twin's replay needs it:
    a change back to a deployed value is coalesced away)."""

    def __init__(self, log: list[LogEntry]) -> None:
        super().__init__()
        self._log = log

    def deployed(self, values: Mapping[str, Any]) -> None:
        super().deployed(values)
        self._log.append(("deployed", dict(values)))


class Twin:
    """A simulated deployment built from a resource graph, stepped by the compiled core.

    ``pools``, ``workloads``, ``database`` and ``autoscalers`` are what the graph
    declares (names, sizes, templates, bounds), kept current as properties change; the
    nodes and pods live in the core, and :meth:`nodes` and :meth:`pods` read them.

    Args:
        records: The resource graph (custom resources with camelCase inputs).
        seed: Seed of the arrival noise.
        params: Timing and behaviour assumptions.

    Attributes:
        fast_paths: Apply the common knobs (replicas, a container's CPU limit, a fixed
            pool's node count or size) as one op each rather than by re-reading the
            resource. Same result either way; the switch is there so that tests can
            check that.

    Raises:
        ConfigError: The extension is not built, or the graph has something the twin
            cannot model (a node size not in the catalogue).
    """

    fast_paths: bool = True

    def __init__(
        self,
        records: Sequence[ResourceRecord],
        seed: int | None = None,
        params: TwinParams | None = None,
    ) -> None:
        module = _require_core()
        self.params = params = params or TwinParams()
        self.records: dict[Key, ResourceRecord] = {(r.type, r.name): r for r in records}
        # What rebuilds this twin (pickle replays it, see __reduce__): the graph, the seed
        # and the parameters, then what it did since, in order (see LogEntry).
        self._origin = (records, seed, params)
        self._log: list[LogEntry] = []
        self._logging = True  # off inside request, which logs itself
        self.queue: LayerQueue = _LoggedQueue(self._log)
        self.t = 0.0
        self.cost_usd = 0.0
        self.update_timeouts = 0  # Deployment updates that hit the await timeout
        self._last: dict[str, float] = {}
        # Records are shared with the backend's graph cache: copy one before writing it.
        self._own_ids: set[int] = set()  # ids of the input containers the twin has copied
        self._slots: dict[tuple[str, str, str], tuple] = {}  # see _property_slot
        # Layer → (its update in flight, the pools and workloads it changed, its deadline).
        self._updates: dict[str, tuple[Update, list[NodePool], list[Key], float]] = {}
        self._layer_ids: dict[str, int] = {}  # layer → the core's id of it
        self._layer_names: list[str] = []
        self._size_ids: dict[str, int] = {}
        self._sizes: list[Size] = []
        self._templates: list[tuple] = []
        self._hpa_ids: dict[Key, int] = {}
        # Memos of what a knob value means: (type, value) → size; (workload, type, value) → limit.
        self._sizes_by_value: dict[tuple | None, tuple[int, float, float, float]] = {}
        self._limits: dict[tuple | None, float | None] = {}

        world = builder.world(self.records, params.hpa_scale_down_window_s)
        self.pools: dict[Key, NodePool] = world.pools
        self.workloads: dict[Key, Workload] = world.workloads
        self.database: Database | None = world.database
        self.autoscalers: dict[Key, Autoscaler] = world.autoscalers
        self._pool_index = {key: p for p, key in enumerate(self.pools)}
        self._workload_index = {key: w for w, key in enumerate(self.workloads)}
        self._workload_keys = list(self.workloads)
        self._static_hourly = hourly_cost(self.records.values(), include_nodes=False)
        self._unmodelled = tuple(
            sorted(
                f"{r.type} {r.name}"
                for key, r in self.records.items()
                if r.type not in builder.MODELLED_TYPES
                and (self.database is None or key != self.database.key)
            )
        )
        self._core = self._build_core(module, seed)

    def _build_core(self, module: Any, seed: int | None) -> Any:
        """The core, holding the deployed world: every pool's nodes Ready, every pod bound
        where the scheduler puts it and Ready, at time 0."""
        params = self.params
        pools = list(self.pools.values())
        pool_states = []
        for pool in pools:
            size = self._size_tuple(pool.size)
            nodes = [(i, size, 0.0, 0.0, None, 0.0, 0.0) for i in range(1, pool.count + 1)]
            pool_states.append((size, pool.count, pool.count, nodes))
        workload_states = []
        for w in self.workloads.values():
            spec = self._workload_spec(w, w.replicas)
            batches = [(w.replicas, 0.0, None, _INF)] if w.replicas > 0 else []
            # (role, replicas, requests, limit, workers, work, schedule, pool fits, batches,
            # rollout done at, CPU of the pods before the rollout)
            workload_states.append((*spec[:8], spec[9], batches, 0.0, None))
        # The arrival noise: this generator's state, taken over by the core.
        _, words, gauss_next = random.Random(seed).getstate()
        noise = (list(words[:-1]), words[-1], gauss_next) if params.noise else None
        core = module.Core(
            pool_states,
            workload_states,
            self._static_hourly,
            params.node_boot_s,
            params.pod_startup_s,
            EXP_QUANTILES,
            pod_latency,
            (0.0, _INF, _INF, -_INF, 0.0),  # t, next event, first removal, planned at, cost
            True,
            noise,
            list(METRIC_NAMES),
            params.deployment_await_s,
        )
        core.set_templates([self._template_id(w) for w in self.workloads.values()])
        # The autoscalers' settings even with none yet: a property change may add one.
        core.set_autoscalers(self._hpa_specs(self.autoscalers), params.hpa_tolerance)
        scaled = [
            (p, pool.min_nodes, pool.max_nodes) for p, pool in enumerate(pools) if pool.auto_scale
        ]
        core.set_cluster_autoscaler(
            scaled, params.ca_scale_down_unneeded_s, params.ca_scale_down_utilisation
        )
        if self.database is not None:
            queries = [i for i, w in enumerate(self.workloads.values()) if self._queries(w)]
            core.set_database(queries, self.database.cores, params.db_query_ms)
        core.deploy()
        return core

    # ----------------------------------------------------------------- what the core takes

    def _size_tuple(self, size: Size) -> tuple[int, float, float, float]:
        """(id, allocatable CPU, allocatable GiB, $/h): what the core knows of a size."""
        sid = self._size_ids.get(size.slug)
        if sid is None:
            sid = self._size_ids[size.slug] = len(self._sizes)
            self._sizes.append(size)
        return (sid, size.allocatable_cpu, size.allocatable_memory_gib, size.price_hourly_usd)

    def _template_id(self, w: Workload) -> int:
        """An id of what makes ``w``'s pod template besides its requests and limit (its
        node selector, work and schedule): the core compares these ids, requests and
        limits to tell a rolling update from a scale."""
        template = (tuple(sorted(w.node_selector.items())), w.work, w.schedule)
        for i, known in enumerate(self._templates):
            if known == template:
                return i
        self._templates.append(template)
        return len(self._templates) - 1

    def _queries(self, w: Workload) -> bool:
        """Whether ``w``'s requests each run a query on the graph's database."""
        return (
            w.role == "heater"
            and w.work is not None
            and w.uses_database
            and self.database is not None
        )

    def _hpa_specs(self, autoscalers: Mapping[Key, Autoscaler]) -> list[tuple]:
        """The HPAs as the core takes them: (key id, workload, min, max, target, window)."""
        specs = []
        for key, h in autoscalers.items():
            hid = self._hpa_ids.setdefault(key, len(self._hpa_ids))
            specs.append(
                (
                    hid,
                    self._workload_index[h.target.key],
                    h.min_replicas,
                    h.max_replicas,
                    h.target_utilisation,
                    h.scale_down_window_s,
                )
            )
        return specs

    def _workload_spec(self, w: Workload, replicas: int | None) -> tuple:
        """A workload as the core's workload op takes it (``replicas`` ``None``: the core
        keeps its count)."""
        if w.role not in _ROLES:
            raise ConfigError(f"workload {w.name!r}: the twin models no role {w.role!r}")
        work = w.work
        return (
            _ROLES[w.role],
            replicas,
            w.cpu_request,
            w.memory_request,
            w.cpu_limit,
            w.workers,
            None if work is None else (work.scv, work.timeout_s, work.mean_ms / 1000.0),
            None if w.schedule is None else _schedule_spec(w.schedule),
            self._queries(w),
            [
                all(pool.labels.get(k) == v for k, v in w.node_selector.items())
                for pool in self.pools.values()
            ],
            self._template_id(w),
        )

    # ----------------------------------------------------------------- copies

    def respawn(self, seed: int | None) -> Twin:
        """A new twin of this one's graph and parameters with arrival noise from ``seed``:
        what ``Twin(records, seed, params)`` builds, without building it.

        For a twin nothing has changed since it was built (the sim backend keeps one per
        cached graph, untouched, and respawns it at every reset of the graph): the core is
        copied in Rust and given the seed's generator state, and the declared objects are
        copied; the records are shared with this twin, as with the graph they came from
        (the twin copies a record before writing into it). A respawn costs a fraction of
        a build (reading the graph, making the core and placing the pods), and gives the
        same twin: the same state, so the same episodes to the bit.

        Raises:
            ConfigError: This twin has changed since it was built.
        """
        if self._log or self.t or self._own_ids:
            raise ConfigError("respawn needs a twin that nothing has changed since it was built")
        dup = object.__new__(type(self))
        state = dup.__dict__
        state.update(self.__dict__)
        state["records"] = dict(self.records)
        state["_origin"] = (self._origin[0], seed, self.params)
        state["_log"] = log = []
        state["queue"] = _LoggedQueue(log)
        state["_last"] = {}
        state["_own_ids"] = set()
        state["_slots"] = {}
        state["_updates"] = {}
        for name in ("_layer_ids", "_size_ids", "_hpa_ids", "_sizes_by_value", "_limits"):
            state[name] = dict(state[name])
        for name in ("_layer_names", "_sizes", "_templates", "_workload_keys"):
            state[name] = list(state[name])
        state["_pool_index"] = dict(self._pool_index)
        state["_workload_index"] = dict(self._workload_index)
        state["pools"] = {key: _copied(pool) for key, pool in self.pools.items()}
        for pool in state["pools"].values():
            pool.labels = dict(pool.labels)
        state["workloads"] = workloads = {}
        for key, w in self.workloads.items():
            workloads[key] = _copied(w)
            workloads[key].node_selector = dict(w.node_selector)
        state["autoscalers"] = autoscalers = {}
        for key, h in self.autoscalers.items():
            autoscalers[key] = _copied(h)
            target = workloads.get(h.target.key)
            if target is not None and self.workloads[h.target.key] is h.target:
                autoscalers[key].target = target
        if self.database is not None:
            state["database"] = _copied(self.database)
        core = self._core.copy()
        if self.params.noise:
            if type(seed) is int and -_SEEDS_IN_CORE < seed < _SEEDS_IN_CORE:
                core.seed_noise(abs(seed))  # what random.Random(seed) does, in Rust
            else:
                _, words, gauss_next = random.Random(seed).getstate()
                core.set_noise(list(words[:-1]), words[-1], gauss_next)
        state["_core"] = core
        return dup

    def __deepcopy__(self, memo: dict[int, Any]) -> Twin:
        """A fork: the core copied in Rust, the rest as for any object, except what the
        twin shares with the graph it was built from (nothing writes that)."""
        dup = object.__new__(type(self))
        memo[id(self)] = dup
        memo[id(self._origin)] = self._origin
        owned = [key for key, r in self.records.items() if id(r.inputs) in self._own_ids]
        for key, record in self.records.items():
            if key not in owned:
                memo[id(record)] = record
        for name, value in self.__dict__.items():
            if name == "_core":
                dup._core = value.copy()
            else:
                setattr(dup, name, copy.deepcopy(value, memo))
        dup._own_ids = _container_ids(dup.records, owned)
        return dup

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle by replay: the compiled core's state does not pickle.

        The copy is built from the same graph, seed and parameters, and replays this
        twin's property changes and advances in order, which brings its core to the same
        state (the core is deterministic); the Python-side attributes are then copied as
        for any object. Replaying costs about what the steps cost the first time.
        """
        state = self.__dict__.copy()
        del state["_core"]
        return (_replayed, (self._origin, list(self._log)), state)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """After unpickling every record is the twin's own (pickle made new objects)."""
        self.__dict__.update(state)
        self._own_ids = _container_ids(self.records, list(self.records))

    # ----------------------------------------------------------------- inspection

    @property
    def unmodelled(self) -> tuple[str, ...]:
        """Resources kept (and priced, when priced) but not simulated."""
        return self._unmodelled

    @property
    def last_metrics(self) -> dict[str, float]:
        """The metrics of the last step (not a copy)."""
        return self._last

    def metrics(self) -> dict[str, float]:
        """The metrics of the last step (empty before the first)."""
        return dict(self._last)

    def inputs(self, type_token: str, name: str) -> dict[str, Any]:
        """A resource's current inputs, knob values applied (read-only: parts of them are
        shared with other twins built from the same cached graph; change them with
        :meth:`set_property`)."""
        return self._record(type_token, name).inputs  # type: ignore[return-value]

    def _pool_nodes(self) -> dict[int, Node]:
        """Copies of the pools' nodes (removed ones too, until dropped), by core id."""
        pools = list(self.pools.values())
        nodes = {}
        for row in self._core.pool_nodes():
            nid, p, serial, sid, created, ready_at, removed_at, cpu_req, mem_req = row
            pool, size = pools[p], self._sizes[sid]
            cpu, memory = size.allocatable_cpu, size.allocatable_memory_gib
            node = Node(f"{pool.name}-{serial}", pool, size, created, ready_at, cpu, memory)
            node.cpu_requested, node.memory_requested = cpu_req, mem_req
            node.removed_at = removed_at
            nodes[nid] = node
        return nodes

    def nodes(self) -> list[Node]:
        """Live nodes (booting or Ready), all pools, with pool changes applied (copies)."""
        return [n for n in self._pool_nodes().values() if n.removed_at is None]

    def all_nodes(self) -> list[Node]:
        """Every pool's nodes: booting, Ready, or removed and not dropped yet (copies)."""
        return list(self._pool_nodes().values())

    def pods(self) -> list[PodView]:
        """All pods, one by one (copies of the core's state, for inspection)."""
        nodes = self._pool_nodes()
        workloads = list(self.workloads.values())
        return [
            PodView(workloads[wi], None if nid is None else nodes[nid], ready_at)
            for wi, count, nid, ready_at in self._core.batches()
            for _ in range(count)
        ]

    def hourly_cost(self) -> float:
        """USD per hour now: Ready nodes plus everything else in the graph."""
        return self._core.hourly_cost()

    def _record(self, type_token: str, name: str) -> ResourceRecord:
        try:
            return self.records[(type_token, name)]
        except KeyError:
            have = sorted(f"{t} {n}" for t, n in self.records)
            raise ConfigError(
                f"no resource {type_token} named {name!r} in the graph; it has: {have}"
            ) from None

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
        except Exception:
            if previous is _MISSING:
                del parent[leaf]
            else:
                parent[leaf] = previous
            raise
        if self._logging:
            self._log.append(("set", (type_token, name), path, value))

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
        if self.fast_paths:
            if type_token == builder.DEPLOYMENT and key in self._workload_index:
                if path == "spec.replicas":
                    return parent, parts[-1], partial(self._set_replicas, key)
                if path == CPU_LIMIT_PATH:
                    return parent, parts[-1], partial(self._set_pod_cpu_limit, key)
            elif type_token == NODE_POOL and path in ("nodeCount", "size"):
                return parent, parts[-1], partial(self._set_pool_property, key, path)
        return parent, parts[-1], partial(self._apply_property, key)

    def _owned_record(self, key: Key) -> ResourceRecord:
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

    def _slot(self, key: Key, path: str) -> tuple[Any, str | int, Any]:
        """:meth:`set_property`'s slot of a property (container, key, handler)."""
        slot = self._slots.get((*key, path))
        if slot is None:
            slot = self._slots[(*key, path)] = self._property_slot(*key, path)
        return slot

    def _set_replicas(self, key: Key, value: Any) -> None:
        replicas = _integer(value)
        self._core.set_replicas(self._workload_index[key], replicas)
        self.workloads[key].replicas = replicas

    def _set_pod_cpu_limit(self, key: Key, value: Any) -> None:
        limit = self._limit_of(key, value)
        self._core.set_cpu_limit(self._workload_index[key], limit)
        self.workloads[key].cpu_limit = limit

    def _set_pool_property(self, key: Key, path: str, value: Any) -> None:
        pool = self.pools[key]
        if pool.auto_scale:  # the autoscaler's bounds too: the general path
            self._apply_property(key, value)
        elif path == "nodeCount":
            pool.count = _integer(value)
            self._core.set_pool_count(self._pool_index[key], pool.count)
        else:
            size = self._size_of(value)
            self._core.set_pool_size(self._pool_index[key], size)
            pool.size = self._sizes[size[0]]

    def _describe(self, op: tuple) -> None:
        """Bring the declared objects to a common knob's op the core made."""
        kind, index = op[0], op[1]
        if kind == 0:
            self.workloads[self._workload_keys[index]].replicas = op[2]
        elif kind == 1:
            self.workloads[self._workload_keys[index]].cpu_limit = op[3]
        elif kind == 2:
            list(self.pools.values())[index].count = op[2]
        else:
            list(self.pools.values())[index].size = self._sizes[op[4][0]]

    def _apply_property(self, key: Key, value: Any) -> None:
        """Re-read a changed resource and bring the core's world to it (the general path)."""
        ops, commit = self._property_ops(key, self.records, replicas_known=True)
        for op in ops:
            self._core.apply_op(op)
        commit()

    def _limit_of(self, key: Key, value: Any) -> float | None:
        """The pod CPU limit of Deployment ``key`` with its CPU-limit knob at ``value``.

        The pod's limit is a function of this value alone here: any other change to the
        Deployment re-reads it whole, so its other containers stay as they were. Computed
        with the value written into the twin's inputs, which are left as they were.
        """
        memo = (key, type(value), value) if _plain(value) else None  # typed: 1 is not True
        limit = self._limits.get(memo, _MISSING)
        if limit is _MISSING:
            parent, leaf, _ = self._slot(key, CPU_LIMIT_PATH)
            previous = parent.get(leaf, _MISSING)
            parent[leaf] = value
            try:
                limit = builder.deployment_cpu_limit(self.records[key].inputs)
            finally:
                if previous is _MISSING:
                    del parent[leaf]
                else:
                    parent[leaf] = previous
            if memo is not None:
                self._limits[memo] = limit
        return limit

    def _size_of(self, value: Any) -> tuple[int, float, float, float]:
        """What the core knows of the node size a pool's size knob at ``value`` names."""
        memo = (type(value), value) if _plain(value) else None
        size = self._sizes_by_value.get(memo)
        if size is None:
            size = self._size_tuple(builder.node_size(str(value)))
            if memo is not None:
                self._sizes_by_value[memo] = size
        return size

    def _property_ops(
        self, key: Key, records: Mapping[Key, ResourceRecord], replicas_known: bool
    ) -> tuple[list[tuple], Callable[[], None]]:
        """The core's ops for a resource re-read from ``records`` (the general path), and
        what records the re-read objects on this side.

        Args:
            replicas_known: Whether a Deployment's replica count in ``records`` is the one
                to scale to (a change made now), or the core's count stands (a change
                translated now and made when a queued update starts: an HPA may change
                the count meanwhile).

        Raises:
            ConfigError: Something the twin cannot model.
        """
        type_token = key[0]
        inputs = records[key].inputs
        ops: list[tuple] = []
        commits: list[Callable[[], None]] = []
        if type_token in (CLUSTER, NODE_POOL):
            build = (
                builder.pool_from_cluster if type_token == CLUSTER else builder.pool_from_node_pool
            )
            new_pool = build(key, inputs)
            if new_pool is not None and key in self._pool_index:
                bounds = (new_pool.min_nodes, new_pool.max_nodes) if new_pool.auto_scale else None
                size = self._size_tuple(new_pool.size)
                ops.append((5, self._pool_index[key], (new_pool.count, size, bounds)))
                commits.append(partial(self._commit_pool, key, new_pool))
        elif type_token == builder.DEPLOYMENT and key in self._workload_index:
            new = builder.workload_from_deployment(key, inputs)
            replicas = new.replicas if replicas_known else None
            ops.append((4, self._workload_index[key], self._workload_spec(new, replicas)))
            commits.append(partial(self.workloads.__setitem__, key, new))
        elif type_token == builder.HPA:
            hpas = builder.autoscalers(records, self.workloads, self.params.hpa_scale_down_window_s)
            ops.append((6, 0, self._hpa_specs(hpas)))
            commits.append(partial(setattr, self, "autoscalers", hpas))
        elif self.database is not None and key == self.database.key:
            found = builder.database_from_release(key, inputs)
            if found is not None:
                database, pod = found
                ops.append((8, 0, database.cores))
                ops.append((4, self._workload_index[key], self._workload_spec(pod, 1)))
                commits.append(partial(setattr, self, "database", database))
                commits.append(partial(self.workloads.__setitem__, key, pod))
        if (
            type_token != NODE_POOL
            and resource_hourly_cost(records[key], include_nodes=False) is not None
        ):
            static = hourly_cost(records.values(), include_nodes=False)
            ops.append((7, 0, static))
            commits.append(partial(setattr, self, "_static_hourly", static))

        def commit() -> None:
            for one in commits:
                one()

        return ops, commit

    def _commit_pool(self, key: Key, new: NodePool) -> None:
        pool = self.pools[key]
        pool.auto_scale, pool.min_nodes, pool.max_nodes = (
            new.auto_scale,
            new.min_nodes,
            new.max_nodes,
        )
        pool.count, pool.size = new.count, new.size

    def set_schedule(self, key: Key, schedule: Schedule | None) -> None:
        """Replace a siege-engine's schedule from now on (a planner puts its forecast in a
        copy of the twin this way); the Deployment's inputs are left as they were.

        Raises:
            ConfigError: No such workload.
        """
        if key not in self._workload_index:
            raise ConfigError(f"no workload {key[0]} {key[1]!r} in the twin")
        spec = None if schedule is None else _schedule_spec(schedule)
        self._core.set_schedule(self._workload_index[key], spec)
        self.workloads[key].schedule = schedule
        self._log.append(("schedule", key, schedule))

    def reseed(self, seed: int | None) -> None:
        """Draw the arrival noise from ``random.Random(seed)`` from now on."""
        _, words, gauss_next = random.Random(seed).getstate()
        self._core.set_noise(list(words[:-1]), words[-1], gauss_next)
        self._log.append(("reseed", seed))

    # ----------------------------------------------------------------- layer updates

    def request(self, changes: Sequence[Change]) -> tuple[list[str], list[str]]:
        """Set knob values as desired state, reconciled one update per layer at a time.

        What a real engine does (DESIGN, "The flow of one step"): a layer with no update
        in flight starts one now; a change to a layer whose update is in flight waits in
        the layer's queue (:class:`~infragym.updates.LayerQueue`), coalesced, and starts
        the moment that update completes. An update completes when what it changed has
        converged: a node pool when all its nodes are Ready at the new size and count and
        the old ones are gone (the DigitalOcean provider waits for the pool to be
        running); a Deployment when its rollout is done and every replica is Ready, or
        after :attr:`TwinParams.deployment_await_s` (the Kubernetes provider's await
        timeout; the change stays made and :attr:`update_timeouts` counts it). Nothing
        started is cancelled.

        The core completes updates inside its event loop, at the instant they converge or
        time out, and starts the layer's queued update there, from the changes translated
        for it here (:meth:`_queued_ops`); :meth:`advance` then replays the completions on
        the queue.

        Returns:
            The layers whose update started now, and those whose changes wait.

        Raises:
            ConfigError: A change the twin cannot model: that update's changes are undone
                and the queue's requests are as they were. An update of another layer
                that started earlier in the same request stays started (separate stacks'
                updates would too); the envs never meet this, since their knob values
                are checked against the knobs' domains first.
        """
        changes = tuple(changes)
        for change in changes:
            if change.knob.layer in self._updates:
                self._queued_ops([change])  # a change that will wait: is its value sound?
        queued = [c.knob.layer for c in changes if c.knob.layer in self._updates]
        saved = (dict(self.queue.requested), {k: dict(v) for k, v in self.queue.queued.items()})
        started = self.queue.request(changes, self.t)
        self._logging = False
        try:
            for i, update in enumerate(started):
                try:
                    self._start_update(update)
                except Exception:
                    for undone in started[i:]:
                        del self.queue.in_flight[undone.layer]
                    self.queue.requested, self.queue.queued = saved
                    raise
        finally:
            self._logging = True
        self._log.append(("request", changes))
        queued = list(dict.fromkeys(queued))
        waiting = self.queue.queued
        for layer in queued:
            entry = waiting.get(layer)
            ops = self._queued_ops(list(entry.values())) if entry else None
            self._core.set_queued(self._layer_id(layer), ops)
        return [u.layer for u in started], queued

    def _start_update(self, update: Update) -> None:
        """Apply an update's changes to the world and watch it until it completes."""
        pools: list[NodePool] = []
        workloads: list[Key] = []
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
        self._core.start_update(
            self._layer_id(update.layer),
            [self._pool_index[p.key] for p in pools],
            [self._workload_index[k] for k in workloads],
            deadline,
        )

    def _layer_id(self, layer: str) -> int:
        lid = self._layer_ids.get(layer)
        if lid is None:
            lid = self._layer_ids[layer] = len(self._layer_names)
            self._layer_names.append(layer)
        return lid

    def _queued_ops(self, changes: Sequence[Change]) -> list[tuple]:
        """The core's ops for a queued update's changes, made in order when it starts.

        The common knobs translate on their own (:meth:`_core_op`). Any other change is a
        re-read of its resource (:meth:`_property_ops`) from a scratch copy of its inputs
        with the update's changes so far written in, since the twin's inputs get them only
        when the update starts.

        Raises:
            ConfigError: A change the twin cannot model (no such property, a bad value).
        """
        ops: list[tuple] = []
        scratch: dict[Key, ResourceRecord] = {}
        for i, change in enumerate(changes):
            knob, value = change
            key = (knob.type, knob.resource)
            if key not in scratch:
                try:
                    ops.append(self._core_op(change))
                    continue
                except UncommonKnob:  # not a common knob: re-read the resource
                    base = self._record(*key)
                    record = ResourceRecord(
                        base.layer, base.type, base.name, copy.deepcopy(base.inputs)
                    )
                    scratch[key] = record
                    for earlier_knob, earlier_value in changes[:i]:
                        if (earlier_knob.type, earlier_knob.resource) == key:
                            _write(record, earlier_knob.path, earlier_value)
            record = scratch[key]
            _write(record, knob.path, value)
            if knob.type == builder.DEPLOYMENT and knob.path == "spec.replicas":
                ops.append((0, self._workload_index[key], _integer(value), None, _NO_SIZE))
            elif knob.type == builder.DEPLOYMENT and knob.path == CPU_LIMIT_PATH:
                limit = builder.deployment_cpu_limit(record.inputs)
                ops.append((1, self._workload_index[key], 0, limit, _NO_SIZE))
            else:
                ops += self._property_ops(key, {**self.records, **scratch}, False)[0]
        return ops

    def _core_op(self, change: Change) -> tuple[int, int, int, float | None, tuple]:
        """A common knob's change as the core makes it: (kind, index, count, limit, size).

        Raises:
            UncommonKnob: Not one of the common knobs (replicas, a pod's CPU limit, a
                fixed pool's node count or size): the general path makes it.
            ConfigError: A value the twin cannot model.
        """
        knob, value = change
        type_token, path = knob.type, knob.path
        key = (type_token, knob.resource)
        try:
            if self.fast_paths and type_token == builder.DEPLOYMENT:
                w = self._workload_index.get(key)
                if w is not None and path == "spec.replicas":
                    return (0, w, int(value), None, _NO_SIZE)
                if w is not None and path == CPU_LIMIT_PATH:
                    return (1, w, 0, self._limit_of(key, value), _NO_SIZE)
            elif self.fast_paths and type_token == NODE_POOL:
                p = self._pool_index.get(key)
                if p is not None and not self.pools[key].auto_scale:
                    if path == "nodeCount":
                        return (2, p, int(value), None, _NO_SIZE)
                    if path == "size":
                        return (3, p, 0, None, self._size_of(value))
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"{type_token} {knob.resource!r} {path}: {exc}") from None
        raise UncommonKnob(f"{type_token} {knob.resource!r} {path}")

    def _common(self, change: Change) -> tuple | None:
        """The op of ``change`` if it is one of the common knobs (see :meth:`_core_op`)."""
        try:
            return self._core_op(change)
        except UncommonKnob:
            return None

    def _completed(self, done: list[tuple[int, float, bool, bool]]) -> None:
        """Replay the core's completions on the queue.

        The core made the changes of each queued update it started; here they are written
        into the twin's inputs (and a resource the core re-read is re-read here too), and
        the update is watched as :meth:`_start_update` does.
        """
        for lid, t, timed_out, started in done:
            layer = self._layer_names[lid]
            if timed_out:
                self.update_timeouts += 1
            del self._updates[layer]
            nxt = self.queue.complete(layer, t)
            if nxt is None:
                assert not started, f"the core started an update of {layer} the queue has not"
                continue
            pools: list[NodePool] = []
            workloads: list[Key] = []
            reread: list[Key] = []
            for change in nxt.changes:
                knob, value = change
                key = (knob.type, knob.resource)
                parent, leaf, _ = self._slot(key, knob.path)
                parent[leaf] = value
                common = self._common(change)
                if common is not None:
                    self._describe(common)
                elif key not in reread:
                    reread.append(key)
                if key in self.pools and self.pools[key] not in pools:
                    pools.append(self.pools[key])
                elif key in self.workloads and key not in workloads:
                    workloads.append(key)
            for key in reread:
                self._property_ops(key, self.records, replicas_known=True)[1]()
            deadline = t + self.params.deployment_await_s if workloads else _INF
            self._updates[layer] = (nxt, pools, workloads, deadline)

    # ----------------------------------------------------------------- time

    def advance(self, seconds: float) -> dict[str, float]:
        """Simulate ``seconds`` and return the step's metrics.

        The HPAs and the cluster autoscaler act after the step's metrics, on its CPU use;
        the replica counts the HPAs set reach the Deployment's inputs here.

        Raises:
            ConfigError: ``seconds`` is not positive.
        """
        if seconds <= 0:
            raise ConfigError(f"advance needs a positive duration, got {seconds}")
        return self._advanced(self._core.advance(seconds), seconds)

    def _advanced(self, metrics: dict[str, float], seconds: float) -> dict[str, float]:
        """What follows the core's advance by ``seconds``, which gave ``metrics``."""
        core = self._core
        self._last = metrics
        self._log.append(float(seconds))
        self.t = core.t
        self.cost_usd = core.cost_usd
        if self._updates:
            done = core.take_completions()
            if done:
                self._completed(done)
        if self.autoscalers:
            for wi, replicas in core.take_scaled():  # the HPAs' changes, in the inputs too
                key = self._workload_keys[wi]
                parent, leaf, _ = self._slot(key, "spec.replicas")
                parent[leaf] = replicas
                self.workloads[key].replicas = replicas
        return metrics


def advance_all(twins: Sequence[Twin], seconds: float) -> None:
    """Advance every twin by ``seconds`` in one call into the core.

    The same as ``twin.advance(seconds)`` for each, in order (each core is on its own), at
    one crossing of the Python/Rust boundary for the lot (a vector env's step).

    Raises:
        ConfigError: ``seconds`` is not positive.
    """
    if seconds <= 0:
        raise ConfigError(f"advance needs a positive duration, got {seconds}")
    if not twins:
        return
    module = _require_core()
    for twin, metrics in zip(
        twins, module.advance_many([t._core for t in twins], seconds), strict=True
    ):
        twin._advanced(metrics, seconds)


def make_twin(
    records: Sequence[ResourceRecord],
    seed: int | None,
    params: TwinParams,
    engine: str = "auto",
) -> Twin:
    """The twin of a graph.

    Args:
        engine: ``auto`` or ``native``: both the compiled twin, the only one.

    Raises:
        ConfigError: ``python`` (the Python twin was retired) or an unknown engine; the
            extension is not built; the graph has something the twin cannot model.
    """
    check_engine(engine)
    return Twin(records, seed, params)


def check_engine(engine: Any) -> str:
    """``engine`` if it names the twin, else a ConfigError saying why not."""
    if engine == "python":
        raise ConfigError(
            "twin_engine 'python': the Python twin was retired; the compiled core is the "
            "twin (docs/twin.md). Drop the option, or use 'auto'"
        )
    if not isinstance(engine, str) or engine not in ENGINES:
        raise ConfigError(unknown_choice("twin_engine", engine, ENGINES))
    return engine


def _replayed(origin: tuple[Sequence[ResourceRecord], int | None, TwinParams], log: Any) -> Twin:
    """A :class:`Twin` built from ``origin`` that has replayed ``log`` (see __reduce__)."""
    return _replay(Twin(*origin), log)


def _replay(twin: Twin, log: Sequence[LogEntry]) -> Twin:
    """Make ``twin`` do what a twin's log says, in order."""
    for entry in log:
        if isinstance(entry, float):
            twin.advance(entry)
        elif entry[0] == "set":
            _, (type_token, name), path, value = entry
            twin.set_property(type_token, name, path, value)
        elif entry[0] == "request":
            twin.request(entry[1])
        elif entry[0] == "schedule":
            twin.set_schedule(entry[1], entry[2])
        elif entry[0] == "reseed":
            twin.reseed(entry[1])
        else:
            twin.queue.deployed(entry[1])
    return twin


def _container_ids(records: Mapping[Key, ResourceRecord], keys: Sequence[Key]) -> set[int]:
    """The ids of every input container of the records of ``keys`` (a copy's own)."""
    ids: set[int] = set()
    for key in keys:
        ids.update(_walk(records[key].inputs))
    return ids


def _walk(value: Any) -> Iterator[int]:
    if isinstance(value, dict | list):
        yield id(value)
        for child in value.values() if isinstance(value, dict) else value:
            yield from _walk(child)


_SHAPE_PARAMS = {
    "constant": ("rate",),
    "ramp": ("start", "end", "duration"),
    "diurnal": ("base", "amplitude", "period", "phase"),
    "spikes": ("base", "spike_rate", "every", "spike_seconds", "offset"),
}
"""The schedule shapes the core integrates itself, with their parameters in its order."""


def _schedule_spec(schedule: Schedule) -> tuple[str, list[float], float | None, Any, tuple | None]:
    """(shape kind, its parameters, the duration, ``mean_rate``, a trace's index): a
    schedule for the core.

    The core integrates the shapes of :data:`_SHAPE_PARAMS` and traces itself (a trace
    from its index: point times and rates, the cumulative integral at each point, the
    loop period and the requests of one period), and calls ``mean_rate`` for the others:
    the step shape (its integral is a ``sum()``, which Python 3.12 compensates, so a port
    would depend on the Python version) and a diurnal curve clipped at zero.
    """
    shape = schedule.shape
    params = [float(getattr(shape, name)) for name in _SHAPE_PARAMS.get(shape.kind, ())]
    trace = None
    if isinstance(shape, Trace):
        index = shape._indexed()
        trace = (index.times, index.rates, index.cum, index.period, index.per_period)
    return shape.kind, params, schedule.duration, schedule.mean_rate, trace


def _copied(obj: Any) -> Any:
    """A shallow copy of a slotted dataclass of the model (a pool, workload, HPA or the
    database), several times cheaper than ``copy.copy``."""
    cls = type(obj)
    copier = _COPIERS.get(cls)
    if copier is None:
        copier = _COPIERS[cls] = _copier(cls)
    return copier(obj)


_COPIERS: dict[type, Callable[[Any], Any]] = {}
"""A shallow copier per slotted class (see :func:`_copier`)."""


def _copier(cls: type) -> Callable[[Any], Any]:
    """A function copying ``cls``'s slots one by one, written out as ``dataclasses``
    writes its ``__init__`` (an attribute assignment per slot beats a loop of setattr)."""
    names = cls.__slots__
    if not all(isinstance(name, str) and name.isidentifier() for name in names):
        raise TypeError(f"{cls.__name__} has no plain slots")
    body = "".join(f"    dup.{name} = obj.{name}\n" for name in names)
    namespace: dict[str, Any] = {}
    exec(
        f"def copy(obj):\n    dup = new(cls)\n{body}    return dup\n",
        {"new": object.__new__, "cls": cls},
        namespace,
    )
    return namespace["copy"]


def _plain(value: Any) -> bool:
    """Whether a knob value can key a memo (knob domains hold strings and numbers)."""
    return isinstance(value, str | int | float)


def _write(record: ResourceRecord, path: str, value: Any) -> None:
    """Write a property into a scratch record's inputs.

    Raises:
        ConfigError: The path leads nowhere.
    """
    try:
        set_path(record.inputs, path, value)
    except (KeyError, IndexError, TypeError):
        raise ConfigError(f"{record.type} {record.name!r} has no property {path!r}") from None


def _integer(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"not a whole number: {value!r}") from None
