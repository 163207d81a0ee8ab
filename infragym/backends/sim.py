"""The sim backend: the env's layer programs under Pulumi's mock runtime, then the twin.

``reset`` runs the layer programs once under mocks to get the resource graph (cached by
the layer settings, since programs are pure functions of them) and builds a
:class:`~infragym.twin.twin.Twin` from it (the compiled core, ``infragym._twin_core``).
Steps never rerun Pulumi: a knob change writes the twin's copy of the resource.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

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
from infragym.twin.model import TwinParams
from infragym.twin.twin import Twin, check_engine, make_twin
from infragym.updates import LayerQueue

_GRAPH_CACHE: OrderedDict[str, list[ResourceRecord]] = OrderedDict()
_LAYER_CACHE: OrderedDict[str, Any] = OrderedDict()
_CACHE_SIZE = 256


def resource_graph(layers: Sequence[LayerSpec], deployment: str) -> list[ResourceRecord]:
    """The resource graph of ``layers`` from mock runs, memoised by settings (per layer too)."""
    from infragym.backends import mockrun

    key = mockrun.graph_key(layers, deployment)
    records = _GRAPH_CACHE.get(key)
    if records is None:
        records, _ = mockrun.run_layers(layers, deployment, cache=_LAYER_CACHE)
        # The mock runtime registers resources in an order that varies between processes;
        # the twin's choices (which pool, which workload first) must not.
        position = {spec.name: i for i, spec in enumerate(layers)}
        records = sorted(
            records, key=lambda r: (position.get(r.layer, len(position)), r.type, r.name)
        )
        _GRAPH_CACHE[key] = records
        for cache in (_GRAPH_CACHE, _LAYER_CACHE):
            while len(cache) > _CACHE_SIZE:
                cache.popitem(last=False)
    else:
        _GRAPH_CACHE.move_to_end(key)
    return records


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
        self.twin = make_twin(records, seed, self.twin_params, self.twin_engine)

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
