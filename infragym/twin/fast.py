"""The twin with its step loop compiled: the ``infragym._twin_core`` extension.

:class:`FastTwin` is a :class:`~infragym.twin.twin.Twin` whose state, once built, lives
in a Rust ``Core`` (``native/`` in the repository, built into the package by
``pip install -e .``). The core is a line-by-line port of the Python twin's step loop,
with the same floating-point operations in the same order, so the two give the same
metrics bit for bit (the tests hold them to that); the Python twin stays the reference
and is what runs when the extension is not built.

The core covers what a step of the built-in environments needs: fixed-size node pools,
Deployments, the siege-engine and the heater, and the knobs that set replicas, a pod's
CPU limit, a pool's node count or its size, applied at once (:meth:`Twin.set_property`)
or as layer updates (:meth:`Twin.request`, asynchronous actuation). For layer updates
the queue's bookkeeping stays in Python (:class:`~infragym.updates.LayerQueue`); the
core completes each update inside its event loop, at the instant it converges or times
out, and starts the layer's queued update there, from the changes :meth:`FastTwin.request`
translated for it; :meth:`FastTwin.advance` then replays the completions on the queue.

The core runs the graph's HPAs and cluster autoscaler too (after each step's metrics);
the replica changes of the HPAs are written into the twin's inputs after the step. With
a database, the core serves the pods that query it through the Python twin's method
(:meth:`FastTwin._db_serve`), on the core's own sums. Any other property change (a knob
on an autoscaling pool among them) raises :class:`ReferenceNeeded`, on which the sim
backend replays the episode on the Python twin (:meth:`FastTwin.to_python`) and carries
on there.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from infragym.apps.workload import Schedule, Trace
from infragym.catalog import Size, unknown_choice
from infragym.errors import ConfigError
from infragym.graph import Change, ResourceRecord
from infragym.knobs import set_path
from infragym.twin import builder
from infragym.twin.cost import CLUSTER, NODE_POOL, hourly_cost, resource_hourly_cost
from infragym.twin.model import Autoscaler, Node, NodePool, PodView, TwinParams, Workload
from infragym.twin.twin import _EXP_QUANTILES, CPU_LIMIT_PATH, Twin
from infragym.updates import LayerQueue, Update

ENGINES = ("auto", "python", "native")
"""The twin engines :func:`make_twin` can build."""
_ROLES = {"other": 0, "heater": 1, "siege": 2, "database": 3}
METRIC_NAMES = (
    "request_rate", "offered_rate", "latency_p50", "latency_p95", "latency_p99",
    "error_ratio", "cpu_utilisation_requests", "cpu_utilisation_limits",
    "replicas_desired", "replicas_ready", "nodes_ready", "pods_pending", "cost_hourly",
    "replicas_starting", "nodes_booting", "next_node_ready_s",
)  # fmt: skip
"""The metrics the core returns, in this order: :meth:`Twin._metrics`' (the tests check)."""

_MISSING: Any = object()
_INF = float("inf")
_NO_SIZE = (0, 0.0, 0.0, 0.0)
"""The size field of a core op that sets no size."""

LogEntry = tuple[Any, ...] | float
"""What :class:`FastTwin` has done since it was built, for replay: the seconds of an
advance, ``("set", key, path, value)``, ``("request", changes)`` or ``("deployed", values)``."""


def _plain(value: Any) -> bool:
    """Whether a knob value can key a memo (knob domains hold strings and numbers)."""
    return isinstance(value, str | int | float)


class ReferenceNeeded(Exception):
    """A change the compiled core does not model: run the episode on the Python twin."""


def core_module() -> Any | None:
    """The compiled core's module, or ``None`` when ``infragym._twin_core`` is not built."""
    try:
        return importlib.import_module("infragym._twin_core")
    except ImportError:
        return None


def supports(twin: Twin) -> bool:
    """Whether the compiled core models everything in ``twin``'s graph."""
    return (
        all(h.target.cpu_request > 0 for h in twin.autoscalers.values())
        and all(p.size.allocatable_cpu > 0 for p in twin.pools.values() if p.auto_scale)
        and all(w.role in _ROLES for w in twin.workloads.values())
    )


