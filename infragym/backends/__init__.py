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
    """Create a backend by name; imports it lazily so ``sim`` never loads the engine."""
    if name == "sim":
        from infragym.backends.sim import SimBackend

        return SimBackend(**kwargs)
    if name == "pulumi":
        from infragym.backends.pulumi import PulumiBackend

        return PulumiBackend(**kwargs)
    raise ConfigError(f"unknown backend {name!r}; valid choices: {', '.join(BACKENDS)}")
