"""The pulumi backend's ``async`` actuation against the real engine (``file://`` state).

The layers are :mod:`tests.backends.dynlayers`' dynamic-provider records; ``test-base``'s
provider takes :data:`DELAY` seconds per create or update, so an ``up`` of it is still
running when :meth:`~infragym.backends.pulumi.PulumiBackend.apply` returns. The tests of
the first part share one deployment and run in order, as an episode would:

1. ``apply`` returns before the update finishes, and the queue names it in flight;
2. two further changes to the busy layer are coalesced, and applied after the first
   update completes, in order (the first ``up`` ran with *its* value, not a later one);
3. a change to a free layer starts at once while another layer is busy, and a layer whose
   upstream outputs changed is updated after the upstream one;
4. a failing background update is a clear error on the next call; the queue stays
   consistent and the next ``apply`` retries the layer;
5. Ctrl-C while ``advance`` waits lets the engine finish its in-flight operation.

The second part closes backends with an update in flight: ``close`` waits for it (or, past
``close_timeout``, stops and kills it and clears its lock); no lock and, unless ``keep``,
no stack is left.

Timings are printed (``-s`` shows them).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infragym.backends import Change, LayerSpec
from infragym.backends.engine import Engine
from infragym.backends.pulumi import PulumiBackend, knob_value
from infragym.backends.state import list_locks, parse_state_url
from infragym.cli_stacks import find_stacks
from infragym.errors import ConfigError, EngineError
from infragym.knobs import Choice, IntRange, Knob
from tests.backends import dynlayers as dl
from tests.backends.conftest import TEST_PASSPHRASE, kill_marked, marked_pids

pytestmark = [pytest.mark.engine, pytest.mark.timeout(300)]

DEPLOYMENT = "asy"
DELAY = 2.5
"""Seconds ``test-base``'s provider takes per create or update."""

SLOW = 15.0
BASE_DELAY = Knob("base_delay", "test-base", dl.RECORD_TYPE, "base", "delay", Choice((DELAY, SLOW)))
"""The provider's delay, as a knob: one update can be made slow (a change of it alone
updates nothing, as the provider's diff ignores it)."""


class Ctx:
    """The module's shared deployment (``async``, no step wait)."""

    def __init__(self, base: Path) -> None:
        self.files = base / "files"
        self.files.mkdir()
        self.flag = base / "cloud-is-down"
        self.state = base / "state"
        self.url = f"file://{self.state}"
        self.backend = PulumiBackend(
            DEPLOYMENT, self.url, step_wait=False, progress=False, actuation="async"
        )

    def specs(self, **base: object) -> list[LayerSpec]:
        return [
            LayerSpec("test-base", {"dir": str(self.files), "delay": DELAY, **base}),
            LayerSpec("test-app", {"dir": str(self.files)}),
        ]

    def record(self, which: str) -> dict:
        found = dl.read_record(self.files, DEPLOYMENT, which)
        assert found is not None, which
        return found

    def until(self, what: str, done: Callable[[], bool], timeout: float = 90.0) -> float:
        """Pump the backend until ``done()``; returns the seconds it took."""
        t0 = time.monotonic()
        while not done():
            if time.monotonic() - t0 > timeout:
                pytest.fail(f"not {what} after {timeout} s: {self.backend.info()['updates']}")
            time.sleep(0.02)
            self.backend.advance(0)  # step_wait=False: handles the updates that ended
        return time.monotonic() - t0

    def locks(self, layer: str) -> list:
        return list_locks(parse_state_url(self.url), f"{DEPLOYMENT}.{layer}")


@pytest.fixture(scope="module")
def ctx(pulumi_env: Path, test_layers: None) -> Iterator[Ctx]:
    c = Ctx(pulumi_env)
    try:
        t0 = time.monotonic()
        c.backend.reset(c.specs(), seed=1)
        print(f"\nreset (2 creates, one taking {DELAY} s): {time.monotonic() - t0:.2f} s")
        c.backend.queue.deployed(
            {"base_replicas": 1, "base_cpu": "500m", "base_size": "small", "app_replicas": 1}
        )
        yield c
    finally:
        c.backend.close()


