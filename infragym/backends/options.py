"""Validation of a backend's options (``backend_options``), before the backend is built.

:func:`check_options` runs in :func:`infragym.backends.make_backend`, before the backend's
constructor sees the options. That order matters: a ``TypeError`` raised from an
environment's constructor (an unexpected keyword, say) is rewritten by ``gym.make`` to
include *every* keyword argument it was given, and a state or Prometheus URL can carry
credentials (``s3://KEY:SECRET@bucket``, ``https://user:password@prometheus``). So the
option *names* are checked here against the backend's own signature (an unknown one is
named, with the valid ones listed), and the values of the options this module knows are
checked too. No message here shows an option's value, except for closed choices (an
engine name, an actuation mode) and URLs with their user info removed.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from infragym.catalog import unknown_choice
from infragym.errors import ConfigError

_NUMBER = (int, float)


def option_names(cls: type) -> tuple[str, ...]:
    """The keyword options a backend class takes: its constructor's named parameters."""
    params = inspect.signature(cls.__init__).parameters.values()
    return tuple(
        p.name
        for p in params
        if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )


def check_options(backend: str, cls: type, options: Mapping[Any, Any]) -> dict[str, Any]:
    """Check ``options`` for the backend ``cls`` and return them normalised.

    Args:
        backend: The backend's name (``sim``, ``pulumi``), for messages.
        cls: The backend class; its constructor's parameters are the valid names.
        options: The options as the user gave them.

    Returns:
        A new dict of the options (``twin_params`` given as a mapping becomes a
        :class:`~infragym.twin.model.TwinParams`).

    Raises:
        ConfigError: An option name the backend does not take (named, with the valid
            ones listed), or a value of the wrong type or out of range (the option is
            named; its value is shown only when it cannot be a secret).
    """
    if not isinstance(options, Mapping):
        raise ConfigError(
            f"backend_options must be a dict of option name to value, got a "
            f"{type(options).__name__}"
        )
    valid = option_names(cls)
    out: dict[str, Any] = {}
    for key, value in options.items():
        if not isinstance(key, str) or key not in valid:
            what = f"{backend} backend option"
            shown = key if isinstance(key, str) else f"<{type(key).__name__}>"
            raise ConfigError(unknown_choice(what, shown, valid))
        check = _CHECKS.get(key)
        out[key] = value if check is None else check(backend, key, value)
    return out


# --------------------------------------------------------------------------- value checks


def _fail(backend: str, key: str, expected: str, value: Any) -> ConfigError:
    """A ConfigError naming the option and what it needs, showing only the value's type."""
    return ConfigError(
        f"{backend} backend option {key!r} must be {expected} (got a {type(value).__name__})"
    )


def _flag(backend: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(backend, key, "True or False", value)
    return value


def _optional_flag(backend: str, key: str, value: Any) -> bool | None:
    return None if value is None else _flag(backend, key, value)


def _name(backend: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(backend, key, "a non-empty string", value)
    return value


def _optional_path(backend: str, key: str, value: Any) -> Any:
    if value is not None and not isinstance(value, str | os.PathLike):
        raise _fail(backend, key, "a path (str or os.PathLike) or None", value)
    if isinstance(value, str) and not value:
        raise _fail(backend, key, "a non-empty path", value)
    return value


def _positive_seconds(backend: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        raise _fail(backend, key, "a number of seconds", value)
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(
            f"{backend} backend option {key!r} must be a positive, finite number of "
            f"seconds, got {value}"
        )
    return float(value)


def _state_url(backend: str, key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(backend, key, "a URL string (file://, s3:// or spaces://) or None", value)
    from infragym.backends.state import parse_state_url

    parse_state_url(value)  # a ConfigError with the URL's user info removed
    return value


def _http_url(backend: str, key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(backend, key, "an http:// or https:// URL string or None", value)
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError:
        raise ConfigError(
            f"{backend} backend option {key!r} is not a valid URL (not shown: it may hold "
            "credentials); expected http://HOST:PORT or https://HOST:PORT"
        ) from None
    if parts.scheme not in ("http", "https") or not host:
        from infragym.prometheus import redact_url

        raise ConfigError(
            f"{backend} backend option {key!r} must be an http:// or https:// URL with a "
            f"host, got {redact_url(value)!r}"
        )
    return value


def _environment(backend: str, key: str, value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _fail(backend, key, "a dict of environment variable names to strings", value)
    return dict(value)


def _twin_engine(backend: str, key: str, value: Any) -> str:
    from infragym.twin.twin import check_engine

    try:
        return check_engine(value)
    except ConfigError as exc:
        raise ConfigError(f"{backend} backend option {key!r}: {exc}") from None


def _actuation(backend: str, key: str, value: Any) -> str:
    from infragym.backends.base import ACTUATIONS

    if not isinstance(value, str) or value not in ACTUATIONS:
        raise ConfigError(
            f"{backend} backend option {key!r}: " + unknown_choice(key, value, ACTUATIONS)
        )
    return value


def _twin_params(backend: str, key: str, value: Any) -> Any:
    from infragym.twin.model import TwinParams

    if value is None:
        return None
    if isinstance(value, Mapping):
        fields = [f.name for f in dataclasses.fields(TwinParams)]
        for name in value:
            if name not in fields:
                shown = name if isinstance(name, str) else f"<{type(name).__name__}>"
                raise ConfigError(f"{key}: " + unknown_choice("twin parameter", shown, fields))
        value = TwinParams(**value)
    if not isinstance(value, TwinParams):
        raise _fail(backend, key, "a TwinParams or a dict of its fields", value)
    for f in dataclasses.fields(TwinParams):
        v = getattr(value, f.name)
        if isinstance(f.default, bool):
            if not isinstance(v, bool):
                raise ConfigError(f"{key}.{f.name} must be True or False, got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, _NUMBER) or not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"{key}.{f.name} must be a finite number >= 0, got {v!r}")
    return value


_CHECKS: dict[str, Callable[[str, str, Any], Any]] = {
    "deployment": _name,
    "state_url": _state_url,
    "keep": _flag,
    "step_wait": _flag,
    "prometheus_url": _http_url,
    "window_seconds": _positive_seconds,
    "passphrase_file": _optional_path,
    "env": _environment,
    "progress": _optional_flag,
    "refresh_on_attach": _flag,
    "cli": _optional_path,
    "twin_params": _twin_params,
    "twin_engine": _twin_engine,
    "actuation": _actuation,
}
"""The options this module checks, by name (other options a backend takes pass as given)."""
