"""The compiled twin core against the Python twin: the same world, step for step, bit for bit.

The Python twin is checked against queueing theory, the Kubernetes docs and DigitalOcean's
billing in ``test_twin.py`` (whose ``twin_class`` tests also run on the compiled twin);
here the compiled one must give exactly its metrics, nodes, pods and cost under random
knob changes, on every schedule shape, and hand over to it when a change comes that the
core does not model.
"""

from __future__ import annotations

import gc
import math
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
from infragym.twin.fast import METRIC_NAMES, FastTwin, ReferenceNeeded, make_twin
from infragym.twin.model import TwinParams
from infragym.twin.twin import Twin
from tests.twin.graphs import (
    DEPLOYMENT,
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
    # The core computes v0's metrics (it runs immediate actuation only; see METRIC_NAMES).
    metrics = tuple(
        (k, None if math.isnan(v) else v) for k, v in twin.last_metrics.items() if k in METRIC_NAMES
    )
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


def test_a_change_the_core_does_not_model_raises_reference_needed_and_is_undone():
    twin = FastTwin(web_app(replicas=2), seed=0)
    path = "spec.template.spec.containers[0].resources.requests.cpu"
    with pytest.raises(ReferenceNeeded, match=r"requests\.cpu"):
        twin.set_property(DEPLOYMENT, "heater", path, "500m")
    container = twin.inputs(DEPLOYMENT, "heater")["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["cpu"] == "250m"


def _knob(name: str, type_token: str, resource: str, path: str, domain) -> Knob:
    return Knob(name, "k8s-heater", type_token, resource, path, domain)


class _Graph(SimBackend):
    """A sim backend on a hand-built graph instead of the layer programs."""

    def __init__(self, records, engine: str) -> None:
        super().__init__(twin_params=TwinParams(), twin_engine=engine)
        self._records = records

    def reset(self, layers=(), seed=None) -> None:
        self.twin = make_twin(self._records, seed, self.twin_params, self.twin_engine)
        self._episode = (self._records, seed)
        self._history.clear()
        self._recording = isinstance(self.twin, FastTwin)


def test_the_backend_carries_on_on_the_python_twin_after_a_change_the_core_does_not_model():
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
        kind = type(backend.twin)
        assert kind is Twin  # after the hand-over, or from the start
    assert runs["native"] == runs["python"]


def test_engines_are_chosen_and_checked():
    plain, with_hpa = web_app(), web_app(hpa={"min": 1, "max": 5, "target": 60})
    params = TwinParams()
    assert type(make_twin(plain, 0, params, "auto")) is FastTwin
    assert type(make_twin(plain, 0, params, "python")) is Twin
    assert type(make_twin(with_hpa, 0, params, "auto")) is Twin  # the core has no HPA
    with pytest.raises(ConfigError, match="HPA"):
        make_twin(with_hpa, 0, params, "native")
    with pytest.raises(ConfigError, match="twin engine"):
        make_twin(plain, 0, params, "rust")


def test_without_the_extension_auto_is_the_python_twin_and_native_says_how_to_install(
    monkeypatch,
):
    monkeypatch.setattr(fast, "core_module", lambda: None)
    assert type(make_twin(web_app(), 0, TwinParams(), "auto")) is Twin
    with pytest.raises(ConfigError, match=r"pip install \./native"):
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
