"""The pulumi backend against the real engine, on a ``file://`` state backend.

The layers are :mod:`tests.backends.dynlayers`' dynamic-provider records: real engine
operations whose "cloud" is a directory of JSON files. The tests of this module share one
deployment and run in order (create, no-op, one-layer update, upstream outputs, reset,
re-attach, close), as one episode would; each checks what the engine really did (files,
state, engine-call counts).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from infragym.backends import Change, LayerSpec
from infragym.backends.pulumi import PulumiBackend, knob_value
from infragym.errors import ActionError, ConfigError
from infragym.knobs import IntRange, Knob, get_path
from tests.backends import dynlayers as dl
from tests.backends.conftest import TEST_PASSPHRASE

pytestmark = [pytest.mark.engine, pytest.mark.timeout(300)]

DEPLOYMENT = "eng"


class Ctx:
    """The module's shared deployment."""

    def __init__(self, base: Path) -> None:
        self.files = base / "files"
        self.files.mkdir()
        self.state = base / "state"
        self.url = f"file://{self.state}"
        self.backend = PulumiBackend(DEPLOYMENT, self.url, step_wait=False, progress=False)

    def specs(self, **base: object) -> list[LayerSpec]:
        return [
            LayerSpec("test-base", {"dir": str(self.files), **base}),
            LayerSpec("test-app", {"dir": str(self.files)}),
        ]

    def record(self, which: str) -> dict | None:
        return dl.read_record(self.files, DEPLOYMENT, which)


@pytest.fixture(scope="module")
def ctx(pulumi_env: Path, test_layers: None) -> Iterator[Ctx]:
    c = Ctx(pulumi_env)
    try:
        yield c
    finally:
        c.backend.close()


def test_create_deploys_layers_in_order_with_outputs_downstream(ctx: Ctx) -> None:
    ctx.backend.reset(ctx.specs(), seed=1)
    assert ctx.backend.engine_calls == 2  # one `up` per new stack, no refresh
    base, app = ctx.record("base"), ctx.record("app")
    assert base is not None and base["spec"]["replicas"] == 1
    assert app is not None
    assert app["upstreamFile"] == str(ctx.files / f"{DEPLOYMENT}-base.json")
    assert app["upstreamSize"] == "small"
    # The secret reached the provider as plaintext, but is encrypted in the state.
    assert app["upstreamSecret"] == f"s3cret-of-{DEPLOYMENT}"
    state_text = "".join(p.read_text() for p in ctx.state.rglob("*.json"))
    assert f"s3cret-of-{DEPLOYMENT}" not in state_text
    assert TEST_PASSPHRASE not in state_text
    records = {(r.layer, r.name): r for r in ctx.backend.resources()}
    assert set(records) == {("test-base", "base"), ("test-app", "app")}
    assert records["test-app", "app"].inputs["upstreamSecret"] == "[secret]"
    assert records["test-base", "base"].type == dl.RECORD_TYPE


def test_noop_steps_cost_no_engine_call(ctx: Ctx) -> None:
    calls = ctx.backend.engine_calls
    ctx.backend.reset(ctx.specs(), seed=2)
    assert ctx.backend.apply([]).engine_calls == 0
    # The value the settings already give is no change either.
    result = ctx.backend.apply([Change(dl.APP_REPLICAS, 1)])
    assert (result.layers_updated, result.engine_calls) == ((), 0)
    assert ctx.backend.engine_calls == calls


def test_changing_one_layer_runs_the_engine_on_that_layer_only(ctx: Ctx) -> None:
    base_before = (ctx.files / f"{DEPLOYMENT}-base.json").stat().st_mtime_ns
    result = ctx.backend.apply([Change(dl.APP_REPLICAS, 3)])
    assert result.layers_updated == ("test-app",)
    assert result.engine_calls == 1
    assert ctx.record("app")["spec"]["replicas"] == 3
    assert (ctx.files / f"{DEPLOYMENT}-base.json").stat().st_mtime_ns == base_before
    # The same value again: nothing to do.
    assert ctx.backend.apply([Change(dl.APP_REPLICAS, 3)]).engine_calls == 0


