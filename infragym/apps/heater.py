"""heater: a web service that burns a configurable amount of CPU per request.

Run it with::

    python -m infragym.apps.heater --port 8080 --work '{"mean_ms": 20}'

The work per request is a :class:`~infragym.apps.workload.CpuWork`, from ``--work`` or
the ``HEATER_WORK`` environment variable (the command line wins).

Endpoints:

- ``GET /``: one unit of work. Answers 200 with a small JSON body, 503 when the request
  waited in the server longer than ``work.timeout_s`` before its turn came, 500 when the
  optional database query fails.
- ``GET /healthz``: readiness (200 once the server accepts requests).
- ``GET /metrics``: Prometheus exposition of the series below (plus ``process_*``).

Metrics (only ``/`` requests are counted):

- ``heater_requests_total{code}``: requests answered, by HTTP status.
- ``heater_request_duration_seconds``: server-side time from the handler seeing the
  request to the response, queueing included; buckets are
  :data:`~infragym.apps.workload.LATENCY_BUCKETS`.
- ``heater_requests_in_flight``: requests in the server (waiting or being served).
- ``heater_cpu_seconds_total``: CPU time burnt by the work itself.

Queueing model. The pod is a FIFO queue in front of ``work.workers`` servers (``c``),
each serving one request at a time and running its CPU burn to completion: an M/G/c
queue when the clients send Poisson arrivals (as the siege-engine does), which is what
the digital twin assumes. The event loop only accepts connections, stamps arrivals,
answers ``/metrics`` and hands each request to the queue; an idle server always takes
the oldest waiting request.

- ``workers == 1`` (the default): M/G/1. The server is one thread of this process, and
  the GIL keeps the whole process near one core whatever its CPU limit.
- ``workers == c > 1``: ``c`` spawned worker processes behind one
  :class:`~concurrent.futures.ProcessPoolExecutor` queue; the pod needs ``c`` cores to
  run them all at full speed.

The burn is measured in CPU time of the serving thread (``time.thread_time``), not in
wall time. A request asking for 20 ms of CPU gets 20 ms of CPU; when a cgroup CPU quota
throttles the container, or other processes share the core, it takes longer on the wall
clock, exactly like a real CPU-bound service: a limit below what the servers can use
stretches every service time by the same factor.

Database. When ``--db-dsn`` (or ``HEATER_DB_DSN``) is set and the work has a
``db_query``, the server also runs that query after the burn, on one connection per
server kept open. ``psycopg`` is not a dependency of infragym: it is imported only then, and
its absence is reported at start-up.

This module imports only the standard library, aiohttp, prometheus_client and the
sibling modules :mod:`~infragym.apps.workload` (pydantic) and
:mod:`~infragym.apps._serving`, because in a cluster it runs from a stock Python image
with just those packages installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import multiprocessing
import os
import random
import sys
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

try:
    import infragym.apps._serving as serving
    from infragym.apps._serving import add_probe_routes, process_registry
    from infragym.apps.workload import (
        HEATER_DB_DSN_ENV,
        HEATER_PORT,
        HEATER_WORK_ENV,
        LATENCY_BUCKETS,
        CpuWork,
    )
except ImportError:  # pragma: no cover - run as a plain script next to the mounted modules
    import _serving as serving  # type: ignore[no-redef]
    from _serving import add_probe_routes, process_registry  # type: ignore[no-redef]
    from workload import (  # type: ignore[no-redef]
        HEATER_DB_DSN_ENV,
        HEATER_PORT,
        HEATER_WORK_ENV,
        LATENCY_BUCKETS,
        CpuWork,
    )

_CODES = ("200", "500", "503")


class StopFlag(Protocol):
    """A threading or multiprocessing ``Event``: all the burn loop needs of it."""

    def is_set(self) -> bool: ...


def burn_cpu(seconds: float, stop: StopFlag | None = None) -> float:
    """Spin until the calling thread has used ``seconds`` of CPU time.

    Args:
        seconds: CPU seconds to use.
        stop: When set, the burn ends early (used at shutdown).

    Returns:
        The CPU seconds actually used (slightly above ``seconds``: the loop checks the
        clock every few microseconds).
    """
    start = time.thread_time()
    end = start + seconds
    x = 0
    while time.thread_time() < end:
        for i in range(200):  # a few microseconds of arithmetic between clock reads
            x = (x * 31 + i) & 0xFFFF
        if stop is not None and stop.is_set():
            break
    return time.thread_time() - start


class HeaterMetrics:
    """The heater's Prometheus series, in a registry of their own (keeps tests isolated)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = process_registry(registry)
        self.requests = Counter(
            "heater_requests",
            "Work requests answered, by HTTP status code.",
            ["code"],
            registry=self.registry,
        )
        for code in _CODES:  # so rate() sees every series from the first scrape
            self.requests.labels(code=code)
        self.duration = Histogram(
            "heater_request_duration_seconds",
            "Server-side time from a work request's arrival in the handler to its response.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "heater_requests_in_flight",
            "Work requests in the server, waiting or being served.",
            registry=self.registry,
        )
        self.cpu = Counter(
            "heater_cpu_seconds",
            "CPU seconds burnt by request work (worker-thread CPU time).",
            registry=self.registry,
        )


