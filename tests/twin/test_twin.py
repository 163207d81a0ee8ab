"""The twin against queueing theory, the Kubernetes docs and DigitalOcean's billing rules."""

from __future__ import annotations

import copy
import math

import pytest

from infragym import catalog
from infragym.apps.workload import CpuWork, constant
from infragym.backends.base import ResourceRecord
from infragym.errors import ConfigError
from infragym.twin.cost import K8S_PVC, resource_hourly_cost
from infragym.twin.model import TwinParams
from infragym.twin.twin import CPU_LIMIT_PATH, Twin
from tests.twin.graphs import DEPLOYMENT, NODE_POOL, web_app

EXACT = TwinParams(noise=False)


def run(twin: Twin, steps: int, seconds: float = 30.0) -> dict[str, float]:
    m: dict[str, float] = {}
    for _ in range(steps):
        m = twin.advance(seconds)
    return m


def test_single_pod_matches_mm1():
    # One pod, one worker, limit 1 core, 20 ms exponential CPU per request: mu = 50/s.
    twin = Twin(web_app(replicas=1, schedule=constant(40.0)), params=EXACT)
    m = run(twin, 2)
    rate = 50.0 - 40.0
    assert m["latency_p50"] == pytest.approx(math.log(2) / rate, rel=0.10)
    assert m["latency_p95"] == pytest.approx(math.log(20) / rate, rel=0.10)
    assert m["latency_p99"] == pytest.approx(math.log(100) / rate, rel=0.10)
    assert m["request_rate"] == pytest.approx(40.0, rel=0.01)


def test_pod_with_workers_matches_mmc():
    # One pod with 4 worker processes sharing one socket: an M/M/4 queue.
    from tests.twin.test_queueing import simulate_mmc

    work = CpuWork(mean_ms=100.0, distribution="exponential", workers=4, timeout_s=30)
    twin = Twin(
        web_app(
            replicas=1, work=work, cpu_limit="4", node_size="s-8vcpu-16gb", schedule=constant(34.0)
        ),
        params=EXACT,
    )
    m = run(twin, 2)
    sim = simulate_mmc(4, 10.0, 34.0, 200_000, seed=3)
    for q, name in ((0.5, "latency_p50"), (0.95, "latency_p95"), (0.99, "latency_p99")):
        assert m[name] == pytest.approx(float(sorted(sim)[int(q * len(sim))]), rel=0.10)


def test_several_pods_split_load_at_random():
    # kube-proxy (iptables) picks a backend at random: n pods are n M/M/1 queues at lam/n.
    twin = Twin(web_app(replicas=4, schedule=constant(160.0)), params=EXACT)
    m = run(twin, 2)
    assert m["latency_p95"] == pytest.approx(math.log(20) / (50.0 - 40.0), rel=0.10)


def test_cpu_limit_caps_throughput():
    # 20 ms of CPU per request under a 250m limit takes 80 ms: at most 12.5 req/s served.
    twin = Twin(web_app(replicas=1, cpu_limit="250m", schedule=constant(40.0)), params=EXACT)
    m = run(twin, 2)
    served = m["request_rate"] * (1 - m["error_ratio"]) / (1 - 0)  # answered minus shed
    assert m["offered_rate"] == pytest.approx(40.0)
    assert 40.0 * (1 - m["error_ratio"]) == pytest.approx(12.5, rel=0.02)
    assert served <= 40.0
    assert m["cpu_utilisation_limits"] == pytest.approx(1.0, rel=0.02)


