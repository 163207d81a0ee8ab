"""The local control plane: real etcd, API server, controller manager, scheduler and KWOK.

Checked against the Kubernetes documentation rather than against our own code: the API
server refuses anonymous requests, reports the version it was built as, the scheduler
leaves a pod Pending with ``Insufficient cpu`` when no node's allocatable has room
(kube-scheduler's NodeResourcesFit filter), and the node-lifecycle controller lifts the
``node.kubernetes.io/not-ready`` taint once KWOK reports a node Ready.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from infragym import catalog
from infragym.cluster import COMPONENTS, LocalCluster
from infragym.cluster.api import ApiClient, wait_for
from infragym.cluster.node_pools import POOL_LABEL, _pools_path
from infragym.errors import ClusterError
from infragym.twin.units import quantity_value as q

pytestmark = pytest.mark.kubernetes


def _pool(name: str, size: str, count: int, ready_after: float = 0) -> dict:
    return {
        "apiVersion": "infragym.dev/v1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {"size": size, "nodeCount": count, "readyAfterSeconds": ready_after},
    }


def _stamp(text: str) -> float:
    """Unix seconds of an API server timestamp (``2026-01-02T03:04:05Z``)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _ready_nodes(k8s: ApiClient, pool: str) -> list[dict]:
    out = []
    for n in k8s.list("nodes", selector=f"{POOL_LABEL}={pool}"):
        conds = {c["type"]: c["status"] for c in n.get("status", {}).get("conditions", [])}
        if conds.get("Ready") == "True" and not n.get("spec", {}).get("taints"):
            out.append(n)
    return out


def test_status_and_credentials(local_cluster: LocalCluster, k8s: ApiClient) -> None:
    st = local_cluster.status()
    assert st.running, st
    assert all(v.startswith("running") for v in st.components.values()), st.components
    assert st.server.startswith("https://127.0.0.1:")
    # The kubeconfig is private and holds a client certificate, not a token.
    mode = stat.S_IMODE(os.stat(local_cluster.kubeconfig_path).st_mode)
    assert mode == 0o600
    doc = yaml.safe_load(local_cluster.kubeconfig())
    user = doc["users"][0]["user"]
    assert set(user) == {"client-certificate-data", "client-key-data"}
    # The server reports the version it was built as (ldflags), which clients parse.
    version = k8s.request("GET", "/version")
    assert version["gitVersion"] == "v1.35.4", version
    # No anonymous access: a TLS client without a certificate gets 401.
    ctx = ssl.create_default_context(cafile=str(local_cluster.pki.ca))
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(st.server + "/api/v1/namespaces", timeout=5, context=ctx)
    assert err.value.code == 401
    # Every component listens on loopback only.
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=False).stdout
    state = json.loads(local_cluster.state_path.read_text())
    pids = {str(v["pid"]) for v in state["processes"].values()}
    for line in out.splitlines():
        if any(f"pid={p}," in line for p in pids):
            local = line.split()[3]
            assert local.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")), line


def test_node_pool_nodes_ready_after_delay_with_catalog_capacity(k8s: ApiClient) -> None:
    size = catalog.size("s-2vcpu-4gb")
    k8s.request("POST", _pools_path(), _pool("cp-delay", size.slug, 2, ready_after=3))
    try:
        nodes = wait_for(
            "2 nodes", lambda: len(k8s.list("nodes", selector=f"{POOL_LABEL}=cp-delay")) == 2, 20
        )
        assert nodes
        ready = wait_for(
            "Ready nodes",
            lambda: len(_ready_nodes(k8s, "cp-delay")) == 2 and _ready_nodes(k8s, "cp-delay"),
            30,
        )
        for n in ready:
            # Not before the delay, by the cluster's own clock: KWOK stamps the Ready
            # condition when it applies its stage. (A check from the test's side, "not
            # Ready yet when first seen", fails when a loaded machine delays the test by
            # more than the delay.) Timestamps have whole seconds: 3 s is at least 2.
            (cond,) = [c for c in n["status"]["conditions"] if c["type"] == "Ready"]
            became_ready = _stamp(cond["lastTransitionTime"]) - _stamp(
                n["metadata"]["creationTimestamp"]
            )
            assert became_ready >= 2, (cond, n["metadata"]["creationTimestamp"])
            status = n["status"]
            # (The API server writes quantities canonically: 4096Mi as 4Gi.)
            assert q(status["capacity"]["cpu"]) == size.vcpus
            assert q(status["capacity"]["memory"]) == q(f"{size.memory_mib}Mi")
            assert q(status["allocatable"]["cpu"]) == q(f"{round(size.allocatable_cpu * 1000)}m")
            assert q(status["allocatable"]["memory"]) == q(
                f"{round(size.allocatable_memory_gib * 1024)}Mi"
            )
            assert n["metadata"]["labels"]["node.kubernetes.io/instance-type"] == size.slug
        pool = wait_for(
            "pool status",
            lambda: (
                (k8s.request("GET", _pools_path("cp-delay")).get("status") or {}).get("readyNodes")
                == 2
            ),
            10,
        )
        assert pool
    finally:
        k8s.request("DELETE", _pools_path("cp-delay"))
    wait_for("nodes deleted", lambda: not k8s.list("nodes", selector=f"{POOL_LABEL}=cp-delay"), 60)


