"""The backend contract: how an environment drives infrastructure, whichever runs it.

In the spirit of CompilerGym's ``CompilationSession``, the contract is tiny; the
environment above it knows nothing of which backend runs. Two implement it: ``sim``
(the digital twin, in-process) and ``pulumi`` (the Automation API against a cloud).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from infragym.knobs import Knob


@dataclass(frozen=True)
class LayerSpec:
    """A layer to deploy and its settings (validated by the layer's settings model)."""

    name: str
    settings: Mapping[str, Any] = field(default_factory=dict)


class Change(NamedTuple):
    """Set one knob to one value (in the engine's form: ``3``, ``"500m"``, a size slug).

    A named tuple rather than a frozen dataclass: several times cheaper to build, and it
    unpacks as ``knob, value``. Backends get one per changed knob per step.
    """

    knob: Knob
    value: Any


@dataclass(frozen=True)
class ResourceRecord:
    """One resource of the deployed graph, as the engine sees it.

    Attributes:
        layer: The layer that declares it.
        type: Pulumi type token.
        name: Logical name.
        inputs: Inputs in the engine's camelCase form, with knob values applied.
    """

    layer: str
    type: str
    name: str
    inputs: Mapping[str, Any]


class ApplyResult(NamedTuple):
    """What an :meth:`Backend.apply` did (a named tuple: one is built per applying step).

    Attributes:
        layers_updated: Layers whose stacks (or twin objects) changed, in order.
        engine_calls: Pulumi engine operations run (always 0 for the sim).
        seconds: Wall-clock seconds spent.
    """

    layers_updated: tuple[str, ...] = ()
    engine_calls: int = 0
    seconds: float = 0.0


class Backend(ABC):
    """The interface every backend implements."""

    @abstractmethod
    def reset(self, layers: Sequence[LayerSpec], seed: int | None = None) -> None:
        """Deploy (or reconfigure) ``layers`` and start a new episode."""

    @abstractmethod
    def apply(self, changes: Sequence[Change]) -> ApplyResult:
        """Set knob values; only layers whose desired state changed are touched."""

    @abstractmethod
    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of (simulated or wall-clock) time pass."""

    @abstractmethod
    def observe(self, metric_names: Sequence[str]) -> dict[str, float]:
        """The named metrics over the last step (NaN where undefined, e.g. no requests)."""

    @abstractmethod
    def resources(self) -> list[ResourceRecord]:
        """The resource graph as deployed now."""

    @abstractmethod
    def close(self) -> None:
        """Release everything the backend created (unless told to keep it)."""

    def info(self) -> dict[str, Any]:
        """Backend-specific extras for the step's ``info`` dict."""
        return {}
