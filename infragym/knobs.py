"""Knobs: action dimensions over resource properties.

A :class:`Knob` names a layer, a resource in it (type token and logical name), a property
path in the engine's camelCase form (``spec.replicas``,
``spec.template.spec.containers[0].resources.limits.cpu``, ``nodeCount``) and a domain of
values. An environment builds its Gymnasium action space from its knobs, so any property
of any layer can become an action dimension without touching the component.

The sim backend applies a knob value to the twin's copy of the resource; the pulumi
backend applies it with a resource transformation when it reruns the layer program.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from infragym.errors import ActionError, ConfigError


@dataclass(frozen=True)
class IntRange:
    """Integers ``low, low+step, ..., high``."""

    low: int
    high: int
    step: int = 1

    def __post_init__(self) -> None:
        if self.high < self.low or self.step < 1:
            raise ConfigError(f"empty integer domain {self}")

    @functools.cached_property
    def values(self) -> tuple[int, ...]:
        return tuple(range(self.low, self.high + 1, self.step))

    @functools.cached_property
    def positions(self) -> dict[int, int]:
        """Value → index."""
        return {v: i for i, v in enumerate(self.values)}


@dataclass(frozen=True)
class Choice:
    """An ordered list of values (ordered so that a ``+1`` delta means "more")."""

    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise ConfigError("a Choice domain needs at least one value")

    @functools.cached_property
    def positions(self) -> dict[Any, int]:
        """Value → index."""
        return {v: i for i, v in enumerate(self.values)}


Domain = IntRange | Choice


@dataclass(frozen=True)
class Knob:
    """One action dimension: a property of one resource of one layer.

    Attributes:
        name: Short name used in ``info`` and by agents (``heater_replicas``).
        layer: Layer name in the registry (``k8s-heater``).
        type: Pulumi type token of the resource (``kubernetes:apps/v1:Deployment``).
        resource: Logical (Pulumi) name of the resource.
        path: Property path in camelCase, dots and ``[i]`` indexes.
        domain: The values the knob may take.
    """

    name: str
    layer: str
    type: str
    resource: str
    path: str
    domain: Domain = field(compare=False)

    @property
    def values(self) -> tuple[Any, ...]:
        return self.domain.values

    def index_of(self, value: Any) -> int:
        """Index of ``value`` in the domain (the nearest one for numbers off the grid)."""
        i = self.domain.positions.get(value)
        if i is not None:
            return i
        values = self.values
        if isinstance(self.domain, IntRange) and isinstance(value, int | float):
            return int(np.argmin([abs(v - value) for v in values]))
        if isinstance(value, str):
            # A Kubernetes quantity as the provider stores it ("1" for "1000m").
            same = [i for i, v in enumerate(values) if _same_quantity(v, value)]
            if len(same) == 1:
                return same[0]
        raise ConfigError(
            f"knob {self.name!r}: current value {value!r} is not in its domain {list(values)}"
        )


def _same_quantity(a: Any, b: str) -> bool:
    """Whether ``a`` and ``b`` are the same Kubernetes quantity written two ways."""
    from infragym.twin.units import quantity_value

    if not isinstance(a, str):
        return False
    try:
        return quantity_value(a) == quantity_value(b)
    except ValueError:
        return False


_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@functools.lru_cache(maxsize=1024)
def parse_path(path: str) -> tuple[str | int, ...]:
    """Split ``a.b[0].c`` into ``("a", "b", 0, "c")``."""
    parts = tuple(int(index) if index else key for key, index in _PATH_TOKEN.findall(path))
    if not parts:
        raise ConfigError(f"empty property path {path!r}")
    return parts


def get_path(obj: Any, path: str) -> Any:
    """Read a property path from nested dicts and lists (camelCase keys)."""
    for part in parse_path(path):
        try:
            obj = obj[part]
        except (KeyError, IndexError, TypeError):
            raise ConfigError(f"property path {path!r} not found (at {part!r})") from None
    return obj


def set_path(obj: Any, path: str, value: Any) -> None:
    """Write a property path into nested dicts and lists, in place."""
    parts = parse_path(path)
    target = obj
    for part in parts[:-1]:
        target = target[part]
    target[parts[-1]] = value


ActionMode = Literal["delta", "absolute"]


class ActionCodec:
    """Turns Gymnasium actions into knob values and back.

    ``delta`` mode: one ``Discrete(3)`` per knob (0 = one step down, 1 = keep, 2 = one
    step up), clipped at the ends of the domain. ``absolute`` mode: one ``Discrete(n)``
    per knob, the index of the value.
    """

    def __init__(self, knobs: Sequence[Knob], mode: ActionMode = "delta") -> None:
        if mode not in ("delta", "absolute"):
            raise ConfigError(f"unknown action mode {mode!r}; valid: 'delta', 'absolute'")
        names = [k.name for k in knobs]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate knob names in {names}")
        self.knobs = tuple(knobs)
        self.mode = mode
        self.nvec = np.array(
            [3 if mode == "delta" else len(k.values) for k in knobs], dtype=np.int64
        )
        self._bounds = self.nvec.tolist()
        self._shape = (len(knobs),)
        # _moves[k][i][x]: the index knob k moves to from index i under action entry x. Only
        # valid entries are keys, so the lookup also validates the action.
        self._moves: list[list[dict[int, int]]] = []
        for k in knobs:
            top = len(k.values) - 1
            if mode == "delta":
                moves = [{0: max(i - 1, 0), 1: i, 2: min(i + 1, top)} for i in range(top + 1)]
            else:
                moves = [{j: j for j in range(top + 1)}] * (top + 1)  # one dict, shared
            self._moves.append(moves)

    def space(self):
        """The Gymnasium action space."""
        from gymnasium import spaces

        return spaces.MultiDiscrete(self.nvec)

    def decode_indices(self, action: Any, current: Sequence[int]) -> list[int]:
        """New domain indices for ``action`` given the current (valid) indices.

        This runs every step: an integer array, the common case, takes a fast path.

        Raises:
            ActionError: The action is not in the action space.
        """
        if (
            isinstance(action, np.ndarray)
            and action.shape == self._shape
            and action.dtype.kind in "iu"
        ):
            out = []
            try:
                # A plain loop, zip without strict=: each saves ~0.2 µs a step on CPython 3.11.
                for moves, i, x in zip(self._moves, current, action.tolist()):  # noqa: B905
                    out.append(moves[i][x])
                return out
            except KeyError:
                pass  # an entry out of range: _entries raises the detailed error
        entries = self._entries(action)
        return [moves[i][x] for moves, i, x in zip(self._moves, current, entries, strict=True)]

    def _entries(self, action: Any) -> list[int]:
        """The action as a list of ints, or ActionError if it is not in the space."""
        bounds = self._bounds
        try:
            entries = action.tolist() if isinstance(action, np.ndarray) else list(action)
        except TypeError:
            entries = None
        if (
            entries is None
            or len(entries) != len(bounds)
            or not all(
                isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)
                for x in entries
            )
            or not all(math.isfinite(x) for x in entries)  # int() of NaN or inf raises
            or any(x != int(x) for x in entries)
        ):
            raise ActionError(
                f"action {action!r} is not in the action space: expected "
                f"{len(bounds)} integers with bounds {bounds} "
                f"(mode {self.mode!r}, knobs {[k.name for k in self.knobs]})"
            )
        entries = [int(x) for x in entries]
        if any(not 0 <= x < n for x, n in zip(entries, bounds, strict=True)):
            raise ActionError(
                f"action {entries} is outside the action space: each entry i must be in "
                f"[0, {bounds}[i]) (mode {self.mode!r}, knobs {[k.name for k in self.knobs]})"
            )
        return entries

    def encode(self, target: Mapping[str, Any], current: Mapping[str, Any]) -> np.ndarray:
        """The action that moves from ``current`` towards ``target`` knob values."""
        out = []
        for knob in self.knobs:
            t = knob.index_of(target.get(knob.name, current[knob.name]))
            if self.mode == "absolute":
                out.append(t)
            else:
                c = knob.index_of(current[knob.name])
                out.append(1 + int(np.sign(t - c)))
        return np.array(out, dtype=np.int64)