def test_apply_returns_before_the_update_finishes(ctx: Ctx) -> None:
    b, queue = ctx.backend, ctx.backend.queue
    calls = b.engine_calls
    t0 = time.monotonic()
    result = b.apply([Change(dl.BASE_REPLICAS, 2)])
    returned = time.monotonic() - t0
    assert returned < DELAY / 2, returned
    assert (result.layers_updated, result.layers_queued) == (("test-base",), ())
    assert result.engine_calls == 1 and b.engine_calls == calls + 1
    assert list(queue.in_flight) == ["test-base"]
    assert queue.busy(["test-base", "test-app"]) == [True, False]
    assert queue.requested["base_replicas"] == 2 and queue.applied["base_replicas"] == 1
    updates = b.info()["updates"]
    assert updates["test-base"]["in_flight"] == {"base_replicas": 2}
    assert updates["test-base"]["queued"] == {}
    assert 0 <= updates["test-base"]["started_at"] < 3600
    assert ctx.record("base")["spec"]["replicas"] == 1  # the provider still sleeps

    took = ctx.until("done", lambda: not queue.in_flight)
    print(f"apply returned in {returned * 1000:.0f} ms; the up ended {took:.2f} s later")
    assert took > DELAY * 0.8
    assert ctx.record("base")["spec"]["replicas"] == 2
    assert queue.applied["base_replicas"] == 2 and b.info()["updates"] == {}
    assert knob_value(b.resources(), dl.BASE_REPLICAS) == 2
    assert not ctx.locks("test-base")


def test_changes_to_a_busy_layer_are_coalesced_and_applied_in_order(ctx: Ctx) -> None:
    b, queue = ctx.backend, ctx.backend.queue
    calls = b.engine_calls
    first = b.apply([Change(dl.BASE_REPLICAS, 3)])
    assert first.layers_updated == ("test-base",)
    update = queue.in_flight["test-base"]
    # Two further changes while the update runs: they wait, coalesced to the latest.
    second = b.apply([Change(dl.BASE_REPLICAS, 4), Change(dl.BASE_CPU, "1000m")])
    third = b.apply([Change(dl.BASE_REPLICAS, 5)])
    for result in (second, third):
        assert (result.layers_updated, result.layers_queued) == ((), ("test-base",))
        assert result.engine_calls == 0
    assert queue.in_flight["test-base"] is update
    assert {n: c.value for n, c in queue.queued["test-base"].items()} == {
        "base_replicas": 5,
        "base_cpu": "1000m",
    }
    assert b.info()["updates"]["test-base"]["queued"] == {"base_replicas": 5, "base_cpu": "1000m"}

    # The first update completes with its own value; the queued one starts at once.
    ctx.until("first done", lambda: queue.in_flight.get("test-base") is not update)
    base = ctx.record("base")
    assert base["spec"]["replicas"] == 3
    assert base["spec"]["template"]["containers"][0]["cpuLimit"] == "500m"
    assert queue.applied["base_replicas"] == 3
    nxt = queue.in_flight["test-base"]
    assert {k.name: v for k, v in nxt.changes} == {"base_replicas": 5, "base_cpu": "1000m"}
    assert "test-base" not in queue.queued

    took = ctx.until("second done", lambda: not queue.in_flight)
    print(f"the queued update ran {took:.2f} s after the first one ended")
    base = ctx.record("base")
    assert base["spec"]["replicas"] == 5
    assert base["spec"]["template"]["containers"][0]["cpuLimit"] == "1000m"
    assert b.engine_calls == calls + 2  # the two queued changes made one update
    records = b.resources()
    assert knob_value(records, dl.BASE_REPLICAS) == 5
    assert knob_value(records, dl.BASE_CPU) == "1000m"
    assert queue.applied["base_replicas"] == 5 and queue.applied["base_cpu"] == "1000m"
    assert ctx.record("app")["spec"]["replicas"] == 1  # outputs unchanged: app untouched