class _LoggedQueue(LayerQueue):
    """A layer queue that logs what is recorded as deployed (the twin's replay needs it:
    a change back to a deployed value is coalesced away)."""

    def __init__(self, log: list[LogEntry]) -> None:
        super().__init__()
        self._log = log

    def deployed(self, values: Mapping[str, Any]) -> None:
        super().deployed(values)
        self._log.append(("deployed", dict(values)))


class FastTwin(Twin):
    """A :class:`Twin` whose step loop runs in the compiled core.

    The public interface is the Twin's. ``pools`` and ``workloads`` keep the objects the
    graph built (names, sizes, templates); the nodes and pods live in the core, and
    :meth:`nodes` and :meth:`pods` read them from there.

    Raises:
        ConfigError: The extension is not installed.
        ReferenceNeeded: The graph has something the core does not model.
    """

    def __init__(
        self,
        records: Sequence[ResourceRecord],
        seed: int | None = None,
        params: TwinParams | None = None,
    ) -> None:
        super().__init__(records, seed, params)
        # What rebuilds this twin (for copy and pickle, see __reduce__, and for the hand-over
        # to the Python twin, see to_python): the graph, the seed and the parameters, then
        # what it did since, in order (see LogEntry).
        self._origin = (records, seed, self.params)
        self._log: list[LogEntry] = []
        self._logging = True  # off inside request, which logs itself
        self.queue = _LoggedQueue(self._log)
        self._layer_ids: dict[str, int] = {}  # layer → the core's id of it
        self._layer_names: list[str] = []
        self._core = self._hand_over()
        # Memos of what a knob value means: (type, value) → size; (workload, type, value) → limit.
        self._sizes_by_value: dict[tuple | None, tuple[int, float, float, float]] = {}
        self._limits: dict[tuple | None, float | None] = {}

    def _hand_over(self) -> Any:
        """Build the core from this twin's state (just built, at time 0)."""
        module = core_module()
        if module is None:
            raise ConfigError(
                "the compiled twin core (infragym._twin_core) is not built: reinstall "
                "infragym from its clone with pip install -e . (needs a Rust toolchain, "
                "rustup.rs)"
            )
        if not supports(self):
            raise ReferenceNeeded(
                "the compiled twin core does not model this graph (an HPA on a workload "
                "that requests no CPU, an autoscaling pool of no CPU, or a workload of an "
                "unknown role)"
            )
        self._size_ids: dict[str, int] = {}
        self._sizes: list[Size] = []
        pools = list(self.pools.values())
        node_ref: dict[Node, tuple[int, int]] = {}
        pool_states = []
        for p, pool in enumerate(pools):
            nodes = []
            for i, n in enumerate(pool.nodes):
                node_ref[n] = (p, i)
                nodes.append(
                    (
                        int(n.name.rsplit("-", 1)[1]),  # the pool's serial (see _add_nodes)
                        self._size_tuple(n.size),
                        n.created_at,
                        n.ready_at,
                        n.removed_at,
                        n.cpu_requested,
                        n.memory_requested,
                    )
                )
            pool_states.append((self._size_tuple(pool.size), pool.count, pool.serial, nodes))
        workload_states = []
        self._workload_index: dict[tuple[str, str], int] = {}
        for wi, (key, w) in enumerate(self.workloads.items()):
            self._workload_index[key] = wi
            work = w.work
            workload_states.append(
                (
                    _ROLES[w.role],
                    w.replicas,
                    w.cpu_request,
                    w.memory_request,
                    w.cpu_limit,
                    w.workers,
                    None if work is None else (work.scv, work.timeout_s, work.mean_ms / 1000.0),
                    None if w.schedule is None else _schedule_spec(w.schedule),
                    [
                        all(pool.labels.get(k) == v for k, v in w.node_selector.items())
                        for pool in pools
                    ],
                    [(b.count, b.created_at, node_ref.get(b.node), b.ready_at) for b in w.batches],
                    w.rollout_done_at,
                    w.prev_cores,
                )
            )
        self._pool_index = {key: p for p, key in enumerate(self.pools)}
        clock = (self.t, self._next_event, self._first_removal, self._planned_at, self.cost_usd)
        # The core draws the arrival noise from this twin's generator, taken over here.
        _, words, gauss_next = self.rng.getstate()
        noise = (list(words[:-1]), words[-1], gauss_next) if self.params.noise else None
        core = module.Core(
            pool_states,
            workload_states,
            self._static_hourly,
            self.params.node_boot_s,
            self.params.pod_startup_s,
            _EXP_QUANTILES,
            self._pod_latency,
            clock,
            self._sched_dirty,
            noise,
            list(METRIC_NAMES),
            self.params.deployment_await_s,
        )
        self._workload_keys = list(self.workloads)
        self._templates: list[tuple] = []
        core.set_templates([self._template_id(w) for w in self.workloads.values()])
        self._hpa_ids: dict[tuple[str, str], int] = {}
        if self.autoscalers:
            core.set_autoscalers(self._hpa_specs(self.autoscalers), self.params.hpa_tolerance)
        if self.database is not None:
            queries = [
                i
                for i, w in enumerate(self.workloads.values())
                if w.role == "heater" and w.work is not None and w.uses_database
            ]
            core.set_database(queries, self.database.cores, self.params.db_query_ms)
        scaled = [
            (p, pool.min_nodes, pool.max_nodes) for p, pool in enumerate(pools) if pool.auto_scale
        ]
        if scaled:
            params = self.params
            core.set_cluster_autoscaler(
                scaled, params.ca_scale_down_unneeded_s, params.ca_scale_down_utilisation
            )
        return core

    def _template_id(self, w: Workload) -> int:
        """An id of what makes ``w``'s pod template besides its requests and limit (its
        node selector, work and schedule): the core compares ids to tell a rolling update
        from a scale, as :meth:`Twin._update_workload` compares templates."""
        template = (tuple(sorted(w.node_selector.items())), w.work, w.schedule)
        for i, known in enumerate(self._templates):
            if known == template:
                return i
        self._templates.append(template)
        return len(self._templates) - 1

    def _hpa_specs(self, autoscalers: Mapping[tuple[str, str], Autoscaler]) -> list[tuple]:
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
        """A workload re-read, as the core's workload op takes it (``replicas`` ``None``:
        the core keeps its count)."""
        work = w.work
        pools = list(self.pools.values())
        return (
            _ROLES[w.role],
            replicas,
            w.cpu_request,
            w.memory_request,
            w.cpu_limit,
            w.workers,
            None if work is None else (work.scv, work.timeout_s, work.mean_ms / 1000.0),
            None if w.schedule is None else _schedule_spec(w.schedule),
            w.role == "heater" and work is not None and w.uses_database
            and self.database is not None,
            [all(pool.labels.get(k) == v for k, v in w.node_selector.items()) for pool in pools],
            self._template_id(w),
        )  # fmt: skip

    def _property_ops(
        self,
        key: tuple[str, str],
        records: Mapping[tuple[str, str], ResourceRecord],
        replicas_known: bool,
    ) -> tuple[list[tuple], Callable[[], None]]:
        """The core's ops for a resource re-read from ``records`` (the general path,
        :meth:`Twin._apply_property`), and what records the re-read objects on this side.

        Args:
            replicas_known: Whether a Deployment's replica count in ``records`` is the one
                to scale to (a change made now), or the core's count stands (a change
                translated now and made when a queued update starts).
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
            if new_pool is not None:
                bounds = (new_pool.min_nodes, new_pool.max_nodes) if new_pool.auto_scale else None
                size = self._size_tuple(new_pool.size)
                ops.append((5, self._pool_index[key], (new_pool.count, size, bounds)))

                def pool_commit(new: NodePool = new_pool) -> None:
                    pool = self.pools[key]
                    pool.auto_scale, pool.min_nodes = new.auto_scale, new.min_nodes
                    pool.max_nodes, pool.count, pool.size = new.max_nodes, new.count, new.size

                commits.append(pool_commit)
        elif type_token == builder.DEPLOYMENT:
            new = builder.workload_from_deployment(key, inputs)
            replicas = new.replicas if replicas_known else None
            ops.append((4, self._workload_index[key], self._workload_spec(new, replicas)))
            commits.append(lambda: self.workloads.__setitem__(key, new))
        elif type_token == builder.HPA:
            by_name = {w.name: w for w in self.workloads.values()}
            autoscalers = {}
            for k, r in records.items():
                if r.type == builder.HPA:
                    hpa = builder.autoscaler_from_hpa(
                        k, r.inputs, by_name, self.params.hpa_scale_down_window_s
                    )
                    if hpa is not None:
                        autoscalers[k] = hpa
            ops.append((6, 0, self._hpa_specs(autoscalers)))
            commits.append(lambda: setattr(self, "autoscalers", autoscalers))
        elif self.database is not None and key == self.database.key:
            found = builder.database_from_release(key, inputs)
            if found is not None:
                database, pod = found
                ops.append((8, 0, database.cores))
                ops.append((4, self._workload_index[key], self._workload_spec(pod, 1)))

                def database_commit() -> None:
                    self.database = database
                    self.workloads[key] = pod

                commits.append(database_commit)
        if (
            type_token != NODE_POOL
            and resource_hourly_cost(records[key], include_nodes=False) is not None
        ):
            static = hourly_cost(records.values(), include_nodes=False)
            ops.append((7, 0, static))
            commits.append(lambda: setattr(self, "_static_hourly", static))

        def commit() -> None:
            for one in commits:
                one()

        return ops, commit

    def _size_tuple(self, size: Size) -> tuple[int, float, float, float]:
        """(id, allocatable CPU, allocatable GiB, $/h): what the core knows of a size."""
        sid = self._size_ids.get(size.slug)
        if sid is None:
            sid = self._size_ids[size.slug] = len(self._sizes)
            self._sizes.append(size)
        return (sid, size.allocatable_cpu, size.allocatable_memory_gib, size.price_hourly_usd)

    # ----------------------------------------------------------------- knobs

    def __reduce__(self) -> tuple[Any, ...]:
        """Copy and pickle by replay: the compiled core's state cannot be pickled.

        The copy is built from the same graph, seed and parameters, and replays this
        twin's property changes and advances in order, which brings its core to the same
        state (the core is deterministic); the Python-side attributes are then copied as
        for any object (:meth:`Twin.__getstate__`). Replaying costs about what the steps
        cost the first time.
        """
        state = self.__getstate__()
        del state["_core"]
        return (_replayed, (self._origin, list(self._log)), state)

    def to_python(self) -> Twin:
        """A Python twin that has lived this twin's episode: the same state, since the two
        agree (the sim backend's hand-over when a change comes that the core does not model).

        Its layer queue is a copy of this twin's: the replay rebuilds what the twin's own
        requests did, and the copy also has what a backend recorded in the queue itself
        (immediate actuation).
        """
        twin = _replay(Twin(*self._origin), self._log)
        twin.queue = self.queue.copy()
        return twin

    def _set_replicas(self, key: tuple[str, str], value: Any) -> None:
        self._core.set_replicas(self._workload_index[key], int(value))
        if self._logging:
            self._log.append(("set", key, "spec.replicas", value))

    def _set_pod_cpu_limit(self, key: tuple[str, str], record: ResourceRecord, value: Any) -> None:
        self._core.set_cpu_limit(self._workload_index[key], self._limit_of(key, value))
        if self._logging:
            self._log.append(("set", key, CPU_LIMIT_PATH, value))

    def _set_pool_property(
        self, key: tuple[str, str], record: ResourceRecord, path: str, value: Any
    ) -> None:
        if self.pools[key].auto_scale:  # the autoscaler's bounds too: the general path
            self._apply_property(key, record, path, value)
            return
        if path == "nodeCount":
            self._core.set_pool_count(self._pool_index[key], int(value))
        else:
            self._core.set_pool_size(self._pool_index[key], self._size_of(value))
        if self._logging:
            self._log.append(("set", key, path, value))

    def _limit_of(self, key: tuple[str, str], value: Any) -> float | None:
        """The pod CPU limit of Deployment ``key`` with its CPU-limit knob at ``value``.

        The pod's limit is a function of this value alone here: the core takes no other
        change to the Deployment, so its other containers stay as they were. Computed with
        the value written into the twin's inputs, which are left as they were.
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

    def _slot(self, key: tuple[str, str], path: str) -> tuple[Any, str | int, Any]:
        """:meth:`Twin.set_property`'s slot of a property (container, key, handler)."""
        slot = self._slots.get((*key, path))
        if slot is None:
            slot = self._slots[(*key, path)] = self._property_slot(*key, path)
        return slot

    def _apply_property(
        self, key: tuple[str, str], record: ResourceRecord, path: str, value: Any
    ) -> None:
        """Re-read a changed resource and bring the core's world to it (the general path)."""
        ops, commit = self._property_ops(key, self.records, replicas_known=True)
        for op in ops:
            self._core.apply_op(op)
        commit()
        if self._logging:
            self._log.append(("set", key, path, value))

    # ----------------------------------------------------------------- time

    def advance(self, seconds: float) -> dict[str, float]:
        """Simulate ``seconds`` and return the step's metrics."""
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
                parent, leaf, _ = self._slot(self._workload_keys[wi], "spec.replicas")
                parent[leaf] = replicas
        return metrics

    # ----------------------------------------------------------------- layer updates

    def request(self, changes: Sequence[Change]) -> tuple[list[str], list[str]]:
        """:meth:`Twin.request`, with the changes that wait handed to the core too.

        Raises:
            ReferenceNeeded: A change the core does not model (nothing changed then, unless
                an earlier update of the same request started, as in :meth:`Twin.request`).
        """
        changes = tuple(changes)
        updates = self._updates
        for change in changes:
            if change.knob.layer in updates:
                self._queued_ops([change])  # a change that will wait: is its value sound?
        self._logging = False
        try:
            started, queued = super().request(changes)
        finally:
            self._logging = True
        self._log.append(("request", changes))
        waiting = self.queue.queued
        for layer in queued:
            entry = waiting.get(layer)
            ops = self._queued_ops(list(entry.values())) if entry else None
            self._core.set_queued(self._layer_id(layer), ops)
        return started, queued

    def _start_update(self, update: Update) -> None:
        super()._start_update(update)
        _, pools, workloads, deadline = self._updates[update.layer]
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
        scratch: dict[tuple[str, str], ResourceRecord] = {}
        for i, change in enumerate(changes):
            knob, value = change
            key = (knob.type, knob.resource)
            if key not in scratch:
                try:
                    ops.append(self._core_op(change))
                    continue
                except ReferenceNeeded:  # not a common knob: re-read the resource
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
        """A knob change as the core makes it: (kind, index, count, limit, size).

        Raises:
            ReferenceNeeded: Not one of the common knobs (replicas, a pod's CPU limit, a
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
                if p is not None and self.pools[key].auto_scale:  # the general path
                    raise ReferenceNeeded(f"{type_token} {knob.resource!r} {path} (autoscaling)")
                if p is not None and path == "nodeCount":
                    return (2, p, int(value), None, _NO_SIZE)
                if p is not None and path == "size":
                    return (3, p, 0, None, self._size_of(value))
        except (ReferenceNeeded, ConfigError):
            raise
        except Exception as exc:
            raise ConfigError(f"{type_token} {knob.resource!r} {path}: {exc}") from None
        raise ReferenceNeeded(f"{type_token} {knob.resource!r} {path}")

    def _common(self, change: Change) -> bool:
        """Whether ``change`` is one of the common knobs (:meth:`_core_op` makes it)."""
        try:
            self._core_op(change)
        except ReferenceNeeded:
            return False
        return True

    def _completed(self, done: list[tuple[int, float, bool, bool]]) -> None:
        """Replay the core's completions on the queue (:meth:`Twin._settle_updates`).

        The core made the changes of each queued update it started; here they are written
        into the twin's inputs, and the update is watched as :meth:`_start_update` does.
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
            pools: list[Any] = []
            workloads: list[tuple[str, str]] = []
            reread: list[tuple[str, str]] = []
            for change in nxt.changes:
                knob, value = change
                key = (knob.type, knob.resource)
                parent, leaf, _ = self._slot(key, knob.path)
                parent[leaf] = value
                if key not in reread and not self._common(change):
                    reread.append(key)
                if key in self.pools and self.pools[key] not in pools:
                    pools.append(self.pools[key])
                elif key in self.workloads and key not in workloads:
                    workloads.append(key)
            for key in reread:  # what the core re-read, re-read here too
                self._property_ops(key, self.records, replicas_known=True)[1]()
            deadline = t + self.params.deployment_await_s if workloads else _INF
            self._updates[layer] = (nxt, pools, workloads, deadline)

    def hourly_cost(self) -> float:
        return self._core.hourly_cost()

    # ----------------------------------------------------------------- inspection

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


def advance_all(twins: Sequence[Twin], seconds: float) -> None:
    """Advance every twin by ``seconds``: the compiled ones in one call into the core.

    The same as ``twin.advance(seconds)`` for each, in order (each core is on its own), at
    one crossing of the Python/Rust boundary for the lot (a vector env's step).

    Raises:
        ConfigError: ``seconds`` is not positive.
    """
    if seconds <= 0:
        raise ConfigError(f"advance needs a positive duration, got {seconds}")
    fast = [t for t in twins if type(t) is FastTwin]
    if fast:
        module = core_module()
        assert module is not None  # a FastTwin was built with it
        for twin, metrics in zip(
            fast, module.advance_many([t._core for t in fast], seconds), strict=True
        ):
            twin._advanced(metrics, seconds)
    for twin in twins:
        if type(twin) is not FastTwin:
            twin.advance(seconds)


def _replayed(
    origin: tuple[Sequence[ResourceRecord], int | None, TwinParams],
    log: Sequence[LogEntry],
) -> FastTwin:
    """A :class:`FastTwin` built from ``origin`` that has replayed ``log`` (see __reduce__)."""
    twin = _replay(FastTwin(*origin), log)
    assert isinstance(twin, FastTwin)
    return twin


def _replay(twin: Twin, log: Sequence[LogEntry]) -> Twin:
    """Make ``twin`` do what a :class:`FastTwin`'s log says, in order."""
    for entry in log:
        if isinstance(entry, float):
            twin.advance(entry)
        elif entry[0] == "set":
            _, (type_token, name), path, value = entry
            twin.set_property(type_token, name, path, value)
        elif entry[0] == "request":
            twin.request(entry[1])
        else:
            twin.queue.deployed(entry[1])
    return twin


_SHAPE_PARAMS = {
    "constant": ("rate",),
    "ramp": ("start", "end", "duration"),
    "diurnal": ("base", "amplitude", "period", "phase"),
    "spikes": ("base", "spike_rate", "every", "spike_seconds", "offset"),
}
"""The schedule shapes the core integrates itself, with their parameters in its order."""


def _schedule_spec(
    schedule: Schedule,
) -> tuple[str, list[float], float | None, Any, tuple | None]:
    """(shape kind, its parameters, the duration, ``mean_rate``, a trace's index): a
    schedule for the core.

    The core integrates the shapes of :data:`_SHAPE_PARAMS` and traces itself (a trace
    from its index: point times and rates, the cumulative integral at each point, the
    loop period and the requests of one period), and calls ``mean_rate`` for the others.
    """
    shape = schedule.shape
    params = [float(getattr(shape, name)) for name in _SHAPE_PARAMS.get(shape.kind, ())]
    trace = None
    if isinstance(shape, Trace):
        index = shape._indexed()
        trace = (index.times, index.rates, index.cum, index.period, index.per_period)
    return shape.kind, params, schedule.duration, schedule.mean_rate, trace


def make_twin(
    records: Sequence[ResourceRecord],
    seed: int | None,
    params: TwinParams,
    engine: str = "auto",
) -> Twin:
    """The twin for a graph: compiled when ``engine`` allows it and it models the graph.

    Args:
        engine: ``auto`` (compiled when installed and the graph is supported),
            ``python`` (the reference twin) or ``native`` (compiled, else a ConfigError).

    Raises:
        ConfigError: An unknown engine, or ``native`` where it cannot run.
    """
    if engine not in ENGINES:
        raise ConfigError(unknown_choice("twin engine", engine, ENGINES))
    if engine == "python" or (engine == "auto" and core_module() is None):
        return Twin(records, seed, params)
    try:
        return FastTwin(records, seed, params)
    except ReferenceNeeded as exc:
        if engine == "native":
            raise ConfigError(f"twin engine 'native': {exc}; use 'auto' or 'python'") from None
        return Twin(records, seed, params)
