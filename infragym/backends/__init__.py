"""Backends that run an environment's layers: ``sim`` (digital twin) and ``pulumi``."""

from __future__ import annotations

from typing import Any

from infragym.backends.base import (
    ApplyResult,
    Backend,
    Change,
    LayerSpec,
    ResourceRecord,
)
from infragym.errors import ConfigError

BACKENDS = ("sim", "pulumi")

__all__ = [
    "BACKENDS",
    "ApplyResult",
    "Backend",
    "Change",
    "LayerSpec",
    "ResourceRecord",
    "make_backend",
]


def make_backend(name: str, **kwargs: Any) -> Backend:
    """Create a backend by name; imports it lazily so ``sim`` never loads the engine.

    The options are checked first (:func:`infragym.backends.options.check_options`): an
    unknown name is named with the valid ones listed, and no message shows a value that
    may hold a credential.

    Raises:
        ConfigError: An unknown backend, or an unknown or invalid option.
    """
    if name == "sim":
        from infragym.backends.sim import SimBackend as cls
    elif name == "pulumi":
        from infragym.backends.pulumi import PulumiBackend as cls
    else:
        shown = name if isinstance(name, str) else f"<{type(name).__name__}>"
        raise ConfigError(f"unknown backend {shown!r}; valid choices: {', '.join(BACKENDS)}")
    from infragym.backends.options import check_options

    options = check_options(name, cls, kwargs)
    try:
        return cls(**options)
    except TypeError as exc:
        # gym.make would rewrite a TypeError to show every argument, credentials included.
        raise ConfigError(f"{name} backend: invalid backend_options ({exc})") from None
