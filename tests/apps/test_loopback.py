"""The real apps on loopback: heater under siege-engine load, and the arrival generator.

The loopback tests start both programs as processes on 127.0.0.1 and check that what
each one exports on ``/metrics`` agrees with the other and with the siege-engine's own
summary line and per-request log. Each load run is bounded (a few seconds, a few
hundred requests). The arrival-generator tests need no network.
"""

from __future__ import annotations

import ast
import csv
import itertools
import json
import math
import random
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infragym.apps import _serving, heater, siege_engine
from infragym.apps.siege_engine import ArrivalGenerator, percentile
from infragym.apps.workload import LATENCY_BUCKETS, Schedule, constant
from tests.procs import fetch, free_port, run_app, wait_stdout_line

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# --- helpers ---------------------------------------------------------------------------


def scrape(url: str) -> Samples:
    """Every sample of a /metrics page, keyed by (name, sorted labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(fetch(url)):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; fails the test if the series is missing."""
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"series {name}{labels} missing; have {sorted({k[0] for k in samples})}"
    return samples[key]


def buckets(samples: Samples, name: str) -> list[tuple[float, float]]:
    """A histogram's cumulative buckets as sorted (le, count) pairs."""
    out = [
        (float(dict(labels)["le"]), v)
        for (n, labels), v in samples.items()
        if n == f"{name}_bucket"
    ]
    return sorted(out)


def schedule(rate: float, duration: float | None, **kw) -> Schedule:
    return constant(rate, duration=duration, **kw)


def heater_args(port: int, work: dict) -> list[str]:
    return [
        "-m", "infragym.apps.heater", "--host", "127.0.0.1", "--port", str(port),
        "--work", json.dumps(work), "--seed", "7",
    ]  # fmt: skip


def siege_args(target_port: int, metrics_port: int, sched: Schedule, *extra: str) -> list[str]:
    return [
        "-m", "infragym.apps.siege_engine",
        "--target", f"http://127.0.0.1:{target_port}/",
        "--schedule", sched.model_dump_json(),
        "--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1",
        *extra,
    ]  # fmt: skip


# --- arrival generator (no network) ----------------------------------------------------


def test_arrivals_are_deterministic_for_a_seed():
    sched = Schedule.model_validate(
        {"shape": {"kind": "ramp", "start": 5, "end": 50, "duration": 10}, "duration": 10}
    )
    a = ArrivalGenerator(sched, random.Random(3)).until(10)
    b = ArrivalGenerator(sched, random.Random(3)).until(10)
    c = ArrivalGenerator(sched, random.Random(4)).until(10)
    assert a == b
    assert a != c
    assert a == sorted(a) and all(0 <= t < 10 for t in a)


def test_arrivals_in_small_windows_equal_one_call():
    """The engine asks in 50 ms windows; that must not change the process."""
    sched = schedule(37.0, 20.0)
    whole = ArrivalGenerator(sched, random.Random(11)).until(20)
    gen = ArrivalGenerator(sched, random.Random(11))
    pieces: list[float] = []
    t = 0.0
    while t < 20:
        t = min(t + 0.05, 20)
        pieces += gen.until(t)
    assert pieces == whole
    assert gen.exhausted


def test_poisson_arrivals_at_a_constant_rate_have_exponential_gaps():
    rate, duration = 50.0, 400.0
    times = ArrivalGenerator(schedule(rate, duration), random.Random(1)).until(duration)
    n, expected = len(times), rate * duration
    assert abs(n - expected) < 4 * math.sqrt(expected)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(1 / rate, rel=0.03)
    assert statistics.stdev(gaps) / mean == pytest.approx(1.0, abs=0.04)  # CV of Exp is 1
    assert sum(g > mean for g in gaps) / len(gaps) == pytest.approx(math.exp(-1), abs=0.02)


def test_poisson_counts_have_the_scheduled_mean_and_poisson_variance():
    rate, duration, seeds = 20.0, 5.0, 300
    counts = [
        len(ArrivalGenerator(schedule(rate, duration), random.Random(s)).until(duration))
        for s in range(seeds)
    ]
    mean = statistics.fmean(counts)
    assert abs(mean - rate * duration) < 4 * math.sqrt(rate * duration / seeds)
    assert statistics.variance(counts) == pytest.approx(rate * duration, rel=0.3)


