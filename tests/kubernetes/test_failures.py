"""Failures with the real engine and provider: a cluster that is stopped (a stale
kubeconfig), and a cluster stopped in the middle of an ``up``. Each must give a clear
error, and leave state that ``infragym stacks destroy`` cleans.

These use a cluster of their own (stopped and restarted), not the session's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infragym.backends.base import Change, LayerSpec
from infragym.cluster import LocalCluster
from infragym.cluster.api import wait_for
from infragym.cluster.node_pools import _pools_path
from infragym.envs.simple_k8s_web_app import default_knobs
from infragym.errors import EngineError, InfraGymError

pytestmark = [pytest.mark.kubernetes, pytest.mark.engine]

HEATER_REPLICAS = default_knobs()[0]


@pytest.fixture
def own_cluster(k8s_bin_dir: Path, tmp_path: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path / "cluster", bin_dir=k8s_bin_dir)
    cluster.up(timeout=120)
    try:
        yield cluster
    finally:
        cluster.down()


def _layers(cluster: LocalCluster) -> list[LayerSpec]:
    return [
        LayerSpec(
            "local-k8s",
            {"kubeconfig": cluster.kubeconfig(), "node_count": 1, "ready_after_s": 0},
        ),
        LayerSpec("k8s-core", {"metrics_server": False}),
        LayerSpec("k8s-heater", {}),
    ]


def _stacks(url: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "infragym.cli", "stacks", *args, "--backend", url],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
        check=False,
    )


def test_stale_kubeconfig_is_a_clear_error_and_stacks_destroy_cleans(
    k8s_engine: Path, own_cluster: LocalCluster
) -> None:
    from infragym.backends.pulumi import PulumiBackend

    url = f"file://{k8s_engine / 'state-stale'}"
    (k8s_engine / "state-stale").mkdir()
    backend = PulumiBackend("stale", url, keep=True, step_wait=False, progress=False)
    backend.reset(_layers(own_cluster), seed=0)
    own_cluster.down()
    with pytest.raises(EngineError) as err:
        backend.apply([Change(HEATER_REPLICAS, 3)])
    msg = str(err.value)
    assert "stale.k8s-heater" in msg
    assert "unreachable" in msg or "connection refused" in msg, msg
    assert "BEGIN" not in msg and "client-key" not in msg  # no credential in the message
    backend.close()
    # With the cluster stopped, destroy cannot delete its objects: a clear failure...
    failed = _stacks(url, "destroy", "stale", "--yes")
    assert failed.returncode != 0
    # ... and once it is back (same directory: same CA, port and objects) destroy cleans.
    own_cluster.up(timeout=120)
    done = _stacks(url, "destroy", "stale", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    k8s = own_cluster.client()
    assert k8s.request("GET", _pools_path())["items"] == []
    wait_for("namespace gone", lambda: k8s.get("namespaces", "infragym") is None, 120)
    assert "stale." not in _stacks(url, "list").stdout


def test_cluster_stopped_mid_up(k8s_engine: Path, own_cluster: LocalCluster) -> None:
    from infragym.backends.pulumi import PulumiBackend

    url = f"file://{k8s_engine / 'state-mid'}"
    (k8s_engine / "state-mid").mkdir()
    backend = PulumiBackend("mid", url, keep=True, step_wait=False, progress=False)
    k8s = own_cluster.client()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            backend.reset(_layers(own_cluster), seed=0)
        except BaseException as exc:  # the test inspects it
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    # Stop the cluster as soon as the first layer has created its node pools.
    wait_for("the node pools", lambda: k8s.request("GET", _pools_path("mid-workers")), 300)
    time.sleep(0.5)
    own_cluster.down()
    thread.join(600)
    assert not thread.is_alive()
    assert failure, "the up succeeded although the cluster was stopped"
    assert isinstance(failure[0], InfraGymError), repr(failure[0])
    assert "mid." in str(failure[0])
    backend.close()
    own_cluster.up(timeout=120)
    done = _stacks(url, "destroy", "mid", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert k8s.request("GET", _pools_path())["items"] == []
    assert "mid." not in _stacks(url, "list").stdout
