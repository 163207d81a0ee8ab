"""What both apps serve besides their work: readiness on ``/healthz`` and Prometheus
exposition on ``/metrics``.

This module imports only aiohttp and prometheus_client, because in a cluster it is
mounted next to the apps and runs from the same stock Python image (see
:mod:`components.k8s._common`).
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder

REGISTRY = web.AppKey("registry", CollectorRegistry)
"""App key of the registry that ``/metrics`` exposes."""


def process_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """Add the ``process_*`` series to a registry.

    Args:
        registry: The registry; a fresh one by default (keeps tests isolated).

    Returns:
        The registry.
    """
    registry = registry if registry is not None else CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry


async def healthz(request: web.Request) -> web.Response:
    """Readiness: 200 once the server accepts requests."""
    return web.Response(text="ok\n")


async def metrics(request: web.Request) -> web.Response:
    """The app's registry in the exposition format the scraper asks for."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": content_type})


def add_probe_routes(app: web.Application, registry: CollectorRegistry) -> None:
    """Serve ``GET /healthz`` and ``GET /metrics`` (of ``registry``) from ``app``."""
    app[REGISTRY] = registry
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
