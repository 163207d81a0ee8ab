"""Fixtures for the metrics tests: a real Prometheus server on loopback.

The server is the Debian ``prometheus`` package's ``/usr/bin/prometheus`` (install it
with ``scripts/install-debian-deps.sh``), started by the test on ``127.0.0.1`` on a free
port, with a config the test writes (1 s scrape interval, the targets the test names)
and its TSDB in the test's temporary directory. It is stopped by PID at teardown. A
Debian ``prometheus`` service started by the package (port 9090) is left alone: the
fixture never uses its port or its data.

Without the binary the tests skip, unless ``CI`` is set: in CI it must be installed, so
they fail instead.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.procs import ManagedProcess, free_port, start_process, stop_process, wait_http_ok

PROMETHEUS_BIN = Path("/usr/bin/prometheus")
SCRAPE_INTERVAL_S = 1.0


def require_prometheus_binary() -> None:
    """Skip (locally) or fail (in CI) when the Debian prometheus binary is absent."""
    if PROMETHEUS_BIN.is_file() and os.access(PROMETHEUS_BIN, os.X_OK):
        return
    msg = (
        f"{PROMETHEUS_BIN} not found: install the Debian 'prometheus' package "
        "(scripts/install-debian-deps.sh)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{msg}; it is required in CI", pytrace=False)
    pytest.skip(msg)


@dataclass
class PrometheusServer:
    """A Prometheus server the test started.

    Attributes:
        url: Base URL of its HTTP API (``http://127.0.0.1:PORT``).
        proc: The server process (stopped by the fixture).
        config_path: The config file the fixture wrote.
    """

    url: str
    proc: ManagedProcess
    config_path: Path

    def api(self, path: str) -> dict:
        """GET ``/api/v1/<path>`` and return the decoded ``data`` field."""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}", timeout=5) as resp:
            return json.load(resp)["data"]

    def wait_targets_up(self, count: int, timeout: float = 15.0) -> None:
        """Wait until ``count`` scrape targets report health ``up``.

        Raises:
            TimeoutError: If they are not all up in time (the targets are listed).
        """
        deadline = time.monotonic() + timeout
        targets: list = []
        while time.monotonic() < deadline:
            targets = self.api("targets")["activeTargets"]
            if sum(t["health"] == "up" for t in targets) >= count:
                return
            time.sleep(0.2)
        states = [(t["scrapeUrl"], t["health"], t.get("lastError")) for t in targets]
        raise TimeoutError(f"{count} targets not up after {timeout} s: {states}")


def _scrape_config(jobs: Mapping[str, str | Sequence[str]]) -> dict:
    """A Prometheus config scraping each job's URLs every second.

    All URLs of one job must share a path; ``honor_labels`` keeps exporters' own
    ``namespace``/``pod`` labels, as the cluster's Prometheus does for kube-state-metrics.
    """
    scrape_configs = []
    for job, urls in jobs.items():
        urls = [urls] if isinstance(urls, str) else list(urls)
        parts = [urlsplit(u) for u in urls]
        paths = {p.path or "/metrics" for p in parts}
        if len(paths) != 1:
            raise ValueError(f"job {job!r}: all targets must share one path, got {paths}")
        scrape_configs.append(
            {
                "job_name": job,
                "metrics_path": paths.pop(),
                "honor_labels": True,
                "static_configs": [{"targets": [p.netloc for p in parts]}],
            }
        )
    interval = f"{int(SCRAPE_INTERVAL_S * 1000)}ms"
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "scrape_configs": scrape_configs,
    }


@contextlib.contextmanager
def prometheus_launcher(
    tmp_dir: Path,
) -> Iterator[Callable[[Mapping[str, str | Sequence[str]]], PrometheusServer]]:
    """Start Prometheus servers in ``tmp_dir``; stop each by PID when the block ends.

    Prometheus scrapes a new target only after its discovery manager's first update
    (about 5 s after start), so start it before the programs it scrapes where possible.
    """
    require_prometheus_binary()
    started: list[ManagedProcess] = []

    def start(jobs: Mapping[str, str | Sequence[str]]) -> PrometheusServer:
        n = len(started)
        config = tmp_dir / f"prometheus-{n}.yml"
        config.write_text(json.dumps(_scrape_config(jobs), indent=2))  # JSON is YAML
        data = tmp_dir / f"prometheus-data-{n}"
        port = free_port()
        proc = start_process(
            [
                str(PROMETHEUS_BIN),
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                "--storage.tsdb.retention.time=1h",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            python=False,
        )
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http_ok(f"{url}/-/ready", timeout=30.0, proc=proc)
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"prometheus did not become ready:\n{proc.describe()}") from exc
        return PrometheusServer(url=url, proc=proc, config_path=config)

    try:
        yield start
    finally:
        for proc in started:
            stop_process(proc, timeout=10.0)
            for path in (proc.stdout_path, proc.stderr_path):
                path.unlink(missing_ok=True)


@pytest.fixture
def start_prometheus(
    tmp_path: Path,
) -> Iterator[Callable[[Mapping[str, str | Sequence[str]]], PrometheusServer]]:
    """Factory fixture: ``start_prometheus({"job": "http://127.0.0.1:PORT/metrics"})``.

    Each call starts one server scraping the given jobs every second and waits for
    ``/-/ready``. Every server started is stopped by PID at the end of the test.
    """
    with prometheus_launcher(tmp_path) as start:
        yield start


@pytest.fixture(scope="module")
def start_prometheus_module(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[Mapping[str, str | Sequence[str]]], PrometheusServer]]:
    """Like :func:`start_prometheus`, but the servers live until the module's tests end."""
    with prometheus_launcher(tmp_path_factory.mktemp("prometheus")) as start:
        yield start


class _ExporterHandler(http.server.BaseHTTPRequestHandler):
    pages: Mapping[str, Callable[[], str]] = {}

    def do_GET(self) -> None:
        page = self.pages.get(self.path.split("?", 1)[0])
        if page is None:
            self.send_error(404)
            return
        body = page().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@contextlib.contextmanager
def exporter_launcher() -> Iterator[Callable[[Mapping[str, Callable[[], str]]], str]]:
    """Serve exposition-format pages from threads on 127.0.0.1; shut them down at the end.

    ``serve({"/metrics": lambda: "up 1\\n"})`` returns the base URL
    (``http://127.0.0.1:PORT``). Each page is a function, called on every scrape, so a
    counter can grow with the clock.
    """
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(pages: Mapping[str, Callable[[], str]]) -> str:
        handler = type("Handler", (_ExporterHandler,), {"pages": dict(pages)})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, name="exporter", daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}"

    try:
        yield serve
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def serve_metrics() -> Iterator[Callable[[Mapping[str, Callable[[], str]]], str]]:
    """Factory fixture of :func:`exporter_launcher`, shut down at the end of the test."""
    with exporter_launcher() as serve:
        yield serve


@pytest.fixture(scope="module")
def serve_metrics_module() -> Iterator[Callable[[Mapping[str, Callable[[], str]]], str]]:
    """Factory fixture of :func:`exporter_launcher`, shut down after the module's tests."""
    with exporter_launcher() as serve:
        yield serve
