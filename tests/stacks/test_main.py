"""The CLI path (``stacks/__main__.py``) under Pulumi mocks, and the example stack configs."""

from __future__ import annotations

import asyncio
import json
import runpy
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from infragym.backends.mockrun import FAKE_KUBECONFIG
from infragym.errors import ConfigError
from stacks import cli_program, registry
from stacks.registry import Layer, LayerSettings, all_layers, get_layer, register

STACKS_DIR = Path(cli_program.__file__).parent
STACK_REF = "pulumi:pulumi:StackReference"
ORG = "organization"

CORE_OUTPUTS = {
    "region": "nyc3",
    "vpc_id": "vpc-from-core",
    "vpc_ip_range": "10.10.0.0/16",
    "tag": "infragym-dev",
    "project_id": "project-from-core",
    "firewall_id": "fw-1",
}
CLUSTER_OUTPUTS = {
    "kubeconfig": FAKE_KUBECONFIG,
    "endpoint": "https://cluster.invalid",
    "cluster_id": "c-1",
    "cluster_urn": "do:kubernetes:c-1",
    "node_pool_id": "np-1",
    "workers_pool_name": "dev-workers",
    "region": "nyc3",
}
UPSTREAM_STACKS = {
    f"{ORG}/infragym/dev.do-core": (CORE_OUTPUTS, []),
    f"{ORG}/infragym/dev.do-managed-k8s": (CLUSTER_OUTPUTS, ["kubeconfig"]),
}


@dataclass
class CliRun:
    """What one mocked ``pulumi up`` of the CLI program did."""

    resources: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    stack_refs: list[str] = field(default_factory=list)
    exports: dict[str, Any] = field(default_factory=dict)
    secret_exports: set[str] = field(default_factory=set)

    def one(self, type_token: str, name: str) -> dict[str, Any]:
        (found,) = [i for t, n, i in self.resources if (t, n) == (type_token, name)]
        return found


