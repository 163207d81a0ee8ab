"""Apply knob values to a layer program's resources with an SDK-side transformation.

The pulumi backend reruns a layer's program with knob overrides; a stack transformation
(``pulumi.runtime.register_stack_transformation``) finds each overridden resource by
type token and logical name, and sets the knob's property path on its arguments before
the resource is registered. The SDK-side kind is used rather than the newer engine-side
``transforms`` because the latter are not applied under the mock runtime (DESIGN,
decision 2), and the sim backend must see the same programs.

The transformation sees the arguments in the *SDK's* form: the top level is a dict with
snake_case keys, and nested values are typed ``...Args`` objects (snake_case attributes),
plain dicts, lists or ``pulumi.Output``\\ s. Knob paths are written in the engine's
camelCase form (``spec.template.spec.containers[0].resources.limits.cpu``), so each path
segment is looked up as written, then in snake_case. Every level on the path is copied
before it is changed, so values the program shares between resources are never mutated.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from infragym.errors import ConfigError
from infragym.knobs import parse_path

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def camel_to_snake(name: str) -> str:
    """``nodeCount`` → ``node_count``, ``apiVersion`` → ``api_version``, ``cpu`` → ``cpu``."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


@dataclass(frozen=True)
class Override:
    """One knob value to set on one resource.

    Attributes:
        type: Pulumi type token of the resource.
        name: Logical name of the resource.
        path: Property path, camelCase, dots and ``[i]`` indexes.
        value: The value, in the engine's form.
        knob: The knob's name, for messages.
    """

    type: str
    name: str
    path: str
    value: Any
    knob: str = ""


def _keys_camel(d: dict[str, Any]) -> bool:
    """Whether a dict's keys are written camelCase (so new keys should be too)."""
    return any(k != k.lower() for k in d if isinstance(k, str))


def _is_output(value: Any) -> bool:
    import pulumi

    return isinstance(value, pulumi.Output)


def _get(obj: Any, key: str | int, where: str) -> tuple[Any, str | int | None]:
    """The child ``key`` of ``obj`` and the key/attribute it lives under (None: absent)."""
    if isinstance(key, int):
        if not isinstance(obj, list | tuple):
            raise ConfigError(f"{where}: expected a list at [{key}], found {type(obj).__name__}")
        if key >= len(obj):
            raise ConfigError(f"{where}: index [{key}] is out of range (length {len(obj)})")
        return obj[key], key
    snake = camel_to_snake(key)
    if isinstance(obj, dict):
        for k in (key, snake):
            if k in obj:
                return obj[k], k
        return None, None
    for attr in (snake, key):
        if attr in getattr(obj, "__dict__", {}) or hasattr(type(obj), attr):
            return getattr(obj, attr, None), attr
    raise ConfigError(f"{where}: {type(obj).__name__} has no property {key!r} ({snake!r})")


def _put(obj: Any, key: str | int, found: str | int | None, value: Any) -> Any:
    """A copy of ``obj`` with ``key`` set to ``value``."""
    if isinstance(obj, list | tuple):
        items = list(obj)
        items[key] = value  # type: ignore[index]
        return type(obj)(items) if isinstance(obj, tuple) else items
    if isinstance(obj, dict):
        out = dict(obj)
        if found is None:
            found = key if _keys_camel(obj) else camel_to_snake(str(key))
        out[found] = value
        return out
    out = copy.copy(obj)
    attr = found if found is not None else camel_to_snake(str(key))
    try:
        setattr(out, str(attr), value)
    except AttributeError:
        out.__dict__[str(attr)] = value
    return out


def set_property(obj: Any, path: str, value: Any) -> Any:
    """A copy of ``obj`` with the camelCase ``path`` set to ``value``.

    ``obj`` may mix dicts (camelCase or snake_case keys), typed ``...Args`` objects,
    lists and ``pulumi.Output``\\ s; an Output on the path is traversed with ``apply``.
    Missing dict entries and ``None`` attributes are created as dicts.

    Raises:
        ConfigError: A list index is out of range, or a typed object has no such property.
    """
    parts = parse_path(path)

    def go(node: Any, i: int) -> Any:
        if i == len(parts):
            return value
        if _is_output(node):
            return node.apply(lambda resolved: go(resolved, i))
        if node is None:
            if isinstance(parts[i], int):
                raise ConfigError(f"{path}: no list at {parts[i - 1]!r} to index")
            node = {}
        child, found = _get(node, parts[i], path)
        return _put(node, parts[i], found, go(child, i + 1))

    return go(obj, 0)


@dataclass
class KnobTransformation:
    """A stack transformation applying :class:`Override`\\ s, and a record of what matched.

    Register it with ``pulumi.runtime.register_stack_transformation(t)``; after the
    program, :meth:`check` raises when an override found no resource.
    """

    overrides: tuple[Override, ...]
    matched: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._by_resource: dict[tuple[str, str], list[Override]] = {}
        for o in self.overrides:
            self._by_resource.setdefault((o.type, o.name), []).append(o)

    def __call__(self, args: Any) -> Any:
        """The transformation: ``ResourceTransformationArgs`` → result, or None to keep."""
        import pulumi

        todo = self._by_resource.get((args.type_, args.name))
        if not todo:
            return None
        props = args.props
        for o in todo:
            props = set_property(props, o.path, o.value)
        self.matched.add((args.type_, args.name))
        return pulumi.ResourceTransformationResult(props=props, opts=args.opts)

    def unmatched(self) -> list[Override]:
        """Overrides whose resource the program did not declare."""
        return [o for o in self.overrides if (o.type, o.name) not in self.matched]

    def check(self) -> None:
        """Raise when an override matched no resource of the program.

        Raises:
            ConfigError: Naming each knob, its type token and logical name.
        """
        missing = self.unmatched()
        if missing:
            names = ", ".join(f"{o.knob or o.path} ({o.type} {o.name!r})" for o in missing)
            raise ConfigError(f"knobs matched no resource of the layer program: {names}")


def transformation(overrides: Iterable[Override]) -> KnobTransformation:
    """A :class:`KnobTransformation` for ``overrides``."""
    return KnobTransformation(tuple(overrides))
