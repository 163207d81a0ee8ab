"""The sim backend's graph cache: a schedule setting is written into a graph cached less
it, when the programs only write its JSON; otherwise each schedule has its own graph."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from infragym.apps.workload import Schedule, constant
from infragym.backends import mockrun, sim
from infragym.backends.base import LayerSpec
from stacks import registry
from stacks.registry import Layer, LayerSettings, register

CONFIG_MAP = "kubernetes:core/v1:ConfigMap"


class _Load(LayerSettings):
    schedule: Schedule = constant(5.0)


def _layer(name: str, data) -> Layer:
    """A layer of one ConfigMap whose data ``data(schedule)`` makes."""

    def program(ctx: registry.LayerContext) -> dict[str, Any]:
        import pulumi_kubernetes as k8s

        k8s.core.v1.ConfigMap("load", data=data(ctx.settings.schedule))
        return {}

    return Layer(name=name, description=f"test layer {name}", settings=_Load, program=program)


@pytest.fixture
def layers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(registry, "LAYERS", dict(registry.all_layers()))
    register(_layer("json-only", lambda s: {"schedule": s.model_dump_json(), "kind": "load"}))
    register(_layer("reads-rate", lambda s: {"rate": str(s.shape.rate)}))
    yield


def _runs(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    runs: list[Any] = []
    real = mockrun.run_layers

    def counted(*args: Any, **kwargs: Any) -> Any:
        runs.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(mockrun, "run_layers", counted)
    return runs


@pytest.mark.usefixtures("layers")
def test_a_schedule_only_written_as_json_shares_the_cached_graph(monkeypatch):
    runs = _runs(monkeypatch)
    graphs = [
        sim.resource_graph([LayerSpec("json-only", {"schedule": constant(rate)})], "graphs")
        for rate in (1.0, 2.0, 3.0)
    ]
    assert len(runs) == 2  # the two stand-in schedules, once
    for rate, records in zip((1.0, 2.0, 3.0), graphs, strict=True):
        (record,) = records
        assert record.inputs["data"] == {
            "schedule": constant(rate).model_dump_json(),
            "kind": "load",
        }


@pytest.mark.usefixtures("layers")
def test_a_schedule_the_program_reads_gets_a_graph_of_its_own(monkeypatch):
    runs = _runs(monkeypatch)
    for rate in (1.0, 2.0, 1.0):
        (record,) = sim.resource_graph(
            [LayerSpec("reads-rate", {"schedule": constant(rate)})], "graphs"
        )
        assert record.inputs["data"] == {"rate": str(rate)}
    assert len(runs) == 2 + 2  # the stand-ins, then one run per distinct schedule
