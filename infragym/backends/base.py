"""The backend contract: how an environment drives infrastructure, whichever runs it.

In the spirit of CompilerGym's ``CompilationSession``, the contract is tiny; the
environment above it knows nothing of which backend runs. Two implement it: ``sim``
(the digital twin, in-process) and ``pulumi`` (the Automation API against a cloud).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from infragym.knobs import Knob

if TYPE_CHECKING:
    from infragym.backends.updates import LayerQueue


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
        layers_updated: Layers whose update started (immediate actuation: ran), in order.
        engine_calls: Pulumi engine operations run (always 0 for the sim).
        seconds: Wall-clock seconds spent.
        layers_queued: Layers whose changes wait for the layer's update in flight.
    """

    layers_updated: tuple[str, ...] = ()
    engine_calls: int = 0
    seconds: float = 0.0
    layers_queued: tuple[str, ...] = ()


Actuation = Literal["async", "immediate"]
"""How :meth:`Backend.apply` acts.

``async`` (real infrastructure's way): ``apply`` sets desired state; each layer runs one
update at a time in the background, changes to a busy layer wait (coalesced) for it to
complete, and nothing started is cancelled (:mod:`infragym.backends.updates`).
``immediate``: ``apply`` brings the layers to the desired state before it returns
(SimpleK8sWebApp-v0's dynamics).
"""

ACTUATIONS: tuple[str, ...] = ("async", "immediate")


class Backend(ABC):
    """The interface every backend implements.

    Attributes:
        queue: Desired, in-flight and applied knob values per layer (set by
            :meth:`reset`; the env records the deployed knob values in it with
            :meth:`~infragym.backends.updates.LayerQueue.deployed`).
    """

    queue: LayerQueue

    @abstractmethod
    def reset(self, layers: Sequence[LayerSpec], seed: int | None = None) -> None:
        """Deploy (or reconfigure) ``layers`` and start a new episode."""

    @abstractmethod
    def apply(self, changes: Sequence[Change]) -> ApplyResult:
        """Set knob values as desired state; only layers whose desired state changed are
        touched (see :data:`Actuation` for when they change)."""

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
