"""End to end on loopback: the real heater under real siege-engine load, scraped by real
Prometheus, observed through :class:`~infragym.prometheus.PrometheusSource`.

The run (about 30 s): Poisson arrivals following ``Step(rates=[20, 60], step_seconds=12)``
for 24 s; the heater burns 5 ms of CPU per request (exponential) and answers 503 to a
request that waited more than 10 ms for the worker, so some requests fail and the error
ratio is not trivially 0. Prometheus scrapes both apps every second.

Ground truth is the client's own record: the siege-engine's per-request latency log
(``t_sent, latency_s, ok``, in seconds since its start) and its exit summary. The log's
clock is mapped onto Prometheus's by matching the scraped ``siege_requests_sent_total``
samples to the sorted send times (accurate to a fraction of an inter-arrival gap).

Tolerances, and why:

- **Rates** (``offered_rate``, ``request_rate``) over a 10 s window, against the number of
  requests the log puts in that window: 10 %. ``rate()`` measures between the first and
  last scrape in the window and extrapolates to its edges, so it misses the Poisson
  noise of up to one scrape interval of edges: sd ~ sqrt(1 s / rate) / 10 s, 2.2 % at
  20 req/s; 10 % is 4.5 sd, and also covers a late scrape that makes Prometheus
  extrapolate only half an interval (<= 5 %).
- **Rates against the schedule** (20 and 60 req/s): 4 sd of a Poisson count over the
  window, 4 * sqrt(rate / 10 s) req/s.
- **Whole-run counts** (rate x window) against the summary: ``rate()`` extrapolates the
  window's mean slope over the gap (up to 1.1 scrape intervals) between each window edge
  and its nearest sample, even where the counter was flat (after the run), so the count
  may be off by 2 x 1.1 intervals of the mean rate: a relative tolerance of
  2.2 s / window (~8 % for the ~28 s window). Requests sent before the siege-engine's
  first scrape are recovered by Prometheus's extrapolation to zero.
- **Error ratio**: 0.02 absolute, per window against the very requests the counters
  counted (those between the window's first and last scrape: the client logs each
  request as it counts it, so they are rows of its log, in order); the ratio's two rates
  share their scrapes, so only ``rate()``'s extrapolation can differ. Over the whole run
  against the summary.
- **Latency quantiles**: computed from the histogram's buckets, whose bounds are at most
  4/3 apart (``LATENCY_BUCKETS``); ``histogram_quantile`` interpolates inside the bucket
  holding the quantile, so the estimate and the true value are within one bucket step:
  3/4 <= estimate / truth <= 4/3. Per window they are compared on the very requests the
  histogram counted (those finishing between the window's first and last siege scrape),
  so sampling noise in the tail does not enter; over the whole run against the
  summary's p50/p95/p99.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

from infragym.apps.workload import CpuWork, Schedule, Step
from infragym.prometheus import PrometheusSource
from tests.metrics.conftest import SCRAPE_INTERVAL_S, PrometheusServer
from tests.procs import free_port, run_app, stop_process, wait_stdout_line

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(180)]

STEP_S = 12.0
RATES = (20.0, 60.0)
SCHEDULE = Schedule(
    shape=Step(rates=list(RATES), step_seconds=STEP_S), duration=2 * STEP_S, timeout_s=5.0
)
WORK = CpuWork(mean_ms=5.0, distribution="exponential", timeout_s=0.01)
WINDOW_S = 10.0
SCRAPED_TIMEOUT_S = 30.0  # bound on waiting for Prometheus to scrape the final counts

RATE_TOL = 0.10
ERROR_RATIO_TOL = 0.02
BUCKET_STEP = 4 / 3
QUANTILES = {"latency_p50": 0.50, "latency_p95": 0.95, "latency_p99": 0.99}


@dataclass
class Request:
    """One row of the siege-engine's latency log, on Prometheus's clock."""

    sent: float
    finished: float
    latency: float
    ok: bool


@dataclass
class Run:
    """What the loopback run left behind: Prometheus with its data, and the client's record."""

    prom: PrometheusServer
    summary: dict
    requests: list[Request]
    start: float  # wall time of the siege-engine's t = 0, on Prometheus's clock
    calibration_spread: float