def test_uniform_arrivals_are_evenly_spaced():
    sched = schedule(10.0, 10.0, arrivals="uniform")
    times = ArrivalGenerator(sched, random.Random(0)).until(10)
    assert len(times) == 100
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) - min(gaps) < 1e-9
    assert gaps[0] == pytest.approx(0.1)


def test_time_varying_rate_is_followed():
    sched = Schedule.model_validate(
        {"shape": {"kind": "ramp", "start": 0, "end": 200, "duration": 20}, "duration": 20}
    )
    times = ArrivalGenerator(sched, random.Random(5)).until(20)
    first = sum(t < 10 for t in times)
    second = len(times) - first
    # ∫ 10 t dt over [0, 10) is 500, over [10, 20) is 1500.
    assert abs(first - 500) < 4 * math.sqrt(500)
    assert abs(second - 1500) < 4 * math.sqrt(1500)


def test_spikes_put_arrivals_only_inside_spikes():
    sched = Schedule.model_validate(
        {
            "shape": {"kind": "spikes", "base": 0, "spike_rate": 100, "every": 5,
                      "spike_seconds": 1},
            "duration": 20,
        }
    )  # fmt: skip
    times = ArrivalGenerator(sched, random.Random(2)).until(20)
    assert all(t % 5 < 1 for t in times)
    assert abs(len(times) - 400) < 4 * math.sqrt(400)


def test_zero_rate_forever_costs_bounded_time():
    sched = Schedule.model_validate(
        {"shape": {"kind": "step", "rates": [10, 0], "step_seconds": 1}}  # no duration
    )
    gen = ArrivalGenerator(sched, random.Random(0))
    t0 = time.perf_counter()
    times = gen.until(2000.0)
    assert time.perf_counter() - t0 < 2.0
    assert times and all(t < 1 for t in times)
    assert not gen.exhausted  # no duration: the engine keeps running, sending nothing


def test_nothing_arrives_after_the_duration():
    gen = ArrivalGenerator(schedule(100.0, 2.0), random.Random(0))
    assert all(t < 2 for t in gen.until(100.0))
    assert gen.exhausted
    assert gen.until(200.0) == []


def test_percentile_interpolates_like_numpy():
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.0) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 1.0) == 4.0
    assert percentile(list(map(float, range(101))), 0.99) == pytest.approx(99.0)
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_burn_uses_the_cpu_time_asked_for():
    t0 = time.thread_time()
    used = heater.burn_cpu(0.03)
    spent = time.thread_time() - t0
    assert 0.03 <= used <= spent
    assert used < 0.03 + 0.01


