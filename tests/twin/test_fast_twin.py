"""The compiled twin core against the Python twin: the same world, step for step, bit for bit.

The Python twin is checked against queueing theory, the Kubernetes docs and DigitalOcean's
billing in ``test_twin.py`` (whose ``twin_class`` tests also run on the compiled twin);
here the compiled one must give exactly its metrics, nodes, pods and cost under random
knob changes, on every schedule shape, with knob changes made at once (immediate
actuation) or as layer updates (asynchronous actuation: updates complete in the core's
event loop, queued ones start there), and hand over to it when a change comes that the
core does not model.
"""

from __future__ import annotations

import copy
import gc
import math
import pickle
import random
import weakref

import gymnasium as gym
import pytest

import infragym  # noqa: F401  (registers the envs)
from infragym.apps.workload import (
    Constant,
    CpuWork,
    Diurnal,
    Ramp,
    Schedule,
    Spikes,
    Step,
    Trace,
)
from infragym.backends.base import Change
from infragym.backends.sim import SimBackend
from infragym.errors import ConfigError
from infragym.knobs import Choice, IntRange, Knob
from infragym.twin import fast
from infragym.twin.fast import FastTwin, make_twin
from infragym.twin.model import TwinParams
from infragym.twin.twin import CPU_LIMIT_PATH, Twin
from tests.twin.graphs import (
    DEPLOYMENT,
    HPA,
    NODE_POOL,
    WORKER_SIZES,
    random_knob_changes,
    web_app,
)

SHAPES = {
    "constant": Constant(rate=120.0),
    "ramp": Ramp(start=20.0, end=200.0, duration=1800.0),
    "diurnal": Diurnal(base=80.0, amplitude=48.0, period=3600.0, phase=900.0),
    "diurnal-clipped": Diurnal(base=40.0, amplitude=60.0, period=1200.0),  # in Python
    "spikes": Spikes(base=50.0, spike_rate=200.0, every=300.0, spike_seconds=60.0, offset=120.0),
    "step": Step(rates=[30.0, 150.0, 60.0], step_seconds=400.0, cycle=True),  # in Python
    "trace": Trace(points=[(0.0, 40.0), (500.0, 160.0), (1300.0, 90.0)]),  # in Python
}


def _state(twin: Twin) -> tuple:
    metrics = tuple((k, None if math.isnan(v) else v) for k, v in twin.last_metrics.items())
    nodes = tuple(
        (n.name, n.size.slug, n.created_at, n.ready_at, n.removed_at, n.cpu_requested)
        for n in twin.nodes()
    )
    pods = sorted((p.workload.name, p.node.name if p.node else "", p.ready_at) for p in twin.pods())
    return metrics, nodes, tuple(pods), twin.cost_usd, twin.hourly_cost(), twin.t


def _rollout(cls: type[Twin], records, seed: int, noise: bool, steps: int = 120) -> list[tuple]:
    rng = random.Random(seed)
    twin = cls(records, seed=seed, params=TwinParams(noise=noise))
    states = []
    for _ in range(steps):
        random_knob_changes(twin, rng, max_replicas=14)
        twin.advance(rng.choice((10.0, 30.0, 30.0, 120.0)))
        states.append(_state(twin))
    return states


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", range(3))
def test_random_knob_sequences_give_the_python_twins_world(shape, seed):
    schedule = Schedule(shape=SHAPES[shape], duration=3000.0 if seed == 2 else None)
    records = web_app(replicas=3, node_size="s-2vcpu-4gb", schedule=schedule)
    noise = seed != 1
    assert _rollout(FastTwin, records, seed, noise) == _rollout(Twin, records, seed, noise)


@pytest.mark.parametrize(
    "work",
    [
        CpuWork(mean_ms=40.0, distribution="exponential", workers=3),
        CpuWork(mean_ms=25.0, distribution="lognormal", cv=2.0, timeout_s=1.0),
        CpuWork(mean_ms=30.0, distribution="constant"),
    ],
)
def test_pods_that_are_not_mm1_give_the_python_twins_world(work):
    # Latency from the Python twin's M/G/c model, called back from the core.
    records = web_app(replicas=2, work=work, schedule=Schedule(shape=SHAPES["ramp"]))
    assert _rollout(FastTwin, records, 7, True) == _rollout(Twin, records, 7, True)


