"""The CLI path: ``pulumi up -s <deployment>.<layer>`` runs one layer from its stack config.

``stacks/__main__.py`` only calls :func:`main`; the logic lives here so that tests can
run it under Pulumi's mocks. What it does, in order:

1. split the stack name into deployment and layer (``dev.k8s-heater``);
2. read the layer's settings from the stack config object ``infragym:settings`` and
   validate them, so a bad setting fails with a :class:`~infragym.errors.ConfigError`
   before any cloud call;
3. read the outputs of every upstream layer through a ``StackReference`` to
   ``<org>/<project>/<deployment>.<upstream layer>``; a role such as ``cluster`` is
   mapped to a layer by the config object ``infragym:upstream`` (default
   ``{cluster: do-managed-k8s}``). An optional upstream layer (``k8s-postgresql`` for
   ``k8s-heater``) is read only when ``infragym:upstream`` lists it, as
   ``k8s-postgresql: k8s-postgresql``: one stack cannot see which others exist.
   Secret outputs stay secret;
4. run the layer's program and export each output it returns.

Example stack config (``stacks/Pulumi.dev.do-managed-k8s.yaml``)::

    config:
      infragym:settings:
        node_count: 3
      infragym:upstream:
        cluster: do-managed-k8s
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infragym.catalog import unknown_choice
from infragym.errors import ConfigError
from stacks.registry import Layer, all_layers, get_layer

CONFIG_NAMESPACE = "infragym"
"""Config namespace of the layer stacks (``infragym:settings``, ``infragym:upstream``)."""

DEFAULT_ROLES: Mapping[str, str] = {"cluster": "do-managed-k8s"}
"""Which layer fills a role when ``infragym:upstream`` does not say."""

DIY_ORGANIZATION = "organization"
"""The organization name Pulumi's self-managed (file, S3) backends use in stack names."""


def resolve_upstream(layer: Layer, roles: Mapping[str, str] | None = None) -> list[str]:
    """The layer names whose stacks ``layer`` reads: its ``upstream`` in order, then the
    ``optional_upstream`` entries that ``roles`` lists.

    An upstream entry that names a registered layer is used as is (``roles`` may list it
    only as mapping to itself); any other entry is a role, mapped through ``roles``
    (falling back to :data:`DEFAULT_ROLES`).

    Raises:
        ConfigError: A role is unmapped, maps to an unknown layer, or maps to a layer
            that does not provide it; or a layer name is mapped to another layer.
    """
    layers = all_layers()
    listed = dict(roles or {})
    mapping = {**DEFAULT_ROLES, **listed}
    needs = [*layer.upstream, *(n for n in layer.optional_upstream if n in listed)]
    found: list[str] = []
    for need in needs:
        name = _resolve_one(layer, need, mapping, layers)
        if name not in found:
            found.append(name)
    return found


def _resolve_one(
    layer: Layer, need: str, mapping: Mapping[str, str], layers: Mapping[str, Layer]
) -> str:
    """The layer that fills one upstream entry (a layer name or a mapped role)."""
    if need in layers:
        if mapping.get(need, need) != need:
            raise ConfigError(
                f"infragym:upstream maps layer {need!r} to {mapping[need]!r}; a layer can "
                f"only be listed as mapping to itself ({need}: {need})"
            )
        return need
    if need not in mapping:
        raise ConfigError(
            f"layer {layer.name!r} needs {need!r} upstream, which is neither a layer "
            f"nor a role mapped in infragym:upstream"
        )
    name = mapping[need]
    if name not in layers:
        raise ConfigError(
            f"infragym:upstream maps role {need!r} to an {unknown_choice('layer', name, layers)}"
        )
    if need not in layers[name].provides:
        providers = sorted(n for n, lay in layers.items() if need in lay.provides)
        raise ConfigError(
            f"infragym:upstream maps role {need!r} to layer {name!r}, which does "
            f"not provide it; layers that do: {', '.join(providers) or 'none'}"
        )
    return name


def _config_object(config: Any, key: str) -> dict[str, Any]:
    """A config value that must be an object (absent means empty)."""
    from pulumi import ConfigTypeError

    try:
        value = config.get_object(key)
    except ConfigTypeError as exc:
        raise ConfigError(f"config {CONFIG_NAMESPACE}:{key} is not valid JSON: {exc}") from None
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"config {CONFIG_NAMESPACE}:{key} must be an object, not {type(value).__name__}"
        )
    return dict(value)


def read_upstream(deployment: str, upstream: list[str]) -> dict[str, Any]:
    """Upstream outputs (name → ``Output``) read through one StackReference per layer.

    Each layer contributes the outputs its registry entry declares; a later layer's
    output replaces an earlier one of the same name.
    """
    import pulumi

    from stacks.registry import stack_name

    org = pulumi.get_organization() or DIY_ORGANIZATION
    values: dict[str, Any] = {}
    for name in upstream:
        ref = pulumi.StackReference(f"{org}/{pulumi.get_project()}/{stack_name(deployment, name)}")
        for output in get_layer(name).outputs:
            values[output] = ref.get_output(output)
    return values


def main() -> dict[str, Any]:
    """Run the layer named by the current stack and export its outputs.

    Returns:
        The outputs the layer program returned (also exported).

    Raises:
        ConfigError: Bad stack name, unknown layer, invalid settings or upstream mapping.
    """
    import pulumi

    from stacks.registry import LayerContext, split_stack_name

    deployment, layer_name = split_stack_name(pulumi.get_stack())
    layer = get_layer(layer_name)
    config = pulumi.Config(CONFIG_NAMESPACE)
    settings = layer.parse_settings(_config_object(config, "settings"))
    roles = _config_object(config, "upstream")
    if not all(isinstance(v, str) for v in roles.values()):
        raise ConfigError(f"config {CONFIG_NAMESPACE}:upstream must map roles to layer names")
    upstream = read_upstream(deployment, resolve_upstream(layer, roles))
    outputs = dict(layer.program(LayerContext(deployment, settings, upstream)))
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs
