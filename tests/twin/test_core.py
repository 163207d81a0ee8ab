"""The compiled twin beyond ``test_twin.py``'s references: the arrivals it integrates, the
property changes it re-reads (any property, made at once or as layer updates), its
copies, and how it says what it cannot do.

Each test holds the twin to something outside it: the schedule's own integral, the
catalogue's allocatable figures and prices, the HPA's bounds, the cluster autoscaler's
bounds, the database's throughput bound, or the books the twin must keep (every pod
counted once, node requests the sum of their pods').
"""

from __future__ import annotations

import copy
import gc
import math
import pickle
import random
import weakref

import pytest

from infragym import catalog
from infragym.apps.workload import (
    Constant,
    CpuWork,
    Diurnal,
    Ramp,
    Schedule,
    Spikes,
    Step,
    Trace,
    constant,
)
from infragym.backends.base import Change, ResourceRecord
from infragym.errors import ConfigError
from infragym.knobs import Choice, IntRange, Knob
from infragym.twin import twin as twin_module
from infragym.twin.cost import K8S_PVC
from infragym.twin.model import TwinParams
from infragym.twin.twin import CPU_LIMIT_PATH, Twin, make_twin
from tests.twin.graphs import (
    CLUSTER,
    DEPLOYMENT,
    HELM_RELEASE,
    HPA,
    NODE_POOL,
    WORKER_SIZES,
    random_knob_changes,
    web_app,
)

EXACT = TwinParams(noise=False)
SHAPES = {
    "constant": Constant(rate=120.0),
    "ramp": Ramp(start=20.0, end=200.0, duration=1800.0),
    "diurnal": Diurnal(base=80.0, amplitude=48.0, period=3600.0, phase=900.0),
    "diurnal-clipped": Diurnal(base=40.0, amplitude=60.0, period=1200.0),  # from Python
    "spikes": Spikes(base=50.0, spike_rate=200.0, every=300.0, spike_seconds=60.0, offset=120.0),
    "step": Step(rates=[30.0, 150.0, 60.0], step_seconds=400.0, cycle=True),  # from Python
    "trace": Trace(points=[(0.0, 40.0), (500.0, 160.0), (1300.0, 90.0)], loop=True),
}
CONTAINER = "spec.template.spec.containers[0]"
REQUEST_CPU = CONTAINER + ".resources.requests.cpu"


def _pods_on(twin: Twin) -> dict[str, float]:
    """Node name → CPU its pods request (from the pods' workloads)."""
    out: dict[str, float] = {}
    for p in twin.pods():
        if p.node is not None:
            out[p.node.name] = out.get(p.node.name, 0.0) + p.workload.cpu_request
    return out


# ----------------------------------------------------------------- arrivals


@pytest.mark.parametrize("duration", [None, 2500.0])
@pytest.mark.parametrize("shape", SHAPES)
def test_offered_load_is_the_schedules_integral(shape, duration):
    schedule = Schedule(shape=SHAPES[shape], duration=duration)
    twin = Twin(web_app(replicas=3, schedule=schedule), params=EXACT)
    rng = random.Random(shape)
    for _ in range(60):
        t0, seconds = twin.t, rng.choice((10.0, 30.0, 45.0, 120.0))
        m = twin.advance(seconds)
        expected = schedule.mean_rate(t0, t0 + seconds)
        assert m["offered_rate"] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_arrival_noise_is_a_poisson_count_around_the_schedule():
    twin = Twin(web_app(replicas=3, schedule=constant(20.0)), seed=3)
    counts = [twin.advance(10.0)["offered_rate"] * 10.0 for _ in range(400)]
    assert all(c == pytest.approx(round(c), abs=1e-6) for c in counts)  # whole requests
    mean = sum(counts) / len(counts)
    var = sum((c - mean) ** 2 for c in counts) / (len(counts) - 1)
    assert mean == pytest.approx(200.0, rel=0.03)  # the schedule's 20/s over 10 s
    assert var == pytest.approx(200.0, rel=0.2)  # Poisson: variance = mean


# ----------------------------------------------------------------- any property