def test_cached_records_are_left_as_they_were():
    records = web_app(replicas=2)
    before = repr(records)
    _rollout(FastTwin, records, 1, True, steps=30)
    assert repr(records) == before


def test_a_rejected_value_leaves_both_the_resource_and_the_world_as_they_were():
    records = web_app(replicas=2, node_size="s-2vcpu-4gb")
    fast_twin, reference = FastTwin(records, seed=3), Twin(records, seed=3)
    for twin in (fast_twin, reference):
        twin.advance(30.0)
        with pytest.raises(ConfigError, match="s-3vcpu"):
            twin.set_property(NODE_POOL, "workers", "size", "s-3vcpu-6gb")
        assert twin.inputs(NODE_POOL, "workers")["size"] == "s-2vcpu-4gb"
        twin.set_property(DEPLOYMENT, "heater", "spec.replicas", 5)
        twin.advance(30.0)
    assert _state(fast_twin) == _state(reference)


def _knob(name: str, type_token: str, resource: str, path: str, domain) -> Knob:
    return Knob(name, "k8s-heater", type_token, resource, path, domain)


class _Graph(SimBackend):
    """A sim backend on a hand-built graph instead of the layer programs."""

    def __init__(self, records, engine: str, actuation: str = "immediate", **params) -> None:
        super().__init__(twin_params=TwinParams(**params), twin_engine=engine, actuation=actuation)
        self._records = records

    def reset(self, layers=(), seed=None) -> None:
        self.twin = make_twin(self._records, seed, self.twin_params, self.twin_engine)


def test_the_backend_models_any_change_as_the_python_twin():
    records = web_app(replicas=2, schedule=Schedule(shape=SHAPES["spikes"]))
    replicas = _knob("replicas", DEPLOYMENT, "heater", "spec.replicas", IntRange(1, 10))
    size = _knob("size", NODE_POOL, "workers", "size", Choice(WORKER_SIZES))
    count = _knob("count", NODE_POOL, "workers", "nodeCount", IntRange(1, 5))
    request = _knob(
        "request",
        DEPLOYMENT,
        "heater",
        "spec.template.spec.containers[0].resources.requests.cpu",
        Choice(("250m", "500m")),
    )
    steps: list[list[Change]] = [
        [(replicas, 4)],
        [(size, "s-1vcpu-2gb"), (replicas, 6)],
        [(count, 3), (size, "s-3vcpu-6gb")],  # refused after the first change is made
        [],
        [(replicas, 3), (request, "500m")],  # the core hands over here
        [(size, "s-4vcpu-8gb")],
        [],
    ]
    runs = {}
    for engine in ("native", "python"):
        backend = _Graph(records, engine)
        backend.reset(seed=11)
        assert type(backend.twin) is (FastTwin if engine == "native" else Twin)
        states = []
        for changes in steps:
            if any(value == "s-3vcpu-6gb" for _, value in changes):
                with pytest.raises(ConfigError, match="s-3vcpu-6gb"):
                    backend.apply(changes)
            elif changes:
                backend.apply(changes)
            backend.advance(60.0)
            states.append(_state(backend.twin))
        runs[engine] = states
        assert type(backend.twin) is (FastTwin if engine == "native" else Twin)
    assert runs["native"] == runs["python"]


