"""Fixtures for the k8s layers deployed for real: the local cluster, the real Pulumi CLI
and the real ``pulumi-resource-kubernetes`` provider.

- The cluster fixtures come from :mod:`tests.cluster.fixtures`; the Pulumi CLI and its
  per-module environment (a temporary ``PULUMI_HOME``, a test passphrase) from
  :mod:`tests.backends.conftest`.
- ``k8s_engine`` registers the provider that ``scripts/install-kubernetes.sh`` built in
  that ``PULUMI_HOME`` under the Python SDK's version (``pulumi plugin install resource
  kubernetes <version> --file <binary>``), so the engine never tries to download one.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
from pathlib import Path

import pytest

from tests.backends.conftest import pulumi_cli_dir, pulumi_env  # noqa: F401
from tests.cluster.fixtures import k8s, k8s_bin_dir, local_cluster  # noqa: F401

PROVIDER = "pulumi-resource-kubernetes"


@pytest.fixture(scope="module")
def k8s_engine(pulumi_env: Path, pulumi_cli_dir: Path, k8s_bin_dir: Path) -> Path:  # noqa: F811
    """The module's engine environment with the real Kubernetes provider registered."""
    binary = k8s_bin_dir / PROVIDER
    if not os.access(binary, os.X_OK):
        msg = f"{binary} is not built (scripts/install-kubernetes.sh builds it)"
        if os.environ.get("INFRAGYM_REQUIRE_K8S"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    version = importlib.metadata.version("pulumi_kubernetes")
    out = subprocess.run(
        [
            str(pulumi_cli_dir / "pulumi"),
            "plugin",
            "install",
            "resource",
            "kubernetes",
            version,
            "--file",
            str(binary),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return pulumi_env
