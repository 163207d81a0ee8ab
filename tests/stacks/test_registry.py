"""The layer registry: names, stack names, upstream roles and dependency order."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infragym.errors import ConfigError
from stacks import registry
from stacks.registry import (
    Layer,
    LayerContext,
    LayerSettings,
    all_layers,
    dependency_order,
    get_layer,
    register,
    split_stack_name,
    stack_name,
    upstream_layers,
)


class _Empty(LayerSettings):
    pass


def _fake(
    name: str,
    upstream: tuple[str, ...] = (),
    provides: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
    program=lambda ctx: {},
) -> Layer:
    return Layer(
        name=name,
        description=f"test layer {name}",
        settings=_Empty,
        program=program,
        upstream=upstream,
        optional_upstream=optional,
        provides=provides,
    )


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Layer]]:
    """A copy of the registry that tests may add to without touching the real one."""
    layers = dict(all_layers())
    monkeypatch.setattr(registry, "LAYERS", layers)
    yield layers


# -- stack names --------------------------------------------------------------------------


def test_stack_name_round_trip() -> None:
    assert stack_name("dev", "k8s-heater") == "dev.k8s-heater"
    assert split_stack_name(stack_name("dev", "do-managed-k8s")) == ("dev", "do-managed-k8s")


def test_split_ignores_org_and_project() -> None:
    assert split_stack_name("organization/infragym/exp1.do-core") == ("exp1", "do-core")


@pytest.mark.parametrize("bad", ["dev", "dev.", ".do-core", "", "org/infragym/dev", "a/b/"])
def test_split_rejects_malformed_names(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"<deployment>\.<layer>"):
        split_stack_name(bad)


# -- lookup -------------------------------------------------------------------------------


def test_unknown_layer_lists_close_matches() -> None:
    with pytest.raises(ConfigError) as exc:
        get_layer("do-cor")
    message = str(exc.value)
    assert "unknown layer 'do-cor'" in message
    assert "do-core" in message


def test_every_layer_is_complete_and_its_upstream_resolvable() -> None:
    layers = all_layers()
    roles = {role for layer in layers.values() for role in layer.provides}
    for name, layer in layers.items():
        assert layer.name == name
        assert layer.description and "\n" not in layer.description
        assert layer.outputs, name
        assert layer.resources, name
        assert issubclass(layer.settings, LayerSettings)
        for need in (*layer.upstream, *layer.optional_upstream):
            assert need in layers or need in roles, (name, need)


def test_do_layers_are_registered_with_their_contract() -> None:
    core, k8s = get_layer("do-core"), get_layer("do-managed-k8s")
    assert core.upstream == () and core.resources[0] == "infragym:do:Core"
    assert k8s.upstream == ("do-core",)
    assert k8s.provides == ("cluster",)
    assert "kubeconfig" in k8s.outputs and "node_pool_id" in k8s.outputs
    assert k8s.resources[0] == "infragym:do:ManagedK8s"


def test_register_rejects_a_second_layer_of_the_same_name(
    scratch_registry: dict[str, Layer],
) -> None:
    layer = register(_fake("probe"))
    assert register(layer) is layer  # registering the same object again is harmless
    with pytest.raises(ConfigError, match="registered twice"):
        register(_fake("probe"))


def test_parse_settings_accepts_a_model_instance() -> None:
    layer = get_layer("do-core")
    settings = layer.parse_settings({"region": "ams3"})
    assert layer.parse_settings(settings) is settings
    assert layer.parse_settings(None) == layer.parse_settings({})


# -- upstream and order -------------------------------------------------------------------


def test_roles_resolve_to_the_layer_that_provides_them(
    scratch_registry: dict[str, Layer],
) -> None:
    register(_fake("probe", upstream=("cluster",)))
    assert upstream_layers(get_layer("probe"), ["do-core", "do-managed-k8s"]) == ["do-managed-k8s"]
    with pytest.raises(ConfigError, match="needs 'cluster' upstream"):
        upstream_layers(get_layer("probe"), ["do-core"])


def test_dependency_order_puts_upstream_first() -> None:
    assert dependency_order(["do-managed-k8s", "do-core"]) == ["do-core", "do-managed-k8s"]
    assert dependency_order(["do-core", "do-core"]) == ["do-core"]


def test_dependency_order_of_the_simple_web_app() -> None:
    names = ["k8s-prometheus", "k8s-siege-engine", "k8s-heater", "k8s-core"]
    order = dependency_order([*names, "do-managed-k8s", "do-core"])
    assert order[:2] == ["do-core", "do-managed-k8s"]
    for name in order:
        for up in upstream_layers(get_layer(name), order):
            assert order.index(up) < order.index(name), (up, name)


def test_dependency_order_reports_missing_upstream_and_unknown_layers() -> None:
    with pytest.raises(ConfigError, match="needs 'do-core' upstream"):
        dependency_order(["do-managed-k8s"])
    with pytest.raises(ConfigError, match="unknown layer"):
        dependency_order(["do-core", "nope"])


def test_dependency_cycle_is_detected(scratch_registry: dict[str, Layer]) -> None:
    register(_fake("cycle-a", upstream=("cycle-b",)))
    register(_fake("cycle-b", upstream=("cycle-a",)))
    with pytest.raises(ConfigError, match="cycle"):
        dependency_order(["cycle-a", "cycle-b"])


# -- optional upstream --------------------------------------------------------------------


def test_optional_upstream_present_is_ordered_first(scratch_registry: dict[str, Layer]) -> None:
    register(_fake("opt-base"))
    register(_fake("opt-app", upstream=("do-core",), optional=("opt-base",)))
    app = get_layer("opt-app")
    order = dependency_order(["opt-app", "opt-base", "do-core"])
    assert order == ["do-core", "opt-base", "opt-app"]
    # Required upstream first, then the optional ones present.
    assert upstream_layers(app, ["opt-base", "do-core"]) == ["do-core", "opt-base"]


def test_optional_upstream_absent_is_ignored(scratch_registry: dict[str, Layer]) -> None:
    register(_fake("opt-app", upstream=("do-core",), optional=("opt-base", "storage")))
    assert upstream_layers(get_layer("opt-app"), ["do-core"]) == ["do-core"]
    assert dependency_order(["opt-app", "do-core"]) == ["do-core", "opt-app"]
    # A missing required upstream is still an error.
    with pytest.raises(ConfigError, match="needs 'do-core' upstream"):
        dependency_order(["opt-app"])


def test_optional_upstream_may_be_a_role(scratch_registry: dict[str, Layer]) -> None:
    register(_fake("opt-app", optional=("cluster",)))
    present = ["opt-app", "do-managed-k8s", "do-core"]
    assert upstream_layers(get_layer("opt-app"), present) == ["do-managed-k8s"]
    assert dependency_order(present) == ["do-core", "do-managed-k8s", "opt-app"]


def test_optional_upstream_outputs_reach_the_layer(scratch_registry: dict[str, Layer]) -> None:
    from infragym.backends.base import LayerSpec
    from infragym.backends.mockrun import run_layers

    register(_fake("opt-base", program=lambda ctx: {"dsn": "postgresql://db"}))
    register(_fake("opt-app", optional=("opt-base",), program=lambda ctx: dict(ctx.upstream)))
    _, runs = run_layers([LayerSpec("opt-app"), LayerSpec("opt-base")])
    assert runs["opt-app"].outputs == {"dsn": "postgresql://db"}
    _, runs = run_layers([LayerSpec("opt-app")])
    assert runs["opt-app"].outputs == {}


def test_postgresql_is_ordered_before_the_heater() -> None:
    names = ["k8s-heater", "k8s-postgresql", "k8s-core", "do-managed-k8s", "do-core"]
    order = dependency_order(names)
    assert order.index("k8s-postgresql") < order.index("k8s-heater")
    assert upstream_layers(get_layer("k8s-heater"), order)[-1] == "k8s-postgresql"
    without = [n for n in order if n != "k8s-postgresql"]
    assert "k8s-postgresql" not in upstream_layers(get_layer("k8s-heater"), without)


def test_layer_context_need() -> None:
    ctx = LayerContext(deployment="dev", settings=None, upstream={"tag": "t"})
    assert ctx.need("tag") == "t"
    with pytest.raises(ConfigError, match=r"needs the upstream output 'vpc_id'.*\['tag'\]"):
        ctx.need("vpc_id")
