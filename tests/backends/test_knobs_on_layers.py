"""The pulumi backend's knob transformation on the real layer programs, under mocks.

Every knob of SimpleK8sWebApp-v0 must land on the resource the real component declares:
this is the path ``backend="pulumi"`` takes when it reruns a layer for a changed knob.
"""

from __future__ import annotations

import dataclasses

import pytest

from infragym.backends.mockrun import run_layer
from infragym.backends.transform import Override, transformation
from infragym.envs.simple_k8s_web_app import default_knobs
from infragym.knobs import get_path
from stacks import registry

UPSTREAM = {
    "do-managed-k8s": {
        "region": "nyc3",
        "vpc_id": "vpc-1",
        "tag": "infragym-dev",
        "project_id": "p",
    },
    "k8s-heater": {
        "kubeconfig": "apiVersion: v1\nkind: Config\n",
        "namespace": "infragym",
        "workers_pool_name": "dev-workers",
    },
}
NEW_VALUES = {
    "heater_replicas": 7,
    "heater_cpu_limit": "1000m",
    "node_count": 5,
    "node_size": "s-4vcpu-8gb",
}


@pytest.mark.parametrize("knob", default_knobs(), ids=lambda k: k.name)
def test_knob_lands_on_the_component_resource(knob, monkeypatch):
    value = NEW_VALUES[knob.name]
    knobs = transformation([Override(knob.type, knob.resource, knob.path, value, knob=knob.name)])
    layer = registry.get_layer(knob.layer)

    def program(ctx):
        import pulumi

        pulumi.runtime.register_stack_transformation(knobs)
        return layer.program(ctx)

    monkeypatch.setitem(registry.LAYERS, knob.layer, dataclasses.replace(layer, program=program))
    run = run_layer(knob.layer, {}, UPSTREAM[knob.layer], deployment="dev")
    resource = run.one(knob.type, knob.resource)
    got = get_path(resource.inputs, knob.path)
    assert (int(got) if isinstance(value, int) else got) == value
    knobs.check()  # every override matched a resource
