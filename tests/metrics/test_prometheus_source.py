"""PrometheusSource faults against a real Prometheus: down, bad query, missing series.

Each test bounds its retries and waits; together they take about 10 s.
"""

from __future__ import annotations

import http.server
import json
import math
import threading
import time
from collections.abc import Iterator

import pytest

from infragym.errors import ConfigError, PrometheusUnavailableError, QueryError
from infragym.metrics import METRICS, Metric, format_window
from infragym.prometheus import PrometheusSource, redact_url
from tests.procs import free_port

pytestmark = pytest.mark.prometheus

PROMQL_NAMES = [n for n, m in METRICS.items() if m.promql is not None]
ZERO_WHEN_ABSENT = {
    "request_rate",
    "offered_rate",
    "replicas_desired",
    "replicas_ready",
    "nodes_ready",
    "pods_pending",
    "replicas_starting",
}
"""Rates and counts: absent series read as 0.0 (nothing happened yet)."""
NAN_WHEN_UNDEFINED = {
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "error_ratio",
    "cpu_utilisation_requests",
    "cpu_utilisation_limits",
}
"""Quantiles and ratios: NaN and listed as missing when there is nothing to measure."""


def test_policy_sets_cover_every_promql_metric() -> None:
    assert set(PROMQL_NAMES) == ZERO_WHEN_ABSENT | NAN_WHEN_UNDEFINED
    assert not ZERO_WHEN_ABSENT & NAN_WHEN_UNDEFINED


def test_format_window() -> None:
    assert format_window(30) == "30s"
    assert format_window(1.5) == "1500ms"
    assert format_window(0.25) == "250ms"
    with pytest.raises(ValueError):
        format_window(0)
    with pytest.raises(ValueError):
        format_window(math.nan)


def test_unreachable_prometheus_raises_after_bounded_retries() -> None:
    port = free_port()  # nothing listens there
    slept: list[float] = []
    src = PrometheusSource(
        f"http://user:hunter2@127.0.0.1:{port}/",
        window_seconds=10,
        retries=2,
        backoff=0.05,
        timeout=2.0,
        headers={"Authorization": "Bearer s3cr3t-token"},
        sleep=slept.append,
    )
    t0 = time.monotonic()
    with pytest.raises(PrometheusUnavailableError) as info:
        src.instant(["request_rate"])
    assert time.monotonic() - t0 < 5.0
    assert slept == [0.05, 0.1]  # exponential backoff between the 3 attempts
    msg = str(info.value)
    assert f"http://127.0.0.1:{port}" in msg
    assert "3 attempts" in msg
    assert "Connection refused" in msg
    text = msg + repr(info.value.__cause__) + repr(info.value.__context__)
    assert "hunter2" not in text and "s3cr3t" not in text
    src.close()


def test_unreachable_really_sleeps_with_backoff() -> None:
    src = PrometheusSource(
        f"http://127.0.0.1:{free_port()}", window_seconds=5, retries=2, backoff=0.1
    )
    t0 = time.monotonic()
    with pytest.raises(PrometheusUnavailableError):
        src.range(["offered_rate"], time.time() - 10, time.time(), 1)
    assert 0.3 <= time.monotonic() - t0 < 3.0  # 0.1 + 0.2 s of backoff


