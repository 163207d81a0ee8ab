"""Annotated types shared by the layers' settings models.

Each checks a value against the DigitalOcean catalogue (:mod:`infragym.catalog`) and
fails with a message that lists the valid choices, before any cloud call.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, Field

from infragym import catalog
from infragym.twin.units import quantity_value


def _choice(what: str, choices_fn):
    def check(value: str) -> str:
        choices = choices_fn()
        if value not in choices:
            raise ValueError(catalog.unknown_choice(what, value, choices))
        return value

    return check


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR block ({exc})") from None
    return value


def _quantity(value: str) -> str:
    try:
        quantity_value(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 1, 256Mi)") from None
    return str(value)


DropletRegion = Annotated[str, AfterValidator(_choice("region", lambda: catalog.DROPLET_REGIONS))]
"""A DigitalOcean datacenter region slug."""

DoksRegion = Annotated[str, AfterValidator(_choice("DOKS region", lambda: catalog.DOKS_REGIONS))]
"""A region where DigitalOcean Kubernetes is offered."""

DropletSize = Annotated[str, AfterValidator(_choice("size slug", catalog.sizes))]
"""Any DigitalOcean droplet size slug."""

DoksNodeSize = Annotated[
    str, AfterValidator(_choice("DOKS node size slug", catalog.doks_node_sizes))
]
"""A size slug usable for DOKS worker nodes."""

DoksVersion = Annotated[
    str, AfterValidator(_choice("Kubernetes version", lambda: catalog.DOKS_VERSIONS))
]
"""A DOKS version slug such as ``1.34.1-do.0``."""

Cidr = Annotated[str, AfterValidator(_cidr)]
"""An IPv4 or IPv6 CIDR block."""

Quantity = Annotated[str, AfterValidator(_quantity)]
"""A Kubernetes resource quantity (``500m``, ``1``, ``256Mi``)."""

DnsLabel = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]
"""A DNS-1123 label (Kubernetes names, DigitalOcean tags)."""
