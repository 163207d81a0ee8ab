"""The sim backend: the env's layer programs under Pulumi's mock runtime, then the twin.

``reset`` runs the layer programs once under mocks to get the resource graph (cached by
the layer settings, since programs are pure functions of them) and builds a
:class:`~infragym.twin.twin.Twin` from it (the compiled core, ``infragym._twin_core``).
Steps never rerun Pulumi: a knob change writes the twin's copy of the resource.

Resets are cheap after the first (an env resets every episode, a new load each time):

- A load schedule among the settings (a :class:`~infragym.apps.workload.Schedule`
  object, as the envs pass it) does not key the graph when the programs only write its
  JSON into it: the graph is cached less the schedule, and the JSON is written into a
  copy of the records along its path (:func:`resource_graph`). A new scenario variant
  runs no layer program.
- Each graph seen (one per variant) keeps an untouched twin, which the next reset of
  that graph respawns with its seed (:func:`fresh_twin`, :meth:`Twin.respawn`) rather
  than building the twin again.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from infragym.apps.dumps import schedule_json
from infragym.apps.workload import Schedule, constant
from infragym.backends.base import (
    ACTUATIONS,
    ApplyResult,
    Backend,
    Change,
    LayerSpec,
    ResourceRecord,
)
from infragym.catalog import unknown_choice
from infragym.errors import ConfigError
from infragym.twin import builder
from infragym.twin.model import TwinParams
from infragym.twin.twin import Twin, check_engine, make_twin
from infragym.updates import LayerQueue

_GRAPH_CACHE: OrderedDict[str, _Graph] = OrderedDict()
"""Graphs by ``mockrun.graph_key`` of their settings (schedules as :data:`_IN_GRAPH` when
a graph is cached less them)."""
_LAYER_CACHE: OrderedDict[str, Any] = OrderedDict()
"""Each layer's mock run by its settings and upstream outputs (``mockrun.run_layers``)."""
_SCHEDULED: OrderedDict[tuple[str, tuple[str, ...]], tuple[_Graph, list[ResourceRecord]]]
_SCHEDULED = OrderedDict()
"""Graphs with their schedules written in, by the graph's key and the schedules' JSON:
(the graph less the schedules, the records)."""
_CACHE_SIZE = 256

_SENTINELS = (
    tuple(constant(1.2345678901 + j) for j in range(8)),
    tuple(constant(9.8765432109 + j) for j in range(8)),
)
"""Two sets of schedules no scenario draws: what the layer programs are run with to find
where a schedule setting ends up in the graph (:func:`_schedule_slots`)."""


_IN_GRAPH = "<a Schedule: its JSON is written into the cached graph>"
"""What stands for a schedule setting in the key of a graph cached less its schedules."""


@dataclass(frozen=True)
class _Graph:
    """A cached graph of layers whose settings hold schedules, less the schedules.

    Attributes:
        records: The graph as the programs built it with the first set of
            :data:`_SENTINELS` (sorted), or ``None`` when the schedules shape more of the
            graph than their JSON: then each schedule has a graph of its own.
        slots: Where each schedule's JSON goes: (schedule's index, record's index, the
            path to the string in the record's inputs).
    """

    records: list[ResourceRecord] | None
    slots: tuple[tuple[int, int, tuple[str | int, ...]], ...] = ()


def resource_graph(layers: Sequence[LayerSpec], deployment: str) -> list[ResourceRecord]:
    """The resource graph of ``layers`` from mock runs, memoised by settings (per layer too).

    A setting that is a :class:`~infragym.apps.workload.Schedule` object (the env's load,
    a different one most episodes) does not shape the graph: the siege-engine program
    only writes its JSON into the Deployment's environment. So the graph is cached by the
    other settings, and each schedule's JSON is written into a copy of the records on the
    way to that string (the rest shared). Where the JSON goes is found once per cached
    graph, by running the programs with two different stand-in schedules and comparing:
    if anything but that string differs, each schedule gets its own mock run and cache
    entry, as every setting does. Either way the records are those the programs would
    build with the schedule (the same list for the same schedule while cached).
    """
    from infragym.backends import mockrun

    found = [
        (i, name, value)
        for i, spec in enumerate(layers)
        for name, value in spec.settings.items()
        if isinstance(value, Schedule)
    ]
    if not found or len(found) > len(_SENTINELS[0]):
        return _graph_of(layers, deployment)
    key = mockrun.graph_key(_with_schedules(layers, found, [_IN_GRAPH] * len(found)), deployment)
    graph = _GRAPH_CACHE.get(key)
    if graph is None:
        graph = _template(layers, found, deployment)
        _remember(_GRAPH_CACHE, key, graph)
    else:
        _GRAPH_CACHE.move_to_end(key)
    if graph.records is None:
        return _graph_of(layers, deployment)
    texts = tuple(schedule_json(value) for _, _, value in found)
    for text, (_, _, value) in zip(texts, found, strict=True):
        builder.known_schedule(text, value)
    scheduled_key = (key, texts)
    hit = _SCHEDULED.get(scheduled_key)
    if hit is not None and hit[0] is graph:
        _SCHEDULED.move_to_end(scheduled_key)
        return hit[1]
    records = list(graph.records)
    for j, r, path in graph.slots:
        base = records[r]
        records[r] = ResourceRecord(
            base.layer, base.type, base.name, _replaced(base.inputs, path, texts[j])
        )
    _remember(_SCHEDULED, scheduled_key, (graph, records))
    return records