@dataclass(frozen=True)
class Outcome:
    """What a server did with one request."""

    code: int
    wait_s: float
    cpu_s: float = 0.0
    error: str | None = None


# Server state, set by the executor's initializer in the server thread (workers=1) or in
# each worker process (workers>1): the stop flag and the database connection.
_local = threading.local()


def _init_server(stop: StopFlag, barrier: Any = None) -> None:
    _local.stop = stop
    _local.barrier = barrier
    _local.conn = None


def _close_db() -> None:
    conn, _local.conn = getattr(_local, "conn", None), None
    if conn is not None:
        # Closing a broken connection may fail again; it is gone anyway.
        with contextlib.suppress(Exception):
            conn.close()


def _query(dsn: str, sql: str) -> None:
    if getattr(_local, "conn", None) is None:
        psycopg = importlib.import_module("psycopg")
        _local.conn = psycopg.connect(dsn, autocommit=True)
    with _local.conn.cursor() as cur:
        cur.execute(sql)
        if cur.description is not None:
            cur.fetchall()


def serve(
    arrived: float,
    cpu_s: float,
    timeout_s: float,
    db_dsn: str | None = None,
    db_query: str | None = None,
) -> Outcome:
    """Serve one request, in a server thread or process: check its wait, burn, query.

    Args:
        arrived: ``time.monotonic()`` when the handler saw the request (the monotonic
            clock is system-wide on Linux, so it compares across processes).
        cpu_s: CPU seconds to burn.
        timeout_s: A request that waited longer than this is answered 503 unserved.
        db_dsn: PostgreSQL DSN; the query runs only when this and ``db_query`` are set.
        db_query: SQL to run after the burn.
    """
    wait_s = time.monotonic() - arrived
    if wait_s > timeout_s:
        return Outcome(503, wait_s)
    used = burn_cpu(cpu_s, getattr(_local, "stop", None))
    if db_dsn and db_query:
        try:
            _query(db_dsn, db_query)
        except Exception as exc:  # any driver error answers 500 and reconnects next time
            _close_db()
            return Outcome(500, wait_s, used, f"{type(exc).__name__}: {exc}")
    return Outcome(200, wait_s, used)


def _ready() -> int:
    # Worker processes meet at a barrier, so the c start-up jobs are held by c distinct,
    # running processes: none is still booting when the port opens.
    barrier = getattr(_local, "barrier", None)
    if barrier is not None:
        barrier.wait(timeout=120)
    return os.getpid()


class Server:
    """The pod's servers: ``work.workers`` of them behind one FIFO queue (M/G/c).

    With one worker the server is a thread of this process (no IPC, and the GIL keeps
    the process near one core). With ``c > 1`` they are ``c`` spawned processes fed
    from one FIFO queue by a :class:`~concurrent.futures.ProcessPoolExecutor`, so an
    idle server always takes the oldest waiting request.

    Args:
        work: The work per request.
        metrics: Where burnt CPU is counted.
        db_dsn: PostgreSQL DSN for ``work.db_query``.
    """

    def __init__(self, work: CpuWork, metrics: HeaterMetrics, db_dsn: str | None = None):
        self.work = work
        self.metrics = metrics
        self.db_dsn = db_dsn
        self.executor: Executor
        if work.workers == 1:
            self._stop_flag: Any = threading.Event()
            self.executor = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix="heater",
                initializer=_init_server,
                initargs=(self._stop_flag,),
            )
        else:
            ctx = multiprocessing.get_context("spawn")  # no fork of a threaded process
            self._stop_flag = ctx.Event()
            self.executor = ProcessPoolExecutor(
                max_workers=work.workers,
                mp_context=ctx,
                initializer=_init_server,
                initargs=(self._stop_flag, ctx.Barrier(work.workers)),
            )

    async def start(self) -> None:
        """Start every server before the port opens (worker processes take a while)."""
        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(self.executor, _ready) for _ in range(self.work.workers)]
        await asyncio.gather(*jobs)

    async def submit(self, arrived: float, cpu_s: float) -> Outcome:
        """Queue one request and wait for its outcome; counts the CPU it burnt.

        Raises:
            RuntimeError: If the servers are shut down (or a worker process died).
        """
        loop = asyncio.get_running_loop()
        w = self.work
        out = await loop.run_in_executor(
            self.executor, serve, arrived, cpu_s, w.timeout_s, self.db_dsn, w.db_query
        )
        self.metrics.cpu.inc(out.cpu_s)
        return out

    def shutdown(self) -> None:
        """Stop the current burns and drop queued work (connections close at exit)."""
        self._stop_flag.set()
        self.executor.shutdown(wait=False, cancel_futures=True)