def test_engines_are_chosen_and_checked(monkeypatch):
    plain = web_app()
    params = TwinParams()
    assert type(make_twin(plain, 0, params, "auto")) is FastTwin
    assert type(make_twin(plain, 0, params, "python")) is Twin
    everything = web_app(auto_scale=(1, 4), hpa={"max": 5}, database_cpu="1")
    assert type(make_twin(everything, 0, params, "auto")) is FastTwin
    # What the core leaves to the Python twin: an HPA on a workload requesting no CPU (the
    # Python twin divides by zero there).
    twin = Twin(web_app(hpa={"max": 5}))
    assert fast.supports(twin)
    next(iter(twin.autoscalers.values())).target.cpu_request = 0.0
    assert not fast.supports(twin)
    monkeypatch.setattr(fast, "supports", lambda twin: False)
    assert type(make_twin(plain, 0, params, "auto")) is Twin
    with pytest.raises(ConfigError, match="does not model this graph"):
        make_twin(plain, 0, params, "native")
    with pytest.raises(ConfigError, match="twin engine"):
        make_twin(plain, 0, params, "rust")


def test_without_the_extension_auto_is_the_python_twin_and_native_says_how_to_install(
    monkeypatch,
):
    monkeypatch.setattr(fast, "core_module", lambda: None)
    assert type(make_twin(web_app(), 0, TwinParams(), "auto")) is Twin
    with pytest.raises(ConfigError, match=r"pip install -e \."):
        make_twin(web_app(), 0, TwinParams(), "native")


def test_a_dropped_twin_is_collected():
    # The core holds the twin's latency callback: the garbage collector must see the cycle,
    # or every episode's twin would stay in memory.
    twin = FastTwin(web_app(replicas=2, work=CpuWork(mean_ms=20.0, workers=2)), seed=0)
    twin.advance(30.0)
    ref = weakref.ref(twin)
    del twin
    gc.collect()
    assert ref() is None


def test_the_env_gives_the_same_episodes_on_both_engines():
    runs = []
    for engine in ("native", "python"):
        env = gym.make("SimpleK8sWebApp-v0", backend_options={"twin_engine": engine})
        assert type(env.unwrapped.backend).__name__ == "SimBackend"
        env.action_space.seed(3)
        obs, _ = env.reset(seed=3)
        twin = type(env.unwrapped.backend.twin)
        assert twin is (FastTwin if engine == "native" else Twin)
        steps = [obs.tolist()]
        for _ in range(60):
            obs, reward, _, _, info = env.step(env.action_space.sample())
            steps.append((obs.tolist(), reward, info["knobs"], info["cost_usd"]))
        env.close()
        runs.append(steps)
    assert runs[0] == runs[1]


# ----------------------------------------------------------------- layer updates (async)

_REPLICAS = Knob("replicas", "k8s-heater", DEPLOYMENT, "heater", "spec.replicas", IntRange(1, 14))
_LIMIT = Knob(
    "limit", "k8s-heater", DEPLOYMENT, "heater", CPU_LIMIT_PATH,
    Choice(("250m", "500m", "1000m", "2")),
)  # fmt: skip
_COUNT = Knob("count", "do-pool", NODE_POOL, "workers", "nodeCount", IntRange(1, 5))
_SIZE = Knob("size", "do-pool", NODE_POOL, "workers", "size", Choice(WORKER_SIZES))
_KNOBS = (_REPLICAS, _LIMIT, _COUNT, _SIZE)


def _one_layer(knob: Knob) -> Knob:
    """The same knob in one layer with the others (a pool and a Deployment in one update)."""
    return Knob(knob.name, "all", knob.type, knob.resource, knob.path, knob.domain)


def _random_changes(rng: random.Random, knobs: tuple[Knob, ...]) -> list[Change]:
    """Up to three changes, values drawn from the knobs' domains (repeats coalesce)."""
    return [
        Change(knob, rng.choice(knob.values))
        for knob in (rng.choice(knobs) for _ in range(rng.randrange(4)))
    ]


def _async_state(twin: Twin) -> tuple:
    in_flight = {layer: round(s, 9) for layer, s in twin.updates_in_flight().items()}
    return (
        _state(twin), twin.queue.state(), dict(twin.queue.applied), dict(twin.queue.requested),
        twin.update_timeouts, in_flight, list(twin.queue.in_flight), list(twin._updates),
    )  # fmt: skip