def _graph_of(layers: Sequence[LayerSpec], deployment: str) -> list[ResourceRecord]:
    """The graph of ``layers`` keyed by all their settings (schedules included)."""
    from infragym.backends import mockrun

    key = mockrun.graph_key(layers, deployment)
    graph = _GRAPH_CACHE.get(key)
    if graph is None:
        graph = _Graph(_run(layers, deployment)[0])
        _remember(_GRAPH_CACHE, key, graph)
    else:
        _GRAPH_CACHE.move_to_end(key)
    return graph.records  # type: ignore[return-value]


def _run(layers: Sequence[LayerSpec], deployment: str) -> tuple[list[ResourceRecord], Any]:
    """The layers' records from mock runs, in an order of their own, and the runs."""
    from infragym.backends import mockrun

    records, runs = mockrun.run_layers(layers, deployment, cache=_LAYER_CACHE)
    while len(_LAYER_CACHE) > _CACHE_SIZE:
        _LAYER_CACHE.popitem(last=False)
    # The mock runtime registers resources in an order that varies between processes;
    # the twin's choices (which pool, which workload first) must not.
    position = {spec.name: i for i, spec in enumerate(layers)}
    records = sorted(records, key=lambda r: (position.get(r.layer, len(position)), r.type, r.name))
    return records, runs


def _template(layers: Sequence[LayerSpec], found: list[tuple], deployment: str) -> _Graph:
    """The graph of ``layers`` less their schedules (see :func:`resource_graph`)."""
    runs = []
    for sentinels in _SENTINELS:
        stand_ins = list(sentinels[: len(found)])
        runs.append((*_run(_with_schedules(layers, found, stand_ins), deployment), stand_ins))
    (first, first_runs, first_in), (second, second_runs, second_in) = runs
    same_outputs = first_runs.keys() == second_runs.keys() and all(
        first_runs[name].outputs == second_runs[name].outputs for name in first_runs
    )
    texts = [(schedule_json(a), schedule_json(b)) for a, b in zip(first_in, second_in, strict=True)]
    slots = _schedule_slots(first, second, texts) if same_outputs else None
    if slots is None or len({j for j, _, _ in slots}) != len(found):
        return _Graph(None)
    return _Graph(first, tuple(slots))


def _with_schedules(layers: Sequence[LayerSpec], found: list[tuple], values: list[Any]) -> list:
    """``layers`` with the schedule settings of ``found`` set to ``values``, in order."""
    out = list(layers)
    for (i, name, _), value in zip(found, values, strict=True):
        out[i] = LayerSpec(out[i].name, {**out[i].settings, name: value})
    return out


def _schedule_slots(
    first: list[ResourceRecord], second: list[ResourceRecord], texts: list[tuple[str, str]]
) -> list[tuple[int, int, tuple[str | int, ...]]] | None:
    """Where two graphs built with different schedules differ, if only in the schedules'
    JSON: (schedule's index, record's index, path to the string); ``None`` if the graphs
    differ otherwise."""
    if [(r.layer, r.type, r.name) for r in first] != [(r.layer, r.type, r.name) for r in second]:
        return None
    slots: list[tuple[int, int, tuple[str | int, ...]]] = []

    def walk(a: Any, b: Any, r: int, path: tuple[str | int, ...]) -> bool:
        if type(a) is not type(b):
            return False
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(walk(a[k], b[k], r, (*path, k)) for k in a)
        if isinstance(a, list):
            return len(a) == len(b) and all(
                walk(x, y, r, (*path, n)) for n, (x, y) in enumerate(zip(a, b, strict=True))
            )
        if a == b:
            return True
        for j, pair in enumerate(texts):
            if (a, b) == pair:
                slots.append((j, r, path))
                return True
        return False

    for r, (a, b) in enumerate(zip(first, second, strict=True)):
        if not walk(a.inputs, b.inputs, r, ()):
            return None
    return slots


def _replaced(inputs: Any, path: tuple[str | int, ...], value: Any) -> Any:
    """A copy of ``inputs`` with ``value`` at ``path``: the containers on the way are
    copied, everything else is shared."""
    if not path:
        return value
    out = copy.copy(inputs)
    out[path[0]] = _replaced(inputs[path[0]], path[1:], value)
    return out


def _remember(cache: OrderedDict, key: Any, value: Any) -> None:
    cache[key] = value
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


_TWINS: OrderedDict[tuple[int, TwinParams], tuple[list[ResourceRecord], Twin]] = OrderedDict()
"""Per cached graph (by the records list's identity) and parameters: the graph and an
untouched twin of it, which :func:`fresh_twin` respawns."""


