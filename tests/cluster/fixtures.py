"""Fixtures for tests that run the local Kubernetes control plane (marked ``kubernetes``).

- ``k8s_bin_dir``: the binaries of ``scripts/install-kubernetes.sh`` (found in its cache,
  never built here). Without them the tests skip with the reason, unless
  ``INFRAGYM_REQUIRE_K8S`` is set (``scripts/test.sh`` sets it after building them):
  then they fail.
- ``local_cluster``: one :class:`~infragym.cluster.LocalCluster` per session in a
  temporary directory, on 127.0.0.1 only, stopped by PID at the end.
- ``k8s``: an admin API client of that cluster.

``tests/cluster/conftest.py`` and ``tests/kubernetes/conftest.py`` import these.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from infragym.cluster import LocalCluster, find_bin_dir
from infragym.cluster.api import ApiClient
from infragym.errors import ClusterError


def require_k8s_binaries() -> Path:
    """The binaries' directory; skip (or fail with ``INFRAGYM_REQUIRE_K8S``) without it."""
    try:
        return find_bin_dir()
    except ClusterError as exc:
        if os.environ.get("INFRAGYM_REQUIRE_K8S"):
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def k8s_bin_dir() -> Path:
    """The directory of the local Kubernetes binaries."""
    return require_k8s_binaries()


@pytest.fixture(scope="session")
def local_cluster(
    k8s_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """A running local control plane (one per session)."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), bin_dir=k8s_bin_dir)
    cluster.up(timeout=120)
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def k8s(local_cluster: LocalCluster) -> ApiClient:
    """An admin client of the session's cluster."""
    return local_cluster.client(timeout=20)