def _async_rollout(
    cls: type[Twin], records, seed: int, knobs: tuple[Knob, ...], steps: int = 150, **params
) -> list[tuple]:
    rng = random.Random(seed)
    twin = cls(records, seed=seed, params=TwinParams(**params))
    twin.queue.deployed({"replicas": 3, "limit": "1000m", "count": 2, "size": "s-2vcpu-4gb"})
    states = []
    for _ in range(steps):
        started, queued = twin.request(_random_changes(rng, knobs))
        twin.advance(rng.choice((10.0, 30.0, 30.0, 45.0, 120.0)))
        states.append((started, queued, _async_state(twin)))
    return states


@pytest.mark.parametrize("layers", ["two", "one"])
@pytest.mark.parametrize("seed", range(4))
def test_layer_updates_under_random_requests_give_the_python_twins_world(layers, seed):
    # A short await timeout (seed 1, 3) makes Deployment updates time out too; the noise
    # is off for seed 2.
    knobs = _KNOBS if layers == "two" else tuple(_one_layer(k) for k in _KNOBS)
    shape = ("spikes", "ramp", "step", "constant")[seed]
    records = web_app(replicas=3, node_size="s-2vcpu-4gb", schedule=Schedule(shape=SHAPES[shape]))
    params = {"noise": seed != 2, "deployment_await_s": 60.0 if seed % 2 else 600.0}
    fast_run = _async_rollout(FastTwin, records, seed, knobs, **params)
    assert fast_run == _async_rollout(Twin, records, seed, knobs, **params)
    # The run exercised what it is about: updates that waited, and (short await) timeouts.
    assert any(queued for _, queued, _ in fast_run)
    assert fast_run[-1][2][4] > 0 if seed % 2 else True


def test_a_queued_update_starts_at_the_instant_the_update_in_flight_completes():
    records = web_app(replicas=2, node_size="s-2vcpu-4gb")
    for cls in (FastTwin, Twin):
        twin = cls(records, seed=0, params=TwinParams(noise=False))
        twin.queue.deployed({"count": 2, "size": "s-2vcpu-4gb"})
        assert twin.request([Change(_COUNT, 3)]) == (["do-pool"], [])
        assert twin.request([Change(_SIZE, "s-4vcpu-8gb")]) == ([], ["do-pool"])
        twin.advance(30.0)
        assert twin.last_metrics["nodes_booting"] == 1.0
        assert twin.last_metrics["next_node_ready_s"] == TwinParams().node_boot_s - 30.0
        twin.advance(TwinParams().node_boot_s)  # the third node is Ready at 240 s
        # The size change started then: a new pool of three boots, until 480 s.
        assert twin.queue.state()["do-pool"]["started_at"] == TwinParams().node_boot_s
        assert twin.queue.applied["count"] == 3
        assert twin.last_metrics["nodes_booting"] == 3.0
        assert twin.last_metrics["next_node_ready_s"] == 2 * TwinParams().node_boot_s - twin.t