def test_a_change_back_to_the_value_in_flight_is_dropped(ctx: Ctx) -> None:
    b, queue = ctx.backend, ctx.backend.queue
    calls = b.engine_calls
    b.apply([Change(dl.BASE_REPLICAS, 6)])
    assert b.apply([Change(dl.BASE_REPLICAS, 7)]).layers_queued == ("test-base",)
    assert b.apply([Change(dl.BASE_REPLICAS, 6)]).layers_queued == ()
    assert "test-base" not in queue.queued
    assert b.wait(90)
    assert ctx.record("base")["spec"]["replicas"] == 6
    assert b.engine_calls == calls + 1


def test_a_free_layer_starts_at_once_while_another_is_busy(ctx: Ctx) -> None:
    b, queue = ctx.backend, ctx.backend.queue
    b.apply([Change(dl.BASE_REPLICAS, 2), Change(BASE_DELAY, SLOW)])
    t0 = time.monotonic()
    result = b.apply([Change(dl.APP_REPLICAS, 2)])
    assert (result.layers_updated, result.layers_queued) == (("test-app",), ())
    assert set(queue.in_flight) == {"test-base", "test-app"}
    started = {layer: u.started_at for layer, u in queue.in_flight.items()}
    assert started["test-app"] - started["test-base"] < 1.0
    # test-app's provider does not sleep: it ends while test-base's still does.
    ctx.until("app done", lambda: "test-app" not in queue.in_flight)
    print(f"test-app updated in {time.monotonic() - t0:.2f} s while test-base was busy")
    assert ctx.record("app")["spec"]["replicas"] == 2
    assert "test-base" in queue.in_flight
    assert ctx.record("base")["spec"]["replicas"] == 6
    assert b.apply([Change(BASE_DELAY, DELAY)]).layers_queued == ("test-base",)
    assert b.wait(90)
    assert ctx.record("base")["spec"]["replicas"] == 2


def test_changed_upstream_outputs_update_the_downstream_layer_after(ctx: Ctx) -> None:
    b, queue = ctx.backend, ctx.backend.queue
    calls = b.engine_calls
    result = b.apply([Change(dl.BASE_SIZE, "large")])
    assert result.layers_updated == ("test-base",)
    ctx.until("app started", lambda: "test-app" in queue.in_flight)
    assert ctx.record("base")["size"] == "large"
    assert queue.in_flight["test-app"].changes == ()  # no knob: its upstream changed
    assert b.wait(90)
    assert ctx.record("app")["upstreamSize"] == "large"
    assert ctx.record("app")["spec"]["replicas"] == 2  # its knob stays applied
    assert b.engine_calls == calls + 2
    assert b.apply([]).engine_calls == 0  # nothing left to do


