"""siege-engine: an open-loop HTTP load generator that follows a rate schedule.

Run it with::

    python -m infragym.apps.siege_engine --target http://127.0.0.1:8080/ \\
        --schedule '{"shape": {"kind": "constant", "rate": 40}, "duration": 60}' \\
        --metrics-port 8089

The schedule is a :class:`~infragym.apps.workload.Schedule`, from ``--schedule`` or the
``SIEGE_SCHEDULE`` environment variable; the target from ``--target`` or
``SIEGE_TARGET`` (the command line wins).

Open loop. Arrival times come from the schedule alone (:class:`ArrivalGenerator`), never
from responses: a request is sent at its time whether or not earlier ones have been
answered, and its latency is measured from the time it was *scheduled*, so a generator
that falls behind does not hide the wait. This is what real users of a web service do,
and what the digital twin's queueing model assumes. A closed-loop tool (a fixed pool of
users, each waiting for its response before the next request) slows down exactly when
the server does and under-reports the latency of an overloaded server (coordinated
omission).

Why not Locust. Locust's ``LoadTestShape`` sets a number of gevent *users* over time,
and each user waits for its response before sending again: a closed loop, so the
request rate falls when latency rises and the schedule is not what is offered. An
open-loop arrival process cannot be expressed as a user count, so this module keeps the
schedule itself (~60 lines of arrival generation) and leaves HTTP to a well-kept
library.

HTTP stack. ``asyncio`` with an ``aiohttp`` client session: one thread drives thousands
of concurrent requests with keep-alive connections, and aiohttp's C-accelerated HTTP
parser keeps the per-request cost to a few tens of microseconds, so one small CPU
generates on the order of a thousand requests per second. aiohttp is already a
dependency (the heater serves with it); threads would cap concurrency at the pool size
and gevent would add a dependency and monkey-patching.

Bounds. Sending stops at the schedule's ``duration``, at ``--duration`` or after
``--max-requests`` requests, whichever comes first; every request has the client timeout
``schedule.timeout_s``; at most ``--max-in-flight`` requests are outstanding, and an
arrival beyond that is not sent but counted as sent and failed with reason
``overflow`` (the generator refusing to queue load it cannot carry, which would turn it
closed-loop).

Metrics on ``--metrics-port`` (``/metrics``):

- ``siege_requests_sent_total``: arrivals (requests started, plus overflow).
- ``siege_requests_failed_total{reason}``: ``timeout`` (client timeout), ``connect``
  (could not connect, or the connection broke), ``http_5xx``, ``http_other`` (any other
  status >= 400), ``overflow`` (in-flight cap), ``other`` (anything else).
- ``siege_requests_completed_total``: requests answered with a status below 400.
- ``siege_request_duration_seconds``: client latency of completed requests, with the
  heater's buckets (:data:`~infragym.apps.workload.LATENCY_BUCKETS`).
- ``siege_requests_in_flight``: requests outstanding.
- ``siege_target_rate``: the scheduled rate now, requests per second.

When sending ends, the engine waits for outstanding requests, then prints one JSON line
to stdout: ``sent``, ``completed``, ``failed`` (by reason), ``failed_total``, ``codes``,
``latency_s`` (p50/p95/p99/mean/max of the raw latencies of completed requests),
``latency_samples`` and ``elapsed_s``. With ``--linger S`` it then keeps serving
``/metrics`` for S more seconds (``inf``: until SIGTERM), so a scraper sees the final
counts. ``--latency-log PATH`` writes every request as CSV ``t_sent,latency_s,ok``
(``t_sent``: scheduled send time in seconds since the start).

This module imports only the standard library, aiohttp, prometheus_client and the
sibling modules :mod:`~infragym.apps.workload` (pydantic) and
:mod:`~infragym.apps._serving`, because in a cluster it runs from a stock Python image
with just those packages installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import math
import os
import random
import signal
import sys
from typing import IO, Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

try:
    import infragym.apps._serving as serving
    from infragym.apps._serving import add_probe_routes, process_registry
    from infragym.apps.workload import (
        LATENCY_BUCKETS,
        SIEGE_METRICS_PORT,
        SIEGE_SCHEDULE_ENV,
        SIEGE_TARGET_ENV,
        Schedule,
    )
except ImportError:  # pragma: no cover - run as a plain script next to the mounted modules
    import _serving as serving  # type: ignore[no-redef]
    from _serving import add_probe_routes, process_registry  # type: ignore[no-redef]
    from workload import (  # type: ignore[no-redef]
        LATENCY_BUCKETS,
        SIEGE_METRICS_PORT,
        SIEGE_SCHEDULE_ENV,
        SIEGE_TARGET_ENV,
        Schedule,
    )

FAILURE_REASONS = ("timeout", "connect", "http_5xx", "http_other", "overflow", "other")
"""Values of the ``reason`` label of ``siege_requests_failed_total``."""

_LOOKAHEAD_S = 0.05  # arrivals are generated this far ahead of the clock
_MAX_SAMPLES = 1_000_000  # raw latencies kept for the summary (reservoir beyond this)


class ArrivalGenerator:
    """Arrival times of a :class:`Schedule`, in seconds since the start.

    The cumulative scheduled rate Λ(t) = ∫ rate is integrated on a fixed grid (the rate
    of each ``step``-long cell is its midpoint value, as in :meth:`Schedule.mean_rate`),
    and an arrival happens each time Λ has grown by a further target: an Exp(1) draw for
    ``poisson`` arrivals (the time-change construction of an inhomogeneous Poisson
    process: exponential gaps at a constant rate) or exactly 1 for ``uniform`` ones
    (even gaps). Within a cell the rate is constant, so arrival times are exact for
    constant rates and for rates that change on the grid; elsewhere the rate is
    resolved to ``step`` seconds.

    The generator is incremental (:meth:`until`), so the cost of a stretch of zero rate
    is bounded by the time asked for, and deterministic: all randomness comes from
    ``rng``.

    Args:
        schedule: The schedule; no arrival is made at or after ``schedule.duration``.
        rng: Source of the Exp(1) draws (only ``expovariate`` is used).
        step: Grid cell length in seconds.
    """

    def __init__(self, schedule: Schedule, rng: random.Random, step: float = 0.01) -> None:
        self.schedule = schedule
        self.rng = rng
        self.step = step
        self._end = math.inf if schedule.duration is None else schedule.duration
        self._cell = 0  # index of the grid cell holding self._t
        self._t = 0.0  # position up to which Λ has been integrated
        self._need = self._target()  # Λ still to accumulate before the next arrival
        self._next: float | None = None  # an arrival computed but not yet handed out

    def _target(self) -> float:
        return self.rng.expovariate(1.0) if self.schedule.arrivals == "poisson" else 1.0

    def _advance(self, limit: float) -> float | None:
        """The next arrival if it falls before ``limit``; otherwise integrate up to ``limit``."""
        h = self.step
        while True:
            cell_start = self._cell * h
            if cell_start >= self._end or cell_start >= limit:
                return None
            cell_end = min((self._cell + 1) * h, self._end)
            rate = self.schedule.rate_at(min(cell_start + h / 2, (cell_start + cell_end) / 2))
            if rate > 0 and rate * (cell_end - self._t) >= self._need:
                self._t += self._need / rate
                self._need = self._target()
                return self._t
            self._need -= max(rate, 0.0) * (cell_end - self._t)
            self._cell += 1
            self._t = cell_end

    def until(self, t_end: float) -> list[float]:
        """All arrivals not yet returned that fall before ``t_end`` seconds, in order."""
        out: list[float] = []
        while True:
            if self._next is None:
                self._next = self._advance(t_end)
                if self._next is None:
                    return out
            if self._next >= t_end:
                return out
            out.append(self._next)
            self._next = None

    @property
    def exhausted(self) -> bool:
        """True once the schedule's duration has been passed (no arrival will follow)."""
        return self._next is None and self._cell * self.step >= self._end


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of sorted values, linearly interpolated (numpy's default).

    Raises:
        ValueError: If there are no values.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def failure_reason(exc: BaseException) -> str:
    """Map a client exception to a ``reason`` label value."""
    if isinstance(exc, TimeoutError):  # also aiohttp's ServerTimeoutError family
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError):
        return "connect"
    return "other"


