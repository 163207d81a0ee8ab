"""Observations from a real Prometheus server: the named metrics of :mod:`infragym.metrics`.

:class:`PrometheusSource` runs each metric's PromQL through prometheus-api-client's
``PrometheusConnect`` and turns the answer into plain floats, so the pulumi backend can
observe exactly what the digital twin computes.

Missing-series policy (what a value means when Prometheus has nothing to say):

- **Rates and counts** (``request_rate``, ``offered_rate``, ``replicas_*``,
  ``nodes_ready``, ``pods_pending``): a series that is absent because nothing happened
  yet reads as ``0.0``. Their PromQL ends in ``or vector(0)``, so Prometheus itself
  answers 0 and range queries plot 0 rather than a gap; they are never *missing*.
- **Latency quantiles** with no completed request in the window, and **ratios** whose
  denominator is zero (``error_ratio`` with nothing finished, ``cpu_utilisation_*`` with
  no Ready heater pod): the value is ``NaN`` and the name is listed in ``missing``. The
  env puts that list in ``info`` so an agent or a reward can tell "undefined" from 0.

In general: an empty answer or a NaN sample gives ``NaN`` and a ``missing`` entry. A
query that returns more than one series is a bug in the metric's PromQL and raises
:class:`~infragym.errors.QueryError`.

Errors are mapped, never swallowed:

- connection errors, timeouts and ``502/503/504`` answers (a proxy, or Prometheus still
  starting) are retried ``retries`` times with exponential backoff
  (``backoff * 2**attempt`` seconds), then raise
  :class:`~infragym.errors.PrometheusUnavailableError` naming the URL (without any user
  info; request headers are never included);
- any other non-200 answer raises :class:`~infragym.errors.QueryError` carrying
  Prometheus's own ``error`` message (for example a PromQL parse error).

prometheus-api-client (and ``requests``) are imported in the constructor, so
``import infragym`` stays fast.
"""

from __future__ import annotations

import ast
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from infragym.errors import ConfigError, PrometheusUnavailableError, QueryError
from infragym.metrics import METRICS, Metric, format_window

_T = TypeVar("_T")

_RETRY_STATUS = frozenset({502, 503, 504})
"""HTTP statuses that mean "not available now" rather than "bad query"."""

_STATUS_RE = re.compile(r"HTTP Status Code (\d+) \((.*)\)\s*$", re.DOTALL)

Timestamp = float | datetime
"""A point in time: Unix seconds or a datetime (naive datetimes are taken as UTC)."""


