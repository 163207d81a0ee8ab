"""The resource graph's types: what a layer deploys, a knob change, a deployed resource.

These sit below both the twin and the backends (DESIGN.md, decision 11): the backends
produce and change the graph, the twin models it, and neither imports the other for it.
:mod:`infragym.backends.base` re-exports them for compatibility.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from infragym.knobs import Knob

__all__ = ["Change", "LayerSpec", "ResourceRecord"]


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
