"""Reach a service inside the cluster from outside, through the Kubernetes API server.

The pulumi backend observes a real deployment through the Prometheus that the
``k8s-prometheus`` layer runs *inside* the cluster. Rather than publish that Prometheus
on a public load balancer (unauthenticated, and billed), infragym talks to it through the
API server's service proxy,
``<server>/api/v1/namespaces/<ns>/services/<name>:<port>/proxy/``, authenticated with
the cluster's own kubeconfig (a bearer token on DOKS, a client certificate on a kubeadm
cluster) and verified against the cluster's CA. The Prometheus layer's service account
RBAC is not involved: the proxy runs as the kubeconfig's user.

Credentials go to files in a private temporary directory (mode 0700, files 0600), removed
by :meth:`ClusterAccess.close`; they never appear in URLs, logs or exceptions.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import yaml

from infragym.errors import ConfigError


@dataclass
class ClusterAccess:
    """How to call a cluster's API server: its URL and the credentials for a requests session.

    Attributes:
        server: API server URL (``https://...``).
        verify: CA bundle path, or ``True`` for the system CAs.
        token: Bearer token, when the kubeconfig user has one.
        cert: ``(certfile, keyfile)`` for client-certificate users.
    """

    server: str
    verify: str | bool = True
    token: str | None = field(default=None, repr=False)
    cert: tuple[str, str] | None = None
    _dir: str | None = field(default=None, repr=False)

    def session(self) -> Any:
        """A ``requests.Session`` that authenticates to the API server."""
        import requests

        s = requests.Session()
        s.verify = self.verify
        if self.cert:
            s.cert = self.cert
        if self.token:
            s.headers["Authorization"] = f"Bearer {self.token}"
        return s

    def service_proxy_url(self, namespace: str, service: str, port: int) -> str:
        """The API server's proxy URL of a Service port."""
        base = self.server.rstrip("/")
        return f"{base}/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy"

    def close(self) -> None:
        """Remove the credential files."""
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def from_kubeconfig(text: str) -> ClusterAccess:
    """The current context's cluster and user from a kubeconfig document.

    Raises:
        ConfigError: The kubeconfig is not valid YAML or lacks what the current context
            names (the message names the missing part, never a credential).
    """
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError("the cluster's kubeconfig is not valid YAML") from None
    if not isinstance(doc, dict):
        raise ConfigError("the cluster's kubeconfig is not a YAML mapping")

    def named(kind: str, name: str) -> dict:
        for entry in doc.get(kind) or []:
            if entry.get("name") == name:
                return entry.get(kind[:-1]) or {}
        raise ConfigError(f"the kubeconfig has no {kind[:-1]} named {name!r}")

    context = named("contexts", str(doc.get("current-context")))
    cluster = named("clusters", str(context.get("cluster")))
    user = named("users", str(context.get("user")))
    server = cluster.get("server")
    if not server:
        raise ConfigError("the kubeconfig's cluster has no server URL")

    private = tempfile.mkdtemp(prefix="infragym-kube-")
    os.chmod(private, 0o700)

    def write(name: str, b64: str) -> str:
        path = os.path.join(private, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(b64))
        return path

    access = ClusterAccess(server=server, _dir=private)
    if cluster.get("certificate-authority-data"):
        access.verify = write("ca.crt", cluster["certificate-authority-data"])
    elif cluster.get("insecure-skip-tls-verify"):
        access.verify = False
    access.token = user.get("token")
    if user.get("client-certificate-data") and user.get("client-key-data"):
        access.cert = (
            write("client.crt", user["client-certificate-data"]),
            write("client.key", user["client-key-data"]),
        )
    if not access.token and not access.cert:
        access.close()
        raise ConfigError(
            "the kubeconfig's user has neither a token nor a client certificate; "
            "exec-based credential plugins are not supported"
        )
    return access


def prometheus_via_api_server(
    kubeconfig: str, prometheus_url: str, window_seconds: float
) -> tuple[Any, ClusterAccess]:
    """A :class:`~infragym.prometheus.PrometheusSource` for an in-cluster Prometheus.

    Args:
        kubeconfig: The cluster's kubeconfig (a ``cluster`` layer's ``kubeconfig`` output).
        prometheus_url: The in-cluster URL the ``k8s-prometheus`` layer outputs,
            ``http://<service>.<namespace>.svc.cluster.local:<port>``.
        window_seconds: The step length.

    Returns:
        The source and the access object (close it to remove the credential files).
    """
    from infragym.prometheus import PrometheusSource

    parsed = urlparse(prometheus_url)
    parts = (parsed.hostname or "").split(".")
    if len(parts) < 3 or parts[2] != "svc" or not parsed.port:
        raise ConfigError(
            f"cannot read service, namespace and port from the in-cluster URL {prometheus_url!r}"
        )
    access = from_kubeconfig(kubeconfig)
    url = access.service_proxy_url(parts[1], parts[0], parsed.port)
    return PrometheusSource(url, window_seconds, session=access.session()), access
