"""What both apps serve besides their work: readiness on ``/healthz`` and Prometheus
exposition on ``/metrics``; and the checks of their command-line arguments.

This module imports only the standard library, aiohttp and prometheus_client, because
in a cluster it is mounted next to the apps and runs from the same stock Python image
(see :mod:`components.k8s._common`).
"""

from __future__ import annotations

import argparse
import errno
import math
import socket
from urllib.parse import urlsplit

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


# --------------------------------------------------------------------------- arguments
# argparse ``type=`` functions and the listening socket, shared by the apps, so that a
# bad argument is a usage error before anything starts (standard library only).


def port(text: str) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0 to 65535)")
    return value


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


def positive_seconds(text: str) -> float:
    """A finite number of seconds above 0."""
    value = _float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive, finite number of seconds")
    return value


def non_negative_seconds(text: str) -> float:
    """A number of seconds of at least 0 (``inf`` allowed, NaN not)."""
    value = _float(text)
    if not value >= 0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0 (or inf)")
    return value


def http_url(text: str) -> str:
    """An ``http://`` or ``https://`` URL with a host (and a valid port, if any)."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http:// or https:// URL with a host "
            "(for example http://127.0.0.1:8080/)"
        )
    return text


def listen_socket(host: str, port_number: int) -> socket.socket:
    """A TCP socket bound to ``host:port_number``, for ``web.run_app(sock=...)``.

    Binding before the server starts turns a bad host, a busy port or a privileged one
    into a clear message, and leaves no window in which another process takes the port.

    Raises:
        ValueError: The host does not resolve or is not this machine's, the port is in
            use, or listening on it is not permitted (the message says which).
    """
    try:
        infos = socket.getaddrinfo(
            host or None, port_number, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ValueError(f"cannot listen on host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp does
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            why = "the port is already in use"
        elif exc.errno == errno.EADDRNOTAVAIL:
            why = "the host is not an address of this machine"
        elif exc.errno == errno.EACCES:
            why = "permission denied (ports below 1024 need privileges)"
        else:
            why = exc.strerror or str(exc)
        raise ValueError(f"cannot listen on {host}:{port_number}: {why}") from None
    return sock


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
