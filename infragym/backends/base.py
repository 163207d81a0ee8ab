"""The backend contract: how an environment drives infrastructure, whichever runs it.

In the spirit of CompilerGym's ``CompilationSession``, the contract is tiny; the
environment above it knows nothing of which backend runs. Two implement it: ``sim``
(the digital twin, in-process) and ``pulumi`` (the Automation API against a cloud).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

# The resource graph's types live below both the backends and the twin (DESIGN.md,
# decision 11); they are re-exported here, where they were first defined.
from infragym.graph import Change, LayerSpec, ResourceRecord

if TYPE_CHECKING:
    from infragym.updates import LayerQueue

__all__ = [
    "ACTUATIONS",
    "Actuation",
    "ApplyResult",
    "Backend",
    "Change",
    "LayerSpec",
    "ResourceRecord",
]


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
complete, and nothing started is cancelled (:mod:`infragym.updates`).
``immediate``: ``apply`` brings the layers to the desired state before it returns
(SimpleK8sWebApp-v0's dynamics).
"""

ACTUATIONS: tuple[str, ...] = ("async", "immediate")


class Backend(ABC):
    """The interface every backend implements.

    Attributes:
        queue: Desired, in-flight and applied knob values per layer (set by
            :meth:`reset`; the env records the deployed knob values in it with
            :meth:`~infragym.updates.LayerQueue.deployed`).
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
