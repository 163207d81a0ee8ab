"""A small client for the local API server: JSON over HTTPS with a client certificate.

Enough for the cluster's own needs (readiness, nodes, the tests' read-back of objects and
the scheduler comparison) without another dependency. Errors become
:class:`~infragym.errors.ClusterError` naming the request, never a credential.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from infragym.errors import ClusterError

_PATHS = {
    # kind (lower case plural) → API path prefix
    "nodes": "/api/v1",
    "pods": "/api/v1",
    "namespaces": "/api/v1",
    "services": "/api/v1",
    "configmaps": "/api/v1",
    "secrets": "/api/v1",
    "serviceaccounts": "/api/v1",
    "events": "/api/v1",
    "deployments": "/apis/apps/v1",
    "replicasets": "/apis/apps/v1",
    "horizontalpodautoscalers": "/apis/autoscaling/v2",
    "clusterroles": "/apis/rbac.authorization.k8s.io/v1",
    "clusterrolebindings": "/apis/rbac.authorization.k8s.io/v1",
    "leases": "/apis/coordination.k8s.io/v1",
}


class ApiClient:
    """Calls one API server as one client-certificate user.

    Args:
        server: ``https://127.0.0.1:<port>``.
        ca: The cluster CA file.
        cert: The client certificate file.
        key: The client key file.
        timeout: Seconds per request.
    """

    def __init__(self, server: str, ca: Path, cert: Path, key: Path, timeout: float = 10.0):
        self.server = server.rstrip("/")
        self.timeout = timeout
        self._ctx = ssl.create_default_context(cafile=str(ca))
        self._ctx.load_cert_chain(str(cert), str(key))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
    ) -> Any:
        """One request; the decoded JSON answer (``None`` for 404 on GET and DELETE).

        Raises:
            ClusterError: The server is unreachable or answered an error.
        """
        url = self.server + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ctx) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and method in ("GET", "DELETE"):
                return None
            detail = exc.read().decode(errors="replace")[:500]
            raise ClusterError(
                f"{method} {path} on the local API server failed: HTTP {exc.code}: {detail}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClusterError(
                f"the local API server at {self.server} is unreachable ({reason}); is the "
                "cluster running? (`infragym cluster status`)"
            ) from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    @staticmethod
    def path(kind: str, namespace: str | None = None, name: str | None = None) -> str:
        """The REST path of ``kind`` (plural, lower case), optionally namespaced and named."""
        try:
            prefix = _PATHS[kind]
        except KeyError:
            raise ClusterError(f"the local API client does not know kind {kind!r}") from None
        p = prefix + (f"/namespaces/{namespace}" if namespace else "") + f"/{kind}"
        return p + (f"/{name}" if name else "")

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """One object, or ``None`` when it does not exist."""
        return self.request("GET", self.path(kind, namespace, name))

    def list(
        self, kind: str, namespace: str | None = None, selector: str | None = None
    ) -> list[dict]:
        """The objects of ``kind`` (in ``namespace``, or all), optionally by label selector."""
        query = {"labelSelector": selector} if selector else None
        doc = self.request("GET", self.path(kind, namespace), query=query) or {}
        return list(doc.get("items") or [])

    def create(self, kind: str, obj: Mapping[str, Any], namespace: str | None = None) -> dict:
        """Create an object."""
        return self.request("POST", self.path(kind, namespace), obj)

    def patch(
        self, kind: str, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> dict:
        """A JSON merge patch."""
        return self.request(
            "PATCH",
            self.path(kind, namespace, name),
            patch,
            content_type="application/merge-patch+json",
        )

    def delete(
        self, kind: str, name: str, namespace: str | None = None, grace_seconds: int | None = None
    ) -> None:
        """Delete an object (absent is fine)."""
        body = None
        if grace_seconds is not None:
            body = {
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "gracePeriodSeconds": grace_seconds,
            }
        self.request("DELETE", self.path(kind, namespace, name), body)

    def delete_collection(
        self, kind: str, namespace: str | None = None, selector: str | None = None
    ) -> None:
        """Delete every object of ``kind`` (matching ``selector``) at once."""
        query = {"labelSelector": selector} if selector else None
        self.request("DELETE", self.path(kind, namespace), query=query)


def client_from_kubeconfig(kubeconfig: str, timeout: float = 10.0) -> ApiClient:
    """An :class:`ApiClient` for the current context of a kubeconfig with a client certificate.

    The kubeconfig's embedded CA, certificate and key go to a private temporary directory
    only while the TLS context loads them, then are removed, so nothing is left on disk.

    Raises:
        ConfigError: The kubeconfig is invalid, or its user has no client certificate
            (the local cluster's kubeconfig always has one).
    """
    from infragym.backends.cluster_access import from_kubeconfig
    from infragym.errors import ConfigError

    access = from_kubeconfig(kubeconfig)
    try:
        if access.cert is None or not isinstance(access.verify, str):
            raise ConfigError(
                "the kubeconfig needs a client certificate and a CA (as `infragym cluster up` "
                "writes), not a token"
            )
        return ApiClient(
            access.server, Path(access.verify), Path(access.cert[0]), Path(access.cert[1]), timeout
        )
    finally:
        access.close()


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout: float,
    interval: float = 0.2,
    on_timeout: Callable[[], str] | None = None,
) -> Any:
    """Poll ``check`` until it returns something truthy, for at most ``timeout`` seconds.

    Raises:
        ClusterError: It did not within ``timeout``; the message names ``what``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f": {on_timeout()}" if on_timeout else ""
            raise ClusterError(f"timed out after {timeout:g} s waiting for {what}{extra}")
        time.sleep(interval)