def test_a_request_change_counts_on_the_nodes_and_pods_beyond_allocatable_stay_pending():
    size = catalog.size("s-1vcpu-2gb")
    twin = Twin(web_app(replicas=2, node_size="s-1vcpu-2gb", node_count=2), params=EXACT)
    twin.advance(30.0)
    twin.set_property(DEPLOYMENT, "heater", REQUEST_CPU, "400m")
    assert twin.workloads[(DEPLOYMENT, "heater")].cpu_request == 0.4
    twin.set_property(DEPLOYMENT, "heater", "spec.replicas", 10)
    m = twin.advance(60.0)
    fit_per_node = int(size.allocatable_cpu // 0.4)
    assert m["pods_pending"] == 10 - 2 * fit_per_node
    for node in twin.nodes():
        assert node.cpu_requested == pytest.approx(_pods_on(twin).get(node.name, 0.0))
        assert node.cpu_requested <= node.cpu + 1e-9


def test_a_selector_change_sends_new_pods_to_the_other_pool():
    twin = Twin(web_app(replicas=2, node_size="s-2vcpu-4gb"), params=EXACT)
    twin.advance(30.0)
    selector = {"doks.digitalocean.com/node-pool": "dev-system"}
    twin.set_property(DEPLOYMENT, "heater", "spec.template.spec.nodeSelector", selector)
    twin.set_property(DEPLOYMENT, "heater", "spec.replicas", 4)
    twin.advance(60.0)
    pools = sorted(p.node.pool.name for p in twin.pods() if p.workload.name == "heater")
    assert pools == ["dev-system", "dev-system", "dev-workers", "dev-workers"]


def test_hpa_bounds_changed_mid_episode_bound_its_recommendation():
    # 100 req/s of 20 ms: 2 cores busy; 250m requests at 70 % -> about 12 replicas.
    twin = Twin(
        web_app(replicas=2, schedule=constant(100.0), hpa={"min": 1, "max": 20, "target": 70}),
        params=EXACT,
    )
    for _ in range(40):
        m = twin.advance(30.0)
    assert m["replicas_desired"] == pytest.approx(math.ceil(2.0 / (0.25 * 0.7)), abs=1)
    twin.set_property(HPA, "heater", "spec.maxReplicas", 6.0)
    m = twin.advance(30.0)
    assert twin.advance(30.0)["replicas_desired"] == 6.0
    assert twin.inputs(DEPLOYMENT, "heater")["spec"]["replicas"] == 6
    twin.set_property(HPA, "heater", "spec.maxReplicas", 30.0)
    for _ in range(20):
        m = twin.advance(30.0)
    assert m["replicas_desired"] == pytest.approx(math.ceil(2.0 / (0.25 * 0.7)), abs=1)


def test_an_autoscaling_pools_bounds_and_count_can_change_mid_episode():
    # 14 heater pods of 250m on s-1vcpu-2gb workers: about 3 fit a node.
    fit = int(catalog.size("s-1vcpu-2gb").allocatable_cpu // 0.25)
    twin = Twin(
        web_app(replicas=14, node_size="s-1vcpu-2gb", node_count=1, auto_scale=(1, 2)),
        params=EXACT,
    )

    def workers() -> int:
        return len([n for n in twin.nodes() if n.pool.name == "dev-workers"])

    for _ in range(30):
        twin.advance(60.0)
    assert workers() == 2  # held at its maximum, pods still Pending
    assert twin.last_metrics["pods_pending"] == 14 - 2 * fit
    twin.set_property(NODE_POOL, "workers", "maxNodes", 8.0)
    for _ in range(30):
        twin.advance(60.0)
    assert workers() == math.ceil(14 / fit)  # room for every pod, no more
    assert twin.last_metrics["pods_pending"] == 0
    twin.set_property(NODE_POOL, "workers", "autoScale", False)
    twin.set_property(NODE_POOL, "workers", "nodeCount", 1.0)
    twin.advance(30.0)
    assert workers() == 1  # a fixed pool again, at its count
    assert not twin.pools[(NODE_POOL, "workers")].auto_scale


def test_a_database_cpu_change_moves_its_throughput_bound():
    # 2 ms a query: 250m passes 125 queries/s of the 200 offered; 500m passes them all.
    work = CpuWork(mean_ms=5.0, db_query="SELECT 1", timeout_s=30.0)
    graph = web_app(
        replicas=8, work=work, schedule=constant(200.0), node_size="s-8vcpu-16gb",
        database_cpu="250m",
    )  # fmt: skip
    twin = Twin(graph, params=TwinParams(noise=False, db_query_ms=2.0))
    assert twin.advance(30.0)["error_ratio"] == pytest.approx(1.0 - 125.0 / 200.0, rel=0.03)
    path = "values.primary.resources.limits.cpu"
    twin.set_property(HELM_RELEASE, "postgresql", path, "500m")
    twin.advance(30.0)  # the primary rolls
    assert twin.database is not None and twin.database.cores == 0.5
    assert twin.advance(30.0)["error_ratio"] < 0.01


def test_a_priced_resource_change_reprices_the_graph():
    per_gib_hour = catalog.VOLUME_GIB_MONTHLY_USD / catalog.HOURS_PER_MONTH
    claim = ResourceRecord(
        "x", K8S_PVC, "data", {"spec": {"resources": {"requests": {"storage": "20Gi"}}}}
    )
    twin = Twin([*web_app(), claim], params=EXACT)
    twin.advance(30.0)
    before = twin.hourly_cost()
    twin.set_property(K8S_PVC, "data", "spec.resources.requests.storage", "50Gi")
    assert twin.hourly_cost() == pytest.approx(before + 30 * per_gib_hour, rel=1e-12)
    cost = twin.cost_usd
    twin.advance(3600.0)
    assert twin.cost_usd - cost == pytest.approx(before + 30 * per_gib_hour, rel=1e-9)


def test_the_clusters_default_pool_is_resized_like_any_pool():
    twin = Twin(web_app(replicas=2), params=EXACT)
    twin.advance(30.0)
    twin.set_property(CLUSTER, "cluster", "nodePool.nodeCount", 3.0)
    m = twin.advance(30.0)
    assert m["nodes_booting"] == 2
    twin.advance(twin.params.node_boot_s)
    assert len([n for n in twin.nodes() if n.pool.name == "dev-system"]) == 3


_GENERIC = (
    (DEPLOYMENT, "heater", REQUEST_CPU, ("100m", "250m", "600m")),
    (DEPLOYMENT, "heater", CONTAINER + ".resources.requests.memory", ("128Mi", "1Gi")),
    (
        DEPLOYMENT, "heater", "spec.template.spec.nodeSelector",
        ({"doks.digitalocean.com/node-pool": "dev-workers"},
         {"doks.digitalocean.com/node-pool": "dev-system"}, {}),
    ),
    (
        DEPLOYMENT, "heater", CONTAINER + ".env[0].value",
        tuple(CpuWork(mean_ms=m, db_query="SELECT 1", workers=w).model_dump_json()
              for m, w in ((15.0, 1), (30.0, 2), (15.0, 3))),
    ),
    (
        DEPLOYMENT, "siege-engine", CONTAINER + ".env[0].value",
        tuple(Schedule(shape=s).model_dump_json()
              for s in (SHAPES["ramp"], SHAPES["step"], Constant(rate=300.0))),
    ),
    (DEPLOYMENT, "siege-engine", "spec.replicas", (0, 1)),
    (DEPLOYMENT, "heater", "spec.replicas", (1, 4, 9)),
    (DEPLOYMENT, "heater", CPU_LIMIT_PATH, ("250m", "1000m", "2")),
    (HPA, "heater", "spec.maxReplicas", (4.0, 12.0)),
    (HPA, "heater", "spec.metrics[0].resource.target.averageUtilization", (40.0, 80.0)),
    (NODE_POOL, "workers", "autoScale", (True, False)),
    (NODE_POOL, "workers", "maxNodes", (3.0, 6.0)),
    (NODE_POOL, "workers", "nodeCount", (1.0, 2.0, 4.0)),
    (NODE_POOL, "workers", "size", WORKER_SIZES),
    (CLUSTER, "cluster", "nodePool.nodeCount", (1.0, 2.0)),
    (HELM_RELEASE, "postgresql", "values.primary.resources.limits.cpu", ("500m", "1", "2")),
)  # fmt: skip
"""Properties of every kind the twin re-reads, with values to set them to."""


def _everything(seed: int, **params) -> Twin:
    work = CpuWork(mean_ms=15.0, db_query="SELECT 1", workers=1)
    graph = web_app(
        replicas=3, node_size="s-2vcpu-4gb", database_cpu="1", work=work, hpa={"max": 10},
        auto_scale=(1, 5), schedule=Schedule(shape=SHAPES["spikes"]),
    )  # fmt: skip
    return Twin(graph, seed=seed, params=TwinParams(**params))


def _check_books(twin: Twin) -> None:
    """What holds whatever happened: each workload has its replicas as pods (the count
    its inputs say, an HPA's changes included), and a node's requests are its pods'.

    (The metrics are the step's, from before the autoscalers acted on it.)
    """
    pods = twin.pods()
    for key, w in twin.workloads.items():
        mine = [p for p in pods if p.workload.key == key]
        declared = twin.inputs(*key)["spec"]["replicas"] if key[0] == DEPLOYMENT else 1
        assert len(mine) == w.replicas == int(declared)
    on = _pods_on(twin)
    for node in twin.all_nodes():
        assert node.cpu_requested == pytest.approx(on.get(node.name, 0.0), abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_random_changes_of_any_property_keep_the_books(seed):
    rng = random.Random(seed)
    twin = _everything(seed, noise=seed != 1)
    for _ in range(120):
        for _ in range(rng.randrange(3)):
            type_token, name, path, values = rng.choice(_GENERIC)
            twin.set_property(type_token, name, path, copy.deepcopy(rng.choice(values)))
        twin.advance(rng.choice((10.0, 30.0, 30.0, 120.0)))
        _check_books(twin)


@pytest.mark.parametrize("seed", range(3))
def test_random_layer_updates_of_any_property_keep_the_books_and_the_queue(seed):
    """As layer updates: the core makes a queued update's changes when the update in
    flight completes, and the inputs then say what it made."""
    rng = random.Random(seed)
    layer = ("one", "by-resource", "by-resource")[seed]
    knobs = [
        Knob(f"k{i}", "all" if layer == "one" else name, type_token, name, path, IntRange(0, 9))
        for i, (type_token, name, path, _) in enumerate(_GENERIC)
    ]
    twin = _everything(seed, deployment_await_s=90.0 if seed else 600.0)
    for _ in range(120):
        changes = []
        for _ in range(rng.randrange(4)):
            i = rng.randrange(len(knobs))
            changes.append(Change(knobs[i], copy.deepcopy(rng.choice(_GENERIC[i][3]))))
        twin.request(changes)
        twin.advance(rng.choice((10.0, 30.0, 30.0, 45.0, 120.0)))
        _check_books(twin)
        for knob in knobs:  # what the queue says is applied is in the inputs, when settled
            if knob.name in twin.queue.applied and knob.layer not in twin.queue.in_flight:
                value = twin.queue.applied[knob.name]
                held = twin.inputs(knob.type, knob.resource)
                for part in knob.path.replace("[", ".").replace("]", "").split("."):
                    held = held[int(part)] if part.isdigit() else held[part]
                if knob.path != "spec.replicas" or knob.type != DEPLOYMENT:  # HPA-owned
                    assert held == value, knob.path
    assert twin.queue.applied  # updates ran


def test_a_queued_change_is_made_when_the_update_in_flight_completes():
    replicas = Knob("replicas", "k8s-heater", DEPLOYMENT, "heater", "spec.replicas", IntRange(1, 9))
    request = Knob("request", "k8s-heater", DEPLOYMENT, "heater", REQUEST_CPU, Choice(("1",)))
    twin = Twin(web_app(replicas=2, node_size="s-2vcpu-4gb"), params=EXACT)
    assert twin.request([Change(replicas, 3)]) == (["k8s-heater"], [])
    assert twin.request([Change(request, "1")]) == ([], ["k8s-heater"])
    twin.advance(10.0)  # the third pod is not Ready yet (pod_startup_s)
    assert (
        twin.inputs(DEPLOYMENT, "heater")["spec"]["template"]["spec"]["containers"][0]["resources"][
            "requests"
        ]["cpu"]
        == "250m"
    )
    assert twin.workloads[(DEPLOYMENT, "heater")].cpu_request == 0.25
    twin.advance(20.0)  # it is: the update completed and the queued one started
    assert twin.queue.state()["k8s-heater"]["started_at"] == twin.params.pod_startup_s
    assert twin.workloads[(DEPLOYMENT, "heater")].cpu_request == 1.0
    for node in twin.nodes():
        assert node.cpu_requested == pytest.approx(_pods_on(twin).get(node.name, 0.0))


def test_a_queued_change_of_a_bad_value_is_refused_before_anything_changes():
    size = Knob("size", "do-pool", NODE_POOL, "workers", "size", Choice(WORKER_SIZES))
    count = Knob("count", "do-pool", NODE_POOL, "workers", "nodeCount", IntRange(1, 5))
    twin = Twin(web_app(replicas=2), params=EXACT)
    twin.request([Change(count, 3)])
    before = (twin.queue.state(), dict(twin.queue.requested), twin.inputs(NODE_POOL, "workers"))
    with pytest.raises(ConfigError, match="s-3vcpu-6gb"):
        twin.request([Change(count, 4), Change(size, "s-3vcpu-6gb")])
    after = (twin.queue.state(), dict(twin.queue.requested), twin.inputs(NODE_POOL, "workers"))
    assert after == before


# ----------------------------------------------------------------- copies


def _state(twin: Twin) -> tuple:
    metrics = tuple((k, None if math.isnan(v) else v) for k, v in twin.last_metrics.items())
    nodes = tuple(
        (n.name, n.size.slug, n.created_at, n.ready_at, n.removed_at, n.cpu_requested)
        for n in twin.all_nodes()
    )
    pods = sorted((p.workload.name, p.node.name if p.node else "", p.ready_at) for p in twin.pods())
    return (
        metrics, nodes, tuple(pods), twin.cost_usd, twin.hourly_cost(), twin.t,
        twin.queue.state(), dict(twin.queue.applied), twin.update_timeouts,
    )  # fmt: skip


_GENERIC_KNOBS = [
    Knob(f"k{i}", name, t, name, p, IntRange(0, 9)) for i, (t, name, p, _) in enumerate(_GENERIC)
]
"""A knob (in its own layer) on each property of :data:`_GENERIC`."""


def _request_one(twin: Twin, rng: random.Random) -> None:
    """Request a random value of a random one of :data:`_GENERIC_KNOBS`."""
    i = rng.randrange(len(_GENERIC_KNOBS))
    twin.request([Change(_GENERIC_KNOBS[i], copy.deepcopy(rng.choice(_GENERIC[i][3])))])


def _random_episode(twin: Twin, seed: int) -> list[tuple]:
    """40 steps of random layer updates and, on some, changes made at once: the states."""
    rng = random.Random(seed)
    states = []
    for _ in range(40):
        _request_one(twin, rng)
        if rng.random() < 0.3:
            random_knob_changes(twin, rng)
        twin.advance(30.0)
        states.append(_state(twin))
    return states


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_runs_as_the_original_with_updates_waiting(how):
    rng = random.Random(5)
    twin = _everything(5, deployment_await_s=60.0)
    for _ in range(30):
        _request_one(twin, rng)
        twin.advance(30.0)
    dup = copy.deepcopy(twin) if how == "deepcopy" else pickle.loads(pickle.dumps(twin))
    assert _state(dup) == _state(twin)
    assert _random_episode(twin, 9) == _random_episode(dup, 9)


@pytest.mark.parametrize("noise", [True, False])
def test_a_respawn_runs_as_a_fresh_build(noise):
    """Twin.respawn (the sim backend's reset of a cached graph) is Twin(graph, seed)
    without the build: the same attributes and the same episode, and respawns of one
    twin share nothing that changes (each runs as if the others had not)."""
    kept = _everything(1, deployment_await_s=60.0, noise=noise)
    graph, params = kept._origin[0], kept.params

    def episode(twin: Twin) -> list[tuple]:
        return _random_episode(twin, 4)

    def declared(twin: Twin) -> tuple:
        """The declared objects and the inputs, field by field."""
        objects = (*twin.pools.values(), *twin.workloads.values(), *twin.autoscalers.values())
        fields = [[repr(getattr(o, name)) for name in type(o).__slots__] for o in objects]
        inputs = {key: repr(r.inputs) for key, r in twin.records.items()}
        return fields, repr(twin.database), inputs

    before = declared(kept)
    for seed in (7, 8, 7, -3, 2**40 + 1, 2**64 + 1):  # the core seeds up to 64 bits
        fresh = Twin(graph, seed=seed, params=params)
        respawned = kept.respawn(seed)
        assert respawned.__dict__.keys() == fresh.__dict__.keys()
        assert respawned._origin == fresh._origin
        assert declared(respawned) == declared(fresh)
        assert respawned.autoscalers
        for hpa in respawned.autoscalers.values():  # on the respawn's own workloads
            assert hpa.target is respawned.workloads[hpa.target.key]
        assert episode(respawned) == episode(fresh)
        assert declared(respawned) == declared(fresh)
        assert declared(kept) == before
        dup = pickle.loads(pickle.dumps(respawned))  # replays from the same origin
        assert _state(dup) == _state(respawned)
    with pytest.raises(ConfigError, match="respawn"):
        respawned.respawn(1)


def test_the_core_seeds_its_noise_as_random_does():
    """Core.seed_noise(seed) (a respawn's) is set_noise of random.Random(seed)'s state."""
    core = Twin(web_app(replicas=2), seed=1)._core
    for seed in (0, 1, 7, 2**31 - 1, 2**32 - 1, 2**32, 2**32 + 5, 2**63 + 12345, 2**64 - 1):
        core.seed_noise(seed)
        _, words, gauss_next = random.Random(seed).getstate()
        assert core.noise_state() == (list(words[:-1]), words[-1], gauss_next)


def test_a_fork_is_independent_of_its_original():
    twin = Twin(web_app(replicas=3, schedule=Schedule(shape=SHAPES["ramp"])), seed=1)
    twin.advance(30.0)
    fork = copy.deepcopy(twin)
    fork.set_property(DEPLOYMENT, "heater", "spec.replicas", 7)
    fork.set_schedule((DEPLOYMENT, "siege-engine"), constant(500.0))
    fork.reseed(4)
    for _ in range(5):
        fork.advance(30.0)
    assert twin.inputs(DEPLOYMENT, "heater")["spec"]["replicas"] == 3.0
    twin_again = Twin(web_app(replicas=3, schedule=Schedule(shape=SHAPES["ramp"])), seed=1)
    twin_again.advance(30.0)
    assert _state(twin) == _state(twin_again)
    # The fork replays (pickle) to the same state, schedule and seed included.
    assert _state(pickle.loads(pickle.dumps(fork))) == _state(fork)


def test_a_dropped_twin_is_collected():
    twin = Twin(web_app(replicas=2, work=CpuWork(mean_ms=20.0, workers=2)), seed=0)
    twin.advance(30.0)
    ref = weakref.ref(twin)
    del twin
    gc.collect()
    assert ref() is None


# ----------------------------------------------------------------- what it cannot do


def test_without_the_extension_the_twin_says_how_to_install(monkeypatch):
    monkeypatch.setattr(twin_module, "core_module", lambda: None)
    with pytest.raises(ConfigError, match=r"pip install -e \."):
        Twin(web_app(), 0, EXACT)
    with pytest.raises(ConfigError, match=r"pip install -e \."):
        make_twin(web_app(), 0, EXACT, "auto")


def test_the_python_engine_was_retired():
    with pytest.raises(ConfigError, match="Python twin was retired"):
        make_twin(web_app(), 0, EXACT, "python")
    with pytest.raises(ConfigError, match="twin_engine"):
        make_twin(web_app(), 0, EXACT, "rust")
    assert type(make_twin(web_app(), 0, EXACT, "native")) is Twin


def test_an_autoscaling_pool_of_a_size_with_no_cpu_is_refused(monkeypatch):
    size = catalog.size("s-1vcpu-2gb")
    monkeypatch.setattr(type(size), "allocatable_cpu", property(lambda self: 0.0))
    with pytest.raises(ConfigError, match="no allocatable CPU"):
        Twin(web_app(auto_scale=(1, 3), node_size="s-1vcpu-2gb"), params=EXACT)