def test_the_async_backend_models_any_change_as_the_python_twin():
    records = web_app(replicas=2, schedule=Schedule(shape=SHAPES["spikes"]))
    request = Knob(
        "request", "k8s-heater", DEPLOYMENT, "heater",
        "spec.template.spec.containers[0].resources.requests.cpu", Choice(("250m", "500m")),
    )  # fmt: skip
    steps: list[list[Change]] = [
        [Change(_REPLICAS, 4), Change(_SIZE, "s-1vcpu-2gb")],
        [Change(_REPLICAS, 6), Change(_COUNT, 3)],  # both wait
        [],
        [Change(_REPLICAS, 3), Change(request, "500m")],  # waits: the core hands over here
        [Change(_SIZE, "s-4vcpu-8gb")],
        [],
        [],
    ]
    runs = {}
    for engine in ("native", "python"):
        backend = _Graph(records, engine, actuation="async", deployment_await_s=90.0)
        backend.reset(seed=11)
        backend.queue.deployed({"replicas": 2, "size": "s-2vcpu-4gb", "count": 2})
        assert type(backend.twin) is (FastTwin if engine == "native" else Twin)
        states = []
        for changes in steps:
            result = backend.apply(changes)
            backend.advance(60.0)
            states.append((result, _async_state(backend.twin), backend.info()))
        runs[engine] = states
        assert type(backend.twin) is (FastTwin if engine == "native" else Twin)
    assert runs["native"] == runs["python"]


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_made_while_updates_wait_runs_as_the_original(how):
    records = web_app(replicas=3, node_size="s-2vcpu-4gb", schedule=Schedule(shape=SHAPES["ramp"]))
    rng = random.Random(5)
    twin = FastTwin(records, seed=5, params=TwinParams(deployment_await_s=60.0))
    twin.queue.deployed({"replicas": 3, "limit": "1000m", "count": 2, "size": "s-2vcpu-4gb"})
    for _ in range(20):
        twin.request(_random_changes(rng, _KNOBS))
        twin.advance(30.0)
    twin.request([Change(_COUNT, 4)])
    twin.request([Change(_SIZE, "s-4vcpu-8gb"), Change(_REPLICAS, 9)])
    dup = copy.deepcopy(twin) if how == "deepcopy" else pickle.loads(pickle.dumps(twin))
    assert dup.queue.queued and _async_state(dup) == _async_state(twin)
    for one in (twin, dup):
        rng = random.Random(9)
        one.states = []
        for _ in range(40):
            one.request(_random_changes(rng, _KNOBS))
            one.advance(30.0)
            one.states.append(_async_state(one))
    assert dup.states == twin.states


@pytest.mark.parametrize("seed", range(3))
def test_v1_gives_the_same_episodes_on_both_engines(seed):
    """SimpleK8sWebApp-v1 (asynchronous actuation) under random actions, bit for bit."""
    runs = []
    for engine in ("native", "python"):
        env = gym.make(
            "SimpleK8sWebApp-v1",
            backend_options={"twin_engine": engine},
            action_mode="absolute" if seed == 2 else "delta",
        )
        env.action_space.seed(seed)
        obs, info = env.reset(seed=seed)
        twin = env.unwrapped.backend.twin
        assert type(twin) is (FastTwin if engine == "native" else Twin)
        steps = [(obs.tolist(), info["updates"])]
        for _ in range(150):
            obs, reward, _, _, info = env.step(env.action_space.sample())
            metrics = {k: None if math.isnan(v) else v for k, v in info["metrics"].items()}
            steps.append(
                (
                    obs.tolist(), reward, metrics, info["knobs"], info["knobs_running"],
                    info["updates"], info["layers_updated"], info["cost_usd"], info["time_s"],
                )
            )  # fmt: skip
        steps.append(env.unwrapped.backend.twin.update_timeouts)
        env.close()
        runs.append(steps)
    assert runs[0] == runs[1]
    assert any(step[5] for step in runs[0][1:-1])  # updates were in flight


@pytest.mark.parametrize("actuation", ["immediate", "async"])
def test_to_python_gives_a_python_twin_in_the_same_state_with_the_same_queue(actuation):
    records = web_app(replicas=3, node_size="s-2vcpu-4gb", schedule=Schedule(shape=SHAPES["ramp"]))
    backend = _Graph(records, "native", actuation=actuation)
    backend.reset(seed=4)
    backend.queue.deployed({"replicas": 3, "limit": "1000m", "count": 2, "size": "s-2vcpu-4gb"})
    rng = random.Random(4)
    for _ in range(25):
        backend.apply(_random_changes(rng, _KNOBS))
        backend.advance(30.0)
    fast_twin = backend.twin
    assert isinstance(fast_twin, FastTwin)
    twin = fast_twin.to_python()
    assert type(twin) is Twin
    assert twin.queue is not fast_twin.queue
    assert _async_state(twin) == _async_state(fast_twin)
    for one in (twin, fast_twin):  # and they go on alike
        one.advance(600.0)
    assert _async_state(twin) == _async_state(fast_twin)


