"""Kubernetes resource quantities as numbers (CPU in cores, memory in GiB)."""

from __future__ import annotations

_MEMORY_SUFFIX = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
}  # fmt: skip


def cpu_cores(quantity: str | float | int | None) -> float | None:
    """``"500m"`` → 0.5, ``"2"`` → 2.0, ``None`` → ``None``."""
    if quantity is None:
        return None
    q = str(quantity)
    return float(q[:-1]) / 1000.0 if q.endswith("m") else float(q)


def memory_gib(quantity: str | float | int | None) -> float | None:
    """``"256Mi"`` → 0.25, ``"1Gi"`` → 1.0, plain bytes otherwise."""
    if quantity is None:
        return None
    q = str(quantity)
    for suffix in ("Ki", "Mi", "Gi", "Ti", "k", "M", "G", "T"):
        if q.endswith(suffix):
            return float(q[: -len(suffix)]) * _MEMORY_SUFFIX[suffix] / 2**30
    return float(q) / 2**30
