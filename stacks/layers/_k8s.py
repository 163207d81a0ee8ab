"""What every Kubernetes layer shares: the ``k8s`` provider and settings helpers.

Every k8s layer talks to the cluster through one explicit ``pulumi_kubernetes.Provider``
with the logical name ``k8s``, built from the upstream ``kubeconfig`` output (provided by
whichever layer fills the ``cluster`` role). It is handed to the layer's component
through ``ResourceOptions(providers=...)``, and the component's children inherit it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator

from stacks.registry import LayerContext

_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G)?$")
_SUFFIX = {
    None: 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40,
}  # fmt: skip


def quantity_value(quantity: str) -> float:
    """The number a Kubernetes quantity stands for (``"500m"`` → 0.5, ``"1Ki"`` → 1024).

    Raises:
        ValueError: Not a quantity of the form :data:`stacks.validators.Quantity` accepts.
    """
    match = _QUANTITY.match(str(quantity))
    if not match:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


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