@pytest.mark.parametrize("scenario", ["trace-conv", "trace-code"])
def test_v1_on_a_real_trace_gives_the_same_episodes_on_both_engines(scenario):
    """The core integrates traces itself (the Azure traces, looped): bit for bit."""
    runs = []
    for engine in ("native", "python"):
        env = gym.make(
            "SimpleK8sWebApp-v1", scenarios=[scenario], backend_options={"twin_engine": engine}
        )
        env.action_space.seed(1)
        obs, _ = env.reset(seed=1)
        steps = [obs.tolist()]
        for _ in range(130):  # past the end of an episode: a second trace segment
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            metrics = {k: None if math.isnan(v) else v for k, v in info["metrics"].items()}
            steps.append((obs.tolist(), reward, metrics, info["updates"], info["cost_usd"]))
            if terminated or truncated:
                obs, _ = env.reset()
                steps.append(obs.tolist())
        env.close()
        runs.append(steps)
    assert runs[0] == runs[1]


def _hpa_rollout(cls: type[Twin], records, seed: int, steps: int = 120, **params) -> list[tuple]:
    rng = random.Random(seed)
    twin = cls(records, seed=seed, params=TwinParams(**params))
    states = []
    for _ in range(steps):
        if rng.random() < 0.3:  # an agent's change beside the HPA's
            random_knob_changes(twin, rng, max_replicas=14)
        twin.advance(rng.choice((10.0, 30.0, 30.0, 120.0)))
        replicas = twin.inputs(DEPLOYMENT, "heater")["spec"]["replicas"]
        states.append((_state(twin), replicas))
    return states


@pytest.mark.parametrize("shape", ["spikes", "ramp", "diurnal"])
@pytest.mark.parametrize("seed", range(2))
def test_an_hpa_gives_the_python_twins_world(shape, seed):
    """The core scales by the HPA's rule as the Python twin does (its own replica count,
    the stabilisation window, the bounds), and the inputs say what it set."""
    hpa = {"min": 1, "max": 12, "target": 50 if seed else 70}
    records = web_app(
        replicas=2, node_size="s-2vcpu-4gb", schedule=Schedule(shape=SHAPES[shape]), hpa=hpa
    )
    params = {"noise": seed == 0, "hpa_scale_down_window_s": 120.0 if seed else 300.0}
    fast_run = _hpa_rollout(FastTwin, records, seed, **params)
    assert fast_run == _hpa_rollout(Twin, records, seed, **params)
    assert len({replicas for _, replicas in fast_run}) > 2  # the HPA did scale


def test_an_hpa_twin_copies_and_hands_over():
    records = web_app(replicas=2, schedule=Schedule(shape=SHAPES["spikes"]), hpa={"max": 10})
    twin = FastTwin(records, seed=2)
    for _ in range(30):
        twin.advance(30.0)
    dup = pickle.loads(pickle.dumps(twin))
    python_twin = twin.to_python()
    assert _state(dup) == _state(twin) == _state(python_twin)
    for one in (twin, dup, python_twin):
        for _ in range(20):
            one.advance(30.0)
    assert _state(dup) == _state(twin) == _state(python_twin)


def _deployment_knob_changes(twin, rng: random.Random) -> None:
    """An agent's changes of the heater (a pool the autoscaler owns takes none)."""
    if rng.random() < 0.3:
        twin.set_property(DEPLOYMENT, "heater", "spec.replicas", rng.randint(1, 16))
    if rng.random() < 0.15:
        limit = rng.choice(("250m", "500m", "1000m", "2"))
        twin.set_property(DEPLOYMENT, "heater", CPU_LIMIT_PATH, limit)


def _autoscaled_rollout(cls: type[Twin], records, seed: int, steps: int = 150, **params):
    rng = random.Random(seed)
    twin = cls(records, seed=seed, params=TwinParams(**params))
    states = []
    for _ in range(steps):
        _deployment_knob_changes(twin, rng)
        twin.advance(rng.choice((10.0, 30.0, 30.0, 120.0)))
        states.append(_state(twin))
    return states