def test_a_failing_background_update_is_raised_next_and_the_backend_recovers(
    ctx: Ctx,
) -> None:
    b, queue = ctx.backend, ctx.backend.queue
    b.reset(ctx.specs(fail_while=str(ctx.flag)), seed=2)
    queue = b.queue
    queue.deployed(
        {"base_replicas": 1, "base_cpu": "500m", "base_size": "small", "app_replicas": 1}
    )
    ctx.flag.touch()  # the cloud goes down
    assert b.apply([Change(dl.BASE_REPLICAS, 7)]).layers_updated == ("test-base",)
    assert b.apply([Change(dl.BASE_REPLICAS, 8)]).layers_queued == ("test-base",)
    b._runs["test-base"].thread.join(90)  # the update ends (no call to the backend yet)

    with pytest.raises(EngineError) as err:
        b.apply([Change(dl.APP_REPLICAS, 3)])
    message = str(err.value)
    print(f"\nthe error, raised from the next apply:\n{message}")
    assert "injected failure updating 'asy-base'" in message
    assert "asy.test-base" in message and TEST_PASSPHRASE not in message
    # The failed update is out of flight; its change and the queued one wait for a retry.
    assert queue.in_flight == {} and queue.queued == {}
    assert queue.requested["base_replicas"] == 8 and queue.applied["base_replicas"] == 1
    assert queue.requested["app_replicas"] == 1  # the failing call did nothing
    assert ctx.record("base")["spec"]["replicas"] == 1
    assert not ctx.locks("test-base")

    # Still down: the next apply retries with the value held, which fails again; this
    # time the error comes from advance.
    assert b.apply([]).layers_updated == ("test-base",)
    assert {k.name: v for k, v in queue.in_flight["test-base"].changes} == {"base_replicas": 8}
    b._runs["test-base"].thread.join(90)
    with pytest.raises(EngineError, match="injected failure updating"):
        b.advance(0)
    assert queue.in_flight == {}

    ctx.flag.unlink()  # the cloud is back
    result = b.apply([Change(dl.APP_REPLICAS, 3)])
    assert result.layers_updated == ("test-base", "test-app")
    assert b.wait(90)
    assert ctx.record("base")["spec"]["replicas"] == 8
    assert ctx.record("app")["spec"]["replicas"] == 3
    assert queue.applied["base_replicas"] == 8 and queue.applied["app_replicas"] == 3
    assert queue.requested == queue.applied


def test_a_knob_the_program_rejects_is_dropped(ctx: Ctx) -> None:
    b, queue = ctx.backend, ctx.backend.queue
    ghost = Knob("ghost", "test-app", dl.RECORD_TYPE, "nope", "spec.replicas", IntRange(0, 9))
    b._layers["test-app"].declared = None  # so that only the program can tell
    assert b.apply([Change(ghost, 2)]).layers_updated == ("test-app",)
    with pytest.raises(ConfigError, match=r"knobs matched no resource.*ghost"):
        b.wait(90)
    assert queue.in_flight == {} and "ghost" not in queue.requested
    # The bad value was dropped; the failed layer is brought back by the next apply.
    assert b.apply([]).layers_updated == ("test-app",)
    assert b.wait(90)
    assert ctx.record("app")["spec"]["replicas"] == 3


def test_ctrl_c_while_advance_waits_lets_the_engine_finish(
    ctx: Ctx, caplog: pytest.LogCaptureFixture
) -> None:
    b, queue = ctx.backend, ctx.backend.queue
    assert threading.current_thread() is threading.main_thread()
    b.apply([Change(dl.BASE_REPLICAS, 4)])
    b.step_wait = True
    # A shell's background job starts with SIGINT ignored: Ctrl-C must raise here.
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    t0 = time.monotonic()
    timer.start()
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(KeyboardInterrupt):
            b.advance(60)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, handler)
        b.step_wait = False
    print(f"Ctrl-C handled in {time.monotonic() - t0:.2f} s")
    assert "stop after their in-flight operations" in caplog.text
    assert queue.in_flight == {} and not b._runs
    assert not ctx.locks("test-base")
    # The engine finished the in-flight update (or had not started it): either way the
    # next apply brings the layer to the desired value.
    assert b.apply([]).layers_updated == ("test-base",)
    assert b.wait(90)
    assert ctx.record("base")["spec"]["replicas"] == 4
    assert queue.applied["base_replicas"] == 4


def test_immediate_and_async_report_the_same_state(ctx: Ctx) -> None:
    b = ctx.backend
    b.apply([Change(dl.APP_REPLICAS, 5)])
    assert b.wait(90)
    other = PulumiBackend(DEPLOYMENT, ctx.url, keep=True, step_wait=False, progress=False)
    try:
        other.reset(ctx.specs(fail_while=str(ctx.flag)))
        other.queue.deployed({"app_replicas": 1})
        result = other.apply([Change(dl.APP_REPLICAS, 4)])
        assert (result.layers_updated, result.layers_queued) == (("test-app",), ())
        assert other.queue.in_flight == {} and other.info()["updates"] == {}
        assert other.queue.applied["app_replicas"] == 4
    finally:
        other.close()


# ------------------------------------------------------------------ close