def test_upstream_change_with_same_outputs_leaves_downstream_alone(ctx: Ctx) -> None:
    result = ctx.backend.apply([Change(dl.BASE_REPLICAS, 2), Change(dl.BASE_CPU, "1000m")])
    assert (result.layers_updated, result.engine_calls) == (("test-base",), 1)
    base = ctx.record("base")
    assert base["spec"]["replicas"] == 2
    assert base["spec"]["template"]["containers"][0]["cpuLimit"] == "1000m"
    assert ctx.record("app")["spec"]["replicas"] == 3  # the app's knob stays applied


def test_changed_upstream_outputs_update_downstream(ctx: Ctx) -> None:
    result = ctx.backend.apply([Change(dl.BASE_SIZE, "large")])
    assert result.layers_updated == ("test-base", "test-app")
    assert result.engine_calls == 2
    assert ctx.record("app")["upstreamSize"] == "large"
    records = ctx.backend.resources()
    assert knob_value(records, dl.BASE_SIZE) == "large"
    assert knob_value(records, dl.BASE_CPU) == "1000m"
    assert knob_value(records, dl.APP_REPLICAS) == 3


def test_bad_knobs_are_config_errors_and_leave_the_backend_usable(ctx: Ctx) -> None:
    ghost = Knob("ghost", "test-app", dl.RECORD_TYPE, "nope", "spec.replicas", IntRange(0, 9))
    calls = ctx.backend.engine_calls
    # Known resources (read by resources()): rejected before any engine call.
    with pytest.raises(
        ConfigError, match="has no pulumi-python:dynamic/infragym:FileRecord 'nope'"
    ):
        ctx.backend.apply([Change(ghost, 2)])
    with pytest.raises(ActionError, match="not in its domain"):
        ctx.backend.apply([Change(dl.APP_REPLICAS, 42)])
    assert ctx.backend.engine_calls == calls
    # Unknown resources: the program's transformation finds no match, and says so.
    ctx.backend._layers["test-app"].declared = None
    with pytest.raises(ConfigError, match=r"knobs matched no resource.*ghost"):
        ctx.backend.apply([Change(ghost, 2)])
    assert ctx.backend.engine_calls == calls + 1
    # The bad value was dropped; the failed layer is brought back by the next apply.
    result = ctx.backend.apply([])
    assert (result.layers_updated, result.engine_calls) == (("test-app",), 1)
    assert ctx.record("app")["spec"]["replicas"] == 3


def test_reset_reverts_knobs_to_the_settings(ctx: Ctx) -> None:
    calls = ctx.backend.engine_calls
    ctx.backend.reset(ctx.specs(), seed=3)
    assert ctx.backend.engine_calls - calls == 2
    base, app = ctx.record("base"), ctx.record("app")
    assert base["spec"]["replicas"] == 1 and base["size"] == "small"
    assert base["spec"]["template"]["containers"][0]["cpuLimit"] == "500m"
    assert app["spec"]["replicas"] == 1 and app["upstreamSize"] == "small"
    for r in ctx.backend.resources():
        if r.name == "base":
            assert get_path(r.inputs, "spec.replicas") == 1


def test_reattaching_refreshes_first(ctx: Ctx) -> None:
    # Another backend on the same deployment finds the stacks. The base record was
    # removed behind the engine's back: only a refresh notices, so the `up` recreates it.
    (ctx.files / f"{DEPLOYMENT}-base.json").unlink()
    other = PulumiBackend(DEPLOYMENT, ctx.url, keep=True, step_wait=False, progress=False)
    try:
        other.reset(ctx.specs())
        assert other.engine_calls == 4  # refresh + up, per layer
        assert ctx.record("base") is not None
    finally:
        other.close()  # keep=True: nothing destroyed
    assert ctx.record("base") is not None and ctx.record("app") is not None


def test_close_destroys_and_removes_the_stacks(ctx: Ctx) -> None:
    from typer.testing import CliRunner

    from infragym.cli_stacks import stacks_app

    ctx.backend.close()
    assert ctx.record("base") is None and ctx.record("app") is None
    out = CliRunner().invoke(stacks_app, ["list", "--backend", ctx.url])
    assert out.exit_code == 0, out.output
    assert "no infragym stacks" in out.output
    stacks = list((ctx.state / ".pulumi" / "stacks").rglob("*.json"))
    assert not stacks, stacks
    ctx.backend.close()  # closing twice is harmless


def test_secrets_never_in_the_state_history(ctx: Ctx) -> None:
    for path in ctx.state.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert TEST_PASSPHRASE not in text
            if path.suffix == ".json" and text.startswith("{"):
                json.loads(text)  # the engine left well-formed files
