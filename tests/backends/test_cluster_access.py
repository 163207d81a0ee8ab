"""Reaching the deployment's in-cluster Prometheus through the API server's service proxy."""

from __future__ import annotations

import base64
import http.server
import os
import stat
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from infragym.backends.base import ResourceRecord
from infragym.backends.cluster_access import from_kubeconfig, prometheus_via_api_server
from infragym.errors import ConfigError, InfraGymError

TOKEN = "s3cr3t-t0ken-value"
NS, SVC, PORT = "infragym", "prometheus", 9090


def kubeconfig(server: str, user: dict) -> str:
    ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nfake\n").decode()
    return f"""apiVersion: v1
kind: Config
current-context: ctx
clusters:
- name: c
  cluster: {{server: "{server}", certificate-authority-data: "{ca}"}}
contexts:
- name: ctx
  context: {{cluster: c, user: u}}
users:
- name: u
  user: {user}
"""


def test_token_kubeconfig_gives_verified_session_and_private_files():
    access = from_kubeconfig(kubeconfig("https://k8s.example.invalid", {"token": TOKEN}))
    try:
        assert isinstance(access.verify, str) and os.path.exists(access.verify)
        assert stat.S_IMODE(os.stat(access.verify).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(access.verify)).st_mode) == 0o700
        session = access.session()
        assert session.headers["Authorization"] == f"Bearer {TOKEN}"
        assert session.verify == access.verify
        assert TOKEN not in repr(access)
        assert access.service_proxy_url(NS, SVC, PORT) == (
            "https://k8s.example.invalid/api/v1/namespaces/infragym/services/prometheus:9090/proxy"
        )
    finally:
        access.close()
    assert not os.path.exists(access.verify)


def test_client_certificate_kubeconfig():
    cert = base64.b64encode(b"CERT").decode()
    key = base64.b64encode(b"KEY").decode()
    user = {"client-certificate-data": cert, "client-key-data": key}
    access = from_kubeconfig(kubeconfig("https://10.0.0.1:6443", user))
    try:
        certfile, keyfile = access.cert
        with open(certfile, "rb") as c, open(keyfile, "rb") as k:
            assert (c.read(), k.read()) == (b"CERT", b"KEY")
        assert stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600
        assert access.session().cert == access.cert
    finally:
        access.close()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (": not yaml : [", "not valid YAML"),
        (kubeconfig("https://x", {"exec": {"command": "doctl"}}), "neither a token"),
        (
            kubeconfig("https://x", {"token": TOKEN}).replace(
                "current-context: ctx", "current-context: other"
            ),
            "no context",
        ),
    ],
)
def test_bad_kubeconfigs_are_clear_errors_without_secrets(text, match):
    with pytest.raises(ConfigError, match=match) as info:
        from_kubeconfig(text)
    assert TOKEN not in str(info.value)


def test_in_cluster_url_must_name_a_service():
    with pytest.raises(ConfigError, match="in-cluster URL"):
        prometheus_via_api_server(
            kubeconfig("https://x", {"token": TOKEN}), "http://10.0.0.5:9090", 30
        )


@pytest.fixture
def api_server_proxy() -> Iterator[callable]:
    """A stand-in for the API server's service proxy: checks the bearer token, then
    forwards ``/api/v1/namespaces/<ns>/services/<svc>:<port>/proxy/...`` to a target."""
    servers = []

    def start(target: str) -> str:
        prefix = f"/api/v1/namespaces/{NS}/services/{SVC}:{PORT}/proxy"

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self.send_response(401)
                    self.end_headers()
                    self.wfile.write(b'{"kind":"Status","status":"Failure","code":401}')
                    return
                if not self.path.startswith(prefix):
                    self.send_response(404)
                    self.end_headers()
                    return
                with urllib.request.urlopen(target + self.path[len(prefix) :], timeout=10) as r:
                    body = r.read()
                    self.send_response(r.status)
                    self.send_header("Content-Type", r.headers["Content-Type"])
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.prometheus
def test_queries_reach_prometheus_through_the_proxy(tmp_path, api_server_proxy):
    from tests.metrics.conftest import exporter_launcher, prometheus_launcher

    page = '# TYPE heater_requests_total counter\nheater_requests_total{code="200"} 1\n'
    with exporter_launcher() as serve, prometheus_launcher(tmp_path) as start:
        prom = start({"heater": serve({"/metrics": lambda: page})})
        prom.wait_targets_up(1)
        server = api_server_proxy(prom.url)
        in_cluster = f"http://{SVC}.{NS}.svc.cluster.local:{PORT}"
        source, access = prometheus_via_api_server(
            kubeconfig(server, {"token": TOKEN}), in_cluster, 30
        )
        try:
            values, missing = source.instant(["request_rate", "pods_pending"])
            assert values["request_rate"] == 0.0  # a flat counter: the series exists, rate 0
            assert values["pods_pending"] == 0.0 and not missing
        finally:
            access.close()
        wrong, access = prometheus_via_api_server(
            kubeconfig(server, {"token": "wrong-token"}), in_cluster, 30
        )
        try:
            with pytest.raises(InfraGymError) as info:
                wrong.instant(["request_rate"])
            assert "wrong-token" not in str(info.value)
        finally:
            access.close()


def test_pulumi_backend_prices_cost_from_the_graph_and_asks_prometheus_the_rest(monkeypatch):
    from infragym import catalog
    from infragym.backends.pulumi import PulumiBackend

    asked = []

    class Source:
        def instant(self, names):
            asked.extend(names)
            return {n: 1.0 for n in names}, []

    backend = PulumiBackend(metrics=Source())
    droplet = ResourceRecord(
        "l", "digitalocean:index/droplet:Droplet", "d", {"size": "s-1vcpu-2gb"}
    )
    monkeypatch.setattr(backend, "resources", lambda: [droplet])
    values = backend.observe(["request_rate", "cost_hourly"])
    assert asked == ["request_rate"]
    assert values == {"request_rate": 1.0, "cost_hourly": catalog.hourly_price("s-1vcpu-2gb")}