def raw_samples(prom: PrometheusServer, selector: str, at: float, seconds: float) -> list:
    """The scraped samples ``(t, value)`` of one series in ``[at - seconds, at]``."""
    rng = f"[{round(seconds * 1000)}ms]"
    q = urllib.parse.urlencode({"query": f"{selector}{rng}", "time": repr(at)})
    result = prom.api(f"query?{q}")["result"]
    assert len(result) == 1, f"{selector}: {result}"
    return [(float(t), float(v)) for t, v in result[0]["values"]]


def _finished_counts(prom: PrometheusServer, at: float) -> list[tuple[float, int]]:
    """``(t, completed + failed)`` of each siege-engine scrape in ``[at - WINDOW_S, at]``."""
    rng = f"[{round(WINDOW_S * 1000)}ms]"
    selector = '{__name__=~"siege_requests_(completed|failed)_total"}'
    q = urllib.parse.urlencode({"query": f"{selector}{rng}", "time": repr(at)})
    totals: dict[float, float] = {}
    for series in prom.api(f"query?{q}")["result"]:
        for t, v in series["values"]:
            totals[float(t)] = totals.get(float(t), 0.0) + float(v)
    return [(t, int(v)) for t, v in sorted(totals.items())]


def quantile(values: list[float], q: float) -> float:
    """Linearly interpolated quantile (numpy's default, as the siege-engine's summary)."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@pytest.fixture(scope="module")
def run(start_prometheus_module, tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp: Path = tmp_path_factory.mktemp("loopback")
    heater_port, siege_port = free_port(), free_port()
    # Prometheus first: its first scrape comes ~5 s after start, while the apps start.
    prom = start_prometheus_module(
        {
            "heater": f"http://127.0.0.1:{heater_port}/metrics",
            "siege-engine": f"http://127.0.0.1:{siege_port}/metrics",
        }
    )
    heater_args = ["-m", "infragym.apps.heater", "--host", "127.0.0.1"]
    heater_args += ["--port", str(heater_port), "--work", WORK.model_dump_json(), "--seed", "1"]
    log_path = tmp / "latency.csv"
    siege_args = [
        "-m",
        "infragym.apps.siege_engine",
        "--target",
        f"http://127.0.0.1:{heater_port}/",
        "--schedule",
        SCHEDULE.model_dump_json(),
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        str(siege_port),
        "--seed",
        "7",
        "--latency-log",
        str(log_path),
        "--linger",
        "inf",  # serves /metrics until stopped: stopped once its final counts are scraped
    ]
    with run_app(heater_args, ready_url=f"http://127.0.0.1:{heater_port}/healthz") as heater:
        prom.wait_targets_up(1, timeout=20)  # scrape loops running: siege is seen from its start
        launched = time.time()
        with run_app(siege_args) as siege:
            # Bounds, not expectations: a loaded machine is slow to start the programs.
            line = wait_stdout_line(siege, "{", timeout=2 * STEP_S + SCHEDULE.timeout_s + 60)
            summary = json.loads(line)
            _wait_final_counts_scraped(prom, summary)
            assert stop_process(siege, timeout=10) == 0, siege.describe()
        assert heater.poll() is None, heater.describe()

    with log_path.open() as f:
        rows = [
            (float(r["t_sent"]), float(r["latency_s"]), r["ok"] == "1") for r in csv.DictReader(f)
        ]
    assert len(rows) == summary["sent"]

    # Map the log's clock onto Prometheus's: the n-th scraped count falls between the
    # n-th and (n+1)-th send times.
    sends = sorted(r[0] for r in rows)
    end = time.time()
    samples = raw_samples(prom, "siege_requests_sent_total", end, end - launched + 5)
    offsets = [
        t - (sends[int(v) - 1] + sends[int(v)]) / 2 for t, v in samples if 0 < v < len(sends)
    ]
    assert len(offsets) >= 15, samples
    start = statistics.median(offsets)
    # The siege-engine started after its launch, and before the first scrape that saw a
    # request of it (however long a loaded machine took to start it).
    first_seen = min(t for t, v in samples if v > 0)
    assert launched < start < first_seen, (launched, start, first_seen)
    spread = statistics.median(abs(o - start) for o in offsets)
    requests = [Request(start + s, start + s + lat, lat, ok) for s, lat, ok in rows]
    return Run(prom, summary, requests, start, spread)


def _wait_final_counts_scraped(prom: PrometheusServer, summary: dict) -> None:
    """Wait until Prometheus has scraped both apps' final counts (the summary's).

    A condition, not a fixed linger: on a loaded machine a scrape may come late. The
    heater counts every request the client saw answered (and any it answered after the
    client gave up), so its count reaches at least those.
    """
    answered = (
        summary["completed"] + summary["failed"]["http_5xx"] + summary["failed"]["http_other"]
    )
    exact = {
        "siege_requests_sent_total": summary["sent"],
        "siege_requests_completed_total": summary["completed"],
        "sum(siege_requests_failed_total)": summary["failed_total"],
    }
    queries = [*exact, "sum(heater_requests_total)"]
    deadline = time.monotonic() + SCRAPED_TIMEOUT_S
    while True:
        seen = {}
        for query in queries:
            result = prom.api(f"query?{urllib.parse.urlencode({'query': query})}")["result"]
            seen[query] = float(result[0]["value"][1]) if result else -1.0
        if all(seen[q] == n for q, n in exact.items()) and seen[queries[-1]] >= answered:
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"final counts not scraped after {SCRAPED_TIMEOUT_S} s: {seen}; expected "
                f"{exact} and a heater total >= {answered}"
            )
        time.sleep(0.2)


def test_client_summary_is_sane(run: Run) -> None:
    s = run.summary
    print(f"\nsiege summary: {json.dumps(s)}")
    print(f"log clock calibration: median deviation {run.calibration_spread * 1e3:.1f} ms")
    assert s["sent"] == s["completed"] + s["failed_total"]
    # Every failure must be an answer (503 from the heater's wait limit); a client timeout
    # would mean the machine is too loaded for this test's ground truth.
    assert s["failed"]["http_5xx"] == s["failed_total"], s["failed"]
    assert s["failed_total"] > 0, "expected some 503s from the 10 ms wait limit"


def _step_windows(run: Run) -> list[tuple[float, float]]:
    """(end time, scheduled rate) of one WINDOW_S window inside each step, whole seconds."""
    return [(float(math.floor(run.start + (i + 1) * STEP_S - 0.5)), r) for i, r in enumerate(RATES)]


def test_step_windows_match_the_client(run: Run) -> None:
    with PrometheusSource(run.prom.url, WINDOW_S, retries=1) as src:
        report = _check_step_windows(run, src)
    _print_report("10 s windows (end time relative to siege start)", run, report)


def _check_step_windows(run: Run, src: PrometheusSource) -> list:
    """Assert each step window's metrics against the log; return rows for the report."""
    report = []
    for at, scheduled in _step_windows(run):
        values, missing = src.instant(
            ["offered_rate", "request_rate", "error_ratio", *QUANTILES], at=at
        )
        assert missing == [], missing
        lo = at - WINDOW_S
        sent = sum(lo < r.sent <= at for r in run.requests)
        finished = [r for r in run.requests if lo < r.finished <= at]
        # All failures are 503 answers (test_client_summary_is_sane): answered == finished.
        true_offered, true_answered = sent / WINDOW_S, len(finished) / WINDOW_S
        # The error ratio on exactly the requests the counters counted in this window: the
        # siege-engine logs each request as it counts it (completed or failed), so those
        # between the window's first and last scraped counts are those rows of the log, in
        # its order; exact whatever the clock calibration, a late scrape, or how bursty
        # the failures of a loaded heater are at the window's edges.
        done = _finished_counts(run.prom, at)
        (t_first, n_first), (t_last, n_last) = done[0], done[-1]
        rows = run.requests[n_first:n_last]
        assert len(rows) == n_last - n_first > 0, done
        true_error = sum(not r.ok for r in rows) / len(rows)
        report += [
            ("offered_rate", at, values["offered_rate"], true_offered),
            ("request_rate", at, values["request_rate"], true_answered),
            ("error_ratio", at, values["error_ratio"], true_error),
        ]
        assert values["offered_rate"] == pytest.approx(true_offered, rel=RATE_TOL)
        assert values["request_rate"] == pytest.approx(true_answered, rel=RATE_TOL)
        poisson_4sd = 4 * math.sqrt(scheduled / WINDOW_S)
        assert abs(values["offered_rate"] - scheduled) <= poisson_4sd
        assert abs(values["request_rate"] - scheduled) <= poisson_4sd
        assert abs(values["error_ratio"] - true_error) <= ERROR_RATIO_TOL

        # Quantiles on exactly the requests the histogram counted in this window (the
        # completed ones among the rows above: the histogram shares the counters' scrapes).
        span = raw_samples(run.prom, "siege_requests_completed_total", at, WINDOW_S)
        assert (span[0][0], span[-1][0]) == (t_first, t_last), (span, done)
        counted = [r.latency for r in rows if r.ok]
        assert len(counted) == int(span[-1][1] - span[0][1]) > 0, span
        for name, q in QUANTILES.items():
            truth = quantile(counted, q)
            report.append((name, at, values[name], truth))
            assert 1 / BUCKET_STEP <= values[name] / truth <= BUCKET_STEP, (name, at)

        # range() gives the same numbers at the same evaluation time.
        ranged = src.range(["offered_rate", "latency_p95"], at, at, 1)
        assert ranged["offered_rate"] == [(at, pytest.approx(values["offered_rate"]))]
        assert ranged["latency_p95"] == [(at, pytest.approx(values["latency_p95"]))]
    return report