def _stacks(url: str, deployment: str) -> list:
    engine = Engine(parse_state_url(url))
    try:
        return find_stacks(engine, deployment)
    finally:
        engine.close()


def test_close_waits_for_the_update_in_flight_then_destroys(
    pulumi_env: Path, test_layers: None
) -> None:
    files = pulumi_env / "close-files"
    files.mkdir()
    url = f"file://{pulumi_env / 'state'}"
    b = PulumiBackend("cls", url, step_wait=False, progress=False, actuation="async")
    try:
        b.reset([LayerSpec("test-base", {"dir": str(files), "delay": DELAY})])
        assert b.apply([Change(dl.BASE_REPLICAS, 3)]).layers_updated == ("test-base",)
    finally:
        t0 = time.monotonic()
        b.close()
    print(f"\nclose with an update in flight: {time.monotonic() - t0:.2f} s")
    assert not b._runs and b.queue.in_flight == {}
    assert dl.read_record(files, "cls", "base") is None
    assert _stacks(url, "cls") == []
    assert not list_locks(parse_state_url(url), "cls.test-base")


# The killed update's inline program (in this process) ends with its engine gone; the
# SDK then leaves a coroutine that Python reports as unraisable when collected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_close_past_its_timeout_stops_the_update_and_leaves_no_lock(
    pulumi_env: Path, test_layers: None, caplog: pytest.LogCaptureFixture
) -> None:
    files = pulumi_env / "kill-files"
    files.mkdir()
    url = f"file://{pulumi_env / 'state'}"
    slow = 30.0
    mark = uuid.uuid4().hex  # on the engine and the plugins it starts
    b = PulumiBackend(
        "kil",
        url,
        keep=True,
        step_wait=False,
        progress=False,
        actuation="async",
        close_timeout=1,
        env={"INFRAGYM_TEST_MARK": mark},
    )
    try:
        _close_past_timeout(b, url, files, slow, mark, caplog)
    finally:
        kill_marked(mark)


def _provider_running(mark: str) -> bool:
    """Whether a dynamic-provider plugin carrying ``mark`` runs."""
    for pid in marked_pids(mark):
        try:
            if b"pulumi.dynamic" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def _close_past_timeout(
    b: PulumiBackend,
    url: str,
    files: Path,
    slow: float,
    mark: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    b.reset([LayerSpec("test-base", {"dir": str(files)})])
    # A settings change is not a knob: set the provider's delay on the deployed record.
    delay = Knob("delay", "test-base", dl.RECORD_TYPE, "base", "delay", IntRange(0, 60))
    b.apply([Change(dl.BASE_REPLICAS, 3), Change(delay, int(slow))])
    deadline = time.monotonic() + 60
    while not list_locks(parse_state_url(url), "kil.test-base") or not _provider_running(mark):
        assert time.monotonic() < deadline, "the update never took its lock"
        time.sleep(0.1)
    time.sleep(2.0)  # the provider is sleeping in the update
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING):
        b.close()
    took = time.monotonic() - t0
    print(f"\nclose past its 1 s timeout, with a {slow:.0f} s update in flight: {took:.2f} s")
    assert took < slow / 2
    assert "stopping 1 update(s) still running" in caplog.text
    # The engine and its plugins are gone: none is left to finish the update later.
    deadline = time.monotonic() + 10
    while marked_pids(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marked_pids(mark) == []
    assert not list_locks(parse_state_url(url), "kil.test-base")
    (info,) = _stacks(url, "kil")
    assert info.locks == []

    # The stack opens again: a new backend updates it, then destroys it.
    other = PulumiBackend("kil", url, step_wait=False, progress=False)
    try:
        other.reset([LayerSpec("test-base", {"dir": str(files)})])
        other.apply([Change(dl.BASE_REPLICAS, 2)])
        assert dl.read_record(files, "kil", "base")["spec"]["replicas"] == 2
    finally:
        other.close()
    assert _stacks(url, "kil") == []
    assert dl.read_record(files, "kil", "base") is None