def fresh_twin(
    records: list[ResourceRecord], seed: int | None, params: TwinParams, engine: str = "auto"
) -> Twin:
    """``make_twin(records, seed, params, engine)`` for a graph of :func:`resource_graph`'s:
    the twin of a graph seen before is a respawn of a kept, untouched one
    (:meth:`Twin.respawn`, the same twin at a fraction of the cost of a build).

    Only for record lists that nothing changes (those :func:`resource_graph` returns):
    the kept twin is found by the list's identity.
    """
    check_engine(engine)
    key = (id(records), params)
    kept = _TWINS.get(key)
    if kept is not None and kept[0] is records:
        _TWINS.move_to_end(key)
        return kept[1].respawn(seed)
    twin = make_twin(records, seed, params, engine)
    _remember(_TWINS, key, (records, twin.respawn(seed)))
    return twin


class SimBackend(Backend):
    """Runs an environment on the digital twin, in-process.

    Args:
        deployment: Deployment name passed to the layer programs.
        twin_params: Timing and behaviour assumptions of the twin.
        twin_engine: ``auto`` or ``native`` (the same: the compiled twin, the only one;
            ``python`` is a ConfigError saying that the Python twin was retired).
        actuation: ``immediate`` (a change acts at once) or ``async`` (each layer runs one
            update at a time, and a change to a busy layer waits: :meth:`Twin.request`).
    """

    def __init__(
        self,
        deployment: str = "sim",
        twin_params: TwinParams | None = None,
        twin_engine: str = "auto",
        actuation: str = "immediate",
    ) -> None:
        if actuation not in ACTUATIONS:
            raise ConfigError(unknown_choice("actuation", actuation, ACTUATIONS))
        check_engine(twin_engine)
        self.actuation = actuation
        self.deployment = deployment
        self.twin_params = twin_params or TwinParams()
        self.twin_engine = twin_engine
        self._twin_obj: Twin | None = None
        # Set while an env kernel steps the twin's core (infragym/envs/kernel.py): brings
        # the twin's Python side up to date before it is read.
        self._sync: Callable[[], None] | None = None

    @property
    def twin(self) -> Twin | None:
        """The twin (``None`` before a reset), up to date with an env kernel's steps."""
        if self._sync is not None:
            self._sync()
        return self._twin_obj

    @twin.setter
    def twin(self, twin: Twin | None) -> None:
        self._twin_obj = twin

    def __getstate__(self) -> dict[str, Any]:
        """For copy and pickle: the twin up to date, without the env kernel's hook."""
        if self._sync is not None:
            self._sync()
        state = self.__dict__.copy()
        state["_sync"] = None
        return state

    @property
    def queue(self) -> LayerQueue:  # type: ignore[override]
        """The twin's layer queue (the twin models when updates complete); while an env
        kernel steps the twin, a copy of the kernel's (read it, do not change it)."""
        if self._sync is not None:
            return self._sync.queue()
        return self._twin().queue

    def _twin(self) -> Twin:
        if self.twin is None:
            raise ConfigError("the sim backend has no deployment yet: call reset() first")
        return self.twin

    def reset(self, layers: Sequence[LayerSpec], seed: int | None = None) -> None:
        records = resource_graph(layers, self.deployment)
        self.twin = fresh_twin(records, seed, self.twin_params, self.twin_engine)

    def apply(self, changes: Sequence[Change]) -> ApplyResult:
        twin = self.twin
        if twin is None:
            twin = self._twin()  # raises the error
        changes = tuple(changes)
        if self.actuation == "async":
            started, queued = twin.request(changes)
            return ApplyResult(layers_updated=tuple(started), layers_queued=tuple(queued))
        done = 0
        try:
            for knob, value in changes:
                twin.set_property(knob.type, knob.resource, knob.path, value)
                done += 1
        finally:  # what was applied, even when a later change is refused
            twin.queue.made(changes[:done])
        layers: list[str] = []
        for knob, _ in changes:
            if knob.layer not in layers:
                layers.append(knob.layer)
        return ApplyResult(layers_updated=tuple(layers))

    def advance(self, seconds: float) -> None:
        self._twin().advance(float(seconds))

    def observe(self, metric_names: Sequence[str]) -> dict[str, float]:
        values = self._twin().last_metrics  # the twin's own dict: read-only here
        if isinstance(metric_names, tuple) and tuple(values) == metric_names:
            # Exactly the twin's metrics, in its order (the env's case): a C-level copy is
            # several times cheaper than picking the names one by one.
            return values.copy()
        try:
            return {name: values[name] for name in metric_names}
        except KeyError as exc:
            raise ConfigError(
                f"the twin does not compute metric {exc.args[0]!r}; it has {sorted(values)}"
            ) from None

    def resources(self) -> list[ResourceRecord]:
        return list(self._twin().records.values())

    def info(self) -> dict[str, Any]:
        twin = self._twin()
        return {
            "unmodelled": twin.unmodelled,
            "cost_usd": twin.cost_usd,
            "time_s": twin.t,
            "updates": twin.queue.state(),
        }

    def close(self) -> None:
        self._sync = None
        self.twin = None
