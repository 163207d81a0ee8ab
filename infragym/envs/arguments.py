"""Checks of an environment's arguments: each normalises one argument or raises ConfigError.

The environments call these before they build anything, so that a bad argument is a
clear :class:`~infragym.errors.ConfigError` at ``gym.make`` (or at ``reset``/``step`` for
their own arguments) rather than a traceback from deep inside, or garbage silently
accepted. They raise ``ConfigError`` (a ``ValueError``), never ``TypeError``: ``gym.make``
rewrites a ``TypeError`` from an environment's constructor to list every keyword
argument, and ``backend_options`` may hold credentials.

Knob domains are never written here: they come from the environment's knobs.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from infragym.catalog import unknown_choice
from infragym.errors import ConfigError
from infragym.knobs import IntRange, Knob, get_path

SCENARIO_OWNED: dict[str, tuple[str, ...]] = {"k8s-siege-engine": ("schedule",)}
"""Layer settings the episode's scenario sets (so a user's value would be replaced)."""


def _type_name(value: Any) -> str:
    return type(value).__name__


def positive_seconds(name: str, value: Any) -> float:
    """``value`` as a positive, finite number of seconds (``step_seconds``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a number of seconds, got a {_type_name(value)}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive, finite number of seconds, got {value}")
    return float(value)


def positive_int(name: str, value: Any) -> int:
    """``value`` as an integer of at least 1 (``max_episode_steps``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got a {_type_name(value)}")
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")
    return int(value)


def choice(name: str, value: Any, valid: Sequence[Any]) -> Any:
    """``value`` if it is one of ``valid`` (``render_mode``, ``action_mode``)."""
    if not isinstance(value, str | type(None)) or value not in valid:
        raise ConfigError(f"{name}: " + unknown_choice(name, value, valid))
    return value


def names(
    name: str,
    value: Any,
    default: Sequence[str],
    check: Callable[[str], object] | None = None,
) -> tuple[str, ...]:
    """A list of names (``node_sizes``, ``scenarios``), checked; ``None`` means ``default``.

    Args:
        name: The argument's name, for messages.
        value: What the user passed.
        default: The names used when ``value`` is ``None``.
        check: Raises ConfigError for a name that is not valid (its message lists the
            valid ones).

    Raises:
        ConfigError: A bare string (which would be iterated letter by letter), not a
            list, an empty list, a name that is not a string, or a repeated name.
    """
    if value is None:
        return tuple(default)
    if isinstance(value, str):
        raise ConfigError(
            f"{name} must be a list of names, got the string {value!r}: write {name}=[{value!r}]"
        )
    if isinstance(value, Mapping) or not isinstance(value, Iterable):
        raise ConfigError(f"{name} must be a list of names, got a {_type_name(value)}")
    out = tuple(value)
    if not out:
        raise ConfigError(f"{name} is empty: give at least one, or None for the defaults")
    for i, item in enumerate(out):
        if not isinstance(item, str):
            raise ConfigError(f"{name}[{i}] must be a name (a string), got a {_type_name(item)}")
        if item in out[:i]:
            raise ConfigError(f"{name} lists {item!r} twice")
        if check is not None:
            check(item)
    return out


def reward(value: Any) -> Callable[[Mapping[str, float]], Any] | None:
    """``value`` if it is a reward: ``None`` (the default) or a callable of the metrics."""
    if value is not None and not callable(value):
        raise ConfigError(
            f"reward must be a callable of the metrics dict (or None for the default), "
            f"got a {_type_name(value)}"
        )
    return value


def reward_value(fn: Callable[[Mapping[str, float]], Any], observed: Mapping[str, float]) -> float:
    """The reward ``fn`` gives ``observed``, as a finite float.

    Raises:
        ConfigError: The reward raised (chained to its exception), or returned something
            that is not a real number, or NaN or an infinity.
    """
    try:
        value = fn(observed)
    except Exception as exc:
        raise ConfigError(f"the reward {fn!r} raised {_type_name(exc)}: {exc}") from exc
    if type(value) is float and value - value == 0.0:  # the common case: finite (NaN, inf fail)
        return value
    if not isinstance(value, numbers.Real):
        raise ConfigError(f"the reward {fn!r} returned a {_type_name(value)}, not a number")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"the reward {fn!r} returned {value}, not a finite number")
    return value


def mapping(name: str, value: Any) -> dict[Any, Any]:
    """``value`` as a dict; ``None`` means empty (``backend_options``)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a dict, got a {_type_name(value)}")
    return dict(value)


def reset_options(value: Any, valid: Sequence[str]) -> dict[str, Any]:
    """``reset(options=...)`` as a dict with only ``valid`` keys; ``None`` means empty."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        hint = (
            f" (for a scenario: options={{'scenario': {value!r}}})"
            if isinstance(value, str)
            else ""
        )
        raise ConfigError(f"reset options must be a dict, got a {_type_name(value)}{hint}")
    unknown = [k for k in value if k not in valid]
    if unknown:
        raise ConfigError(f"unknown reset options {unknown}; valid: {list(valid)}")
    return dict(value)


def settings(value: Any, layers: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per-layer settings overrides, checked for shape: ``{layer: {setting: value}}``.

    Raises:
        ConfigError: Not a dict, an unknown layer, a layer's settings not a dict, a
            setting name not a string, or a setting the scenario owns (the siege
            schedule: choose or register a scenario instead).
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"settings must be a dict of layer name to a dict of settings, got a "
            f"{_type_name(value)}"
        )
    unknown = [k for k in value if k not in layers]
    if unknown:
        raise ConfigError(f"settings for unknown layers {unknown}; layers: {list(layers)}")
    out: dict[str, dict[str, Any]] = {}
    for layer, overrides in value.items():
        if not isinstance(overrides, Mapping):
            raise ConfigError(
                f"settings[{layer!r}] must be a dict of setting name to value, got a "
                f"{_type_name(overrides)}"
            )
        for key in overrides:
            if not isinstance(key, str):
                raise ConfigError(f"settings[{layer!r}] has a key that is not a string: {key!r}")
            if key in SCENARIO_OWNED.get(layer, ()):
                raise ConfigError(
                    f"settings[{layer!r}][{key!r}] is set by the episode's scenario; choose one "
                    "with scenarios=[...] or reset(options={'scenario': ...}), or register "
                    "your own with infragym.envs.scenarios.register_scenario "
                    "(docs/scenarios.md)"
                )
        out[layer] = dict(overrides)
    return out


def knob_values_in_domains(
    knobs: Sequence[Knob],
    layer_settings: Mapping[str, Mapping[str, Any]],
    deployment: str = "sim",
) -> dict[str, Any]:
    """Check that the settings deploy every knob at a value of its domain.

    The layers that hold knobs (and their upstream layers) run under Pulumi's mock
    runtime, as the sim backend runs them, and each knob's property is read from the
    resulting resources; the layer runs are cached, so the sim backend's first reset
    reuses them. This also validates those layers' settings. No cloud call is made.

    Args:
        knobs: The environment's knobs.
        layer_settings: Settings by layer name, for every layer of the environment.
        deployment: Deployment name passed to the programs.

    Returns:
        Each knob's value as deployed, by knob name.

    Raises:
        ConfigError: Invalid settings, or a knob whose deployed value its domain does not
            hold (the action space could not represent it, and the knob would report
            another value than the one that runs).
    """
    from infragym.backends import LayerSpec
    from infragym.backends.mockrun import run_layers
    from infragym.backends.sim import _LAYER_CACHE
    from stacks.registry import get_layer, upstream_layers

    present = list(layer_settings)
    needed: list[str] = []
    todo = list(dict.fromkeys(k.layer for k in knobs))
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.append(name)
        todo.extend(upstream_layers(get_layer(name), present))
    specs = [LayerSpec(name, dict(layer_settings.get(name, {}))) for name in present]
    specs = [s for s in specs if s.name in needed]
    records, _ = run_layers(specs, deployment, cache=_LAYER_CACHE)
    by_key = {(r.layer, r.type, r.name): r for r in records}
    values: dict[str, Any] = {}
    for k in knobs:
        record = by_key.get((k.layer, k.type, k.resource))
        if record is None:
            raise ConfigError(f"knob {k.name!r}: layer {k.layer!r} has no {k.type} {k.resource!r}")
        value = get_path(record.inputs, k.path)
        if isinstance(k.domain, IntRange) and isinstance(value, float) and value.is_integer():
            value = int(value)  # mock inputs carry numbers as floats
        if value not in k.domain.positions or isinstance(value, bool):
            raise ConfigError(
                f"the settings of layer {k.layer!r} deploy knob {k.name!r} ({k.path}) at "
                f"{value!r}, outside its domain {list(k.values)}: the action space cannot "
                "represent it; choose settings in the domain"
            )
        values[k.name] = value
    return values


def outer_time_limit(env: Any) -> int | None:
    """The ``max_episode_steps`` of the ``TimeLimit`` wrapper resetting ``env``, if any.

    ``gym.make(id, max_episode_steps=N)`` gives ``N`` to a ``TimeLimit`` wrapper only,
    never to the environment, which needs it for the length of its load schedule. Called
    from the environment's ``reset``, this finds the ``TimeLimit.reset`` frame on the
    stack whose wrapper wraps ``env`` (by its code object, not by name), so the episode
    gets a schedule as long as the wrapper lets it run.
    """
    from gymnasium.wrappers import TimeLimit

    code = TimeLimit.reset.__code__
    frame = sys._getframe(1)
    for _ in range(32):  # wrappers between the TimeLimit and the env: a few frames each
        if frame is None:
            return None
        if frame.f_code is code:
            wrapper = frame.f_locals.get("self")
            if isinstance(wrapper, TimeLimit) and wrapper.unwrapped is env:
                return int(wrapper._max_episode_steps)
            return None
        frame = frame.f_back
    return None
