"""The pulumi backend's ``async`` bookkeeping, with stand-in stacks (no engine, fast).

:class:`FakeStack` stands for an Automation API stack: its ``up`` sleeps, then returns
outputs (or raises), in the backend's background thread. These tests check what the
engine tests (``test_pulumi_async.py``) check more slowly, plus the corner cases: which
knob values each ``up`` runs with, coalescing, downstream updates after upstream outputs
change, failures held and retried, and ``reset``/``close`` draining what is in flight.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infragym.backends import Change
from infragym.backends.progress import EngineProgress
from infragym.backends.pulumi import PulumiBackend, _LayerState
from infragym.errors import ConfigError, EngineError
from tests.backends import dynlayers as dl

pytestmark = pytest.mark.timeout(60)


class FakeStack:
    """An ``up`` that takes ``delay`` seconds and returns ``outputs()`` (or fails)."""

    def __init__(self, name: str, delay: float, outputs: Any) -> None:
        self.name = name
        self.delay = delay
        self.outputs = outputs
        self.fail: Exception | None = None
        self.ups: list[dict[str, Any]] = []
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()

    def up(self, program: Any, on_event: Any = None, color: str = "") -> Any:
        from pulumi import automation as auto

        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            time.sleep(self.delay)
            if self.fail is not None:
                raise self.fail
            knobs = {k.name: v for k, v in program.knobs.values()}
            self.ups.append(knobs)
            return type(
                "UpResult",
                (),
                {
                    "outputs": {
                        k: auto.OutputValue(v, False) for k, v in self.outputs(knobs).items()
                    }
                },
            )()
        finally:
            with self._lock:
                self.running -= 1


class FakeCommand:
    """Records stop requests."""

    def __init__(self) -> None:
        self.stops: list[tuple[int, bool]] = []

    def stop(self, thread: int, force: bool = False) -> bool:
        self.stops.append((thread, force))
        return True


class FakeEngine:
    def __init__(self) -> None:
        self.command = FakeCommand()

    def clear_stale_locks(self, stack: Any) -> list:
        return []

    def close(self) -> None:
        pass


def make_backend(tmp_path: Path, base_delay: float = 0.4) -> PulumiBackend:
    """An ``async`` backend with ``test-base`` and ``test-app`` "deployed" on fakes."""
    from stacks.registry import get_layer

    b = PulumiBackend(
        "unit", f"file://{tmp_path}", step_wait=False, progress=False, actuation="async", keep=True
    )
    b._engine = FakeEngine()
    b._progress = EngineProgress(enabled=False)
    stacks = {
        "test-base": FakeStack(
            "unit.test-base", base_delay, lambda k: {"base_size": k.get("base_size", "small")}
        ),
        "test-app": FakeStack("unit.test-app", 0.05, lambda k: {"app_file": "f"}),
    }
    from pulumi import automation as auto

    b._order = ["test-base", "test-app"]
    for name in b._order:
        layer = get_layer(name)
        ls = _LayerState(name, layer, layer.parse_settings({"dir": str(tmp_path)}))
        ls.stack = stacks[name]
        ls.outputs = {k: auto.OutputValue(v, False) for k, v in stacks[name].outputs({}).items()}
        b._layers[name] = ls
        ls.applied = b._desired_key(ls)  # upstream first: its outputs are set
    b.queue.deployed({"base_replicas": 1, "base_size": "small", "app_replicas": 1})
    return b


@pytest.fixture
def backend(
    tmp_path: Path, test_layers: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PulumiBackend]:
    # The fake stacks read the knob values an up runs with from its program.
    original = PulumiBackend._program

    def program(self: PulumiBackend, ls: _LayerState) -> Any:
        fn, errors = original(self, ls)
        fn.knobs = dict(ls.knobs)  # type: ignore[attr-defined]
        return fn, errors

    monkeypatch.setattr(PulumiBackend, "_program", program)
    b = make_backend(tmp_path)
    try:
        yield b
    finally:
        b._drain("test")


def stack(b: PulumiBackend, layer: str) -> FakeStack:
    return b._layers[layer].stack


def test_actuation_is_validated() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown actuation 'sync'.*\(valid choices: async, immediate\)"
    ):
        PulumiBackend(actuation="sync")
    with pytest.raises(ConfigError, match="close_timeout"):
        PulumiBackend(close_timeout=0)
    assert PulumiBackend().actuation == "immediate"


def test_each_up_runs_with_the_values_of_its_update(backend: PulumiBackend) -> None:
    b = backend
    r = b.apply([Change(dl.BASE_REPLICAS, 2)])
    assert (r.layers_updated, r.layers_queued, r.engine_calls) == (("test-base",), (), 1)
    for v in (3, 4, 5):
        r = b.apply([Change(dl.BASE_REPLICAS, v)])
        assert (r.layers_updated, r.layers_queued, r.engine_calls) == ((), ("test-base",), 0)
    assert b.info()["updates"]["test-base"]["queued"] == {"base_replicas": 5}
    assert b.wait(10)
    assert [u["base_replicas"] for u in stack(b, "test-base").ups] == [2, 5]
    assert b.queue.applied["base_replicas"] == 5 and b.engine_calls == 2
    assert stack(b, "test-app").ups == []  # outputs unchanged


def test_a_free_layer_runs_beside_a_busy_one(backend: PulumiBackend) -> None:
    b = backend
    b.apply([Change(dl.BASE_REPLICAS, 2)])
    r = b.apply([Change(dl.APP_REPLICAS, 3)])
    assert r.layers_updated == ("test-app",)
    assert set(b.queue.in_flight) == {"test-base", "test-app"}
    t0 = time.monotonic()
    while "test-app" in b.queue.in_flight and time.monotonic() - t0 < 5:
        b.advance(0)
        time.sleep(0.01)
    assert "test-base" in b.queue.in_flight and b.queue.applied["app_replicas"] == 3
    assert b.wait(10)


def test_advance_handles_a_completion_at_once(backend: PulumiBackend) -> None:
    b = backend
    b.step_wait = True
    b.apply([Change(dl.BASE_REPLICAS, 2)])
    first = b.queue.in_flight["test-base"].started_at
    b.apply([Change(dl.BASE_REPLICAS, 3)])
    t0 = time.monotonic()
    b.advance(0.7)  # the first up ends after 0.4 s: the queued one starts then
    assert time.monotonic() - t0 >= 0.7
    update = b.queue.in_flight["test-base"]
    assert update.changes == ((dl.BASE_REPLICAS, 3),)
    assert 0.35 < update.started_at - first < 0.6
    assert b.info()["updates"]["test-base"]["started_at"] == update.started_at
    assert b.wait(10)


def test_changed_upstream_outputs_update_downstream_once_upstream_is_done(
    backend: PulumiBackend,
) -> None:
    b = backend
    b.apply([Change(dl.BASE_SIZE, "large"), Change(dl.APP_REPLICAS, 2)])
    assert set(b.queue.in_flight) == {"test-base", "test-app"}
    assert b.wait(10)
    app = stack(b, "test-app")
    assert len(app.ups) == 2  # its own change, then the new upstream outputs
    assert b._layers["test-app"].applied == b._desired_key(b._layers["test-app"])
    assert b.apply([]).engine_calls == 0


def test_a_change_to_a_busy_downstream_waits_behind_it(backend: PulumiBackend) -> None:
    b = backend
    stack(b, "test-app").delay = 0.5
    b.apply([Change(dl.APP_REPLICAS, 2)])
    b.apply([Change(dl.BASE_SIZE, "large")])  # ends before the app's first up
    assert b.wait(10)
    ups = stack(b, "test-app").ups
    assert len(ups) == 2 and b.queue.in_flight == {}
    assert b._layers["test-app"].outputs and b.apply([]).engine_calls == 0


def test_a_failure_is_raised_once_and_its_changes_are_retried(backend: PulumiBackend) -> None:
    from pulumi import automation as auto
    from pulumi.automation._cmd import CommandResult

    b = backend
    base = stack(b, "test-base")
    base.fail = auto.CommandError(CommandResult(stdout="", stderr="error: boom", code=1))
    b.apply([Change(dl.BASE_REPLICAS, 2)])
    b.apply([Change(dl.BASE_REPLICAS, 3)])
    b._runs["test-base"].thread.join(5)
    with pytest.raises(EngineError, match=r"pulumi up of stack 'unit\.test-base'(?s:.*)boom"):
        b.advance(0)
    assert b.queue.in_flight == {} and b.queue.queued == {}
    assert b.queue.requested["base_replicas"] == 3 and b.queue.applied["base_replicas"] == 1
    b.apply([])  # no error left: the retry starts
    base.fail = None
    assert b.queue.in_flight["test-base"].changes == ((dl.BASE_REPLICAS, 3),)
    assert b.wait(10)
    assert base.ups[-1]["base_replicas"] == 3 and b.queue.applied["base_replicas"] == 3


def test_several_failures_are_one_error(backend: PulumiBackend) -> None:
    b = backend
    stack(b, "test-base").fail = RuntimeError("base down")
    stack(b, "test-app").fail = RuntimeError("app down")
    b.apply([Change(dl.BASE_REPLICAS, 2), Change(dl.APP_REPLICAS, 2)])
    for run in list(b._runs.values()):
        run.thread.join(5)
    with pytest.raises(EngineError, match="2 background updates failed") as err:
        b.wait(10)
    assert "base down" in str(err.value) and "app down" in str(err.value)
    assert b.queue.in_flight == {}


def test_drain_stops_updates_past_the_timeout(backend: PulumiBackend) -> None:
    b = backend
    b.close_timeout = 0.1
    stack(b, "test-base").delay = 0.5
    b.apply([Change(dl.BASE_REPLICAS, 2)])
    b.apply([Change(dl.BASE_REPLICAS, 3)])
    b._drain("close")
    # The fake engine ignores the stops (SIGINT, then kill): the update ends on its own;
    # nothing starts after it.
    assert [force for _, force in b._engine.command.stops] == [False, True]
    assert b._runs == {} and b.queue.in_flight == {} and b.queue.queued == {}
    assert [u["base_replicas"] for u in stack(b, "test-base").ups] == [2]


def test_immediate_mode_reports_the_same_state(
    tmp_path: Path, test_layers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = make_backend(tmp_path)
    b.actuation = "immediate"

    def up(ls: _LayerState, key: str) -> None:
        ls.applied, ls.applied_knobs = key, dict(ls.knobs)

    monkeypatch.setattr(b, "_up", up)
    r = b.apply([Change(dl.BASE_REPLICAS, 2)])
    assert (r.layers_updated, r.layers_queued) == (("test-base",), ())
    assert b.queue.in_flight == {} and b.info()["updates"] == {}
    assert b.queue.applied["base_replicas"] == 2 and b.queue.requested == b.queue.applied