@pytest.mark.parametrize("hpa", [None, {"min": 1, "max": 16, "target": 60}])
@pytest.mark.parametrize("seed", range(2))
def test_an_autoscaling_pool_gives_the_python_twins_world(hpa, seed):
    """The cluster autoscaler's rule in the core: nodes added for Pending pods, one
    removed after it was unneeded long enough, as the Python twin does."""
    schedule = Schedule(shape=Diurnal(base=150.0, amplitude=140.0, period=3600.0))
    records = web_app(
        replicas=2, node_size="s-1vcpu-2gb", node_count=1, auto_scale=(1, 6), hpa=hpa,
        schedule=schedule,
    )  # fmt: skip
    params = {"noise": seed == 0, "ca_scale_down_unneeded_s": 300.0 if seed else 600.0}
    fast_run = _autoscaled_rollout(FastTwin, records, seed, **params)
    assert fast_run == _autoscaled_rollout(Twin, records, seed, **params)
    workers = [len([n for n in s[1] if "workers" in n[0]]) for s in fast_run]
    assert max(workers) > 1 and min(workers[len(workers) // 2 :]) < max(workers)  # up, down


def test_a_pool_knob_on_an_autoscaling_pool_hands_over_to_the_python_twin():
    records = web_app(replicas=2, node_size="s-1vcpu-2gb", node_count=1, auto_scale=(1, 4))
    runs = {}
    for engine in ("native", "python"):
        backend = _Graph(records, engine)
        backend.reset(seed=3)
        states = []
        for step in range(8):
            if step == 2:
                backend.apply([(_REPLICAS, 9)])
            if step == 4:
                backend.apply([(_SIZE, "s-2vcpu-4gb")])
            if step == 5:
                backend.apply([(_COUNT, 3)])
            backend.advance(120.0)
            states.append(_state(backend.twin))
        runs[engine] = states
        assert type(backend.twin) is (FastTwin if engine == "native" else Twin)
    assert runs["native"] == runs["python"]


@pytest.mark.parametrize("database_cpu", ["1", "2", "500m"])
@pytest.mark.parametrize("seed", range(2))
def test_a_database_gives_the_python_twins_world(database_cpu, seed, monkeypatch):
    """Pods that query the database, served through the Python twin's model on the core's
    sums, under random knob changes of the heater and its pool."""
    work = CpuWork(mean_ms=15.0, db_query="SELECT 1", timeout_s=30.0, workers=1 + seed)
    records = web_app(
        replicas=3, node_size="s-2vcpu-4gb", database_cpu=database_cpu, work=work,
        schedule=Schedule(shape=SHAPES["ramp"]),
    )  # fmt: skip
    noise = seed == 0
    assert _rollout(FastTwin, records, seed, noise) == _rollout(Twin, records, seed, noise)


# ----------------------------------------------------------------- the general path

_HEATER_CONTAINER = "spec.template.spec.containers[0]"
_GENERIC = (
    (DEPLOYMENT, "heater", _HEATER_CONTAINER + ".resources.requests.cpu", ("100m", "250m", "600m")),
    (DEPLOYMENT, "heater", _HEATER_CONTAINER + ".resources.requests.memory", ("128Mi", "1Gi")),
    (
        DEPLOYMENT, "heater", "spec.template.spec.nodeSelector",
        ({"doks.digitalocean.com/node-pool": "dev-workers"},
         {"doks.digitalocean.com/node-pool": "dev-system"}, {}),
    ),
    (
        DEPLOYMENT, "heater", _HEATER_CONTAINER + ".env[0].value",
        tuple(CpuWork(mean_ms=m, db_query="SELECT 1", workers=w).model_dump_json()
              for m, w in ((15.0, 1), (30.0, 2), (15.0, 3))),
    ),
    (
        DEPLOYMENT, "siege-engine", "spec.template.spec.containers[0].env[0].value",
        tuple(Schedule(shape=s).model_dump_json() for s in (SHAPES["ramp"], SHAPES["step"],
              Constant(rate=300.0))),
    ),
    (DEPLOYMENT, "siege-engine", "spec.replicas", (0, 1)),
    (HPA, "heater", "spec.maxReplicas", (4.0, 12.0)),
    (
        "kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "heater",
        "spec.metrics[0].resource.target.averageUtilization", (40.0, 80.0),
    ),
    (NODE_POOL, "workers", "autoScale", (True, False)),
    (NODE_POOL, "workers", "maxNodes", (3.0, 6.0)),
    (NODE_POOL, "workers", "nodeCount", (1.0, 2.0, 4.0)),
    (NODE_POOL, "workers", "size", WORKER_SIZES),
    ("digitalocean:index/kubernetesCluster:KubernetesCluster", "cluster", "nodePool.nodeCount",
     (1.0, 2.0)),
    (
        "kubernetes:helm.sh/v3:Release", "postgresql",
        "values.primary.resources.limits.cpu", ("500m", "1", "2"),
    ),
)  # fmt: skip
"""Properties beyond the common knobs: requests, selector, work, schedule, HPA, an
autoscaling pool's bounds, the cluster's default pool, the database's CPU."""


def _generic_records():
    work = CpuWork(mean_ms=15.0, db_query="SELECT 1", workers=1)
    return web_app(
        replicas=3, node_size="s-2vcpu-4gb", database_cpu="1", work=work, hpa={"max": 10},
        auto_scale=(1, 5), schedule=Schedule(shape=SHAPES["spikes"]),
    )  # fmt: skip


def _generic_rollout(cls: type[Twin], seed: int, steps: int = 120) -> list[tuple]:
    rng = random.Random(seed)
    twin = cls(_generic_records(), seed=seed, params=TwinParams(noise=seed % 2 == 0))
    states = []
    for _ in range(steps):
        for _ in range(rng.randrange(3)):
            type_token, name, path, values = rng.choice(_GENERIC)
            twin.set_property(type_token, name, path, copy.deepcopy(rng.choice(values)))
        twin.advance(rng.choice((10.0, 30.0, 30.0, 120.0)))
        states.append((_state(twin), twin.inputs(DEPLOYMENT, "heater")["spec"]["replicas"]))
    return states


@pytest.mark.parametrize("seed", range(4))
def test_any_property_change_gives_the_python_twins_world(seed):
    fast_run = _generic_rollout(FastTwin, seed)
    assert fast_run == _generic_rollout(Twin, seed)


def _generic_knobs(layers: str) -> tuple[Knob, ...]:
    knobs = []
    for i, (type_token, name, path, values) in enumerate(_GENERIC):
        layer = "all" if layers == "one" else f"{type_token.split(':')[0]}-{name}"
        knobs.append(Knob(f"k{i}", layer, type_token, name, path, Choice(tuple(map(repr, values)))))
    return tuple(knobs)


def _generic_async_rollout(cls: type[Twin], seed: int, layers: str, steps: int = 120):
    rng = random.Random(seed)
    knobs = (*_generic_knobs(layers), _REPLICAS, _LIMIT, *tuple(_one_layer(k) for k in _KNOBS))
    params = TwinParams(noise=seed % 2 == 0, deployment_await_s=90.0 if seed > 1 else 600.0)
    twin = cls(_generic_records(), seed=seed, params=params)
    states = []
    for _ in range(steps):
        changes = []
        for _ in range(rng.randrange(4)):
            knob = rng.choice(knobs)
            value = rng.choice(knob.values)
            if knob.name.startswith("k"):
                value = eval(value)
            changes.append(Change(knob, value))
        started, queued = twin.request(changes)
        twin.advance(rng.choice((10.0, 30.0, 30.0, 45.0, 120.0)))
        states.append((started, queued, _async_state(twin)))
    return states


@pytest.mark.parametrize("layers", ["many", "one"])
@pytest.mark.parametrize("seed", range(3))
def test_any_property_change_as_layer_updates_gives_the_python_twins_world(layers, seed):
    fast_run = _generic_async_rollout(FastTwin, seed, layers)
    assert fast_run == _generic_async_rollout(Twin, seed, layers)
    assert any(queued for _, queued, _ in fast_run)