def test_whole_run_matches_the_summary(run: Run) -> None:
    s = run.summary
    last_sample = raw_samples(run.prom, "siege_requests_sent_total", time.time(), 60)[-1][0]
    window = last_sample - (run.start - 2.0)  # from before the siege-engine started
    names = ["offered_rate", "request_rate", "error_ratio", *QUANTILES]
    with PrometheusSource(run.prom.url, window, retries=1) as src:
        values, missing = src.instant(names, at=last_sample)
    assert missing == []
    w = src.window_seconds
    count_tol = 2 * 1.1 * SCRAPE_INTERVAL_S / w
    answered = s["completed"] + s["failed"]["http_5xx"] + s["failed"]["http_other"]
    true_error = s["failed_total"] / (s["completed"] + s["failed_total"])
    report = [
        ("offered_rate x window", last_sample, values["offered_rate"] * w, s["sent"]),
        ("request_rate x window", last_sample, values["request_rate"] * w, answered),
        ("error_ratio", last_sample, values["error_ratio"], true_error),
    ]
    assert values["offered_rate"] * w == pytest.approx(s["sent"], rel=count_tol)
    assert values["request_rate"] * w == pytest.approx(answered, rel=count_tol)
    assert abs(values["error_ratio"] - true_error) <= ERROR_RATIO_TOL
    for name, q in QUANTILES.items():
        truth = s["latency_s"][f"p{round(q * 100)}"]
        report.append((name, last_sample, values[name], truth))
        assert 1 / BUCKET_STEP <= values[name] / truth <= BUCKET_STEP, name
    _print_report(f"whole run ({w:.1f} s window) vs siege summary", run, report)


def _print_report(title: str, run: Run, rows: list) -> None:
    print(f"\n{title}")
    for name, at, got, truth in rows:
        err = (got - truth) / truth if truth else got - truth
        print(
            f"  {name:24s} t={at - run.start:5.1f}s promql={got:10.5f} "
            f"truth={truth:10.5f} error={err:+.2%}"
        )
