"""Per-layer reconciliation: desired state, one update in flight per layer, a coalesced queue.

An action sets *desired* state. Each layer reconciles one update at a time, as a real
engine does (a Pulumi stack is locked while ``up`` runs):

- a change to a layer with no update in flight starts an update of that layer at once;
- a change to a layer whose update is in flight waits, coalesced with the layer's other
  waiting changes to the latest desired value of each knob, and starts when that update
  completes;
- an update that has started runs to completion: nothing is cancelled for free.

:class:`LayerQueue` is that bookkeeping, shared by both backends. A backend asks it what
to start (:meth:`LayerQueue.request`) and tells it when an update completes
(:meth:`LayerQueue.complete`); when and how an update completes is the backend's own
(the twin's model, or the engine's ``up`` returning).

It sits below both the twin and the backends (DESIGN.md, decision 11);
:mod:`infragym.backends.updates` re-exports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infragym.graph import Change


@dataclass(frozen=True)
class Update:
    """One update of one layer: the knob changes it applies, and when it started."""

    layer: str
    changes: tuple[Change, ...]
    started_at: float


class LayerQueue:
    """Desired, in-flight and applied knob values, per layer.

    Attributes:
        requested: Knob name → the latest value asked for.
        applied: Knob name → the value as of the last *completed* update of its layer
            (what runs, as far as the engine knows).
        in_flight: Layer → its update in flight.
        queued: Layer → knob name → the change waiting for the layer's update to end.
    """

    def __init__(self) -> None:
        self.requested: dict[str, Any] = {}
        self.applied: dict[str, Any] = {}
        self.in_flight: dict[str, Update] = {}
        self.queued: dict[str, dict[str, Change]] = {}

    def deployed(self, values: Mapping[str, Any]) -> None:
        """Record knob values as deployed (requested and applied), e.g. after a reset."""
        self.requested.update(values)
        self.applied.update(values)

    def made(self, changes: Iterable[Change]) -> None:
        """Record ``changes`` as requested and applied at once (immediate actuation)."""
        requested, applied = self.requested, self.applied
        for knob, value in changes:
            requested[knob.name] = applied[knob.name] = value

    def request(self, changes: Iterable[Change], now: float) -> list[Update]:
        """Record ``changes`` as desired; return the updates that start now.

        Changes to a layer without an update in flight start one update of that layer
        (in the order the layers first appear); the others wait in the layer's queue,
        where a later change to the same knob replaces an earlier one, and a change back
        to the value the update in flight will leave is dropped.
        """
        starting: dict[str, list[Change]] = {}
        for change in changes:
            knob, value = change
            self.requested[knob.name] = value
            layer = knob.layer
            if layer in self.in_flight:
                waiting = self.queued.setdefault(layer, {})
                if value == self._after_in_flight(layer, knob.name):
                    waiting.pop(knob.name, None)
                else:
                    waiting[knob.name] = change
                if not waiting:
                    del self.queued[layer]
            else:
                starting.setdefault(layer, []).append(change)
        out = []
        for layer, layer_changes in starting.items():
            update = Update(layer, tuple(layer_changes), now)
            self.in_flight[layer] = update
            out.append(update)
        return out

    def complete(self, layer: str, now: float) -> Update | None:
        """End ``layer``'s update in flight; return the queued update that starts now, if any."""
        done = self.in_flight.pop(layer)
        for knob, value in done.changes:
            self.applied[knob.name] = value
        waiting = self.queued.pop(layer, None)
        if not waiting:
            return None
        update = Update(layer, tuple(waiting.values()), now)
        self.in_flight[layer] = update
        return update

    def _after_in_flight(self, layer: str, name: str) -> Any:
        """The value knob ``name`` has once ``layer``'s update in flight completes."""
        for knob, value in reversed(self.in_flight[layer].changes):
            if knob.name == name:
                return value
        return self.applied.get(name)

    def copy(self) -> LayerQueue:
        """An independent copy (the updates themselves are immutable, and shared)."""
        dup = LayerQueue()
        dup.requested = dict(self.requested)
        dup.applied = dict(self.applied)
        dup.in_flight = dict(self.in_flight)
        dup.queued = {layer: dict(waiting) for layer, waiting in self.queued.items()}
        return dup

    def busy(self, layers: Sequence[str]) -> list[bool]:
        """Whether each of ``layers`` has an update in flight."""
        return [layer in self.in_flight for layer in layers]

    def state(self) -> dict[str, dict[str, Any]]:
        """Per layer with an update in flight or queued: since when, and what waits."""
        out: dict[str, dict[str, Any]] = {}
        for layer, update in self.in_flight.items():
            out[layer] = {
                "in_flight": {k.name: v for k, v in update.changes},
                "started_at": update.started_at,
                "queued": {n: c.value for n, c in self.queued.get(layer, {}).items()},
            }
        return out