_SERVER = web.AppKey("server", Server)
_RNG = web.AppKey("rng", random.Random)


async def _work(request: web.Request) -> web.Response:
    arrived = time.monotonic()
    server = request.app[_SERVER]
    m = server.metrics
    m.in_flight.inc()
    code: int | None = None  # stays None when the handler is cancelled (no response sent)
    try:
        cpu_s = server.work.sample_ms(request.app[_RNG]) / 1000.0
        try:
            out = await server.submit(arrived, cpu_s)
        except RuntimeError as exc:  # shut down, or a worker process died
            code = 503
            return web.json_response({"code": code, "error": str(exc)}, status=code)
        code = out.code
        body: dict[str, Any] = {
            "code": code,
            "wait_ms": out.wait_s * 1e3,
            "cpu_ms": out.cpu_s * 1e3,
        }
        if out.error:
            body["error"] = out.error
        return web.json_response(body, status=code)
    finally:
        m.in_flight.dec()
        if code is not None:
            m.duration.observe(time.monotonic() - arrived)
            m.requests.labels(code=str(code)).inc()


def make_app(
    work: CpuWork,
    *,
    db_dsn: str | None = None,
    seed: int | None = None,
    metrics: HeaterMetrics | None = None,
) -> web.Application:
    """Build the heater's aiohttp application.

    Args:
        work: The work per request.
        db_dsn: PostgreSQL DSN for ``work.db_query`` (ignored without a query).
        seed: Seed of the service-time draws (``None``: from the OS).
        metrics: Series to update; a fresh registry by default.
    """
    server = Server(work, metrics or HeaterMetrics(), db_dsn=db_dsn)
    app = web.Application()
    app[_SERVER] = server
    app[_RNG] = random.Random(seed)
    app.router.add_get("/", _work)
    add_probe_routes(app, server.metrics.registry)

    async def _start(app: web.Application) -> None:
        await server.start()

    async def _stop(app: web.Application) -> None:
        server.shutdown()

    app.on_startup.append(_start)
    app.on_shutdown.append(_stop)
    return app


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="heater", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument(
        "--port",
        type=serving.port,
        default=HEATER_PORT,
        help="port (default %(default)s; 0: any free port)",
    )
    p.add_argument("--work", help=f"CpuWork as JSON (default: ${HEATER_WORK_ENV}, else defaults)")
    p.add_argument(
        "--db-dsn", help=f"PostgreSQL DSN for work.db_query (default ${HEATER_DB_DSN_ENV})"
    )
    p.add_argument("--seed", type=int, help="seed of the service-time draws")
    return p


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    return _parser().parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: parse the work, then serve until SIGTERM or SIGINT.

    Every argument is checked, and the port bound, before the server starts: a bad one
    is a usage error (exit code 2).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    raw = args.work if args.work is not None else os.environ.get(HEATER_WORK_ENV)
    try:
        work = CpuWork.model_validate_json(raw) if raw else CpuWork()
    except ValueError as exc:
        sys.exit(f"heater: bad work description: {exc}")
    db_dsn = args.db_dsn or os.environ.get(HEATER_DB_DSN_ENV) or None
    if db_dsn and work.db_query:
        try:
            importlib.import_module("psycopg")
        except ImportError:
            sys.exit(
                "heater: work.db_query needs the 'psycopg' package (pip install 'psycopg[binary]')"
            )
    try:
        sock = serving.listen_socket(args.host, args.port)
    except ValueError as exc:
        parser.error(f"--host/--port: {exc}")
    disable_created_metrics()  # no *_created series: fewer series per scrape
    # The burn thread holds the GIL between forced switches; a short switch interval keeps
    # the event loop (arrival stamps, responses, /metrics) responsive while it spins.
    sys.setswitchinterval(0.001)
    bound = sock.getsockname()[1]
    print(
        f"heater: serving on {args.host}:{bound} work={json.dumps(work.model_dump())}",
        file=sys.stderr,
        flush=True,
    )
    web.run_app(
        make_app(work, db_dsn=db_dsn, seed=args.seed),
        sock=sock,
        access_log=None,
        print=None,
        shutdown_timeout=2.0,
    )


if __name__ == "__main__":
    main()
