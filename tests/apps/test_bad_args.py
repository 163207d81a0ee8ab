"""The apps' bad arguments: an argparse-style usage error (exit code 2) before anything
starts, never a traceback; and the same command with good arguments then runs.

Each case runs the real program (``python -m infragym.apps....``) on loopback, bounded
in time; every process is stopped by its PID.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infragym.apps.workload import constant
from tests.procs import REPO_ROOT, fetch, free_port, run_app, wait_stdout_line

HEATER = ["-m", "infragym.apps.heater"]
SIEGE = ["-m", "infragym.apps.siege_engine"]
SCHEDULE = constant(20.0, duration=1.0).model_dump_json()
TIMEOUT_S = 30.0


def _usage_error(args: list[str], *expected: str) -> str:
    """Run the app; it must exit 2 at once with a usage error naming ``expected``."""
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    err = proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{err}"
    assert "usage:" in err and "error:" in err and "Traceback" not in err, err
    assert "serving on" not in err and not proc.stdout.strip(), (proc.stdout, err)
    for text in expected:
        assert text in err, err
    return err


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port with a listening socket on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


# ------------------------------------------------------------------------------- heater


@pytest.mark.parametrize(
    ("port", "expected"),
    [("-1", "'-1' is not a port"), ("65536", "'65536' is not a port"), ("x", "not an integer")],
)
def test_heater_bad_port(port: str, expected: str) -> None:
    _usage_error([*HEATER, "--host", "127.0.0.1", "--port", port], "--port", expected)


def test_heater_busy_port(busy_port: int) -> None:
    _usage_error(
        [*HEATER, "--host", "127.0.0.1", "--port", str(busy_port)],
        f"cannot listen on 127.0.0.1:{busy_port}: the port is already in use",
    )


@pytest.mark.parametrize(
    ("host", "expected"),
    [("no such host!", "cannot listen on host 'no such host!'"), ("192.0.2.1", "not an address")],
)
def test_heater_bad_host(host: str, expected: str) -> None:
    _usage_error([*HEATER, "--host", host, "--port", str(free_port())], expected)


def test_heater_runs_after_bad_arguments() -> None:
    port = free_port()
    args = [*HEATER, "--host", "127.0.0.1", "--port", str(port)]
    with run_app(args, ready_url=f"http://127.0.0.1:{port}/healthz") as proc:
        assert fetch(f"http://127.0.0.1:{port}/healthz").strip() == "ok"
        assert f"serving on 127.0.0.1:{port}" in proc.output()[1]


# ------------------------------------------------------------------------- siege-engine


def _siege(*extra: str, target: str = "http://127.0.0.1:9/") -> list[str]:
    return [*SIEGE, "--target", target, "--schedule", SCHEDULE, *extra]


@pytest.mark.parametrize("target", ["not a url", "ftp://127.0.0.1/", "http://", "http://h:99999/"])
def test_siege_bad_target(target: str) -> None:
    _usage_error(_siege("--metrics-port", "0", target=target), "--target", repr(target))


def test_siege_bad_target_from_the_environment() -> None:
    proc = subprocess.run(
        [sys.executable, *SIEGE, "--schedule", SCHEDULE, "--metrics-port", "0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env={**__import__("os").environ, "SIEGE_TARGET": "not a url"},
    )
    assert proc.returncode == 2 and "target: 'not a url' is not an http" in proc.stderr


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--duration", "-5", "not a positive, finite number of seconds"),
        ("--duration", "nan", "not a positive, finite number of seconds"),
        ("--duration", "inf", "not a positive, finite number of seconds"),
        ("--linger", "nan", "not a number of seconds >= 0"),
        ("--linger", "-1", "not a number of seconds >= 0"),
        ("--max-requests", "0", "not an integer >= 1"),
        ("--max-in-flight", "-3", "not an integer >= 1"),
        ("--metrics-port", "-1", "'-1' is not a port"),
    ],
)
def test_siege_bad_numbers(option: str, value: str, expected: str) -> None:
    extra = [option, value] if option == "--metrics-port" else ["--metrics-port", "0", option]
    if option != "--metrics-port":
        extra.append(value)
    _usage_error(_siege(*extra), option, expected)


def test_siege_busy_metrics_port(busy_port: int) -> None:
    _usage_error(
        _siege("--metrics-host", "127.0.0.1", "--metrics-port", str(busy_port)),
        "--metrics-host/--metrics-port",
        "already in use",
    )


def test_siege_bad_metrics_host() -> None:
    _usage_error(
        _siege("--metrics-host", "no such host!", "--metrics-port", str(free_port())),
        "cannot listen on host 'no such host!'",
    )


def test_siege_unwritable_latency_log(tmp_path: Path) -> None:
    for path in (tmp_path / "missing" / "log.csv", tmp_path):
        _usage_error(
            _siege("--metrics-port", "0", "--latency-log", str(path)),
            "--latency-log: cannot write",
        )


def test_siege_runs_after_bad_arguments(tmp_path: Path) -> None:
    """Good arguments after the bad ones: the siege runs against a heater and logs."""
    hport, mport = free_port(), free_port()
    log = tmp_path / "latency.csv"
    heater = [*HEATER, "--host", "127.0.0.1", "--port", str(hport)]
    with run_app(heater, ready_url=f"http://127.0.0.1:{hport}/healthz"):
        args = _siege(
            "--metrics-host", "127.0.0.1", "--metrics-port", str(mport),
            "--max-requests", "10", "--seed", "0", "--latency-log", str(log),
            target=f"http://127.0.0.1:{hport}/",
        )  # fmt: skip
        with run_app(args) as siege:
            summary = json.loads(wait_stdout_line(siege, "{", timeout=TIMEOUT_S))
            siege.wait(timeout=TIMEOUT_S)
            assert siege.returncode == 0, siege.describe()
    assert summary["sent"] == 10 and summary["completed"] == 10
    assert len(log.read_text().splitlines()) == 1 + 10  # the header, then one per request