class _FakeApi(http.server.BaseHTTPRequestHandler):
    """Answers every query with one canned status and Prometheus-style error envelope."""

    status = 503
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        kind = {503: "unavailable", 422: "execution"}.get(self.status, "internal")
        body = json.dumps({"status": "error", "errorType": kind, "error": f"canned {kind}"})
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_api() -> Iterator[tuple[str, type[_FakeApi]]]:
    """A stand-in Prometheus API on 127.0.0.1 answering with a chosen error status."""
    handler = type("Handler", (_FakeApi,), {"hits": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_503_is_retried_then_unavailable(fake_api) -> None:
    url, handler = fake_api
    handler.status = 503  # what Prometheus answers while it is still starting
    slept: list[float] = []
    with (
        PrometheusSource(url, 10, retries=2, backoff=0.01, sleep=slept.append) as src,
        pytest.raises(PrometheusUnavailableError, match="HTTP 503: unavailable"),
    ):
        src.instant(["offered_rate"])
    assert handler.hits == 3 and slept == [0.01, 0.02]


def test_422_is_a_query_error_at_once(fake_api) -> None:
    url, handler = fake_api
    handler.status = 422  # a query that parsed but failed to execute
    with (
        PrometheusSource(url, 10, retries=2, backoff=0.01) as src,
        pytest.raises(QueryError, match=r"HTTP 422.*execution: canned execution"),
    ):
        src.instant(["offered_rate"])
    assert handler.hits == 1


def test_redact_url() -> None:
    assert redact_url("https://u:p@prom.example:9090/x?token=1") == "https://prom.example:9090/x"
    assert redact_url("http://[::1]:9090") == "http://[::1]:9090"


def test_config_errors_before_any_query() -> None:
    with pytest.raises(ConfigError):
        PrometheusSource("http://127.0.0.1:1", window_seconds=0)
    src = PrometheusSource("http://127.0.0.1:1", window_seconds=30, retries=0)
    with pytest.raises(ConfigError, match="no_such_metric"):
        src.instant(["no_such_metric"])
    with pytest.raises(ConfigError, match="cost_hourly"):
        src.instant(["cost_hourly"])
    with pytest.raises(ConfigError):
        src.range(["offered_rate"], 0, 1, 0)


def test_bad_query_raises_query_error_with_prometheus_message(start_prometheus) -> None:
    prom = start_prometheus({})
    broken = {
        "broken": Metric("broken", "x", "Unbalanced parenthesis.", "sum(rate(up[{window}])", 1),
        "bad_fn": Metric("bad_fn", "x", "Unknown function.", "no_such_fn(up)", 1),
    }
    with PrometheusSource(prom.url, 10, retries=0, metrics=broken) as src:
        with pytest.raises(QueryError) as info:
            src.instant(["broken"])
        msg = str(info.value)
        assert "HTTP 400" in msg and "bad_data" in msg and "parse error" in msg, msg
        assert prom.url in msg
        with pytest.raises(QueryError, match="unknown function with name"):
            src.range(["bad_fn"], time.time() - 5, time.time(), 1)


def test_missing_series_policy_with_no_series_at_all(start_prometheus) -> None:
    prom = start_prometheus({})  # scrapes nothing: no series exist
    with PrometheusSource(prom.url, 10, retries=0) as src:
        values, missing = src.instant(PROMQL_NAMES)
        ranges = src.range(PROMQL_NAMES, time.time() - 4, time.time(), 1)
    for name in ZERO_WHEN_ABSENT:
        assert values[name] == 0.0, name
        assert len(ranges[name]) >= 4 and all(v == 0.0 for _, v in ranges[name]), name
    for name in NAN_WHEN_UNDEFINED:
        assert math.isnan(values[name]), name
        assert ranges[name] == [], name
    assert missing == [n for n in PROMQL_NAMES if n in NAN_WHEN_UNDEFINED]


SIEGE_IDLE = (
    "# TYPE siege_requests_sent_total counter\nsiege_requests_sent_total 0\n"
    "# TYPE siege_requests_completed_total counter\nsiege_requests_completed_total 0\n"
    "# TYPE siege_requests_failed_total counter\n"
    'siege_requests_failed_total{reason="timeout"} 0\n'
    "# TYPE siege_request_duration_seconds histogram\n"
    'siege_request_duration_seconds_bucket{le="0.1"} 0\n'
    'siege_request_duration_seconds_bucket{le="+Inf"} 0\n'
    "siege_request_duration_seconds_sum 0\nsiege_request_duration_seconds_count 0\n"
    "# TYPE heater_requests_total counter\n"
    'heater_requests_total{code="200"} 0\n'
)
"""Series a siege-engine and heater expose before any request was sent."""


@pytest.fixture(scope="module")
def scraped_prom(start_prometheus_module, serve_metrics_module):
    """One Prometheus for the tests below: an idle siege/heater and two copies of ``x``."""
    idle = serve_metrics_module({"/metrics": lambda: SIEGE_IDLE})
    a = serve_metrics_module({"/metrics": lambda: "x 1\n"})
    b = serve_metrics_module({"/metrics": lambda: "x 2\n"})
    prom = start_prometheus_module(
        {"idle": f"{idle}/metrics", "a": f"{a}/metrics", "b": f"{b}/metrics"}
    )
    prom.wait_targets_up(3)
    time.sleep(2.5)  # at least two scrapes of each, so rate() has something to work on
    return prom


def test_more_than_one_series_is_a_query_error(scraped_prom) -> None:
    unaggregated = {"x": Metric("x", "x", "Two series.", "x", 1)}
    with (
        PrometheusSource(scraped_prom.url, 10, retries=0, metrics=unaggregated) as src,
        pytest.raises(QueryError, match="returned 2 series"),
    ):
        src.instant(["x"])


def test_missing_series_policy_with_idle_series(scraped_prom) -> None:
    """Series exist but nothing was sent: rates 0.0; quantiles and error ratio missing."""
    names = ["offered_rate", "request_rate", "error_ratio", "latency_p50", "latency_p99"]
    with PrometheusSource(scraped_prom.url, 3, retries=0) as src:
        values, missing = src.instant(names)
    assert values["offered_rate"] == 0.0 and values["request_rate"] == 0.0
    assert math.isnan(values["error_ratio"])
    assert math.isnan(values["latency_p50"]) and math.isnan(values["latency_p99"])
    assert missing == ["error_ratio", "latency_p50", "latency_p99"]
