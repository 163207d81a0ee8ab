"""SimpleK8sWebApp-v1 with the local cluster in place of DOKS (``cluster="local-k8s"``).

One env per module on the session's local cluster, through the pulumi backend, the real
engine and the real Kubernetes provider. Each test steps the env and reads back from the
API server what the controllers and the real scheduler made of the step: the heater's
replicas and its CPU limit (a rollout), the node count and size (Nodes with the
catalogue's allocatable, pods bound where they fit, the rest Pending). The observation's
replicas, nodes and Pending entries come from kube-state-metrics through a Prometheus
(from the API server when kube-state-metrics is not built) and must equal the API
server's own figures; the request metrics are missing (no container runs), and cost
follows the catalogue's price of the pools' nodes. ``close()`` leaves no stack and no
object. Bad inputs (an unknown cluster, no cluster running) fail before anything is
deployed, and the process carries on.

Pending heater pods come from a smaller pool (a ``local-k8s`` update, which the provider
does not await) rather than from more replicas: an ``up`` of the heater with Pending pods
waits for the provider's 10-minute rollout timeout (see ``test_layers``).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import infragym  # noqa: F401  (registers the envs)
from infragym import catalog
from infragym.cluster import LocalCluster, node_ready
from infragym.cluster.api import ApiClient, wait_for
from infragym.cluster.metrics import NOT_MODELLED
from infragym.cluster.node_pools import POOL_LABEL, SIZE_LABEL, _pools_path
from infragym.cluster.scheduler_check import _tainted
from infragym.errors import ClusterError, ConfigError
from infragym.twin.units import quantity_value
from tests.metrics.conftest import prometheus_launcher

pytestmark = [pytest.mark.kubernetes, pytest.mark.engine]

DEPLOYMENT = "lk"
NS = "infragym"
WORKERS = f"{DEPLOYMENT}-workers"
SYSTEM = f"{DEPLOYMENT}-system"
OBSERVED = ("replicas_desired", "replicas_ready", "nodes_ready", "pods_pending")
UPDATE_TIMEOUT = 300.0


class Run:
    """The module's env, cluster client and state URL."""

    def __init__(self, env: gym.Env, k8s: ApiClient, url: str, prometheus: bool) -> None:
        self.env, self.k8s, self.url, self.prometheus = env, k8s, url, prometheus
        self.info: dict[str, Any] = {}

    @property
    def backend(self) -> Any:
        return self.env.unwrapped.backend

    def step(self, **values: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """One step setting the named knobs (absolute action); the updates awaited."""
        knobs = self.env.unwrapped.knobs
        current = self.info["knobs"]
        action = [k.index_of(values.get(k.name, current[k.name])) for k in knobs]
        obs, reward, terminated, _truncated, info = self.env.step(np.array(action))
        assert self.env.observation_space.contains(obs)
        assert math.isfinite(reward) and not terminated
        assert self.backend.wait(UPDATE_TIMEOUT), "the layer updates did not complete"
        self.info = info
        return obs, info

    def observe_settled(self, truth: Any, timeout: float = 60.0) -> dict[str, Any]:
        """Step without changes until the observed cluster metrics equal ``truth()``."""
        deadline = time.monotonic() + timeout
        for _ in range(1000):
            _obs, info = self.step()
            want = truth()
            got = {n: info["metrics"][n] for n in want}
            if got == want:
                return info
            if time.monotonic() > deadline:
                pytest.fail(f"observed {got}, the API server says {want}")
            time.sleep(1.0)
        pytest.fail("no settled observation in 1000 steps")


def api_truth(k8s: ApiClient) -> dict[str, float]:
    """The observed cluster metrics as the API server gives them (their PromQL's meaning)."""
    heater = k8s.request("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/heater")
    return {
        "replicas_desired": float(heater["spec"]["replicas"]),
        "replicas_ready": float(heater["status"].get("readyReplicas", 0)),
        "nodes_ready": float(sum(map(node_ready, k8s.list("nodes")))),
        "pods_pending": float(sum(p["status"].get("phase") == "Pending" for p in k8s.list("pods"))),
    }


def pool_nodes(k8s: ApiClient, pool: str = WORKERS) -> list[dict]:
    return k8s.list("nodes", selector=f"{POOL_LABEL}={pool}")


def heater_pods(k8s: ApiClient) -> list[dict]:
    return [
        p
        for p in k8s.list("pods", NS)
        if p["metadata"]["name"].startswith("heater-")
        and not p["metadata"].get("deletionTimestamp")
    ]


def pools_cost(k8s: ApiClient) -> float:
    """Hourly list price of the deployment's pools as the API server holds them."""
    total = 0.0
    for name in (WORKERS, SYSTEM):
        spec = k8s.request("GET", _pools_path(name))["spec"]
        total += catalog.hourly_price(spec["size"]) * spec["nodeCount"]
    return total


def check_placement(k8s: ApiClient, size: str, count: int) -> list[dict]:
    """The workers are ``count`` Ready nodes of ``size`` with the catalogue's capacity, and
    the scheduler bound each heater pod to one of them within its allocatable CPU."""
    nodes = pool_nodes(k8s)
    assert len(nodes) == count
    want = catalog.size(size)
    for n in nodes:
        assert n["metadata"]["labels"][SIZE_LABEL] == size
        assert node_ready(n) and not _tainted(n)
        alloc = n["status"]["allocatable"]
        assert quantity_value(alloc["cpu"]) == pytest.approx(want.allocatable_cpu)
        assert quantity_value(n["status"]["capacity"]["cpu"]) == want.vcpus
    names = {n["metadata"]["name"]: n for n in nodes}
    used: dict[str, float] = dict.fromkeys(names, 0.0)
    pods = heater_pods(k8s)
    for p in pods:
        node = p["spec"].get("nodeName")
        if node is None:
            continue
        assert node in names, f"heater pod {p['metadata']['name']} on {node}, not a worker"
        cpu = p["spec"]["containers"][0]["resources"]["requests"]["cpu"]
        used[node] += quantity_value(cpu)
    for node, cpu in used.items():
        assert cpu <= want.allocatable_cpu + 1e-9, f"{node} holds {cpu} CPU of requests"
    return pods


# ---------------------------------------------------------------------- bad inputs


def test_bad_inputs_fail_before_anything_is_deployed(
    k8s_engine: Path, local_cluster: LocalCluster, tmp_path: Path
) -> None:
    url = f"file://{tmp_path / 'state'}"
    (tmp_path / "state").mkdir()
    options = {"deployment": "bad", "state_url": url, "step_wait": False, "progress": False}
    with pytest.raises(ConfigError, match=r"unknown cluster 'kind'.*local-k8s"):
        gym.make("SimpleK8sWebApp-v1", backend="pulumi", cluster="kind")
    with pytest.raises(ConfigError, match="backend='pulumi'"):
        gym.make("SimpleK8sWebApp-v1", cluster="local-k8s")  # the sim backend
    with pytest.raises(ConfigError, match=r"unknown layers.*do-managed-k8s"):
        gym.make(
            "SimpleK8sWebApp-v1",
            backend="pulumi",
            cluster="local-k8s",
            settings={"do-managed-k8s": {"node_count": 3}},
            backend_options=options,
        )
    # No cluster started in the directory.
    with pytest.raises(ClusterError, match="infragym cluster up"):
        gym.make(
            "SimpleK8sWebApp-v1",
            backend="pulumi",
            cluster="local-k8s",
            settings={"local-k8s": {"cluster_dir": str(tmp_path / "none")}},
            backend_options=options,
        )
    # A stale kubeconfig: the cluster's credentials, a server that is not running.
    from infragym.cluster.control_plane import free_port

    stale = local_cluster.kubeconfig().replace(
        local_cluster.server, f"https://127.0.0.1:{free_port()}"
    )
    with pytest.raises(ClusterError, match=r"unreachable.*infragym cluster up") as err:
        gym.make(
            "SimpleK8sWebApp-v1",
            backend="pulumi",
            cluster="local-k8s",
            settings={"local-k8s": {"kubeconfig": stale}},
            backend_options=options,
        )
    assert "BEGIN" not in str(err.value)  # no credential in the message
    assert not any((tmp_path / "state").rglob("*.json")), "a stack was created"


# ---------------------------------------------------------------------- the env


@pytest.fixture(scope="module")
def run(
    k8s_engine: Path, local_cluster: LocalCluster, k8s: ApiClient, tmp_path_factory
) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("env-local")
    url = f"file://{tmp / 'state'}"
    (tmp / "state").mkdir()
    options: dict[str, Any] = {
        "deployment": DEPLOYMENT,
        "state_url": url,
        "step_wait": False,
        "progress": False,
    }
    ksm = local_cluster.status().kube_state_metrics_url
    with prometheus_launcher(tmp) as start:
        if ksm is not None:
            prom = start({"kube-state-metrics": ksm})
            prom.wait_targets_up(1, timeout=30)
            options["prometheus_url"] = prom.url
        env = gym.make(
            "SimpleK8sWebApp-v1",
            backend="pulumi",
            cluster="local-k8s",
            action_mode="absolute",
            step_seconds=5,
            settings={"local-k8s": {"kubeconfig": local_cluster.kubeconfig(), "ready_after_s": 1}},
            backend_options=options,
        )
        r = Run(env, k8s, url, prometheus=ksm is not None)
        try:
            yield r
        finally:
            env.close()


def test_reset_observes_the_cluster_and_reports_request_metrics_missing(run: Run) -> None:
    obs, info = run.env.reset(seed=0, options={"scenario": "constant"})
    run.info = info
    k8s = run.k8s
    assert run.env.observation_space.contains(obs)
    # v1's starting deployment on the local pool: 2 s-4vcpu-8gb workers, 6 heater pods.
    assert info["knobs"] == {
        "heater_replicas": 6,
        "heater_cpu_limit": "1000m",
        "node_count": 2,
        "node_size": "s-4vcpu-8gb",
    }
    wait_for("2 Ready workers", lambda: sum(map(node_ready, pool_nodes(k8s))) == 2, 60)
    check_placement(k8s, "s-4vcpu-8gb", 2)
    assert set(info["missing"]) == set(NOT_MODELLED)
    for name in NOT_MODELLED:
        assert math.isnan(info["metrics"][name])
    assert info["metrics"]["cost_hourly"] == pytest.approx(pools_cost(k8s))
    assert info["metrics"]["cost_hourly"] == pytest.approx(
        2 * catalog.hourly_price("s-4vcpu-8gb") + catalog.hourly_price("s-2vcpu-4gb")
    )
    info = run.observe_settled(lambda: api_truth(k8s))
    assert info["metrics"]["replicas_ready"] == 6
    assert info["metrics"]["nodes_booting"] == 0


def test_step_changes_replicas(run: Run) -> None:
    k8s = run.k8s
    _, info = run.step(heater_replicas=9)
    assert "k8s-heater" in info["layers_updated"]
    heater = k8s.request("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/heater")
    assert heater["spec"]["replicas"] == 9
    assert heater["status"]["readyReplicas"] == 9  # the provider awaited the rollout
    check_placement(k8s, "s-4vcpu-8gb", 2)
    info = run.observe_settled(lambda: api_truth(k8s))
    assert info["metrics"]["replicas_desired"] == info["metrics"]["replicas_ready"] == 9
    assert info["knobs_running"]["heater_replicas"] == 9


def test_step_changes_the_cpu_limit_by_a_rollout(run: Run) -> None:
    k8s = run.k8s
    before = k8s.request("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/heater")
    run.step(heater_cpu_limit="750m")
    heater = k8s.request("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/heater")
    assert heater["metadata"]["generation"] > before["metadata"]["generation"]
    status = heater["status"]
    assert status["updatedReplicas"] == status["readyReplicas"] == 9
    pods = wait_for(
        "the old pods gone", lambda: len(heater_pods(k8s)) == 9 and heater_pods(k8s), 60
    )
    assert all(p["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "750m" for p in pods)
    check_placement(k8s, "s-4vcpu-8gb", 2)


def test_step_changes_the_node_count(run: Run) -> None:
    k8s = run.k8s
    _, info = run.step(node_count=3)
    assert info["knobs"]["node_count"] == 3
    pool = k8s.request("GET", _pools_path(WORKERS))
    assert pool["spec"]["nodeCount"] == 3
    wait_for("3 Ready workers", lambda: sum(map(node_ready, pool_nodes(k8s))) == 3, 60)
    wait_for("untainted", lambda: not any(map(_tainted, pool_nodes(k8s))), 60)
    check_placement(k8s, "s-4vcpu-8gb", 3)
    info = run.observe_settled(lambda: api_truth(k8s))
    assert info["metrics"]["nodes_ready"] >= 4  # 3 workers and the system node
    assert info["metrics"]["cost_hourly"] == pytest.approx(pools_cost(k8s))


def test_step_changes_the_node_size_and_the_scheduler_places_the_pods(run: Run) -> None:
    k8s = run.k8s
    run.step(node_size="s-8vcpu-16gb")

    def replaced() -> bool:
        nodes = pool_nodes(k8s)
        return len(nodes) == 3 and all(
            n["metadata"]["labels"][SIZE_LABEL] == "s-8vcpu-16gb"
            and node_ready(n)
            and not _tainted(n)
            for n in nodes
        )

    wait_for("3 Ready s-8vcpu-16gb workers, the old ones gone", replaced, 120)

    def on_new_nodes() -> bool:
        names = {n["metadata"]["name"] for n in pool_nodes(k8s)}
        return len([p for p in heater_pods(k8s) if p["spec"].get("nodeName") in names]) == 9

    wait_for("9 heater pods bound to the new nodes", on_new_nodes, 120)
    pods = check_placement(k8s, "s-8vcpu-16gb", 3)
    assert len(pods) == 9
    info = run.observe_settled(lambda: api_truth(k8s))
    assert info["metrics"]["cost_hourly"] == pytest.approx(
        3 * catalog.hourly_price("s-8vcpu-16gb") + catalog.hourly_price("s-2vcpu-4gb")
    )
    assert info["knobs_running"]["node_size"] == "s-8vcpu-16gb"


def _requests(pod: dict) -> tuple[float, float]:
    """A pod's CPU (cores) and memory (bytes) requests."""
    cpu = mem = 0.0
    for c in pod["spec"]["containers"]:
        r = (c.get("resources") or {}).get("requests") or {}
        cpu += quantity_value(r.get("cpu", "0"))
        mem += quantity_value(r.get("memory", "0"))
    return cpu, mem


def test_a_smaller_pool_leaves_pods_pending(run: Run) -> None:
    k8s = run.k8s
    # One s-1vcpu-2gb worker (940m, 1 GiB allocatable): a few 250m heater pods fit, the
    # rest are Pending. How many fit depends on which other pods (Prometheus, the
    # siege-engine, unpinned) the scheduler put there too, so it is worked out below.
    run.step(node_size="s-1vcpu-2gb", node_count=1)

    def settled() -> list[dict] | None:
        nodes = pool_nodes(k8s)
        if len(nodes) != 1 or not node_ready(nodes[0]) or _tainted(nodes[0]):
            return None
        if nodes[0]["metadata"]["labels"][SIZE_LABEL] != "s-1vcpu-2gb":
            return None
        pods = heater_pods(k8s)
        placed = [
            p
            for p in pods
            if p["spec"].get("nodeName")
            or any(c.get("reason") == "Unschedulable" for c in p["status"].get("conditions", []))
        ]
        return pods if len(pods) == 9 and len(placed) == 9 else None

    wait_for("every heater pod bound or unschedulable", settled, 180)
    time.sleep(2)  # (a pod bound meanwhile would show in the checks below)
    pods = check_placement(k8s, "s-1vcpu-2gb", 1)
    (node,) = pool_nodes(k8s)
    name = node["metadata"]["name"]
    on_node = [p for p in k8s.list("pods") if p["spec"].get("nodeName") == name]
    bound = [p for p in pods if p["spec"].get("nodeName")]
    assert len(bound) < 9, "nothing is Pending"
    other_cpu = sum(_requests(p)[0] for p in on_node if p not in bound)
    other_mem = sum(_requests(p)[1] for p in on_node if p not in bound)
    cpu, mem = _requests(pods[0])
    alloc = node["status"]["allocatable"]
    free_cpu = quantity_value(alloc["cpu"]) - other_cpu
    free_mem = quantity_value(alloc["memory"]) - other_mem

    def fits(n: int) -> bool:
        return n * cpu <= free_cpu + 1e-9 and n * mem <= free_mem

    # The real scheduler bound as many heater pods as fit, and no more.
    assert fits(len(bound)) and not fits(len(bound) + 1), (len(bound), free_cpu, free_mem)
    info = run.observe_settled(lambda: api_truth(k8s))
    assert info["metrics"]["pods_pending"] >= 9 - len(bound)
    assert info["metrics"]["replicas_ready"] == len(bound)
    assert info["metrics"]["cost_hourly"] == pytest.approx(pools_cost(k8s))


def test_close_leaves_no_stack_and_no_object(run: Run) -> None:
    k8s = run.k8s
    run.env.close()
    assert k8s.request("GET", _pools_path(WORKERS)) is None
    assert k8s.request("GET", _pools_path(SYSTEM)) is None
    wait_for("the namespace gone", lambda: k8s.get("namespaces", NS) is None, 180)
    wait_for("the pools' nodes gone", lambda: not pool_nodes(k8s) + pool_nodes(k8s, SYSTEM), 60)
    for kind in ("clusterroles", "clusterrolebindings"):
        assert not [
            o
            for o in k8s.list(kind)
            if (o["metadata"].get("labels") or {}).get("app.kubernetes.io/part-of") == "infragym"
        ]
    listed = subprocess.run(
        [sys.executable, "-m", "infragym.cli", "stacks", "list", "--backend", run.url],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert f"{DEPLOYMENT}." not in listed.stdout, listed.stdout