def test_scheduler_leaves_pods_pending_beyond_allocatable(k8s: ApiClient) -> None:
    # s-1vcpu-2gb: 1 vCPU, 940m allocatable; 400m pods: two fit, the third is Pending.
    k8s.request("POST", _pools_path(), _pool("cp-full", "s-1vcpu-2gb", 1))
    ns = "cp-full"
    k8s.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    try:
        wait_for("node Ready", lambda: _ready_nodes(k8s, "cp-full"), 30)
        wait_for("default service account", lambda: k8s.get("serviceaccounts", "default", ns), 30)
        labels = {"app": "big"}
        k8s.create(
            "deployments",
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "big"},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "nodeSelector": {POOL_LABEL: "cp-full"},
                            "containers": [
                                {
                                    "name": "c",
                                    "image": "registry.invalid/none:0",
                                    "resources": {"requests": {"cpu": "400m", "memory": "64Mi"}},
                                }
                            ],
                        },
                    },
                },
            },
            ns,
        )

        def settled() -> list[dict] | None:
            pods = k8s.list("pods", ns)
            if len(pods) < 3:
                return None
            bound = [p for p in pods if p["spec"].get("nodeName")]
            unsched = [
                p
                for p in pods
                if any(
                    c.get("reason") == "Unschedulable"
                    for c in p.get("status", {}).get("conditions", [])
                )
            ]
            return pods if len(bound) == 2 and len(unsched) == 1 else None

        pods = wait_for("2 bound, 1 unschedulable", settled, 60)
        (pending,) = [p for p in pods if not p["spec"].get("nodeName")]
        assert pending["status"]["phase"] == "Pending"
        (cond,) = [c for c in pending["status"]["conditions"] if c["type"] == "PodScheduled"]
        assert "Insufficient cpu" in cond["message"], cond
        # KWOK made the bound ones Running and Ready.
        running = wait_for(
            "bound pods Running",
            lambda: [p for p in k8s.list("pods", ns) if p["status"].get("phase") == "Running"],
            30,
        )
        assert len(running) == 2
    finally:
        k8s.delete("namespaces", ns)
        k8s.request("DELETE", _pools_path("cp-full"))


def _fake_bin_dir(real: Path, tmp: Path, broken: str) -> Path:
    """A copy of the binaries' directory (symlinks) in which ``broken`` fails at once."""
    d = tmp / "bin"
    d.mkdir()
    for f in real.iterdir():
        (d / f.name).symlink_to(f)
    (d / broken).unlink()
    (d / broken).write_text("#!/bin/sh\necho 'unknown flag: --boom' >&2\nexit 3\n")
    (d / broken).chmod(0o755)
    return d


def test_component_that_fails_to_start_is_named_with_its_log(
    k8s_bin_dir: Path, tmp_path: Path
) -> None:
    cluster = LocalCluster(
        tmp_path / "c", bin_dir=_fake_bin_dir(k8s_bin_dir, tmp_path, "kube-scheduler")
    )
    with pytest.raises(ClusterError) as err:
        cluster.up(timeout=60)
    msg = str(err.value)
    assert "kube-scheduler exited with code 3" in msg
    assert str(cluster.log_path("kube-scheduler")) in msg
    assert "unknown flag: --boom" in msg
    # What had started was stopped again.
    st = cluster.status()
    assert not st.running
    assert set(st.components.values()) == {"stopped"}


def test_stopped_cluster_gives_a_clear_error(k8s_bin_dir: Path, tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", bin_dir=k8s_bin_dir)
    cluster.up(timeout=120)
    client = cluster.client(timeout=3)
    assert set(COMPONENTS) <= set(cluster.down())
    with pytest.raises(ClusterError, match=r"unreachable.*infragym cluster status"):
        client.list("nodes")
    # The same directory comes back as the same cluster (CA, port, objects).
    server = cluster.server
    cluster.up(timeout=120)
    try:
        assert cluster.server == server
        assert cluster.client().get("namespaces", "default")
    finally:
        cluster.down()


def test_down_never_signals_a_process_it_did_not_start(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", bin_dir=tmp_path)
    other = subprocess.Popen([shutil.which("sleep") or "/bin/sleep", "30"])
    try:
        cluster.dir.mkdir(parents=True)
        cluster.state_path.write_text(
            json.dumps(
                {"processes": {"etcd": {"pid": other.pid, "binary": "/not/this/etcd", "log": ""}}}
            )
        )
        assert cluster.down() == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_cli_status_up_down(k8s_bin_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "INFRAGYM_K8S_DIR": str(k8s_bin_dir)}
    d = str(tmp_path / "c")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "infragym.cli", "cluster", *args, "--dir", d],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
            check=False,
        )

    st = cli("status")
    assert st.returncode == 1 and "not running" in st.stdout
    up = cli("up")
    try:
        assert up.returncode == 0, up.stderr
        assert f"export KUBECONFIG={d}/kubeconfig" in up.stdout
        st = cli("status")
        assert st.returncode == 0 and "kube-scheduler" in st.stdout, st.stdout
    finally:
        down = cli("down", "--purge")
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not Path(d).exists()