def test_pods_beyond_allocatable_stay_pending():
    # s-1vcpu-2gb: 1 vCPU less the kubelet reservation; 250m requests.
    size = catalog.size("s-1vcpu-2gb")
    fit_per_node = int(size.allocatable_cpu // 0.25)
    twin = Twin(web_app(replicas=10, node_size="s-1vcpu-2gb", node_count=2), params=EXACT)
    m = run(twin, 1)
    assert m["replicas_ready"] == 2 * fit_per_node
    # The siege-engine fits the system pool, so only heater pods are Pending.
    assert m["pods_pending"] == 10 - 2 * fit_per_node


def test_new_node_ready_only_after_boot_delay():
    params = TwinParams(noise=False)
    twin = Twin(web_app(replicas=10, node_size="s-1vcpu-2gb", node_count=1), params=params)
    run(twin, 1)
    twin.set_property(NODE_POOL, "workers", "nodeCount", 2)
    ready = []
    for _ in range(10):
        ready.append(twin.advance(30.0)["nodes_ready"])
    boot_steps = int(params.node_boot_s // 30)
    assert ready[: boot_steps - 1] == [2.0] * (boot_steps - 1)  # system node + one worker
    assert ready[boot_steps:] == [3.0] * (10 - boot_steps)
    # Pending pods start once the node is Ready, after their startup delay.
    assert twin.metrics()["pods_pending"] < 10 - 3


def test_pool_resize_replaces_nodes_new_first():
    twin = Twin(web_app(replicas=2, node_size="s-2vcpu-4gb", node_count=2), params=EXACT)
    run(twin, 1)
    twin.set_property(NODE_POOL, "workers", "size", "s-4vcpu-8gb")
    m = twin.advance(30.0)
    assert m["nodes_ready"] == 3  # old nodes keep serving while new ones boot
    assert m["replicas_ready"] == 2
    run(twin, 8)
    sizes = sorted(n.size.slug for n in twin.nodes())
    assert sizes == ["s-2vcpu-4gb", "s-4vcpu-8gb", "s-4vcpu-8gb"]  # system + new workers


def test_episode_cost_is_price_table_over_lifetimes():
    twin = Twin(web_app(node_size="s-2vcpu-4gb", node_count=2), params=EXACT)
    run(twin, 10)  # 300 s with 1 system + 2 workers of s-2vcpu-4gb
    twin.set_property(NODE_POOL, "workers", "nodeCount", 3)
    run(twin, 20)  # 600 s more; the third worker is billed from Ready (240 s later)
    price = catalog.hourly_price("s-2vcpu-4gb")
    expected = price * (3 * 900 + (600 - 240)) / 3600
    assert twin.cost_usd == pytest.approx(expected, rel=1e-9)


def test_hpa_declared_in_graph_scales_to_formula():
    # 100 req/s of 20 ms: 2 cores busy; 250m requests at 70 % target -> ceil(2/0.175) = 12.
    twin = Twin(
        web_app(replicas=2, schedule=constant(100.0), hpa={"min": 1, "max": 20, "target": 70}),
        params=EXACT,
    )
    m = run(twin, 40)
    assert m["replicas_desired"] == pytest.approx(math.ceil(2.0 / (0.25 * 0.7)), abs=1)


def test_unknown_resource_and_size_are_clear_errors():
    twin = Twin(web_app(), params=EXACT)
    with pytest.raises(ConfigError, match="no resource"):
        twin.set_property(DEPLOYMENT, "nope", "spec.replicas", 3)
    with pytest.raises(ConfigError, match="unknown size slug"):
        twin.set_property(NODE_POOL, "workers", "size", "s-3vcpu-7gb")


def test_a_rejected_property_leaves_the_resource_as_it_was():
    twin = Twin(web_app(), params=EXACT)
    pool_inputs = copy.deepcopy(twin.inputs(NODE_POOL, "workers"))
    nodes = [(n.name, n.size.slug) for n in twin.nodes()]
    with pytest.raises(ConfigError, match="unknown size slug"):
        twin.set_property(NODE_POOL, "workers", "size", "s-3vcpu-7gb")
    assert twin.inputs(NODE_POOL, "workers") == pool_inputs
    assert [(n.name, n.size.slug) for n in twin.nodes()] == nodes
    # A path into a part of the resource that does not exist: a ConfigError, no change.
    deployment = copy.deepcopy(twin.inputs(DEPLOYMENT, "heater"))
    with pytest.raises(ConfigError, match=r"no property 'spec.nope.replicas'"):
        twin.set_property(DEPLOYMENT, "heater", "spec.nope.replicas", 3)
    assert twin.inputs(DEPLOYMENT, "heater") == deployment


def test_knob_changes_stay_in_their_twin():
    # Twins share the records of a cached graph; a change must not reach the other twins.
    records = web_app(replicas=2, node_size="s-2vcpu-4gb")
    before = copy.deepcopy([r.inputs for r in records])
    twin = Twin(records, params=EXACT)
    twin.set_property(DEPLOYMENT, "heater", "spec.replicas", 5)
    twin.set_property(DEPLOYMENT, "heater", CPU_LIMIT_PATH, "250m")
    requests = CPU_LIMIT_PATH.replace("limits", "requests")
    twin.set_property(DEPLOYMENT, "heater", requests, "500m")  # the general path
    twin.set_property(NODE_POOL, "workers", "size", "s-4vcpu-8gb")
    assert [r.inputs for r in records] == before
    assert twin.inputs(DEPLOYMENT, "heater")["spec"]["replicas"] == 5
    container = twin.inputs(DEPLOYMENT, "heater")["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["cpu"] == "250m"
    other = Twin(records, params=EXACT)
    assert other.workloads[(DEPLOYMENT, "heater")].replicas == 2
    assert other.pools[(NODE_POOL, "workers")].size.slug == "s-2vcpu-4gb"


def test_same_seed_same_run():
    a = Twin(web_app(schedule=constant(60.0)), seed=5)
    b = Twin(web_app(schedule=constant(60.0)), seed=5)
    assert [a.advance(30.0) for _ in range(20)] == [b.advance(30.0) for _ in range(20)]


def test_node_cpu_caps_pods_only_when_their_use_exceeds_it():
    # One s-1vcpu-2gb worker; 3 heater pods with 1-core limits (requests 250m fit).
    free = catalog.size("s-1vcpu-2gb").allocatable_cpu
    light = Twin(
        web_app(replicas=3, node_size="s-1vcpu-2gb", node_count=1, schedule=constant(15.0)),
        params=EXACT,
    )
    m = run(light, 2)
    # 15 req/s x 20 ms = 0.3 cores: no contention, each pod an M/M/1 at 5 req/s.
    assert m["latency_p95"] == pytest.approx(math.log(20) / (50.0 - 5.0), rel=0.02)
    heavy = Twin(
        web_app(replicas=3, node_size="s-1vcpu-2gb", node_count=1, schedule=constant(60.0)),
        params=EXACT,
    )
    m = run(heavy, 2)
    # 60 req/s x 20 ms = 1.2 cores > the node's free CPU: it serves at most free / 20 ms.
    served = m["offered_rate"] * (1 - m["error_ratio"])
    assert served == pytest.approx(free / 0.020, rel=0.02)


def test_resizing_again_before_ready_replaces_the_booting_pool_unbilled():
    twin = Twin(web_app(replicas=2, node_size="s-2vcpu-4gb", node_count=2), params=EXACT)
    run(twin, 1)
    twin.set_property(NODE_POOL, "workers", "size", "s-4vcpu-8gb")
    run(twin, 2)  # 60 s into a 240 s boot
    cost_before = twin.cost_usd
    twin.set_property(NODE_POOL, "workers", "size", "s-8vcpu-16gb")
    live = sorted(n.size.slug for n in twin.nodes())  # applies the pool change
    assert live == ["s-2vcpu-4gb", "s-8vcpu-16gb", "s-8vcpu-16gb"]  # system node, new pool
    sizes = sorted(n.size.slug for n in twin.all_nodes())
    # The booting s-4vcpu-8gb nodes are gone; the Ready s-2vcpu-4gb ones keep serving.
    assert sizes == ["s-2vcpu-4gb", "s-2vcpu-4gb", "s-2vcpu-4gb", "s-8vcpu-16gb", "s-8vcpu-16gb"]
    m = run(twin, 7)  # 210 s: the new pool is not Ready yet
    assert m["replicas_ready"] == 2 and m["nodes_ready"] == 3
    old = catalog.hourly_price("s-2vcpu-4gb")
    assert twin.cost_usd - cost_before == pytest.approx(3 * old * 210 / 3600, rel=1e-9)
    run(twin, 2)
    assert sorted(n.size.slug for n in twin.nodes()) == [
        "s-2vcpu-4gb",
        "s-8vcpu-16gb",
        "s-8vcpu-16gb",
    ]


def test_volumes_are_priced_per_gib_month():
    # A claim and the PostgreSQL release's primary volume: DO block storage, $0.10/GiB-month.
    per_gib_hour = catalog.VOLUME_GIB_MONTHLY_USD / catalog.HOURS_PER_MONTH
    claim = ResourceRecord(
        "x", K8S_PVC, "data", {"spec": {"resources": {"requests": {"storage": "20Gi"}}}}
    )
    assert resource_hourly_cost(claim) == pytest.approx(20 * per_gib_hour)
    release = web_app(database_cpu="1")[-1]
    assert resource_hourly_cost(release) == pytest.approx(8 * per_gib_hour)  # chart default
    release.inputs["values"]["primary"]["persistence"] = {"size": "50Gi"}
    assert resource_hourly_cost(release) == pytest.approx(50 * per_gib_hour)
    release.inputs["values"]["primary"]["persistence"] = {"enabled": False}
    assert resource_hourly_cost(release) is None