def redact_url(url: str) -> str:
    """The URL without user info or query string, safe to put in an error message."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _unix(t: Timestamp) -> float:
    if isinstance(t, datetime):
        return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
    return float(t)


def _datetime(t: Timestamp) -> datetime:
    return datetime.fromtimestamp(_unix(t), tz=UTC)


def _status_and_message(exc: Exception) -> tuple[int | None, str]:
    """Prometheus's HTTP status and own error message from a PrometheusApiClientException.

    The client formats the error as ``HTTP Status Code 400 (b'{"status":"error",...}')``;
    the body is Prometheus's JSON error envelope, whose ``error`` field is the message.
    """
    text = str(exc)
    m = _STATUS_RE.match(text)
    if m is None:
        return None, text
    status = int(m.group(1))
    body: Any = m.group(2)
    try:
        body = ast.literal_eval(body)  # the repr of the response bytes
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        envelope = json.loads(body)
        kind = envelope.get("errorType")
        message = envelope.get("error") or body
        return status, f"{kind}: {message}" if kind else str(message)
    except (ValueError, SyntaxError, AttributeError):
        return status, str(body).strip()


def _short_reason(exc: BaseException) -> str:
    """A one-line cause for a connection failure (``[Errno 111] Connection refused``)."""
    m = re.search(r"\[Errno -?\d+\][^'\")]*", str(exc))
    return m.group(0).strip() if m else type(exc).__name__


class PrometheusSource:
    """Named metrics measured by a Prometheus server, one step window at a time.

    Args:
        url: Base URL of the Prometheus HTTP API, for example ``http://127.0.0.1:9090``.
        window_seconds: Length of one environment step; every rate and quantile covers
            this window, ending at the time of the query.
        retries: Extra attempts after a connection error or a 502/503/504 answer.
        backoff: Seconds before the first retry; doubled before each further one.
        timeout: Seconds allowed for one HTTP request.
        app: Name of the heater Deployment and container (``{app}`` in the PromQL).
        headers: HTTP headers for every request (for example ``Authorization``); they
            are sent but never logged or put in an error.
        metrics: The named metrics to draw from (default :data:`infragym.metrics.METRICS`).
        sleep: Function used to wait between retries (tests replace it).
        session: A ``requests.Session`` to use (TLS verification, client certificates and
            auth headers for reaching Prometheus through the Kubernetes API server).

    Raises:
        ConfigError: If ``window_seconds``, ``retries``, ``backoff`` or ``timeout`` is
            out of range.
    """

    def __init__(
        self,
        url: str,
        window_seconds: float,
        *,
        retries: int = 3,
        backoff: float = 0.5,
        timeout: float = 10.0,
        app: str = "heater",
        headers: Mapping[str, str] | None = None,
        metrics: Mapping[str, Metric] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        session: Any = None,
    ) -> None:
        if retries < 0 or backoff < 0 or timeout <= 0:
            raise ConfigError(
                f"retries and backoff must be >= 0 and timeout > 0 "
                f"(got retries={retries}, backoff={backoff}, timeout={timeout})"
            )
        try:
            self.window = format_window(window_seconds)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        # Heavy imports here, not at module level: `import infragym` must stay fast.
        import requests
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.url = url.rstrip("/")
        self.window_seconds = float(window_seconds)
        self.retries = retries
        self.backoff = backoff
        self.app = app
        self.metrics = METRICS if metrics is None else metrics
        self._sleep = sleep
        self._requests = requests
        # Retries are done here (with our backoff and error mapping), not by urllib3.
        self._client = PrometheusConnect(
            url=self.url,
            headers=dict(headers) if headers else None,
            retry=Retry(total=0, raise_on_status=False),
            timeout=timeout,
            session=session,
        )

    # ------------------------------------------------------------------ queries

    def measures(self, name: str) -> bool:
        """Whether this source answers metric ``name`` (it has PromQL).

        ``nodes_booting`` and ``next_node_ready_s`` have none: a droplet is invisible to
        Kubernetes until it registers, so the pulumi backend works them out itself.
        """
        metric = self.metrics.get(name)
        return metric is not None and metric.promql is not None

    def promql(self, name: str) -> str:
        """The PromQL run for metric ``name`` with this source's window and app.

        Raises:
            ConfigError: If the metric is unknown or not measured by Prometheus.
        """
        metric = self.metrics.get(name)
        if metric is None:
            from infragym.catalog import unknown_choice

            raise ConfigError(unknown_choice("metric", name, self.metrics))
        if metric.promql is None:
            raise ConfigError(
                f"metric {name!r} is not measured by Prometheus (it comes from the "
                "resource graph); do not ask a PrometheusSource for it"
            )
        return metric.query(window=self.window, app=self.app)

    def instant(
        self, names: Iterable[str], at: Timestamp | None = None
    ) -> tuple[dict[str, float], list[str]]:
        """Evaluate named metrics over the step window ending at ``at``.

        Args:
            names: Metric names (keys of :data:`infragym.metrics.METRICS`).
            at: End of the window (Unix seconds or datetime); ``None`` means now, as
                Prometheus's clock sees it.

        Returns:
            ``(values, missing)``: a float per name, and the names whose value is
            undefined (NaN) under the module's missing-series policy, in order.

        Raises:
            ConfigError: For an unknown metric or one Prometheus does not measure.
            PrometheusUnavailableError: If Prometheus cannot be reached after retries.
            QueryError: If Prometheus rejects a query.
        """
        params = {} if at is None else {"time": repr(_unix(at))}
        values: dict[str, float] = {}
        missing: list[str] = []
        for name in names:
            query = self.promql(name)
            result = self._call(self._client.custom_query, query=query, params=params)
            value = self._single_value(name, result)
            values[name] = value
            if math.isnan(value):
                missing.append(name)
        return values, missing

    def range(
        self, names: Iterable[str], start: Timestamp, end: Timestamp, step: float
    ) -> dict[str, list[tuple[float, float]]]:
        """Evaluate named metrics every ``step`` seconds from ``start`` to ``end``, for plots.

        Each point is the metric over the step window ending at that point. Points where
        a quantile or ratio is undefined are NaN; where Prometheus has no point at all
        (for example before any request completed) there is none in the list. Prometheus
        aligns ``start`` and ``end`` to whole seconds.

        Args:
            names: Metric names.
            start: First evaluation time (Unix seconds or datetime).
            end: Last evaluation time.
            step: Seconds between points (> 0).

        Returns:
            ``{name: [(unix_seconds, value), ...]}`` in time order.

        Raises:
            ConfigError: For an unknown metric, one Prometheus does not measure, or a
                non-positive step.
            PrometheusUnavailableError: If Prometheus cannot be reached after retries.
            QueryError: If Prometheus rejects a query.
        """
        if not step > 0:
            raise ConfigError(f"range step must be > 0 seconds, got {step!r}")
        out: dict[str, list[tuple[float, float]]] = {}
        for name in names:
            query = self.promql(name)
            result = self._call(
                self._client.custom_query_range,
                query=query,
                start_time=_datetime(start),
                end_time=_datetime(end),
                step=repr(float(step)),
            )
            if len(result) > 1:
                raise QueryError(self._many_series(name, result))
            points = result[0]["values"] if result else []
            out[name] = [(float(t), float(v)) for t, v in points]
        return out

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> PrometheusSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _single_value(self, name: str, result: list[Any]) -> float:
        if not result:
            return math.nan
        if len(result) == 2 and not isinstance(result[0], dict):  # a scalar: [t, "v"]
            return float(result[1])
        if len(result) > 1:
            raise QueryError(self._many_series(name, result))
        return float(result[0]["value"][1])  # Prometheus sends "NaN", "+Inf" as strings

    def _many_series(self, name: str, result: list[dict[str, Any]]) -> str:
        labels = [r.get("metric", {}) for r in result[:3]]
        return (
            f"metric {name!r} returned {len(result)} series from {redact_url(self.url)}, "
            f"expected one (its PromQL must aggregate them); first labels: {labels}"
        )

    def _call(self, fn: Callable[..., _T], **kwargs: Any) -> _T:
        """Run one client call, retrying while Prometheus is unreachable, mapping errors."""
        from prometheus_api_client import PrometheusApiClientException

        transient = (self._requests.ConnectionError, self._requests.Timeout)
        attempts = self.retries + 1
        reason = ""
        for attempt in range(attempts):
            if attempt:
                self._sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return fn(**kwargs)
            except transient as exc:
                reason = _short_reason(exc)
            except PrometheusApiClientException as exc:
                status, message = _status_and_message(exc)
                if status in _RETRY_STATUS:
                    reason = f"HTTP {status}: {message[:200]}"
                    continue
                where = redact_url(self.url)
                raise QueryError(
                    f"Prometheus at {where} rejected {kwargs.get('query')!r} "
                    f"(HTTP {status}): {message}"
                ) from exc
            except self._requests.RequestException as exc:
                # Not a connection problem (bad URL scheme, redirect loop, ...): no retry.
                raise PrometheusUnavailableError(
                    f"Prometheus at {redact_url(self.url)} could not be queried: "
                    f"{type(exc).__name__}"
                ) from None
        raise PrometheusUnavailableError(
            f"Prometheus at {redact_url(self.url)} is unreachable after {attempts} "
            f"attempt{'s' if attempts > 1 else ''}: {reason}"
        )
