"""What every Kubernetes layer shares: the ``k8s`` provider, settings helpers, and the
mapping of settings onto the component's arguments.

Every k8s layer talks to the cluster through one explicit ``pulumi_kubernetes.Provider``
with the logical name ``k8s``, built from the upstream ``kubeconfig`` output (provided by
whichever layer fills the ``cluster`` role). It is handed to the layer's component
through ``ResourceOptions(providers=...)``, and the component's children inherit it.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Any, Self, TypeVar

from pydantic import AfterValidator, SecretStr, model_validator

from infragym.twin.units import quantity_value
from stacks.registry import LayerContext, LayerSettings

T = TypeVar("T")


def check_request_within_limit(what: str, request: str, limit: str) -> None:
    """Raise ValueError (a ConfigError once the registry wraps it) when request > limit.

    Args:
        what: The resource, ``cpu`` or ``memory`` (the fields are ``<what>_request`` and
            ``<what>_limit``).
        request: The request quantity.
        limit: The limit quantity.
    """
    if quantity_value(request) > quantity_value(limit):
        raise ValueError(
            f"{what}_request {request!r} is above its limit ({what}_limit {limit!r}); "
            "Kubernetes rejects a container whose request exceeds its limit"
        )


class ContainerSettings(LayerSettings):
    """Base of a layer's settings that size a container: every ``<what>_request`` the
    model has (``cpu``, ``memory``) must not exceed its ``<what>_limit``, if it has one."""

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Self:
        for what in ("cpu", "memory"):
            request = getattr(self, f"{what}_request", None)
            limit = getattr(self, f"{what}_limit", None)
            if request is not None and limit is not None:
                check_request_within_limit(what, request, limit)
        return self


_DURATION = re.compile(r"^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")


def _prom_duration(value: str) -> str:
    if not value or not _DURATION.match(value) or not re.search(r"[1-9]", value):
        raise ValueError(
            f"{value!r} is not a positive Prometheus duration (e.g. 15s, 1m30s, 6h, 2d)"
        )
    return value


PromDuration = Annotated[str, AfterValidator(_prom_duration)]
"""A positive Prometheus duration (``15s``, ``1m30s``, ``6h``; units y w d h m s ms)."""


def k8s_provider(ctx: LayerContext) -> Any:
    """The ``k8s`` provider of a layer, from the upstream ``kubeconfig`` (kept secret).

    Raises:
        ConfigError: No upstream layer provides ``kubeconfig``.
    """
    import pulumi
    import pulumi_kubernetes as k8s

    kubeconfig = pulumi.Output.secret(ctx.need("kubeconfig"))
    return k8s.Provider("k8s", kubeconfig=kubeconfig)


def component_opts(ctx: LayerContext) -> Any:
    """``ResourceOptions`` for a layer's component: the ``k8s`` provider, inherited by
    every child."""
    import pulumi

    return pulumi.ResourceOptions(providers=[k8s_provider(ctx)])


def component_args(args_type: type[T], settings: LayerSettings, **values: Any) -> T:
    """The component's ``...Args`` dataclass built from a layer's settings.

    Each settings field that ``args_type`` has a field of the same name for is passed on
    as is; ``values`` (upstream outputs, converted settings) are added and win.

    Args:
        args_type: The component's arguments dataclass.
        settings: The layer's validated settings.
        **values: Further arguments, and replacements of passed-on settings.

    Raises:
        TypeError: A secret setting would be passed on unwrapped (pass its value in
            ``values`` instead).
    """
    names = {f.name for f in dataclasses.fields(args_type)}  # type: ignore[arg-type]
    passed = {k: getattr(settings, k) for k in type(settings).model_fields if k in names}
    for key, value in passed.items():
        if key not in values and isinstance(value, SecretStr):
            raise TypeError(f"setting {key!r} is a secret: pass its value explicitly")
    return args_type(**{**passed, **values})
