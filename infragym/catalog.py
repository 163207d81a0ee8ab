"""The DigitalOcean catalogue: sizes, prices, regions and Kubernetes versions.

Every figure comes from the sourced reference data the project was given
(``shared/data/do-sizes.csv`` and ``shared/data/do-facts.md``); nothing here is
invented. The size table is shipped as ``infragym/data/do_sizes.csv`` with its per-row
``source`` column. Prices were captured on 2025-08-23 (``doctl compute size list``);
the other prices carry the date of the DigitalOcean page they were read from.

Both backends and the settings validation use this one module, so a size slug that
validates is a size slug the twin can boot and price.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources

PRICES_CAPTURED = "2025-08-23"
"""Date of the ``doctl compute size list`` capture behind the size table."""

HOURS_PER_MONTH = 672
"""DigitalOcean bills CPU plans at ``price_monthly / 672`` per hour (do-facts §1)."""

LOAD_BALANCER_MONTHLY_USD = 12.00
"""Regional HTTP load balancer, per LB node (DOC-LB-PRICE, 2025-02-28)."""

VOLUME_GIB_MONTHLY_USD = 0.10
"""Block storage, per GiB-month (DOC-VOL-PRICE, 2025-11-14)."""

DOKS_HA_CONTROL_PLANE_MONTHLY_USD = 40.00
"""Highly available DOKS control plane (DOC-K8S-PRICE, 2025-10-20); the plain one is free."""

SPACES_MONTHLY_USD = 5.00
"""Spaces subscription (DOC-SPACES-PRICE, 2025-06-17)."""

DATABASE_MONTHLY_USD: dict[str, float] = {
    # Managed PostgreSQL per-node prices (do-facts §9; $15 and $30 agree with DO's docs,
    # the rest are 3rd-party figures consistent across >= 5 repositories).
    "db-s-1vcpu-1gb": 15.0,
    "db-s-1vcpu-2gb": 30.0,
    "db-s-2vcpu-4gb": 60.0,
    "db-s-4vcpu-8gb": 120.0,
    "db-s-6vcpu-16gb": 240.0,
    "db-s-8vcpu-32gb": 480.0,
}

DROPLET_REGIONS: tuple[str, ...] = (
    # DOC-REGIONS, 2025-11-20 (ams2 and sfo1 are closed to new users).
    "nyc1", "nyc2", "nyc3", "ams3", "sfo2", "sfo3", "sgp1",
    "lon1", "fra1", "tor1", "blr1", "syd1", "atl1",
)  # fmt: skip

DOKS_REGIONS: tuple[str, ...] = (
    # OAPI-K8S-EX kubernetes_options (syd1/atl1 DOKS availability is unverified).
    "nyc1", "sgp1", "lon1", "nyc3", "ams3", "fra1", "tor1", "sfo2", "blr1", "sfo3",
)  # fmt: skip

SPACES_REGIONS: tuple[str, ...] = (
    # DOC-SPACES-AVAIL-MD, generated 2026-03-23.
    "nyc3", "ams3", "sfo2", "sfo3", "sgp1", "lon1", "fra1", "tor1", "blr1", "syd1", "atl1",
)  # fmt: skip

DOKS_VERSIONS: tuple[str, ...] = (
    # Latest slug per minor on 2025-11-19 (DOC-K8S-CHANGELOG).  Newer minors exist
    # (1.36 is mentioned 2026-05) but their slugs were not captured: add them here.
    "1.34.1-do.0",
    "1.33.6-do.0",
    "1.32.10-do.0",
)
DEFAULT_DOKS_VERSION = DOKS_VERSIONS[0]

DOKS_ALLOCATABLE_MEMORY_GIB: dict[str, float] = {
    # Max pod-allocatable memory per node size (DOC-K8S-LIMITS, 2025-11-10).
    "s-1vcpu-2gb": 1.0, "s-2vcpu-2gb": 1.0, "s-1vcpu-3gb": 1.66,
    "s-2vcpu-4gb": 2.5, "c-2": 2.5,
    "s-4vcpu-8gb": 6.0, "g-2vcpu-8gb": 6.0, "gd-2vcpu-8gb": 6.0, "c-4": 6.0,
    "s-6vcpu-16gb": 13.0, "g-4vcpu-16gb": 13.0, "gd-4vcpu-16gb": 13.0, "c-8": 13.0,
    "s-8vcpu-32gb": 28.0, "g-8vcpu-32gb": 28.0, "gd-8vcpu-32gb": 28.0, "c-16": 28.0,
    "s-12vcpu-48gb": 43.0,
    "s-16vcpu-64gb": 58.0, "g-16vcpu-64gb": 58.0, "gd-16vcpu-64gb": 58.0, "c-32": 58.0,
    "s-20vcpu-96gb": 88.5,
    "s-24vcpu-128gb": 119.5, "g-32vcpu-128gb": 119.5, "gd-32vcpu-128gb": 119.5,
    "g-40vcpu-160gb": 151.0, "gd-40vcpu-160gb": 151.0,
    "s-32vcpu-192gb": 182.0,
}  # fmt: skip

# DO publishes no reserved-CPU figure (do-facts §3), so the twin uses GKE's documented
# kube-reserved CPU scale: 6 % of the first core, 1 % of the second, 0.5 % of cores 3-4,
# 0.25 % above.  This is an assumption, named as one.
_CPU_RESERVE_STEPS = ((1, 0.06), (1, 0.01), (2, 0.005), (10_000, 0.0025))

DOKS_MIN_NODE_MEMORY_MIB = 2048
"""No source lists a DOKS node size below 2 GiB (do-facts §3)."""


@dataclass(frozen=True)
class Size:
    """One DigitalOcean size slug.

    Attributes:
        slug: The API slug, for example ``s-2vcpu-4gb``.
        family: DigitalOcean's plan family (Basic, CPU-Optimized, ...).
        vcpus: Virtual CPUs.
        memory_mib: Memory in MiB.
        price_monthly_usd: Monthly price.
        price_hourly_usd: Hourly price as the API reports it.
    """

    slug: str
    family: str
    vcpus: int
    memory_mib: int
    price_monthly_usd: float
    price_hourly_usd: float

    @property
    def is_gpu(self) -> bool:
        """Whether this is a GPU plan (billed differently, never a default)."""
        return "gpu" in self.slug or "GPU" in self.family

    @functools.cached_property
    def allocatable_cpu(self) -> float:
        """CPU cores left for pods on a Kubernetes node of this size."""
        left, reserved = float(self.vcpus), 0.0
        for cores, fraction in _CPU_RESERVE_STEPS:
            take = min(left, cores)
            reserved += take * fraction
            left -= take
            if left <= 0:
                break
        return self.vcpus - reserved

    @functools.cached_property
    def allocatable_memory_gib(self) -> float:
        """Pod-allocatable memory on a DOKS node of this size.

        Uses DigitalOcean's table where the size is listed; otherwise the reservation of
        the listed size with the same memory (the table is keyed by memory), else 80 %.
        """
        if self.slug in DOKS_ALLOCATABLE_MEMORY_GIB:
            return DOKS_ALLOCATABLE_MEMORY_GIB[self.slug]
        return _allocatable_by_memory().get(self.memory_mib, round(self.memory_mib / 1024 * 0.8, 2))


@functools.cache
def sizes() -> dict[str, Size]:
    """All size slugs in the shipped table, keyed by slug."""
    text = resources.files("infragym.data").joinpath("do_sizes.csv").read_text()
    return {
        row["slug"]: Size(
            slug=row["slug"],
            family=row["family"],
            vcpus=int(row["vcpus"]),
            memory_mib=int(row["memory_mib"]),
            price_monthly_usd=float(row["price_monthly_usd"]),
            price_hourly_usd=float(row["price_hourly_usd"]),
        )
        for row in csv.DictReader(text.splitlines())
    }


@functools.cache
def _allocatable_by_memory() -> dict[int, float]:
    table = sizes()
    return {table[s].memory_mib: a for s, a in DOKS_ALLOCATABLE_MEMORY_GIB.items() if s in table}


@functools.cache
def doks_node_sizes() -> tuple[str, ...]:
    """Slugs usable as DOKS worker nodes: CPU plans with at least 2 GiB of memory."""
    return tuple(
        s.slug
        for s in sizes().values()
        if not s.is_gpu and s.memory_mib >= DOKS_MIN_NODE_MEMORY_MIB
    )


def size(slug: str) -> Size:
    """Look up a size slug.

    Raises:
        ConfigError: The slug is not in the table; the message lists close matches.
    """
    from infragym.errors import ConfigError

    try:
        return sizes()[slug]
    except KeyError:
        raise ConfigError(unknown_choice("size slug", slug, sizes())) from None


def hourly_price(slug: str) -> float:
    """Hourly USD price of a droplet or node size, as DigitalOcean bills it."""
    return size(slug).price_hourly_usd


def unknown_choice(what: str, value: object, choices: object) -> str:
    """A clear error message for a value that is not one of the valid choices.

    Lists close matches first (by difflib), then all choices when there are few.
    """
    import difflib

    options = [str(c) for c in choices]  # type: ignore[attr-defined]
    close = difflib.get_close_matches(str(value), options, n=5, cutoff=0.5)
    msg = f"unknown {what} {value!r}"
    if close:
        msg += f"; did you mean {' or '.join(close)}?"
    if len(options) <= 20:
        msg += f" (valid choices: {', '.join(options)})"
    else:
        msg += f" ({len(options)} valid choices; `infragym sizes` lists sizes)"
    return msg
