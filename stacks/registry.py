"""The layer registry: name → component program, settings model, upstream layers, outputs.

A *layer* is one Pulumi program that deploys one component (``do-core``,
``do-managed-k8s``, ``k8s-heater``, ...). Every way of running a layer goes through its
:class:`Layer` entry:

- ``pulumi up -s <deployment>.<layer>`` (``stacks/__main__.py``) reads the stack's config,
  reads upstream outputs through ``StackReference`` and calls :attr:`Layer.program`;
- the pulumi backend calls the same program inline through the Automation API, passing
  upstream outputs it read from the upstream stacks;
- the sim backend calls it under Pulumi's mock runtime to get the resource graph.

Upstream values arrive as one flat mapping of output name → value (or ``Output``), so a
layer does not care which layer produced its kubeconfig: ``upstream`` entries may name a
layer or a *role* another layer ``provides`` (``cluster`` is provided by
``do-managed-k8s`` and by ``do-k8s-control-plane``). ``optional_upstream`` entries are
read when the deployment has them and ignored otherwise (``k8s-heater`` reads
``k8s-postgresql``'s DSN only when that layer is deployed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from infragym.catalog import unknown_choice
from infragym.errors import ConfigError


class LayerSettings(BaseModel):
    """Base class of every layer's settings model: strict, frozen, documented fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class LayerContext:
    """What a layer program gets.

    Attributes:
        deployment: The deployment name (the ``dev`` of stack ``dev.k8s-heater``); used to
            name cloud resources so that two deployments never collide.
        settings: The validated settings.
        upstream: Output name → value (or ``pulumi.Output``) from the upstream layers.
    """

    deployment: str
    settings: Any
    upstream: Mapping[str, Any] = field(default_factory=dict)

    def need(self, name: str) -> Any:
        """An upstream output that must be present, with a clear error when it is not."""
        try:
            return self.upstream[name]
        except KeyError:
            raise ConfigError(
                f"this layer needs the upstream output {name!r}, but the upstream layers "
                f"provide only {sorted(self.upstream) or 'nothing'}"
            ) from None


Program = Callable[[LayerContext], Mapping[str, Any]]


@dataclass(frozen=True)
class Layer:
    """One registered layer.

    Attributes:
        name: Registry name, also the second half of the stack name.
        description: One line for the README table and ``infragym layers``.
        settings: The pydantic settings model, validated before any cloud call.
        program: Builds the component and returns its outputs (exported by the stack).
        upstream: Layers (or roles) whose outputs this layer reads.
        optional_upstream: Layers (or roles) whose outputs this layer reads when they are
            in the deployment, and goes without when they are not; present ones are
            ordered before this layer like :attr:`upstream`.
        provides: Roles this layer fills (for example ``cluster``).
        outputs: Names of the outputs the program returns.
        resources: Type tokens the layer declares (documentation and README table).
    """

    name: str
    description: str
    settings: type[LayerSettings]
    program: Program
    upstream: tuple[str, ...] = ()
    optional_upstream: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()

    def parse_settings(self, raw: Mapping[str, Any] | LayerSettings | None) -> LayerSettings:
        """Validate raw settings into the layer's model.

        Raises:
            ConfigError: A field is invalid; the message names the layer and each field.
        """
        if isinstance(raw, self.settings):
            return raw
        try:
            return self.settings.model_validate(dict(raw or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(settings)'}: "
                f"{err['msg'].removeprefix('Value error, ')}"
                for err in exc.errors()
            )
            raise ConfigError(f"invalid settings for layer {self.name!r}: {problems}") from None


LAYERS: dict[str, Layer] = {}
"""Every registered layer, by name. Filled by importing :mod:`stacks.layers`."""


def register(layer: Layer) -> Layer:
    """Add a layer to the registry (names are unique)."""
    if layer.name in LAYERS and LAYERS[layer.name] is not layer:
        raise ConfigError(f"layer {layer.name!r} is registered twice")
    LAYERS[layer.name] = layer
    return layer


def all_layers() -> dict[str, Layer]:
    """The registry, with every layer module imported."""
    import stacks.layers  # noqa: F401  (registers the layers)

    return LAYERS


def get_layer(name: str) -> Layer:
    """A layer by name, with a clear error listing the registered ones."""
    layers = all_layers()
    try:
        return layers[name]
    except KeyError:
        raise ConfigError(unknown_choice("layer", name, layers)) from None


def upstream_layers(layer: Layer, present: Iterable[str]) -> list[str]:
    """The layers among ``present`` that satisfy ``layer``'s upstream names and roles.

    Required upstream layers come first, in :attr:`Layer.upstream` order, then the
    optional ones that are present; a later layer's outputs win over an earlier one's.

    Raises:
        ConfigError: An upstream name or role is filled by none of ``present``.
    """
    present = list(present)
    found: list[str] = []
    for need in layer.upstream:
        match = _fillers(need, present)
        if not match:
            raise ConfigError(
                f"layer {layer.name!r} needs {need!r} upstream, which none of "
                f"{present or 'no layers'} provides"
            )
        found.extend(m for m in match if m not in found)
    for need in layer.optional_upstream:
        found.extend(m for m in _fillers(need, present) if m not in found)
    return found


def _fillers(need: str, present: list[str]) -> list[str]:
    """The layers among ``present`` named ``need`` or providing role ``need``."""
    return [n for n in present if n == need or need in get_layer(n).provides]


def dependency_order(names: Iterable[str]) -> list[str]:
    """Order layer names so that every layer comes after its upstream layers."""
    names = list(dict.fromkeys(names))
    for n in names:
        get_layer(n)
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(n: str) -> None:
        if n in ordered:
            return
        if n in visiting:
            raise ConfigError(f"layer dependency cycle through {n!r}")
        visiting.add(n)
        for up in upstream_layers(get_layer(n), names):
            visit(up)
        visiting.discard(n)
        ordered.append(n)

    for n in names:
        visit(n)
    return ordered


def stack_name(deployment: str, layer: str) -> str:
    """The stack name of a layer in a deployment: ``<deployment>.<layer>``."""
    return f"{deployment}.{layer}"


def split_stack_name(stack: str) -> tuple[str, str]:
    """Split ``<deployment>.<layer>`` (an org/project prefix is ignored)."""
    short = stack.rsplit("/", 1)[-1]
    deployment, sep, layer = short.partition(".")
    if not sep or not deployment or not layer:
        raise ConfigError(
            f"stack name {stack!r} is not of the form <deployment>.<layer> (e.g. dev.k8s-heater)"
        )
    return deployment, layer
