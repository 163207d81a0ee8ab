"""The twin's knob fast paths against its general path (re-reading the whole resource)."""

from __future__ import annotations

import math
import random

import pytest

from infragym.apps.workload import constant
from infragym.twin.model import TwinParams
from infragym.twin.twin import CPU_LIMIT_PATH, Twin
from tests.twin.graphs import DEPLOYMENT, random_knob_changes, web_app


def _state(twin: Twin) -> tuple:
    metrics = tuple((k, None if math.isnan(v) else v) for k, v in sorted(twin.last_metrics.items()))
    nodes = tuple((n.name, n.ready_at, n.removed_at, n.cpu_requested) for n in twin.nodes())
    pods = tuple(
        (p.workload.name, p.node.name if p.node else None, p.ready_at) for p in twin.pods()
    )
    return metrics, nodes, pods, twin.cost_usd, twin.hourly_cost()


def _replay(seed: int, fast: bool, hpa: dict | None) -> list[tuple]:
    rng = random.Random(seed)
    twin = Twin(
        web_app(replicas=3, node_size="s-2vcpu-4gb", schedule=constant(120.0), hpa=hpa),
        seed=seed,
        params=TwinParams(noise=seed % 2 == 0),
    )
    twin.fast_paths = fast
    states = []
    for _ in range(150):
        random_knob_changes(twin, rng)
        twin.advance(rng.choice((10.0, 30.0, 30.0, 120.0)))
        states.append(_state(twin))
    return states


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("hpa", [None, {"min": 1, "max": 12, "target": 60}])
def test_random_knob_sequences_match_the_general_path(seed, hpa):
    assert _replay(seed, True, hpa) == _replay(seed, False, hpa)


def test_cpu_limit_fast_path_updates_the_inputs_and_rolls():
    # One M/M/1 pod, 20 ms of CPU per request at 30 req/s: with its 1-core limit mu = 50/s;
    # at 250m, mu = 12.5/s < 30/s, so it saturates.
    twin = Twin(web_app(replicas=1, schedule=constant(30.0)), params=TwinParams(noise=False))
    before = twin.advance(30.0)
    twin.set_property(DEPLOYMENT, "heater", CPU_LIMIT_PATH, "250m")
    container = twin.inputs(DEPLOYMENT, "heater")["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["cpu"] == "250m"
    assert twin.workloads[(DEPLOYMENT, "heater")].cpu_limit == 0.25
    # The old pod keeps its 1-core limit until the rolled one is Ready (pod_startup_s).
    rolling = twin.advance(twin.params.pod_startup_s / 2)
    assert rolling["latency_p50"] == before["latency_p50"]
    assert rolling["error_ratio"] == before["error_ratio"] < 0.01
    twin.advance(twin.params.pod_startup_s / 2)
    after = twin.advance(30.0)
    assert after["error_ratio"] == pytest.approx(1.0 - 12.5 * 0.999 / 30.0)
