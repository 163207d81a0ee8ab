"""Kubernetes resource quantities as numbers (CPU in cores, memory in GiB).

One parser for the whole project: the k8s layers validate settings with it and the twin
reads the resource graph with it.
"""

from __future__ import annotations

import functools
import re

_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
_SUFFIX = {
    None: 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40,
}  # fmt: skip


@functools.lru_cache(maxsize=1024, typed=True)  # typed: True is not the quantity 1
def quantity_value(quantity: str | float | int) -> float:
    """The number a Kubernetes quantity stands for (``"500m"`` → 0.5, ``"1Ki"`` → 1024).

    Memoised: the twin reads the same few quantities at every reset and limit change.

    Raises:
        ValueError: Not a quantity (a number with an optional SI or binary suffix).
    """
    match = _QUANTITY.match(str(quantity))
    if not match:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def cpu_cores(quantity: str | float | int | None) -> float | None:
    """``"500m"`` → 0.5, ``"2"`` → 2.0, ``None`` → ``None``."""
    return None if quantity is None else quantity_value(quantity)


def memory_gib(quantity: str | float | int | None) -> float | None:
    """``"256Mi"`` → 0.25, ``"1Gi"`` → 1.0, plain bytes otherwise; ``None`` → ``None``."""
    return None if quantity is None else quantity_value(quantity) / 2**30
