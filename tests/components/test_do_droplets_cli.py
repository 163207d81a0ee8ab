"""The droplet layers on the CLI path (``pulumi up -s dev.<layer>``) under Pulumi mocks.

Here upstream values are ``Output``\\s read through ``StackReference`` (secret ones stay
secret), not plain values as in the sim backend: this checks that no layer formats an
upstream Output into a string, and that the secrets are still secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from infragym.backends.mockrun import _unwrap_secrets
from stacks import cli_program
from stacks.registry import get_layer
from tests.components.do_droplets import CORE, SEED, run, support_run

ORG = "organization"
STACK_REF = "pulumi:pulumi:StackReference"
DROPLET = "digitalocean:index/droplet:Droplet"


@dataclass
class CliRun:
    """Resources (type, name, inputs) and exports of one mocked ``pulumi up``."""

    resources: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    exports: dict[str, Any] = field(default_factory=dict)
    secret_exports: set[str] = field(default_factory=set)

    def droplets(self) -> list[dict[str, Any]]:
        return [i for t, _, i in self.resources if t == DROPLET]


def run_cli(stack: str, settings: Mapping[str, Any], upstream: Mapping[str, Any]) -> CliRun:
    """Run ``stacks.cli_program.main`` for ``dev.<layer>``; every upstream stack reference
    answers with ``upstream``, its secret names taken from the sim run's secrets."""
    import pulumi
    from pulumi.runtime import mocks as pmocks
    from pulumi.runtime import settings as psettings
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    result = CliRun()
    outputs, secret = upstream

    class Mocks(pmocks.Mocks):
        def new_resource(self, args: pmocks.MockResourceArgs):
            if args.typ == STACK_REF:
                name = args.inputs["name"]
                return name, {"name": name, "outputs": outputs, "secretOutputNames": secret}
            inputs, _ = _unwrap_secrets(dict(args.inputs))
            result.resources.append((args.typ, args.name, inputs))
            extra = {}
            if args.typ == DROPLET:
                extra = {"ipv4Address": "203.0.113.20", "ipv4AddressPrivate": "10.10.0.20"}
            return f"{args.name}-id", {**inputs, **extra}

        def call(self, args: pmocks.MockCallArgs):
            return {}

    psettings.ROOT.set(None)
    pmocks.set_mocks(Mocks(), project="infragym", stack=stack, preview=False, organization=ORG)
    psettings.SETTINGS.rpc_manager.clear()
    psettings.SETTINGS.outputs.clear()
    pulumi.runtime.set_all_config({"infragym:settings": json.dumps(dict(settings))})

    def body() -> None:
        cli_program.main()
        for key, value in pulumi.runtime.get_root_resource().outputs.items():  # type: ignore[union-attr]
            out = pulumi.Output.from_input(value)
            if _sync_await(out.is_secret()):
                result.secret_exports.add(key)
            result.exports[key] = _sync_await(out.future())

    try:
        _sync_await(run_pulumi_func(body))
    finally:
        pulumi.runtime.set_all_config({})
    return result


def _upstream(*runs: Any) -> tuple[dict[str, Any], list[str]]:
    outputs: dict[str, Any] = dict(CORE)
    secret: list[str] = []
    for r in runs:
        outputs.update(r.outputs)
        secret += sorted(r.secret_outputs)
    return outputs, secret


@pytest.fixture(scope="module")
def support() -> Any:
    return support_run()


def _check(r: CliRun, layer: str, count: int) -> None:
    assert set(r.exports) == set(get_layer(layer).outputs)
    nodes = r.droplets()
    assert len(nodes) == count
    for d in nodes:
        assert d["vpcUuid"] == CORE["vpc_id"]
        assert "Output" not in d["userData"]  # no Output was formatted into a string
        assert d["userData"].startswith("#cloud-config\n")
        assert isinstance(yaml.safe_load(d["userData"]), dict)


def test_control_plane_and_minions() -> None:
    cp = run_cli("dev.do-k8s-control-plane", {"secret_seed": SEED}, _upstream())
    _check(cp, "do-k8s-control-plane", 1)
    assert {"kubeconfig", "join_token", "secret_seed"} <= cp.secret_exports
    assert cp.exports["api_endpoint"] == "https://203.0.113.20:6443"

    sim_cp = run("do-k8s-control-plane", {"secret_seed": SEED})
    minions = run_cli("dev.do-k8s-minions", {"count": 2}, _upstream(sim_cp))
    _check(minions, "do-k8s-minions", 2)
    assert sim_cp.outputs["join_token"] in minions.droplets()[0]["userData"]


def test_support_nomad_and_swarm(support: Any) -> None:
    r = run_cli("dev.do-support", {"secret_seed": SEED, "consul_count": 3}, _upstream())
    _check(r, "do-support", 4)
    assert "consul_management_token" in r.secret_exports

    nomad = run_cli("dev.do-nomad", {"secret_seed": SEED}, _upstream(support))
    _check(nomad, "do-nomad", 3)
    assert {"nomad_token", "secret_seed"} <= nomad.secret_exports

    managers = run_cli("dev.do-swarm-manager", {}, _upstream(support))
    _check(managers, "do-swarm-manager", 1)
    sim_managers = run("do-swarm-manager", {}, support.outputs)
    workers = run_cli("dev.do-swarm-worker", {"count": 3}, _upstream(support, sim_managers))
    _check(workers, "do-swarm-worker", 3)
    doc = yaml.safe_load(workers.droplets()[0]["userData"])
    assert any(f["path"] == "/etc/infragym/consul-token.header" for f in doc["write_files"])
