"""SimpleK8sWebApp's ``cluster`` argument without a cluster: the layer composition, the node
knobs on the local pool, the checks made before anything runs, the local cluster's
metrics source (against an in-memory API) and the price of a local pool.

The env on a running local cluster is ``tests/kubernetes/test_env_local_cluster.py``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import gymnasium as gym
import pytest

import infragym  # noqa: F401  (registers the envs)
from infragym import catalog
from infragym.cluster import stages
from infragym.cluster.metrics import NOT_MODELLED, LocalClusterMetrics
from infragym.cluster.node_pools import POOL_LABEL
from infragym.envs import clusters
from infragym.envs.simple_k8s_web_app import LAYERS, default_knobs
from infragym.errors import ClusterError, ConfigError
from infragym.graph import ResourceRecord
from infragym.twin.cost import hourly_cost


def test_local_composition_and_knobs() -> None:
    choice = clusters.get("local-k8s", "pulumi")
    assert choice.layers(LAYERS) == (
        "local-k8s",
        "k8s-core",
        "k8s-prometheus",
        "k8s-heater",
        "k8s-siege-engine",
    )
    knobs = {k.name: k for k in default_knobs(cluster="local-k8s")}
    count, size = knobs["node_count"], knobs["node_size"]
    assert (count.layer, count.type, count.resource, count.path) == (
        "local-k8s",
        "kubernetes:infragym.dev/v1:NodePool",
        "workers",
        "spec.nodeCount",
    )
    assert (size.layer, size.path) == ("local-k8s", "spec.size")
    # The DOKS default is unchanged.
    assert default_knobs()[2].layer == "do-managed-k8s"
    assert clusters.get("do-managed-k8s", "sim").layers(LAYERS) == LAYERS


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"cluster": "kind", "backend": "pulumi"}, ConfigError, r"unknown cluster 'kind'"),
        ({"cluster": 3}, ConfigError, "unknown cluster"),
        ({"cluster": "local-k8s"}, ConfigError, r"backend='pulumi'"),
        (
            {"cluster": "local-k8s", "backend": "pulumi", "settings": {"do-core": {}}},
            ConfigError,
            r"unknown layers \['do-core'\]",
        ),
        (
            {"cluster": "local-k8s", "backend": "pulumi", "settings": {"local-k8s": {"x": 1}}},
            ConfigError,
            "local-k8s",
        ),
    ],
)
def test_bad_cluster_arguments_are_clear_errors(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        gym.make("SimpleK8sWebApp-v1", **kwargs)


def test_no_cluster_running_is_a_clear_error_and_the_process_goes_on(tmp_path) -> None:
    for env_id in ("SimpleK8sWebApp-v0", "SimpleK8sWebApp-v1"):
        with pytest.raises(ClusterError, match="infragym cluster up"):
            gym.make(
                env_id,
                backend="pulumi",
                cluster="local-k8s",
                settings={"local-k8s": {"cluster_dir": str(tmp_path / "none")}},
                backend_options={"state_url": f"file://{tmp_path / 'state'}"},
            )
    assert not (tmp_path / "state").exists()  # nothing was deployed, or prepared
    env = gym.make("SimpleK8sWebApp-v1")  # the default: the twin of DOKS
    env.reset(seed=0)
    env.step(env.action_space.sample())
    env.close()


def test_a_local_pool_costs_what_the_doks_pool_does() -> None:
    local = ResourceRecord(
        "local-k8s",
        "kubernetes:infragym.dev/v1:NodePool",
        "workers",
        {"spec": {"size": "s-4vcpu-8gb", "nodeCount": 3}},
    )
    assert hourly_cost([local]) == pytest.approx(3 * catalog.hourly_price("s-4vcpu-8gb"))
    assert hourly_cost([local], include_nodes=False) == 0.0


def test_knobs_read_quantities_as_the_provider_writes_them() -> None:
    cpu = default_knobs(cpu_limits=("500m", "750m", "1000m"))[1]
    assert cpu.index_of("1") == 2  # the Kubernetes provider stores 1000m as "1"
    assert cpu.index_of("0.75") == 1
    with pytest.raises(ConfigError, match="not in its domain"):
        cpu.index_of("2")


class FakeClient:
    """``list`` of the local cluster's API client, over fixed objects."""

    def __init__(self, objects: dict[str, list[dict]]) -> None:
        self.objects = objects

    def list(self, kind: str, namespace: str | None = None, selector: str | None = None):
        return self.objects.get(kind, [])


def _node(
    name: str, ready: bool, age_s: float = 0.0, ready_after: str = "0ms", pool: str = "p"
) -> dict:
    created = datetime.now(UTC) - timedelta(seconds=age_s)
    return {
        "metadata": {
            "name": name,
            "labels": {POOL_LABEL: pool},
            "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "annotations": {stages.READY_AFTER: ready_after},
            "ownerReferences": [{"kind": "NodePool", "name": "p", "uid": "u"}],
        },
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_local_metrics_from_the_api_server() -> None:
    client = FakeClient(
        {
            "deployments": [
                {
                    "metadata": {"name": "heater"},
                    "spec": {"replicas": 5},
                    "status": {"replicas": 5, "readyReplicas": 3},
                },
                {"metadata": {"name": "other"}, "spec": {"replicas": 9}, "status": {}},
            ],
            "nodes": [
                _node("a", True),
                _node("b", True),
                _node("c", False, age_s=10, ready_after="240000ms"),
                _node("d", False, age_s=0, ready_after="5000ms", pool="another-deployment"),
            ],
            "pods": [{"status": {"phase": "Pending"}}, {"status": {"phase": "Running"}}],
        }
    )
    source = LocalClusterMetrics(client, pools=["p"])  # type: ignore[arg-type]
    names = (*NOT_MODELLED, "replicas_desired", "replicas_ready", "replicas_starting")
    names += ("nodes_ready", "pods_pending", "nodes_booting", "next_node_ready_s")
    values, missing = source.instant(names)
    assert missing == list(NOT_MODELLED)
    assert all(math.isnan(values[n]) for n in NOT_MODELLED)
    assert values["replicas_desired"] == 5 and values["replicas_ready"] == 3
    assert values["replicas_starting"] == 2
    assert values["nodes_ready"] == 2 and values["pods_pending"] == 1
    assert values["nodes_booting"] == 1
    assert 225 <= values["next_node_ready_s"] <= 231
    everywhere = LocalClusterMetrics(client).instant(["nodes_booting", "next_node_ready_s"])[0]
    assert everywhere["nodes_booting"] == 2 and everywhere["next_node_ready_s"] <= 5
    with pytest.raises(ConfigError, match="local-cluster metric"):
        source.instant(["latency_p42"])