def _ensure_event_loop() -> None:
    """Give the main thread an event loop if it has none: the mock runtime needs one, and
    an earlier test's ``asyncio.run`` (the MCP client tests, for one) leaves it without."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            asyncio.get_event_loop()
        except RuntimeError:
            asyncio.set_event_loop(asyncio.new_event_loop())


def run_cli(
    stack: str,
    config: Mapping[str, Any] | None = None,
    entry: str = "main",
    run: CliRun | None = None,
) -> CliRun:
    """Run the CLI program as ``pulumi up -s <stack>`` would, under mocks.

    ``config`` maps keys of the ``infragym`` namespace to values (objects are stored as
    JSON, as the CLI stores structured config). ``entry="module"`` runs the real
    ``stacks/__main__.py`` instead of calling :func:`cli_program.main`. Pass ``run`` to
    inspect what happened when the program raises.
    """
    import pulumi
    from pulumi.runtime import mocks as pmocks
    from pulumi.runtime import settings as psettings
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    run = run if run is not None else CliRun()

    class CliMocks(pmocks.Mocks):
        def new_resource(self, args: pmocks.MockResourceArgs):
            if args.typ == STACK_REF:
                target = args.inputs["name"]
                run.stack_refs.append(target)
                outputs, secret = UPSTREAM_STACKS.get(target, ({}, []))
                return target, {
                    "name": target,
                    "outputs": outputs,
                    "secretOutputNames": secret,
                }
            run.resources.append((args.typ, args.name, dict(args.inputs)))
            extra: dict[str, Any] = {}
            if args.typ == "digitalocean:index/kubernetesCluster:KubernetesCluster":
                extra = {"kubeConfigs": [{"rawConfig": FAKE_KUBECONFIG}], "endpoint": "https://x"}
            return f"{args.name}-id", {**args.inputs, **extra}

        def call(self, args: pmocks.MockCallArgs):
            return {}

    _ensure_event_loop()
    psettings.ROOT.set(None)
    pmocks.set_mocks(CliMocks(), project="infragym", stack=stack, preview=False, organization=ORG)
    psettings.SETTINGS.rpc_manager.clear()
    psettings.SETTINGS.outputs.clear()
    pulumi.runtime.set_all_config(
        {
            f"infragym:{k}": v if isinstance(v, str) else json.dumps(v)
            for k, v in (config or {}).items()
        }
    )

    def body() -> None:
        if entry == "module":
            runpy.run_module("stacks.__main__", run_name="__main__")
        else:
            cli_program.main()
        stack_outputs = pulumi.runtime.get_root_resource().outputs  # type: ignore[union-attr]
        for key, value in stack_outputs.items():
            out = pulumi.Output.from_input(value)
            if _sync_await(out.is_secret()):
                run.secret_exports.add(key)
            run.exports[key] = _sync_await(out.future())

    try:
        _sync_await(run_pulumi_func(body))
    finally:
        pulumi.runtime.set_all_config({})
    return run


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Layer]]:
    layers = dict(all_layers())
    monkeypatch.setattr(registry, "LAYERS", layers)
    yield layers


class _Empty(LayerSettings):
    pass


def _probe(upstream: tuple[str, ...]) -> Layer:
    """A layer whose outputs echo what it read from upstream."""
    return Layer(
        name="probe",
        description="echoes its upstream",
        settings=_Empty,
        program=lambda ctx: dict(ctx.upstream),
        upstream=upstream,
        outputs=(),
        resources=(),
    )


# -- the CLI program ----------------------------------------------------------------------


def test_core_stack_runs_from_config_and_exports_outputs() -> None:
    run = run_cli(
        "dev.do-core",
        {"settings": {"region": "ams3", "ingress_cidrs": ["203.0.113.0/24"]}},
        entry="module",
    )
    assert run.stack_refs == []
    assert run.one("digitalocean:index/vpc:Vpc", "vpc")["region"] == "ams3"
    assert set(run.exports) == set(get_layer("do-core").outputs)
    assert run.exports["tag"] == "infragym-dev"


def test_cluster_stack_reads_core_outputs_through_a_stack_reference() -> None:
    run = run_cli("organization/infragym/dev.do-managed-k8s", {"settings": {"node_count": 3}})
    assert run.stack_refs == [f"{ORG}/infragym/dev.do-core"]
    cluster = run.one("digitalocean:index/kubernetesCluster:KubernetesCluster", "cluster")
    assert cluster["vpcUuid"] == "vpc-from-core"
    assert cluster["region"] == "nyc3"
    workers = run.one("digitalocean:index/kubernetesNodePool:KubernetesNodePool", "workers")
    assert workers["nodeCount"] == 3
    links = run.one("digitalocean:index/projectResources:ProjectResources", "project-resources")
    assert links["project"] == "project-from-core"
    assert set(run.exports) == set(get_layer("do-managed-k8s").outputs)
    assert run.secret_exports == {"kubeconfig"}


def test_defaults_apply_without_any_config() -> None:
    run = run_cli("dev.do-core")
    assert run.one("digitalocean:index/vpc:Vpc", "vpc")["ipRange"] == "10.10.0.0/16"


def test_roles_map_to_layers_and_secrets_stay_secret(scratch_registry: dict[str, Layer]) -> None:
    register(_probe(("cluster",)))
    run = run_cli("dev.probe")
    assert run.stack_refs == [f"{ORG}/infragym/dev.do-managed-k8s"]
    assert run.exports == CLUSTER_OUTPUTS
    assert run.secret_exports == {"kubeconfig"}


def test_upstream_config_overrides_the_role_mapping(scratch_registry: dict[str, Layer]) -> None:
    register(_probe(("cluster",)))
    register(
        Layer(
            name="other-cluster",
            description="another cluster provider",
            settings=_Empty,
            program=lambda ctx: {},
            provides=("cluster",),
            outputs=("kubeconfig",),
            resources=("x",),
        )
    )
    run = run_cli("dev.probe", {"upstream": {"cluster": "other-cluster"}})
    assert run.stack_refs == [f"{ORG}/infragym/dev.other-cluster"]


@pytest.mark.parametrize(
    ("stack", "config", "match"),
    [
        ("dev.do-core", {"settings": {"region": "mars1"}}, "unknown region 'mars1'"),
        ("dev.do-managed-k8s", {"settings": {"node_size": "huge"}}, "node_size"),
        ("dev.do-core", {"settings": ["not", "an", "object"]}, "must be an object"),
        ("dev.do-core", {"settings": "{not json"}, "not valid JSON"),
        ("dev", {}, r"<deployment>\.<layer>"),
        ("dev.no-such-layer", {}, "unknown layer"),
        ("dev.k8s-core", {"upstream": {"cluster": "do-core"}}, "does not provide it"),
        ("dev.k8s-core", {"upstream": {"cluster": "nope"}}, "unknown layer 'nope'"),
        ("dev.k8s-core", {"upstream": {"cluster": 3}}, "map roles to layer names"),
        ("dev.k8s-heater", {"upstream": {"k8s-postgresql": "k8s-core"}}, "mapping to itself"),
    ],
)
def test_bad_config_fails_before_any_resource(
    stack: str, config: dict[str, Any], match: str
) -> None:
    run = CliRun()
    with pytest.raises(ConfigError, match=match):
        run_cli(stack, config, run=run)
    assert run.resources == [] and run.stack_refs == []


def test_resolve_upstream_without_roles() -> None:
    assert cli_program.resolve_upstream(get_layer("do-core")) == []
    assert cli_program.resolve_upstream(get_layer("do-managed-k8s")) == ["do-core"]


def test_unmapped_role_is_a_clear_error(scratch_registry: dict[str, Layer]) -> None:
    register(_probe(("storage",)))
    with pytest.raises(ConfigError, match="neither a layer nor a role"):
        cli_program.resolve_upstream(get_layer("probe"))


# -- optional upstream --------------------------------------------------------------------

PG_STACK = f"{ORG}/infragym/dev.k8s-postgresql"
DSN = "postgresql://infragym:pw-from-config@postgresql.infragym.svc.cluster.local:5432/infragym"
DB_SETTINGS = {"database": True, "work": {"db_query": "SELECT 1"}}
LIST_PG = {"k8s-postgresql": "k8s-postgresql"}


def test_optional_upstream_is_read_only_when_listed() -> None:
    heater = get_layer("k8s-heater")
    assert cli_program.resolve_upstream(heater) == ["do-managed-k8s", "k8s-core"]
    assert cli_program.resolve_upstream(heater, LIST_PG) == [
        "do-managed-k8s",
        "k8s-core",
        "k8s-postgresql",
    ]


def test_heater_reads_the_listed_database(monkeypatch: pytest.MonkeyPatch) -> None:
    pg_outputs = {"postgresql_host": "postgresql.infragym", "postgresql_dsn": DSN}
    monkeypatch.setitem(UPSTREAM_STACKS, PG_STACK, (pg_outputs, ["postgresql_dsn"]))
    run = run_cli("dev.k8s-heater", {"settings": DB_SETTINGS, "upstream": LIST_PG})
    assert PG_STACK in run.stack_refs  # (the mock runtime creates references in any order)
    assert run.one("kubernetes:core/v1:Secret", "heater-db")["metadata"]["name"] == "heater-db"
    pod = run.one("kubernetes:apps/v1:Deployment", "heater")["spec"]["template"]["spec"]
    (env,) = [e for e in pod["containers"][0]["env"] if e["name"] == "HEATER_DB_DSN"]
    assert env == {
        "name": "HEATER_DB_DSN",
        "valueFrom": {"secretKeyRef": {"name": "heater-db", "key": "dsn"}},
    }
    assert DSN not in json.dumps(pod)


def test_heater_database_without_the_listed_layer_is_a_clear_error() -> None:
    run = CliRun()
    with pytest.raises(ConfigError, match="needs the upstream output 'postgresql_dsn'"):
        run_cli("dev.k8s-heater", {"settings": DB_SETTINGS}, run=run)
    assert PG_STACK not in run.stack_refs
    assert not [r for r in run.resources if r[0] != "pulumi:providers:kubernetes"]


# -- the example stack configs ------------------------------------------------------------

EXAMPLES = sorted(STACKS_DIR.glob("Pulumi.*.yaml"))


def test_the_simple_web_app_has_an_example_for_every_layer() -> None:
    names = {p.name for p in EXAMPLES}
    for layer in (
        "do-core",
        "do-managed-k8s",
        "k8s-core",
        "k8s-heater",
        "k8s-siege-engine",
        "k8s-prometheus",
    ):
        assert f"Pulumi.dev.{layer}.yaml" in names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_stack_config_is_valid(path: Path) -> None:
    deployment, layer_name = registry.split_stack_name(path.name[len("Pulumi.") : -len(".yaml")])
    assert deployment == "dev"
    layer = get_layer(layer_name)
    config = yaml.safe_load(path.read_text())["config"]
    assert set(config) <= {"infragym:settings", "infragym:upstream"}, set(config)
    layer.parse_settings(config.get("infragym:settings"))
    ups = cli_program.resolve_upstream(layer, config.get("infragym:upstream"))
    assert all(u in all_layers() for u in ups)