@pytest.mark.parametrize("module", [heater, siege_engine, _serving])
def test_apps_import_only_what_the_stock_image_has(module):
    """In a cluster the apps run with only aiohttp, prometheus_client and pydantic."""
    allowed = {"aiohttp", "prometheus_client", "pydantic", "workload", "_serving"}
    allowed_infragym = {"infragym.apps.workload", "infragym.apps._serving"}
    tree = ast.parse(Path(module.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top == "infragym":
                assert name in allowed_infragym, name
            else:
                assert top in sys.stdlib_module_names or top in allowed or top == "__future__", name


# --- loopback: heater under siege ------------------------------------------------------


@pytest.mark.timeout(60)
def test_loopback_load_agrees_across_both_metrics_endpoints(tmp_path):
    rate, duration, seed, cpu_ms = 40.0, 5.0, 1, 5.0
    hport, mport = free_port(), free_port()
    sched = schedule(rate, duration, timeout_s=5.0)
    log = tmp_path / "latency.csv"
    work = {"mean_ms": cpu_ms, "distribution": "constant", "timeout_s": 2.0}
    with run_app(heater_args(hport, work), ready_url=f"http://127.0.0.1:{hport}/healthz"):
        hurl = f"http://127.0.0.1:{hport}/metrics"
        before = scrape(hurl)
        assert value(before, "heater_requests_total", code="200") == 0
        assert value(before, "heater_requests_in_flight") == 0
        args = siege_args(
            hport, mport, sched, "--seed", str(seed), "--latency-log", str(log), "--linger", "30"
        )
        with run_app(args, ready_url=f"http://127.0.0.1:{mport}/healthz") as siege:
            time.sleep(1.5)  # mid-run: the metrics are live
            mid = scrape(f"http://127.0.0.1:{mport}/metrics")
            assert value(mid, "siege_target_rate") == rate
            assert value(mid, "siege_requests_sent_total") > 0
            assert "siege_requests_in_flight" in {k[0] for k in mid}

            summary = json.loads(wait_stdout_line(siege, "{", timeout=duration + 15))
            s = scrape(f"http://127.0.0.1:{mport}/metrics")
        h = scrape(hurl)

    # The schedule decides what is sent: exactly the seeded arrivals before the end,
    # which are a Poisson count around rate x duration.
    expected = ArrivalGenerator(sched, random.Random(seed)).until(duration)
    sent = summary["sent"]
    assert sent == len(expected)
    assert abs(sent - rate * duration) < 4 * math.sqrt(rate * duration)
    assert summary["failed_total"] == 0, summary
    assert summary["completed"] == sent
    assert summary["elapsed_s"] < duration + 2

    # siege-engine's /metrics agree with its summary.
    assert value(s, "siege_requests_sent_total") == sent
    assert value(s, "siege_requests_completed_total") == summary["completed"]
    for reason in siege_engine.FAILURE_REASONS:
        assert value(s, "siege_requests_failed_total", reason=reason) == 0
    assert value(s, "siege_request_duration_seconds_count") == summary["completed"]
    assert value(s, "siege_requests_in_flight") == 0
    assert value(s, "siege_target_rate") == 0  # the schedule has ended

    # The heater answered exactly what the siege-engine completed.
    h_total = value(h, "heater_requests_total", code="200")
    assert h_total == summary["completed"]
    assert value(h, "heater_requests_total", code="503") == 0
    assert value(h, "heater_request_duration_seconds_count") == h_total
    assert value(h, "heater_requests_in_flight") == 0
    cpu = value(h, "heater_cpu_seconds_total")
    assert h_total * cpu_ms / 1e3 <= cpu <= h_total * cpu_ms / 1e3 * 1.5
    # Server-side time is part of client-side time, and at least the CPU burnt.
    h_sum = value(h, "heater_request_duration_seconds_sum")
    s_sum = value(s, "siege_request_duration_seconds_sum")
    assert cpu <= h_sum <= s_sum

    # Both histograms use the shared buckets, are cumulative and end at the count.
    for samples, name in (
        (h, "heater_request_duration_seconds"),
        (s, "siege_request_duration_seconds"),
    ):
        bs = buckets(samples, name)
        assert [le for le, _ in bs] == [*LATENCY_BUCKETS, math.inf]
        counts = [c for _, c in bs]
        assert counts == sorted(counts)
        assert counts[-1] == value(samples, f"{name}_count")
    # Requests burn 5 ms of CPU, so none is faster than that, server or client side.
    assert dict(buckets(h, "heater_request_duration_seconds"))[0.004] == 0
    assert dict(buckets(s, "siege_request_duration_seconds"))[0.004] == 0

    # The raw per-request log is the ground truth: it has every request, and the
    # exported histogram and the summary percentiles are computed from the same values.
    with log.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sent
    lat = sorted(float(r["latency_s"]) for r in rows if r["ok"] == "1")
    assert len(lat) == summary["completed"]
    for le, count in buckets(s, "siege_request_duration_seconds"):
        assert count == sum(x <= le for x in lat), le
    for q, key in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        assert summary["latency_s"][key] == pytest.approx(percentile(lat, q))
    assert cpu_ms / 1e3 <= summary["latency_s"]["p50"] < 1.0
    assert sorted(float(r["t_sent"]) for r in rows) == pytest.approx(expected)


@pytest.mark.timeout(60)
def test_overload_fails_fast_with_timeouts_and_503s():
    rate, duration, client_timeout = 150.0, 2.0, 0.25
    cpu_ms, server_timeout = 20.0, 0.5  # capacity 50 req/s: three times overloaded
    hport, mport = free_port(), free_port()
    sched = schedule(rate, duration, timeout_s=client_timeout)
    work = {"mean_ms": cpu_ms, "distribution": "constant", "timeout_s": server_timeout}
    with run_app(heater_args(hport, work), ready_url=f"http://127.0.0.1:{hport}/healthz"):
        hurl = f"http://127.0.0.1:{hport}/metrics"
        args = siege_args(hport, mport, sched, "--seed", "2", "--linger", "30")
        t0 = time.monotonic()
        with run_app(args, ready_url=f"http://127.0.0.1:{mport}/healthz") as siege:
            summary = json.loads(wait_stdout_line(siege, "{", timeout=duration + 15))
            took = time.monotonic() - t0
            s = scrape(f"http://127.0.0.1:{mport}/metrics")
        # Load shedding: once the load stops, the heater's queue drains within about
        # its timeout, because requests that waited too long are answered 503 unserved.
        deadline = time.monotonic() + server_timeout + 5
        while True:
            h = scrape(hurl)
            if value(h, "heater_requests_in_flight") == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)

    sent, completed, failed = summary["sent"], summary["completed"], summary["failed"]
    assert abs(sent - rate * duration) < 4 * math.sqrt(rate * duration)
    assert sent == completed + summary["failed_total"]
    # Bounded: sending stops on schedule and every request ends by its client timeout.
    assert summary["elapsed_s"] < duration + client_timeout + 1.5
    assert took < duration + 12
    # Overload shows up as client timeouts, and the heater sheds what waited too long.
    assert failed["timeout"] > 0.3 * sent, summary
    assert value(s, "siege_requests_failed_total", reason="timeout") == failed["timeout"]
    assert value(h, "heater_requests_total", code="503") > 0
    assert value(h, "heater_requests_in_flight") == 0
    # Nobody gets more than one core of 20 ms requests, and what completed was fast.
    assert completed <= summary["elapsed_s"] / (cpu_ms / 1e3) + 5
    assert value(h, "heater_requests_total", code="200") >= completed
    if summary["latency_s"] is not None:
        assert summary["latency_s"]["max"] < client_timeout + 0.1


# --- single-app behaviour ---------------------------------------------------------------


def _get_json_concurrently(url: str, n: int) -> list[tuple[int, dict, float]]:
    """GET ``url`` from ``n`` threads started 20 ms apart.

    Returns:
        (status, JSON body, monotonic send time) per thread, in start order.
    """
    results: list[tuple[int, dict, float]] = [(0, {}, 0.0)] * n

    def get(i: int) -> None:
        sent = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                results[i] = (resp.status, json.loads(resp.read()), sent)
        except urllib.error.HTTPError as exc:
            results[i] = (exc.code, json.loads(exc.read()), sent)

    threads = [threading.Thread(target=get, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join(15)
    return results


def _wall_seconds_of_cpu(cpu_s: float) -> float:
    """Wall seconds this process takes to burn ``cpu_s`` of CPU now (bounded to 10 s)."""
    start, cpu0 = time.perf_counter(), time.process_time()
    while time.process_time() - cpu0 < cpu_s and time.perf_counter() - start < 10.0:
        pass
    return time.perf_counter() - start


@pytest.mark.timeout(60)
def test_heater_serves_fifo_one_at_a_time_and_sheds_late_requests():
    """Work from $HEATER_WORK: eight 250 ms requests queue behind each other.

    The timeout is 2.4 burns (0.6 s on an idle machine) in *wall* time, measured here
    first: on a loaded machine a 250 ms CPU burn takes longer, and with a fixed timeout
    the second request would already be shed. A request waits one burn per request served
    before it (a shed one takes no time), so about three are served and the rest shed;
    the counts hold while the heater's burns take between 0.4 and 2.9 times the measured
    one.
    """
    port = free_port()
    cpu_s = 0.25
    timeout_s = 2.4 * max(cpu_s, _wall_seconds_of_cpu(cpu_s))
    work = {"mean_ms": cpu_s * 1e3, "distribution": "constant", "timeout_s": timeout_s}
    env = {"HEATER_WORK": json.dumps(work)}
    args = ["-m", "infragym.apps.heater", "--host", "127.0.0.1", "--port", str(port)]
    with run_app(args, env, ready_url=f"http://127.0.0.1:{port}/healthz"):
        results = _get_json_concurrently(f"http://127.0.0.1:{port}/", 8)
        h = scrape(f"http://127.0.0.1:{port}/metrics")
    codes = [c for c, _, _ in results]
    # The second request waits about one service time; those after the third, about
    # three: over the timeout, so they are answered 503 without being served.
    assert codes.count(200) >= 2 and codes.count(503) >= 1, results
    assert min(b["wait_ms"] for _, b, _ in results) < 100, results
    for code, body, _ in results:
        # 503 exactly when the wait before service exceeded the timeout; then no CPU.
        assert (code == 503) == (body["wait_ms"] > timeout_s * 1e3), results
        assert body["cpu_ms"] >= cpu_s * 1e3 if code == 200 else body["cpu_ms"] == 0
    # One server: each request starts only after the one before it has burnt its CPU.
    # (Served ones only: a shed request holds no server, and its start, taken from the
    # client's send time, is no more precise than the connection set-up under load.)
    starts = sorted(sent + body["wait_ms"] / 1e3 for code, body, sent in results if code == 200)
    for t0, t1 in itertools.pairwise(starts):
        assert t1 - t0 >= cpu_s - 0.05, starts
    assert value(h, "heater_requests_total", code="200") == codes.count(200)
    assert value(h, "heater_requests_total", code="503") == codes.count(503)
    assert value(h, "heater_cpu_seconds_total") >= cpu_s * codes.count(200)


@pytest.mark.timeout(60)
def test_heater_workers_serve_in_parallel_from_one_queue():
    port = free_port()
    work = {"mean_ms": 300, "distribution": "constant", "workers": 2}
    with run_app(heater_args(port, work), ready_url=f"http://127.0.0.1:{port}/healthz"):
        results = _get_json_concurrently(f"http://127.0.0.1:{port}/", 3)
    assert [c for c, _, _ in results] == [200, 200, 200], results
    waits = sorted(b["wait_ms"] for _, b, _ in results)
    assert waits[1] < 150, waits  # two servers: two requests start at once
    assert waits[2] >= 150, waits  # the third waits for the first free server


@pytest.mark.timeout(60)
def test_siege_from_env_stops_at_max_requests_and_counts_connect_failures():
    closed = free_port()  # nothing listens here
    mport = free_port()
    env = {
        "SIEGE_TARGET": f"http://127.0.0.1:{closed}/",
        "SIEGE_SCHEDULE": schedule(50.0, None, timeout_s=1.0).model_dump_json(),
    }
    args = ["-m", "infragym.apps.siege_engine", "--metrics-port", str(mport),
            "--metrics-host", "127.0.0.1", "--max-requests", "25", "--seed", "0"]  # fmt: skip
    with run_app(args, env) as siege:
        summary = json.loads(wait_stdout_line(siege, "{", timeout=20))
        assert siege.wait(10) == 0
    assert summary["sent"] == 25
    assert summary["failed"]["connect"] == 25
    assert summary["completed"] == 0 and summary["latency_s"] is None


@pytest.mark.timeout(60)
def test_siege_stops_on_sigterm_and_still_reports():
    closed, mport = free_port(), free_port()
    sched = schedule(20.0, None)  # would run forever
    args = siege_args(closed, mport, sched, "--seed", "0")
    with run_app(args, ready_url=f"http://127.0.0.1:{mport}/healthz") as siege:
        time.sleep(1.0)
        t0 = time.monotonic()
        siege.terminate()
        assert siege.wait(10) == 0
        assert time.monotonic() - t0 < 5
        summary = json.loads(wait_stdout_line(siege, "{", timeout=1))
    assert 5 <= summary["sent"] <= 60
    assert summary["sent"] == summary["failed_total"]