class SiegeMetrics:
    """The siege-engine's Prometheus series, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = process_registry(registry)
        r = self.registry
        self.sent = Counter("siege_requests_sent", "Requests the schedule sent.", registry=r)
        self.failed = Counter(
            "siege_requests_failed", "Requests that failed, by reason.", ["reason"], registry=r
        )
        for reason in FAILURE_REASONS:
            self.failed.labels(reason=reason)
        self.completed = Counter(
            "siege_requests_completed",
            "Requests answered with a status below 400.",
            registry=r,
        )
        self.duration = Histogram(
            "siege_request_duration_seconds",
            "Client latency of completed requests, from their scheduled send time.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "siege_requests_in_flight", "Requests sent and not yet finished.", registry=r
        )
        self.target_rate = Gauge(
            "siege_target_rate", "Scheduled request rate now, requests per second.", registry=r
        )


class Siege:
    """One run of the load generator.

    Args:
        target: URL to GET.
        schedule: Arrival schedule; its ``timeout_s`` is the client timeout.
        seed: Seed of the arrival times.
        duration: Stop sending after this many seconds (besides ``schedule.duration``).
        max_requests: Stop after this many arrivals.
        max_in_flight: Outstanding requests at most; further arrivals fail as ``overflow``.
        metrics: Series to update; a fresh registry by default.
        latency_log: Open text file for the per-request CSV, or ``None``.
    """

    def __init__(
        self,
        target: str,
        schedule: Schedule,
        *,
        seed: int | None = None,
        duration: float | None = None,
        max_requests: int | None = None,
        max_in_flight: int = 1000,
        metrics: SiegeMetrics | None = None,
        latency_log: IO[str] | None = None,
    ) -> None:
        self.target = target
        self.schedule = schedule
        self.arrivals = ArrivalGenerator(schedule, random.Random(seed))
        ends = [d for d in (schedule.duration, duration) if d is not None]
        self.end = min(ends) if ends else math.inf
        self.max_requests = max_requests
        self.max_in_flight = max_in_flight
        self.metrics = metrics or SiegeMetrics()
        self._log = csv.writer(latency_log, lineterminator="\n") if latency_log else None
        if self._log is not None:
            self._log.writerow(("t_sent", "latency_s", "ok"))
        self._sample_rng = random.Random(None if seed is None else seed + 1)
        self.sent = 0
        self.completed = 0
        self.failed = dict.fromkeys(FAILURE_REASONS, 0)
        self.codes: dict[str, int] = {}
        self.latencies: list[float] = []
        self._n_ok = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._start = 0.0
        self.elapsed = 0.0

    def _fail(self, reason: str) -> None:
        self.failed[reason] += 1
        self.metrics.failed.labels(reason=reason).inc()

    def _record_ok(self, latency: float) -> None:
        self.completed += 1
        self.metrics.completed.inc()
        self.metrics.duration.observe(latency)
        self._n_ok += 1
        if len(self.latencies) < _MAX_SAMPLES:
            self.latencies.append(latency)
        else:  # reservoir sampling keeps a uniform sample of all latencies
            j = self._sample_rng.randrange(self._n_ok)
            if j < _MAX_SAMPLES:
                self.latencies[j] = latency

    async def _request(self, session: aiohttp.ClientSession, t_sched: float) -> None:
        loop = asyncio.get_running_loop()
        ok = False
        try:
            async with session.get(self.target) as resp:
                await resp.read()
                code = resp.status
            latency = loop.time() - (self._start + t_sched)
            self.codes[str(code)] = self.codes.get(str(code), 0) + 1
            if code < 400:
                ok = True
                self._record_ok(latency)
            else:
                self._fail("http_5xx" if code >= 500 else "http_other")
        except asyncio.CancelledError:
            latency = loop.time() - (self._start + t_sched)
            self._fail("other")  # abandoned at shutdown
            raise
        except Exception as exc:
            latency = loop.time() - (self._start + t_sched)
            self._fail(failure_reason(exc))
        finally:
            self.metrics.in_flight.dec()
        if self._log is not None:
            self._log.writerow((repr(t_sched), repr(latency), int(ok)))

    def _send(self, session: aiohttp.ClientSession, t_sched: float) -> None:
        self.sent += 1
        self.metrics.sent.inc()
        if len(self._tasks) >= self.max_in_flight:
            self._fail("overflow")
            if self._log is not None:
                self._log.writerow((repr(t_sched), "0.0", 0))
            return
        self.metrics.in_flight.inc()
        task = asyncio.create_task(self._request(session, t_sched))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_all(self, session: aiohttp.ClientSession) -> None:
        loop = asyncio.get_running_loop()
        cursor = 0.0  # arrivals before this have been generated
        while cursor < self.end and not self.arrivals.exhausted:
            now = loop.time() - self._start
            self.metrics.target_rate.set(self.schedule.rate_at(now) if now < self.end else 0.0)
            horizon = min(max(cursor, now) + _LOOKAHEAD_S, self.end)
            for t in self.arrivals.until(horizon):
                delay = t - (loop.time() - self._start)
                if delay > 0:
                    await asyncio.sleep(delay)
                self._send(session, t)
                if self.max_requests is not None and self.sent >= self.max_requests:
                    return
            cursor = horizon
            delay = cursor - (loop.time() - self._start)
            if delay > 0:
                await asyncio.sleep(delay)

    async def run(self, stop: asyncio.Event | None = None) -> dict[str, Any]:
        """Send the schedule's requests, wait for the outstanding ones, return the summary.

        Args:
            stop: When set, sending stops early (outstanding requests are still awaited).
        """
        loop = asyncio.get_running_loop()
        timeout = aiohttp.ClientTimeout(total=self.schedule.timeout_s)
        connector = aiohttp.TCPConnector(limit=self.max_in_flight)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self._start = loop.time()
            sender = asyncio.create_task(self._send_all(session))
            waiters = [sender]
            if stop is not None:
                waiters.append(asyncio.create_task(stop.wait()))
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                if not w.done():
                    w.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            self.metrics.target_rate.set(0.0)
            if self._tasks:  # each request ends by its client timeout; allow a margin
                _, pending = await asyncio.wait(self._tasks, timeout=self.schedule.timeout_s + 5)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            self.elapsed = loop.time() - self._start
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """Counts and client-latency percentiles of the run so far (the JSON line printed)."""
        lat = sorted(self.latencies)
        stats = (
            {
                "p50": percentile(lat, 0.50),
                "p95": percentile(lat, 0.95),
                "p99": percentile(lat, 0.99),
                "mean": sum(lat) / len(lat),
                "max": lat[-1],
            }
            if lat
            else None
        )
        return {
            "sent": self.sent,
            "completed": self.completed,
            "failed": dict(self.failed),
            "failed_total": sum(self.failed.values()),
            "codes": dict(sorted(self.codes.items())),
            "latency_s": stats,
            "latency_samples": len(lat),
            "elapsed_s": round(self.elapsed, 6),
        }


async def _amain(
    args: argparse.Namespace,
    schedule: Schedule,
    target: str,
    metrics_sock: Any = None,
    log_file: IO[str] | None = None,
) -> dict[str, Any]:
    """Run the siege; ``metrics_sock`` (bound) serves /metrics, ``log_file`` (open) is
    the latency log; both are closed on return."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics = SiegeMetrics()
    runner: web.AppRunner | None = None
    if metrics_sock is not None:
        app = web.Application()
        add_probe_routes(app, metrics.registry)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, metrics_sock).start()
    try:
        siege = Siege(
            target,
            schedule,
            seed=args.seed,
            duration=args.duration,
            max_requests=args.max_requests,
            max_in_flight=args.max_in_flight,
            metrics=metrics,
            latency_log=log_file,
        )
        summary = await siege.run(stop)
        if log_file is not None:
            log_file.close()
            log_file = None
        print(json.dumps(summary), flush=True)
        if args.linger > 0 and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                timeout = None if math.isinf(args.linger) else args.linger
                await asyncio.wait_for(stop.wait(), timeout)
        return summary
    finally:
        if log_file is not None:
            log_file.close()
        if runner is not None:
            await runner.cleanup()
        if metrics_sock is not None:
            metrics_sock.close()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="siege_engine", description=__doc__.splitlines()[0])
    p.add_argument(
        "--target", type=serving.http_url, help=f"URL to load (default ${SIEGE_TARGET_ENV})"
    )
    p.add_argument("--schedule", help=f"Schedule as JSON (default ${SIEGE_SCHEDULE_ENV})")
    p.add_argument(
        "--metrics-port",
        type=serving.port,
        default=SIEGE_METRICS_PORT,
        help="port of /metrics; 0 disables it (default %(default)s)",
    )
    p.add_argument("--metrics-host", default="0.0.0.0", help="address of /metrics")
    p.add_argument(
        "--duration", type=serving.positive_seconds, help="stop sending after this many seconds"
    )
    p.add_argument(
        "--max-requests", type=serving.positive_int, help="stop after this many requests"
    )
    p.add_argument(
        "--max-in-flight",
        type=serving.positive_int,
        default=1000,
        help="outstanding requests cap",
    )
    p.add_argument("--seed", type=int, help="seed of the arrival times")
    p.add_argument("--latency-log", help="write per-request CSV t_sent,latency_s,ok here")
    p.add_argument(
        "--linger",
        type=serving.non_negative_seconds,
        default=0.0,
        help="keep serving /metrics this many seconds after the run ('inf': until SIGTERM)",
    )
    return p


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    return _parser().parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: run the schedule, print the summary line, exit.

    Every argument is checked, the metrics port bound and the latency log opened before
    the run starts: a bad one is a usage error (exit code 2).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    target = args.target or os.environ.get(SIEGE_TARGET_ENV)
    raw = args.schedule or os.environ.get(SIEGE_SCHEDULE_ENV)
    if not target:
        sys.exit(f"siege_engine: no target (--target or ${SIEGE_TARGET_ENV})")
    if not raw:
        sys.exit(f"siege_engine: no schedule (--schedule or ${SIEGE_SCHEDULE_ENV})")
    try:
        serving.http_url(target)  # from the environment, when not on the command line
    except argparse.ArgumentTypeError as exc:
        parser.error(f"target: {exc}")
    try:
        schedule = Schedule.model_validate_json(raw)
    except ValueError as exc:
        sys.exit(f"siege_engine: bad schedule: {exc}")
    if args.duration is None and args.max_requests is None and schedule.duration is None:
        print("siege_engine: no duration or request cap: running until stopped", file=sys.stderr)
    metrics_sock = None
    if args.metrics_port:
        try:
            metrics_sock = serving.listen_socket(args.metrics_host, args.metrics_port)
        except ValueError as exc:
            parser.error(f"--metrics-host/--metrics-port: {exc}")
    log_file = None
    if args.latency_log:
        try:
            log_file = open(args.latency_log, "w", newline="")  # noqa: SIM115  (closed by _amain)
        except OSError as exc:
            if metrics_sock is not None:
                metrics_sock.close()
            parser.error(f"--latency-log: cannot write {args.latency_log!r}: {exc.strerror}")
    disable_created_metrics()  # no *_created series: fewer series per scrape
    asyncio.run(_amain(args, schedule, target, metrics_sock, log_file))


if __name__ == "__main__":
    main()
